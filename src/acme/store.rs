//! `SPOOL/acme/`: the ACME account, the certificate with its key, and
//! what the last orders came to. Every file is written whole to a
//! temporary name, synced and renamed (then the directory synced), so a
//! crash at any point leaves either the old file or the new one; the
//! certificate and its key are one file, so they never disagree. Files
//! holding a key are mode 0600.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan;

/// The account (its URL and key), as the ACME client serialises it.
const ACCOUNT: &str = "account.json";
/// The private key, then the certificate chain (leaf first), PEM.
const CERTIFICATE: &str = "certificate.pem";
/// [`State`], JSON.
const STATE: &str = "state.json";
/// With `[acme.dane]`: the key in service and the one that comes next
/// (PEM, PKCS#8), each on disk before its record is published.
const CURRENT_KEY: &str = "current.key";
const NEXT_KEY: &str = "next.key";

/// What the last orders came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// When the certificate's key went into service (Unix time).
    pub key_since: i64,
    /// Orders failed since the last success, and when the last failed.
    pub failures: u32,
    pub last_failure: i64,
    /// Why the last order failed.
    pub last_error: Option<String>,
    /// When a certificate was last installed (Unix time).
    pub last_renewal: i64,
    /// With `[acme.dane]`: the roll's records.
    #[serde(default)]
    pub dane: super::roll::DaneState,
}

impl State {
    pub fn failures(&self) -> plan::Failures {
        plan::Failures {
            count: self.failures,
            last: self.last_failure,
        }
    }
}

/// The directory and its files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// What the stored certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The SAN DNS names, lower case, sorted.
    pub names: Vec<String>,
    pub issuer: String,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the key's SubjectPublicKeyInfo: the data of a TLSA
    /// `3 1 1` record (RFC 6698 §2.1).
    pub spki_sha256: String,
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key and chain, one file (the snapshot loads both from it).
    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join(CERTIFICATE)
    }

    /// The stored account; `None` before the first order.
    pub fn account(&self) -> io::Result<Option<String>> {
        read_optional(&self.dir.join(ACCOUNT))
    }

    pub fn save_account(&self, json: &str) -> io::Result<()> {
        self.write(ACCOUNT, json.as_bytes(), 0o600)
    }

    pub fn state(&self) -> io::Result<State> {
        match read_optional(&self.dir.join(STATE))? {
            None => Ok(State::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.dir.join(STATE).display()),
                )
            }),
        }
    }

    pub fn save_state(&self, state: &State) -> io::Result<()> {
        let json = serde_json::to_string_pretty(state).map_err(io::Error::other)?;
        self.write(STATE, json.as_bytes(), 0o644)
    }

    /// The stored key (PEM), to renew on.
    pub fn key_pem(&self) -> io::Result<Option<String>> {
        let Some(text) = read_optional(&self.certificate_path())? else {
            return Ok(None);
        };
        Ok(pem::parse_many(&text)
            .ok()
            .and_then(|blocks| {
                blocks
                    .into_iter()
                    .find(|b| b.tag().ends_with("PRIVATE KEY"))
            })
            .map(|b| {
                pem::encode_config(
                    &b,
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                )
            }))
    }

    /// With `[acme.dane]`: a key (PEM), `None` when it is not made yet.
    pub fn dane_key(&self, which: super::roll::Which) -> io::Result<Option<String>> {
        read_optional(&self.dir.join(key_file(which)))
    }

    pub fn save_dane_key(&self, which: super::roll::Which, pem: &str) -> io::Result<()> {
        self.write(key_file(which), pem.as_bytes(), 0o600)
    }

    /// The next key becomes the current one (one rename).
    pub fn promote_next_key(&self) -> io::Result<()> {
        fs::rename(self.dir.join(NEXT_KEY), self.dir.join(CURRENT_KEY))?;
        fs::File::open(&self.dir)?.sync_all()
    }

    /// Installs a new key and chain in one rename.
    pub fn install(&self, key_pem: &str, chain_pem: &str) -> io::Result<()> {
        let mut both = String::with_capacity(key_pem.len() + chain_pem.len() + 1);
        both.push_str(key_pem.trim_end());
        both.push('\n');
        both.push_str(chain_pem.trim_start());
        self.write(CERTIFICATE, both.as_bytes(), 0o600)
    }

    /// The stored certificate's facts; `None` when there is none.
    pub fn certificate(&self) -> io::Result<Option<Certificate>> {
        let Some(text) = read_optional(&self.certificate_path())? else {
            return Ok(None);
        };
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", self.certificate_path().display()),
            )
        };
        let leaf = pem::parse_many(&text)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or_else(|| bad("no certificate".into()))?;
        facts(leaf.contents()).map(Some).map_err(bad)
    }

    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.new"));
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.dir)?.sync_all()
    }
}

fn key_file(which: super::roll::Which) -> &'static str {
    match which {
        super::roll::Which::Current => CURRENT_KEY,
        super::roll::Which::Next => NEXT_KEY,
    }
}

/// The SHA-256 of a key's SubjectPublicKeyInfo, hex: its TLSA `3 1 1`
/// data.
pub fn spki_sha256(key: &rcgen::KeyPair) -> String {
    use rcgen::PublicKeyData as _;
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key.subject_public_key_info());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The facts of a DER certificate.
pub fn facts(der: &[u8]) -> Result<Certificate, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    let spki = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    Ok(Certificate {
        names,
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spki_sha256: spki.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
    })
}

fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_whole_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sealgate-acme-store-{}", std::process::id()));
        let store = Store::new(dir.clone());
        assert_eq!(store.state().unwrap(), State::default());
        assert!(store.certificate().unwrap().is_none());
        let key = crate::cert::generate_key("ecdsa-p256", false).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["mx1.example.org".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        store.install(&key.serialize_pem(), &cert.pem()).unwrap();
        let mode = fs::metadata(store.certificate_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let facts = store.certificate().unwrap().unwrap();
        assert_eq!(facts.names, ["mx1.example.org"]);
        assert_eq!(
            store.key_pem().unwrap().unwrap().trim(),
            key.serialize_pem().trim()
        );
        // No temporary file is left.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [CERTIFICATE]);
        let state = State {
            failures: 2,
            ..State::default()
        };
        store.save_state(&state).unwrap();
        assert_eq!(store.state().unwrap(), state);
        fs::remove_dir_all(&dir).unwrap();
    }
}
