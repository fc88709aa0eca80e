//! The generator's rustls client configuration: verification on or off,
//! extra CAs, resumption on or off, an optional client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

pub struct TlsOptions<'a> {
    pub verify: bool,
    pub ca: Option<&'a Path>,
    pub resumption: bool,
    pub groups: &'a [String],
    pub client_cert: Option<(&'a Path, &'a Path)>,
}

pub fn client_config(o: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = o
        .groups
        .iter()
        .map(|g| sealgate::tls::kx_group(g).ok_or_else(|| format!("--groups: unknown group {g:?}")))
        .collect::<Result<_, _>>()?;
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if o.verify {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = o.ca {
            for cert in
                CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?
            {
                roots
                    .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
                    .map_err(|e| e.to_string())?;
            }
        }
        if roots.is_empty() {
            return Err(
                "--verify needs --ca FILE with the CA that signed the server certificate".into(),
            );
        }
        builder.with_root_certificates(roots)
    } else {
        // Verification off: any certificate, but the handshake signatures
        // are still checked (the server must hold the key).
        builder
            .dangerous()
            .with_custom_certificate_verifier(sealgate::tls::outbound::any_server_certificate())
    };
    let mut config = match o.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
    };
    if !o.resumption {
        // Every session a full handshake: the cost the benchmarks compare.
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}
