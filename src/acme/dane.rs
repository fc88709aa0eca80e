//! `[acme.dane]`: the TLSA `3 1 1` records of the certificate's keys,
//! written by DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945), one
//! record per key at `_PORT._tcp.NAME` for every listen port and name
//! (RFC 6698 §3, RFC 7672 §3.1.3). Adding a record that exists and
//! deleting one that does not are no-ops on the server (RFC 2136 §3.4.2),
//! so a step repeated after a crash does no harm.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector, TLSA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The TSIG algorithms offered (RFC 8945 §6: HMAC-SHA256 is the one to
/// use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, strum::IntoStaticStr)]
pub enum TsigAlg {
    #[default]
    #[serde(rename = "hmac-sha256")]
    #[strum(serialize = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    #[strum(serialize = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    #[strum(serialize = "hmac-sha512")]
    HmacSha512,
}

/// `[acme.dane]`, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct DaneSettings {
    pub update_server: SocketAddr,
    /// The zone's name, absolute (`example.org.`).
    pub zone: String,
    pub tsig_name: String,
    pub tsig_algorithm: TsigAlg,
    pub tsig_secret: Vec<u8>,
    /// The TTL of the records written.
    pub ttl: Duration,
    /// The ports of `[server] listen`.
    pub ports: Vec<u16>,
}

/// The secret stays out of printed settings; its length and a digest of
/// it tell two apart.
impl std::fmt::Debug for DaneSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.tsig_secret);
        f.debug_struct("DaneSettings")
            .field("update_server", &self.update_server)
            .field("zone", &self.zone)
            .field("tsig_name", &self.tsig_name)
            .field("tsig_algorithm", &self.tsig_algorithm)
            .field(
                "tsig_secret",
                &format!(
                    "({} octets, sha256 {:02x}{:02x}…)",
                    self.tsig_secret.len(),
                    digest.as_ref()[0],
                    digest.as_ref()[1]
                ),
            )
            .field("ttl", &self.ttl)
            .field("ports", &self.ports)
            .finish()
    }
}

impl DaneSettings {
    /// Every owner name of the records: `_PORT._tcp.NAME.`.
    pub fn owners(&self, domains: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for d in domains {
            for p in &self.ports {
                out.push(format!("_{p}._tcp.{}.", d.trim_end_matches('.')));
            }
        }
        out
    }

    pub fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)
    }
}

/// Why an UPDATE did not take.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("\"{0}\" is not a DNS name")]
    Name(String),
    #[error("the TSIG key {name}: {error}")]
    Key { name: String, error: String },
    #[error("cannot sign the UPDATE: {0}")]
    Sign(String),
    #[error("UPDATE to {server}: {error}")]
    Io {
        server: SocketAddr,
        error: std::io::Error,
    },
    #[error("UPDATE to {server}: the answer does not parse: {error}")]
    Garbled { server: SocketAddr, error: String },
    /// RFC 8945 §5.3: a response whose signature does not verify.
    #[error("UPDATE to {server}: the answer's TSIG does not verify: {error}")]
    Unverified { server: SocketAddr, error: String },
    /// RFC 2136 §2.2: the server refused (NOTAUTH: the TSIG key or its
    /// secret is wrong; REFUSED: not allowed to update the zone; NOTZONE:
    /// a name outside the zone).
    #[error("UPDATE to {server} refused: {code} ({}){hint}", mnemonic(*.code))]
    Refused {
        server: SocketAddr,
        code: ResponseCode,
        hint: &'static str,
    },
}

/// The RCODE's name as RFC 2136 §2.2 and RFC 8945 write it.
fn mnemonic(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}

/// Sends signed UPDATEs for one zone.
pub struct Updater {
    server: SocketAddr,
    zone: Name,
    signer: TSigner,
}

/// How long one UPDATE may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The record data of a key: the SHA-256 of its SubjectPublicKeyInfo.
fn tlsa(spki_sha256: &[u8]) -> RData {
    RData::TLSA(TLSA::new(
        CertUsage::DaneEe,
        Selector::Spki,
        Matching::Sha256,
        spki_sha256.to_vec(),
    ))
}

impl Updater {
    pub fn new(d: &DaneSettings) -> Result<Updater, UpdateError> {
        let zone = Name::from_ascii(&d.zone).map_err(|_| UpdateError::Name(d.zone.clone()))?;
        let key_name =
            Name::from_ascii(&d.tsig_name).map_err(|_| UpdateError::Name(d.tsig_name.clone()))?;
        let algorithm = match d.tsig_algorithm {
            TsigAlg::HmacSha256 => TsigAlgorithm::HmacSha256,
            TsigAlg::HmacSha384 => TsigAlgorithm::HmacSha384,
            TsigAlg::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        // RFC 8945 §5.2.3: 300 s of clock difference allowed.
        let signer =
            TSigner::new(d.tsig_secret.clone(), algorithm, key_name, 300).map_err(|e| {
                UpdateError::Key {
                    name: d.tsig_name.clone(),
                    error: e.to_string(),
                }
            })?;
        Ok(Updater {
            server: d.update_server,
            zone,
            signer,
        })
    }

    /// Adds the record for `spki_sha256` at every owner (RFC 2136 §2.5.1).
    pub fn publish(
        &self,
        owners: &[String],
        spki_sha256: &[u8],
        ttl: u32,
    ) -> Result<(), UpdateError> {
        self.update(owners, spki_sha256, Some(ttl))
    }

    /// Deletes the record for `spki_sha256` at every owner (RFC 2136
    /// §2.5.4: class NONE, TTL 0).
    pub fn remove(&self, owners: &[String], spki_sha256: &[u8]) -> Result<(), UpdateError> {
        self.update(owners, spki_sha256, None)
    }

    fn update(&self, owners: &[String], spki: &[u8], add: Option<u32>) -> Result<(), UpdateError> {
        let mut message = Message::new();
        message
            .set_id(rand_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        // RFC 2136 §2.3: the zone section names the zone (type SOA).
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        message.add_zone(zone);
        for owner in owners {
            let name = Name::from_ascii(owner).map_err(|_| UpdateError::Name(owner.clone()))?;
            let mut record = Record::from_rdata(name, add.unwrap_or(0), tlsa(spki));
            record.set_dns_class(if add.is_some() {
                DNSClass::IN
            } else {
                DNSClass::NONE
            });
            message.add_update(record);
        }
        let now = u32::try_from(crate::model::unix_now()).unwrap_or(u32::MAX);
        let mut verifier = message
            .finalize(&self.signer, now)
            .map_err(|e| UpdateError::Sign(e.to_string()))?;
        let bytes = message
            .to_vec()
            .map_err(|e| UpdateError::Sign(e.to_string()))?;
        let answer = self.exchange(&bytes)?;
        let server = self.server;
        let parsed = Message::from_vec(&answer).map_err(|e| UpdateError::Garbled {
            server,
            error: e.to_string(),
        })?;
        let code = parsed.response_code();
        if code != ResponseCode::NoError {
            let hint = match code {
                ResponseCode::NotAuth => {
                    " (the server does not accept the TSIG key: check tsig_name, tsig_algorithm and the secret)"
                }
                ResponseCode::Refused => " (the key may not update this zone: allow-update)",
                ResponseCode::NotZone => " (a name is outside the zone)",
                _ => "",
            };
            return Err(UpdateError::Refused { server, code, hint });
        }
        if let Some(verify) = verifier.as_mut() {
            verify(&answer).map_err(|e| UpdateError::Unverified {
                server,
                error: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// One message over TCP (RFC 1035 §4.2.2: a two-octet length first).
    fn exchange(&self, bytes: &[u8]) -> Result<Vec<u8>, UpdateError> {
        let server = self.server;
        let io = |error| UpdateError::Io { server, error };
        let mut stream = TcpStream::connect_timeout(&server, TIMEOUT).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let len = u16::try_from(bytes.len())
            .map_err(|_| io(std::io::Error::other("UPDATE larger than 64 KiB")))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).map_err(io)?;
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).map_err(io)?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(head))];
        stream.read_exact(&mut answer).map_err(io)?;
        Ok(answer)
    }
}

/// A message id (RFC 5452 §9.2: unpredictable).
fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u16::from_be_bytes(b)
}

/// `update_server`: `IP` (port 53) or `IP:port`.
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    crate::dns::parse_server(s)
}

/// A TSIG secret as `tsig-keygen` writes it: base64.
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|k| !k.is_empty())
}

/// Parses hex (the SPKI digests kept in the state file).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
