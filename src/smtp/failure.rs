//! How an outbound SMTP session can fail, and the outcome each failure
//! means for the recipients it leaves undelivered: the vocabulary the
//! client speaks and delivery, `probe` and the connection glue read.
//! Which TLS-report result a failure counts as is delivery's decision
//! (`delivery::attempt`), not the client's.

use crate::model::{EnhancedStatus, Outcome, StatusClass, Verdict};

use super::reply_parse::Parsed;

/// A failure of TLS other than the handshake itself: never retried in the
/// clear.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsFailure {
    /// The route's rules refuse the server's certificate.
    #[error(transparent)]
    Certificate(#[from] crate::tls::outbound::Refusal),
    /// The host cannot be named in a TLS ClientHello.
    #[error("bad server name {host}: {error}")]
    ServerName { host: String, error: String },
    /// The certificate matches none of the host's DANE TLSA records.
    #[error("DANE: {0}")]
    Dane(#[from] crate::tls::dane::DaneRefusal),
    /// An enforced MTA-STS policy needs a certificate that chains to a
    /// trusted root and names the MX host (RFC 8461 §4.2).
    #[error("MTA-STS: the certificate of {host} is {trust}; the policy needs a valid one naming the host")]
    Sts { host: String, trust: &'static str },
    /// rustls would not start a connection.
    #[error("{}", crate::model::plain_error(&.0.to_string()))]
    Setup(rustls::Error),
    /// Reading TLS records or the plaintext inside them failed.
    #[error("{0}")]
    Records(String),
}

/// Why a session ended before every message was done.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The server's greeting was not 220.
    Greeting(Parsed),
    /// EHLO and HELO were both refused.
    Hello(Parsed),
    /// TLS is mandatory and the server did not offer STARTTLS.
    TlsNotOffered,
    /// The server refused STARTTLS (with TLS mandatory).
    StartTlsRefused(Parsed),
    /// The TLS handshake itself failed (rustls's error): with opportunistic
    /// TLS the same host is tried again in the clear.
    Handshake(rustls::Error),
    /// TLS was set up but the connection failed inside it, or the server
    /// did not meet the route's TLS policy (certificate, name, pin): never
    /// retried in the clear.
    Tls(TlsFailure),
    /// The server broke the protocol (bytes after 220 to STARTTLS, a
    /// malformed reply, a reply when none was due).
    Protocol(String),
    /// No reply within the RFC 5321 timeout for this stage.
    Timeout(&'static str),
    /// The connection closed or failed.
    Connection(String),
    /// The message is bigger than the server's SIZE.
    TooBig { size: usize, limit: u64 },
    /// The host's DANE lookup failed: it is not tried (RFC 7672 §2.2).
    Dane(crate::model::DaneFailure),
    /// A REQUIRETLS message cannot go to this host (RFC 8689 §4.2.1).
    RequireTls(crate::policy::requiretls::Refused),
    /// The message needs SMTPUTF8 (a UTF-8 local part, or UTF-8 in its
    /// headers) and the host does not offer it (RFC 6531 §3.2).
    NeedsSmtpUtf8(Utf8Need),
}

/// What of a message needs SMTPUTF8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utf8Need {
    Sender,
    Recipient,
    Headers,
}

/// The outcome a session failure means for every recipient it leaves
/// undelivered. Exhaustive: a new failure must say what it means.
impl Failure {
    pub fn outcome(&self) -> Outcome {
        let f = self;
        // Every failure here is persistent-transient (4.X.X).
        let temp = |(subject, detail_code): (u16, u16), detail: String| Outcome {
            verdict: Verdict::Temporary,
            status: EnhancedStatus::new(StatusClass::PersistentTransient, subject, detail_code),
            detail,
            next_hop_dsn: false,
        };
        match f {
            // A refusing greeting or HELO is about this host, not the message:
            // try another host or later.
            Failure::Greeting(r) => temp(
                (4, 0),
                format!("host refused to talk to us: {}", r.one_line()),
            ),
            Failure::Hello(r) => temp(
                (4, 0),
                format!("host refused our greeting: {}", r.one_line()),
            ),
            Failure::TlsNotOffered => temp(
                (7, 4),
                "TLS is required, but was not offered by the host".into(),
            ),
            Failure::StartTlsRefused(r) => temp(
                (7, 4),
                format!(
                    "TLS is required, but the host refused STARTTLS: {}",
                    r.one_line()
                ),
            ),
            Failure::Handshake(why) => temp(
                (7, 5),
                format!(
                    "TLS failed: handshake failed: {}",
                    crate::model::plain_error(&why.to_string())
                ),
            ),
            Failure::Tls(why) => temp((7, 5), format!("TLS failed: {why}")),
            Failure::Protocol(why) => temp((5, 0), format!("protocol error: {why}")),
            Failure::Timeout(stage) => temp((4, 2), format!("timeout {stage}")),
            Failure::Connection(why) => temp((4, 1), format!("connection failed: {why}")),
            // RFC 7672 §2.2: a bogus or failed TLSA lookup defers.
            Failure::Dane(why) => temp((7, 5), format!("DANE: {why}")),
            // RFC 8689 §6: 5.7.30, REQUIRETLS support required.
            Failure::RequireTls(why) => Outcome {
                verdict: Verdict::Permanent,
                status: EnhancedStatus::new(StatusClass::Permanent, 7, 30),
                detail: format!("REQUIRETLS support required: {why}"),
                next_hop_dsn: false,
            },
            Failure::TooBig { size, limit } => Outcome {
                verdict: Verdict::Permanent,
                status: EnhancedStatus::new(StatusClass::Permanent, 3, 4),
                detail: format!("message size {size} exceeds the host's limit of {limit}"),
                next_hop_dsn: false,
            },
            // RFC 6531 §3.2 (RFC 5248's registry): 5.6.7.
            Failure::NeedsSmtpUtf8(need) => Outcome {
                verdict: Verdict::Permanent,
                status: EnhancedStatus::new(StatusClass::Permanent, 6, 7),
                detail: format!(
                    "SMTPUTF8 support required: {} UTF-8 and the host does not offer SMTPUTF8",
                    match need {
                        Utf8Need::Sender => "the sender address is",
                        Utf8Need::Recipient => "the recipient address is",
                        Utf8Need::Headers => "the message headers are",
                    }
                ),
                next_hop_dsn: false,
            },
        }
    }
}
