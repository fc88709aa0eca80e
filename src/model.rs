//! The nouns every part of sealgate shares, and the syntax rules that
//! define them: the client and its connection, the TLS it negotiated and
//! its certificate, the envelope of a message, domain names, certificate
//! name matching, and what to do with bare line endings. This module
//! depends on nothing else in the crate, so that the data can flow
//! accept → session → TLS → policy → spool → delivery → outbound without
//! any of them importing another's internals.

use std::net::IpAddr;

/// Facts about the client connection, known at accept.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    pub port: u16,
    /// Forward-confirmed reverse DNS name, when looked up.
    pub name: Option<String>,
}

/// Client certificate verification result, as shown in the Received header
/// (`verify=OK|FAIL|NO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVerify {
    /// A client certificate was presented and verified.
    Ok,
    /// A certificate was presented but did not verify.
    Fail,
    /// No certificate was requested or presented.
    No,
}

impl ClientVerify {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientVerify::Ok => "OK",
            ClientVerify::Fail => "FAIL",
            ClientVerify::No => "NO",
        }
    }
}

/// What the TLS layer negotiated; filled in by the connection glue.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The IANA-style suite name rustls reports, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Symmetric key bits of the suite.
    pub bits: u16,
    pub verify: ClientVerify,
    /// The client's certificate, when it presented one.
    pub client_cert: Option<ClientCert>,
}

impl TlsFacts {
    /// TLS 1.3 with a 256-bit cipher, as a session is told of it without a
    /// real handshake (`sealgate explain`, in-memory tests): verified when
    /// a client certificate is given.
    pub fn assumed(client_cert: Option<ClientCert>) -> TlsFacts {
        TlsFacts {
            version: "TLSv1.3",
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            bits: 256,
            verify: if client_cert.is_some() {
                ClientVerify::Ok
            } else {
                ClientVerify::No
            },
            client_cert,
        }
    }
}

/// The `client=` of the log lines: `[ip]:port`, or `local` for a message
/// the gateway made itself.
pub struct ClientText<'a>(pub Option<&'a Peer>);

impl std::fmt::Display for ClientText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, "[{}]:{}", p.ip, p.port),
            None => f.write_str("local"),
        }
    }
}

/// What the sender asked of TLS for a message (RFC 8689).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsRequest {
    /// Nothing: the gateway's and the recipients' policies apply.
    #[default]
    Default,
    /// `MAIL FROM:<…> REQUIRETLS` (§4): every hop authenticated TLS to a
    /// server that offers REQUIRETLS itself, or a bounce with `5.7.30`.
    Required,
    /// A `TLS-Required: No` header (§5): the recipients' policies (DANE,
    /// MTA-STS) may be set aside so that the message gets through.
    NotRequired,
}

impl TlsRequest {
    /// As `sealgate queue show` and the logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsRequest::Default => "default",
            TlsRequest::Required => "REQUIRETLS",
            TlsRequest::NotRequired => "TLS-Required: No",
        }
    }
}

/// The facts about a message, besides its envelope, that its delivery
/// follows; kept with it in the spool (one octet, docs/spool.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailFlags {
    /// `BODY=8BITMIME` was declared (RFC 6152): declared again, or
    /// refused, on the way out.
    pub body_8bit: bool,
    pub tls: TlsRequest,
    /// A TLS report (RFC 8460) the gateway made: no report is ever made
    /// about its own delivery (§5.3.1, no report loops).
    pub tls_report: bool,
}

impl MailFlags {
    /// Bit 0: 8BITMIME; bits 1-2: the TLS request (1 REQUIRETLS, 2
    /// TLS-Required: No); bit 3: a TLS report. Old records wrote 0 or 1.
    pub fn to_byte(self) -> u8 {
        let tls = match self.tls {
            TlsRequest::Default => 0,
            TlsRequest::Required => 1,
            TlsRequest::NotRequired => 2,
        };
        u8::from(self.body_8bit) | tls << 1 | u8::from(self.tls_report) << 3
    }

    /// `None` for bits no version wrote (a damaged record).
    pub fn from_byte(b: u8) -> Option<MailFlags> {
        if b & !0b1111 != 0 {
            return None;
        }
        let tls = match (b >> 1) & 0b11 {
            0 => TlsRequest::Default,
            1 => TlsRequest::Required,
            2 => TlsRequest::NotRequired,
            _ => return None,
        };
        Some(MailFlags {
            body_8bit: b & 1 == 1,
            tls,
            tls_report: b & 0b1000 != 0,
        })
    }
}

/// The envelope of one accepted message (RFC 5321 §2.3.1).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Reverse-path without brackets; empty for the null sender `<>`.
    pub from: String,
    pub recipients: Vec<String>,
    pub helo: String,
    /// The client said EHLO (ESMTP) rather than HELO.
    pub esmtp: bool,
    pub flags: MailFlags,
    /// The SMTP client; `None` for a message the gateway made itself (a
    /// delivery status notification).
    pub peer: Option<Peer>,
    pub tls: Option<TlsFacts>,
}

/// Why a client's certificate chain is not verified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unverified {
    #[error("no CA store configured (tls.ca_files, tls.system_roots)")]
    NoCaStore,
    /// The chain does not verify against the CA store (rustls's reason).
    #[error("{0}")]
    Rejected(rustls::Error),
}

/// What sealgate learned of the client's certificate, after the handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    /// Whether the chain verifies against the CA store, and why not.
    pub verified: Result<(), Unverified>,
    /// Subject alternative names of type dNSName, lower-cased.
    pub dns_names: Vec<String>,
    pub common_name: Option<String>,
    /// The subject, for logs.
    pub subject: String,
    pub cert_sha256: [u8; 32],
    pub spki_sha256: [u8; 32],
}

/// RFC 5321 §4.1.2 Domain: dot-separated labels of letters, digits and
/// hyphens, at most 255 octets. A trailing dot is tolerated.
pub fn valid_domain(domain: &str) -> bool {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    !d.is_empty()
        && d.len() <= 255
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `presented` may be a certificate wildcard (`*.example.com`: one label,
/// RFC 6125 §6.4.3); `want` may be a configured wildcard (any name below).
pub fn name_matches(want: &str, presented: &str) -> bool {
    let presented = presented.strip_suffix('.').unwrap_or(presented);
    if want == presented {
        return true;
    }
    if let Some(suffix) = want.strip_prefix("*.") {
        let below = presented
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1);
        return below || presented == want;
    }
    if let Some(suffix) = presented.strip_prefix("*.") {
        return want
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix);
    }
    false
}

/// What to do with a CR or LF that is not part of a CRLF pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareLineEndings {
    #[default]
    Reject,
    Normalize,
}

/// One TLSA record (RFC 6698 §2.1): certificate usage, selector, matching
/// type and the association data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// RFC 7672 §3.1: only DANE-TA(2) and DANE-EE(3) are used for SMTP;
    /// selectors Cert(0) and SPKI(1); matching Full(0), SHA2-256(1) and
    /// SHA2-512(2). Anything else is "unusable".
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }
}

/// What the recipient's DNS says about authenticating one MX host
/// (RFC 7672 §2.2), from DNSSEC-validated lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dane {
    /// DANE does not apply: DNSSEC is off, the MX or address records are
    /// insecure (unsigned), or a secure lookup found no TLSA records.
    None,
    /// A secure TLSA RRset with usable records: TLS is required and the
    /// certificate must match one of them. `names`: the reference
    /// identifiers a DANE-TA certificate must carry (RFC 7672 §3.2.2: the
    /// TLSA base domain, and the MX host name when that was a CNAME).
    Usable {
        records: Vec<Tlsa>,
        names: Vec<String>,
    },
    /// A secure TLSA RRset without one usable record: TLS is required, the
    /// certificate is not checked (RFC 7672 §2.2).
    Unusable,
    /// The lookup failed (SERVFAIL, timeout) or the answer was bogus: no
    /// connection, the message waits (RFC 7672 §2.2: never in the clear).
    Failed(DaneFailure),
}

/// Why a DANE lookup gave no answer to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaneFailure {
    /// The validating resolver answered SERVFAIL: bogus signatures, or a
    /// server it could not reach.
    #[error("DNSSEC lookup of {name} failed (SERVFAIL or bogus)")]
    ServFail { name: String },
    /// No answer at all.
    #[error("DNSSEC lookup of {name} failed: {reason}")]
    Unanswered { name: String, reason: String },
}

/// What the recipient domain's MTA-STS policy (RFC 8461) says of one MX
/// host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sts {
    /// No policy applies (none published, `mode: none`, or DANE decides
    /// for this host, RFC 8461 §2).
    None,
    /// `mode: enforce`: TLS with a certificate that chains to a trusted
    /// root and names the host; the host matched the policy's patterns.
    Enforce,
    /// `mode: testing` (or enforcement in report-only mode): checked and
    /// reported only. `mx_ok`: the host matched the patterns.
    Testing { mx_ok: bool },
}

/// Unix seconds now (0 before the epoch): the clock of journal records,
/// queue times and policy caches.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A Unix time as RFC 3339 in UTC, `2026-12-01T12:00:00Z` (TLS reports,
/// the status page).
pub fn rfc3339(t: i64) -> String {
    let d =
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_flags_round_trip_through_their_octet() {
        for body_8bit in [false, true] {
            for tls in [
                TlsRequest::Default,
                TlsRequest::Required,
                TlsRequest::NotRequired,
            ] {
                for tls_report in [false, true] {
                    let f = MailFlags {
                        body_8bit,
                        tls,
                        tls_report,
                    };
                    assert_eq!(MailFlags::from_byte(f.to_byte()), Some(f));
                }
            }
        }
        // What earlier versions wrote: the 8BITMIME boolean.
        assert_eq!(MailFlags::from_byte(0), Some(MailFlags::default()));
        assert!(MailFlags::from_byte(1).is_some_and(|f| f.body_8bit));
        // Bits nobody wrote: damage.
        assert_eq!(MailFlags::from_byte(0b110), None);
        assert_eq!(MailFlags::from_byte(0x10), None);
    }
}
