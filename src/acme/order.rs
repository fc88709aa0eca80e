//! One ACME order (RFC 8555 §7.4), by `instant-acme`: the account (made
//! on the first order, then reused), the order for the configured names,
//! each authorization's challenge answered by a responder bound for the
//! order's length (http-01 on `http_listen`, §8.3; tls-alpn-01 on
//! `tls_alpn_listen`, RFC 8737), the CSR on the
//! gateway's own key, and the chain. `badNonce` is retried by the client
//! (§6.5); a refusal or a failed challenge ends the order with the
//! server's problem document (§6.7).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use super::Settings;

/// Why an order did not end with a certificate.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
    #[error("account at {directory}: {error}")]
    Account {
        directory: String,
        error: instant_acme::Error,
    },
    #[error("the stored account cannot be read: {0}")]
    StoredAccount(serde_json::Error),
    #[error("new order: {0}")]
    NewOrder(instant_acme::Error),
    #[error("authorization: {0}")]
    Authorization(instant_acme::Error),
    #[error("{name}: the server offers no {challenge} challenge")]
    NoChallenge {
        name: String,
        challenge: &'static str,
    },
    #[error("cannot answer {challenge} challenges on {addr}: {error}")]
    Responder {
        challenge: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("the tls-alpn-01 certificate for {name}: {error}")]
    AlpnCertificate { name: String, error: String },
    #[error("the order did not become ready: {0}")]
    NotReady(String),
    #[error("the CSR: {0}")]
    Csr(String),
    #[error("finalize: {0}")]
    Finalize(instant_acme::Error),
    #[error("the certificate: {0}")]
    Certificate(instant_acme::Error),
}

/// What a successful order hands back.
pub struct Ordered {
    /// The chain, PEM, leaf first.
    pub chain: String,
    /// The account's credentials, when the order made the account.
    pub new_account: Option<String>,
}

/// How long the order may take to become ready, and to be issued.
const READY: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// Runs one order for `settings.domains` with the key `key`.
pub async fn order(
    settings: &Settings,
    account: Option<&str>,
    key: &rcgen::KeyPair,
) -> Result<Ordered, OrderError> {
    let http = https_client(&settings.ca_files).map_err(OrderError::Client)?;
    let builder = Account::builder_with_http(Box::new(http));
    let (account, new_account) = match account {
        Some(json) => {
            let credentials: AccountCredentials =
                serde_json::from_str(json).map_err(OrderError::StoredAccount)?;
            let account = builder
                .from_credentials(credentials)
                .await
                .map_err(|error| OrderError::Account {
                    directory: settings.directory.clone(),
                    error,
                })?;
            (account, None)
        }
        None => {
            let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
            let (account, credentials) = builder
                .create(
                    &NewAccount {
                        contact: &contact,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    settings.directory.clone(),
                    None,
                )
                .await
                .map_err(|error| OrderError::Account {
                    directory: settings.directory.clone(),
                    error,
                })?;
            let json = serde_json::to_string(&credentials).map_err(OrderError::StoredAccount)?;
            (account, Some(json))
        }
    };
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(OrderError::NewOrder)?;

    // The responder answers each challenge while the order runs.
    let tokens: Tokens = Arc::default();
    let answers: AlpnAnswers = Arc::default();
    let kind = settings.challenge;
    let responder = match kind {
        super::Challenge::Http01 => Responder::http(settings.http_listen, tokens.clone()).await?,
        super::Challenge::TlsAlpn01 => {
            Responder::tls_alpn(settings.tls_alpn_listen, answers.clone()).await?
        }
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(OrderError::Authorization)?;
        match authz.status {
            // Reused from an earlier order (§7.1.4).
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Invalid
            | AuthorizationStatus::Revoked
            | AuthorizationStatus::Expired
            | AuthorizationStatus::Deactivated => {
                return Err(OrderError::NotReady(format!(
                    "{}: the authorization is {}",
                    authz.identifier(),
                    match authz.status {
                        AuthorizationStatus::Invalid => "invalid (a challenge failed)",
                        AuthorizationStatus::Revoked => "revoked",
                        AuthorizationStatus::Expired => "expired",
                        AuthorizationStatus::Deactivated => "deactivated",
                        AuthorizationStatus::Valid | AuthorizationStatus::Pending => "unusable",
                    }
                )))
            }
        }
        let name = authz.identifier().to_string();
        let wanted = match kind {
            super::Challenge::Http01 => ChallengeType::Http01,
            super::Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut challenge = authz
            .challenge(wanted)
            .ok_or_else(|| OrderError::NoChallenge {
                name: name.clone(),
                challenge: kind.into(),
            })?;
        let key_authorization = challenge.key_authorization();
        match kind {
            // §8.3: the token's key authorization over HTTP.
            super::Challenge::Http01 => {
                tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    challenge.token.clone(),
                    key_authorization.as_str().to_string(),
                );
            }
            // RFC 8737 §3: a certificate for the name with the SHA-256 of
            // the key authorization in a critical acmeIdentifier extension,
            // offered to a ClientHello for the name with ALPN acme-tls/1.
            super::Challenge::TlsAlpn01 => {
                let certified = alpn_certificate(&name, key_authorization.digest().as_ref())
                    .map_err(|error| OrderError::AlpnCertificate {
                        name: name.clone(),
                        error,
                    })?;
                answers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_ascii_lowercase(), certified);
            }
        }
        challenge
            .set_ready()
            .await
            .map_err(OrderError::Authorization)?;
    }
    let status = order.poll_ready(&READY).await;
    drop(responder);
    match status {
        Ok(OrderStatus::Ready) => {}
        Ok(other) => {
            let detail = order
                .state()
                .error
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| {
                    match other {
                        OrderStatus::Invalid => "the order is invalid (a challenge failed)",
                        OrderStatus::Pending => "the order is still pending",
                        OrderStatus::Processing => "the order is still processing",
                        OrderStatus::Ready | OrderStatus::Valid => {
                            "the order is in an unexpected state"
                        }
                    }
                    .to_string()
                });
            return Err(OrderError::NotReady(detail));
        }
        Err(e) => return Err(OrderError::NotReady(e.to_string())),
    }
    let mut params = rcgen::CertificateParams::new(settings.domains.clone())
        .map_err(|e| OrderError::Csr(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(key)
        .map_err(|e| OrderError::Csr(e.to_string()))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(OrderError::Finalize)?;
    let chain = order
        .poll_certificate(&READY)
        .await
        .map_err(OrderError::Certificate)?;
    Ok(Ordered { chain, new_account })
}

/// HTTPS to the ACME server: the system's roots and `ca_files`.
fn https_client(
    ca_files: &[std::path::PathBuf],
) -> Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        instant_acme::BodyWrapper<bytes::Bytes>,
    >,
    String,
> {
    let roots = crate::tls::ca_store(true, ca_files).map_err(|problems| {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

type Tokens = Arc<Mutex<HashMap<String, String>>>;
type AlpnAnswers = Arc<Mutex<HashMap<String, Arc<rustls::sign::CertifiedKey>>>>;

/// The protocol ALPN names for tls-alpn-01 (RFC 8737 §6.2).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A challenge responder: serves while the order runs, stops when
/// dropped.
struct Responder {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Responder {
    /// Binds `addr` and serves each connection with `serve` until dropped.
    async fn start<F, Fut>(
        challenge: &'static str,
        addr: SocketAddr,
        serve: F,
    ) -> Result<Responder, OrderError>
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| OrderError::Responder {
                    challenge,
                    addr,
                    error,
                })?;
        let task = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream));
                }
            }
        });
        Ok(Responder { task })
    }

    /// http-01: `GET /.well-known/acme-challenge/TOKEN` answers the
    /// token's key authorization (§8.3), anything else 404.
    async fn http(addr: SocketAddr, tokens: Tokens) -> Result<Responder, OrderError> {
        Responder::start("http-01", addr, move |stream| {
            let tokens = tokens.clone();
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = answer(&tokens, req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            }
        })
        .await
    }

    /// tls-alpn-01 (RFC 8737 §3): a TLS handshake that negotiates
    /// `acme-tls/1` and presents the name's validation certificate, then
    /// closes; nothing else is served.
    async fn tls_alpn(addr: SocketAddr, answers: AlpnAnswers) -> Result<Responder, OrderError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        // RFC 8737 §4: TLS 1.2 or later.
        .with_safe_default_protocol_versions()
        .map_err(|e| OrderError::Responder {
            challenge: "tls-alpn-01",
            addr,
            error: std::io::Error::other(e),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(AlpnResolver(answers)));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Responder::start("tls-alpn-01", addr, move |stream| {
            let acceptor = acceptor.clone();
            async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    use tokio::io::AsyncWriteExt as _;
                    let _ = tls.shutdown().await;
                }
            }
        })
        .await
    }
}

/// Presents a validation certificate only to a ClientHello that asks for
/// `acme-tls/1` and names a pending name (RFC 8737 §3).
#[derive(Debug)]
struct AlpnResolver(AlpnAnswers);

impl rustls::server::ResolvesServerCert for AlpnResolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let asks_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let name = hello.server_name()?.to_ascii_lowercase();
        if !asks_acme {
            return None;
        }
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .cloned()
    }
}

/// RFC 8737 §3: a self-signed certificate for `name` whose critical
/// id-pe-acmeIdentifier extension holds `digest` (SHA-256 of the key
/// authorization).
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    if digest.len() != 32 {
        return Err(format!("a {}-octet digest, not SHA-256", digest.len()));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| e.to_string())?;
    let signing =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

fn answer(tokens: &Tokens, path: &str) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let found = path
        .strip_prefix("/.well-known/acme-challenge/")
        .and_then(|token| {
            tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(token)
                .cloned()
        });
    let (status, body) = match found {
        Some(text) => (hyper::StatusCode::OK, text),
        None => (hyper::StatusCode::NOT_FOUND, String::new()),
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}
