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
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, Hash,
)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailFlags {
    /// `BODY=8BITMIME` was declared (RFC 6152): declared again, or
    /// refused, on the way out.
    pub body_8bit: bool,
    pub tls: TlsRequest,
    /// A TLS report (RFC 8460) the gateway made: no report is ever made
    /// about its own delivery (§5.3.1, no report loops).
    pub tls_report: bool,
    /// `MAIL FROM:<…> SMTPUTF8` (RFC 6531 §3.4): the envelope or the
    /// headers may hold UTF-8. Sent on with SMTPUTF8, downgraded to
    /// A-labels where nothing else needs UTF-8, or bounced with `5.6.7`.
    pub smtputf8: bool,
}

impl MailFlags {
    /// Bit 0: 8BITMIME; bits 1-2: the TLS request (1 REQUIRETLS, 2
    /// TLS-Required: No); bit 3: a TLS report; bit 4: SMTPUTF8. Old
    /// records wrote 0 or 1.
    pub fn to_byte(self) -> u8 {
        let tls = match self.tls {
            TlsRequest::Default => 0,
            TlsRequest::Required => 1,
            TlsRequest::NotRequired => 2,
        };
        u8::from(self.body_8bit)
            | tls << 1
            | u8::from(self.tls_report) << 3
            | u8::from(self.smtputf8) << 4
    }

    /// `None` for bits no version wrote (a damaged record).
    pub fn from_byte(b: u8) -> Option<MailFlags> {
        if b & !0b1_1111 != 0 {
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
            smtputf8: b & 0b1_0000 != 0,
        })
    }
}

/// RFC 3461 §4.3 `RET`: what a failure notification returns of the
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// The DSN request of a message as a whole (RFC 3461 §4.3, §4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageDsn {
    pub ret: Option<Ret>,
    /// `ENVID`, xtext-decoded: the sender's name for the transaction,
    /// given back in every notification (`Original-Envelope-Id`).
    pub envid: Option<String>,
}

/// RFC 3461 §4.1 `NOTIFY` of one recipient.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Notify {
    /// Not given: failures are reported, nothing else (§4.1: "as if
    /// NOTIFY=FAILURE" for the MTA's default, delays not announced).
    #[default]
    Default,
    /// `NOTIFY=NEVER`: no notification of any kind.
    Never,
    /// `NOTIFY=` one or more of SUCCESS, FAILURE, DELAY.
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

impl Notify {
    /// A failure of this recipient is reported to the sender.
    pub fn failure(self) -> bool {
        match self {
            Notify::Default => true,
            Notify::Never => false,
            Notify::On { failure, .. } => failure,
        }
    }

    pub fn success(self) -> bool {
        match self {
            Notify::Default | Notify::Never => false,
            Notify::On { success, .. } => success,
        }
    }

    pub fn delay(self) -> bool {
        match self {
            Notify::Default | Notify::Never => false,
            Notify::On { delay, .. } => delay,
        }
    }

    /// The parameter's value as RFC 3461 writes it (`None` when not
    /// given).
    pub fn value(self) -> Option<String> {
        match self {
            Notify::Default => None,
            Notify::Never => Some("NEVER".into()),
            Notify::On {
                success,
                failure,
                delay,
            } => {
                let words: Vec<&str> =
                    [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                        .into_iter()
                        .filter_map(|(on, w)| on.then_some(w))
                        .collect();
                Some(words.join(","))
            }
        }
    }

    /// One octet in the journal: 0 not given, 1 NEVER, else 0x80 with
    /// bit 0 SUCCESS, bit 1 FAILURE, bit 2 DELAY.
    pub fn to_byte(self) -> u8 {
        match self {
            Notify::Default => 0,
            Notify::Never => 1,
            Notify::On {
                success,
                failure,
                delay,
            } => 0x80 | u8::from(success) | u8::from(failure) << 1 | u8::from(delay) << 2,
        }
    }

    pub fn from_byte(b: u8) -> Option<Notify> {
        match b {
            0 => Some(Notify::Default),
            1 => Some(Notify::Never),
            b if b & 0x80 != 0 && b & 0x78 == 0 && b & 0b111 != 0 => Some(Notify::On {
                success: b & 1 != 0,
                failure: b & 2 != 0,
                delay: b & 4 != 0,
            }),
            _ => None,
        }
    }
}

/// RFC 3461 §4.2 `ORCPT`: the recipient as the sender first gave it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Orcpt {
    /// The address type, `rfc822` or `utf-8` (RFC 6533), as given.
    pub kind: String,
    /// The address, decoded from xtext (or RFC 6533's unitext).
    pub address: String,
}

/// What one recipient asked to be told (RFC 3461 §4.1, §4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RcptDsn {
    pub notify: Notify,
    pub orcpt: Option<Orcpt>,
}

/// The fields of log lines and `sealgate queue show`: `, notify=…` and
/// `, orcpt=type;xtext` where the recipient gave them (printable ASCII,
/// as on the wire).
impl std::fmt::Display for RcptDsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(n) = self.notify.value() {
            write!(f, ", notify={n}")?;
        }
        if let Some(o) = &self.orcpt {
            write!(f, ", orcpt={}", orcpt_encode(o))?;
        }
        Ok(())
    }
}

/// The arrival log line's fields: `, ret=…` and `, envid=xtext` where the
/// sender gave them.
impl std::fmt::Display for MessageDsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = self.ret {
            write!(f, ", ret={}", r.as_str())?;
        }
        if let Some(e) = &self.envid {
            write!(f, ", envid={}", xtext_encode(e))?;
        }
        Ok(())
    }
}

/// One recipient of a message: its address and its DSN request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub dsn: RcptDsn,
}

impl Recipient {
    /// A recipient that asked for nothing.
    pub fn plain(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            dsn: RcptDsn::default(),
        }
    }
}

impl From<&str> for Recipient {
    fn from(address: &str) -> Recipient {
        Recipient::plain(address)
    }
}

impl PartialEq<&str> for Recipient {
    fn eq(&self, other: &&str) -> bool {
        self.address == *other
    }
}

/// RFC 3461 §4: xtext, `+HH` for `+`, `=`, and octets outside `!`..`~`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// An ORCPT value as RFC 3461 §4.2 writes it, `type;xtext`: for RFC
/// 6533's `utf-8` type, a character outside printable ASCII (and `+`,
/// `=`, `\`) as `\x{HEX}`; for any other type, xtext.
pub fn orcpt_encode(o: &Orcpt) -> String {
    let address = if o.kind.eq_ignore_ascii_case("utf-8") {
        let mut out = String::with_capacity(o.address.len());
        for c in o.address.chars() {
            if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
                out.push(c);
            } else {
                out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
            }
        }
        out
    } else {
        xtext_encode(&o.address)
    };
    format!("{};{address}", o.kind)
}

/// xtext decoded; also RFC 6533 §3's `\x{HEX}` for a code point, as the
/// utf-8 address type writes it. `None` for a malformed `+` or `\x{`,
/// an octet xtext does not allow, or a result that is not UTF-8.
pub fn xtext_decode(s: &str) -> Option<String> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'\\' if b.get(i + 1) == Some(&b'x') && b.get(i + 2) == Some(&b'{') => {
                let end = s[i + 3..].find('}')? + i + 3;
                let cp = u32::from_str_radix(&s[i + 3..end], 16).ok()?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(char::from_u32(cp)?.encode_utf8(&mut buf).as_bytes());
                i = end + 1;
            }
            // RFC 6533 §3: unitext allows UTF-8 as it is.
            c if (b'!'..=b'~').contains(&c) && c != b'=' => {
                out.push(c);
                i += 1;
            }
            c if c >= 0x80 => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The envelope of one accepted message (RFC 5321 §2.3.1).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Reverse-path without brackets; empty for the null sender `<>`.
    pub from: String,
    pub recipients: Vec<Recipient>,
    pub helo: String,
    /// The client said EHLO (ESMTP) rather than HELO.
    pub esmtp: bool,
    pub flags: MailFlags,
    pub dsn: MessageDsn,
    /// The SMTP client; `None` for a message the gateway made itself (a
    /// delivery status notification).
    pub peer: Option<Peer>,
    pub tls: Option<TlsFacts>,
}

/// A complete message for the spool: envelope and data (CRLF line endings,
/// dot-unstuffed, without the Received header, which the glue prepends
/// once the spool has named the message).
#[derive(Debug)]
pub struct Message {
    pub envelope: Envelope,
    pub data: Vec<u8>,
}

/// Why a message could not be stored; the client hears which (RFC 3463).
/// The spool decides which (`spool::store_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Out of space, quota or file size: `452 4.3.1`.
    Full,
    /// Anything else: `451 4.3.0`.
    Other,
}

/// Message data held in memory by every session of the gateway, against
/// `limits.inflight_data` (shared by all shards; the sessions take and
/// give back, the spool's staging reads it).
#[derive(Debug, Default)]
pub struct DataBudget {
    used: std::sync::atomic::AtomicU64,
}

impl DataBudget {
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn take(&self, n: u64) {
        self.used.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn give(&self, n: u64) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An RFC 3463 enhanced status code, `class.subject.detail` (`5.1.1`):
/// what an attempt came to for a recipient, in logs (`dsn=`), the
/// journal and delivery status notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    pub class: StatusClass,
    /// RFC 3463 §2: `subject = 1*3digit`, `detail = 1*3digit`.
    pub subject: u16,
    pub detail: u16,
}

/// RFC 3463 §3.1: the three classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// `2.X.X`
    Success,
    /// `4.X.X`
    PersistentTransient,
    /// `5.X.X`
    Permanent,
}

impl StatusClass {
    pub fn digit(self) -> u8 {
        match self {
            StatusClass::Success => 2,
            StatusClass::PersistentTransient => 4,
            StatusClass::Permanent => 5,
        }
    }
}

impl EnhancedStatus {
    pub const fn new(class: StatusClass, subject: u16, detail: u16) -> EnhancedStatus {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// `X.Y.Z` as RFC 3463 §2 spells it (class 2, 4 or 5; subject and
    /// detail one to three digits); `None` otherwise.
    pub fn parse(text: &str) -> Option<EnhancedStatus> {
        let mut parts = text.split('.');
        let (c, s, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let number = |p: &str| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        };
        let class = match c {
            "2" => StatusClass::Success,
            "4" => StatusClass::PersistentTransient,
            "5" => StatusClass::Permanent,
            _ => return None,
        };
        Some(EnhancedStatus::new(class, number(s)?, number(d)?))
    }
}

impl std::fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class.digit(), self.subject, self.detail)
    }
}

/// Written as its text (`"5.1.1"`), in the control socket's answers.
impl serde::Serialize for EnhancedStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EnhancedStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EnhancedStatus::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3463 status: {text}")))
    }
}

/// Whether an outbound session uses STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Use it when offered; deliver in the clear otherwise.
    Opportunistic,
    /// Use it or do not deliver.
    Mandatory,
    /// Do not use it (a retry in the clear after a failed handshake).
    Off,
}

/// RFC 5321 §4.5.3.2 timeouts; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub greeting: std::time::Duration,
    pub command: std::time::Duration,
    pub data_start: std::time::Duration,
    pub data_block: std::time::Duration,
    pub data_end: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let m = |n: u64| std::time::Duration::from_secs(60 * n);
        // §4.5.3.2.1 initial 220: 5 min; .2 MAIL, .3 RCPT: 5 min; .4 DATA
        // initiation: 2 min; .5 data block: 3 min; .6 DATA termination: 10 min.
        Timeouts {
            greeting: m(5),
            command: m(5),
            data_start: m(2),
            data_block: m(3),
            data_end: m(10),
        }
    }
}

/// Peer-supplied text for a log line: control characters (ANSI escapes,
/// CR, LF) replaced, so a line stays one line and means what it says.
pub fn sanitize_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One message to deliver on this connection.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Reverse-path without brackets; empty for the null sender.
    pub from: String,
    pub recipients: Vec<Recipient>,
    /// The message as spooled: CRLF line endings, not dot-stuffed.
    pub data: std::sync::Arc<[u8]>,
    pub flags: MailFlags,
    /// RET and ENVID, passed on to a server that offers DSN.
    pub dsn: MessageDsn,
}

/// How delivery to one recipient went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again later.
    Temporary,
    /// Give up: bounce.
    Permanent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: EnhancedStatus,
    /// The server's reply or our reason, for logs and the DSN.
    pub detail: String,
    /// The server offered DSN, so the recipient's DSN request went on
    /// with the message (RFC 3461 §5.2.2): success is the next hop's to
    /// report. False for failures.
    pub next_hop_dsn: bool,
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

/// A domain of a mail address: an ASCII domain ([`valid_domain`]), or
/// one with U-labels (RFC 6531 §3.3) that IDNA2008/UTS 46 processing
/// (the `idna` crate, strict: STD3 rules and DNS lengths) turns into
/// A-labels.
pub fn valid_mail_domain(domain: &str) -> bool {
    if domain.is_ascii() {
        return valid_domain(domain);
    }
    to_a_labels(domain).is_some_and(|a| valid_domain(&a))
}

/// The domain in A-labels (`bücher.example` → `xn--bcher-kva.example`),
/// lower case; `None` when it is not a valid IDN.
pub fn to_a_labels(domain: &str) -> Option<String> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    idna::domain_to_ascii_strict(d).ok()
}

/// The domain in U-labels where it has any (`xn--bcher-kva.example` →
/// `bücher.example`), UTS 46 mapped (lower case), as an SMTPUTF8 address
/// keeps it; a domain that is not a valid IDN comes back as it is.
pub fn to_u_labels(domain: &str) -> String {
    let (u, result) = idna::domain_to_unicode(domain);
    match result {
        Ok(()) => u,
        Err(_) => domain.to_string(),
    }
}

/// The one form domains are compared in everywhere (accept_domains,
/// profiles' sender domains, routes, postures): A-labels, lower case,
/// without a trailing dot (RFC 5321 §2.4 case, RFC 1034 §3.1 the dot,
/// RFC 5890 §2.3.2.1 the A-label as the form to compare). A domain that
/// is not a valid IDN keeps its lower-cased text (it matches nothing).
pub fn canonical_domain(domain: &str) -> String {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_ascii() {
        return d.to_ascii_lowercase();
    }
    to_a_labels(d).unwrap_or_else(|| d.to_lowercase())
}

/// An address with its domain in A-labels, for a server that does not
/// offer SMTPUTF8 (RFC 6531 §3.2); `None` when the local part is not
/// ASCII, and so cannot be sent without SMTPUTF8.
pub fn ascii_address(address: &str) -> Option<String> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address.is_ascii().then(|| address.to_string());
    };
    if !local.is_ascii() {
        return None;
    }
    if domain.is_ascii() {
        return Some(address.to_string());
    }
    Some(format!("{local}@{}", to_a_labels(domain)?))
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

/// RFC 5322 §3.3 date-time in UTC, e.g. `Fri, 27 Nov 2026 18:35:29 +0000`
/// (`time`'s RFC 2822 format, which RFC 5322 keeps).
pub fn rfc5322_date(at: std::time::SystemTime) -> String {
    use time::format_description::well_known::Rfc2822;
    let t = time::OffsetDateTime::from(at.max(std::time::UNIX_EPOCH));
    // Every date after 1900 formats.
    t.format(&Rfc2822).unwrap_or_default()
}

/// An error text as a sentence: a library that prints a value by its Rust
/// shape (`UnsupportedSignatureAlgorithmForPublicKeyContext { … }`,
/// `Temporary("…")`, `Tls12NotOffered`) gets words instead — the
/// identifier split into lower-case words (a trailing `Context` dropped),
/// a tuple's quoted text kept, a struct's fields left out.
pub fn plain_error(text: &str) -> String {
    fn words(ident: &str) -> String {
        let ident = ident.strip_suffix("Context").unwrap_or(ident);
        let mut out = String::new();
        for (i, c) in ident.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push(' ');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_uppercase()) {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let len = from
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(from.len());
        let (ident, after) = from.split_at(len);
        let camel = ident.chars().skip(1).any(|c| c.is_ascii_uppercase())
            && ident.chars().any(|c| c.is_ascii_lowercase());
        if let Some(fields) = after.strip_prefix(" {") {
            // A struct: its name, without the fields.
            out.push_str(&words(ident));
            let mut depth = 1;
            let mut end = fields.len();
            for (i, c) in fields.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &fields[end..];
        } else if let Some(inner) = after.strip_prefix("(\"") {
            // A tuple around text: the name, then the text.
            let close = inner.find("\")").unwrap_or(inner.len());
            out.push_str(&words(ident));
            out.push_str(": ");
            out.push_str(&inner[..close]);
            rest = inner.get(close + 2..).unwrap_or("");
        } else if camel {
            out.push_str(&words(ident));
            rest = after;
        } else {
            out.push_str(ident);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A Unix time as RFC 3339 in UTC, `2026-12-01T12:00:00Z` (TLS reports,
/// the status page), by `time`'s RFC 3339 format.
pub fn rfc3339(t: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    let d =
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // Whole seconds in years 0000–9999 always format.
    d.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_rfc5322() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_804_529);
        assert_eq!(rfc5322_date(t), "Fri, 27 Nov 2026 18:35:29 +0000");
        assert_eq!(
            rfc5322_date(std::time::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn rust_shapes_become_words() {
        assert_eq!(
            plain_error("invalid peer certificate: UnsupportedSignatureAlgorithmForPublicKeyContext { signature_algorithm_id: [6, 8, 42], supported_algorithms: [] }"),
            "invalid peer certificate: unsupported signature algorithm for public key"
        );
        assert_eq!(
            plain_error("Temporary(\"example.com: proto error: request timed out\")"),
            "temporary: example.com: proto error: request timed out"
        );
        assert_eq!(
            plain_error("peer is incompatible: Tls12NotOffered"),
            "peer is incompatible: tls12 not offered"
        );
        // Plain sentences stay as they are.
        let plain = "TLS is required, but was not offered by the host mx.example (RFC 3207)";
        assert_eq!(plain_error(plain), plain);
    }

    /// RFC 3463 §2: class 2, 4 or 5, then one to three digits twice.
    #[test]
    fn enhanced_status_codes_parse_and_print() {
        for ok in ["2.0.0", "4.4.1", "5.7.30", "5.1.10", "4.999.999"] {
            let s = EnhancedStatus::parse(ok).unwrap_or_else(|| panic!("{ok}"));
            assert_eq!(s.to_string(), ok);
        }
        for bad in [
            "3.0.0", "5.1", "5.1.1.1", "5..1", "5.1000.1", "5.a.1", "", "4.4.1 ",
        ] {
            assert_eq!(EnhancedStatus::parse(bad), None, "{bad:?}");
        }
        let s = EnhancedStatus::new(StatusClass::Permanent, 7, 30);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"5.7.30\"");
        assert_eq!(serde_json::from_str::<EnhancedStatus>(&json).unwrap(), s);
    }

    /// One form for a domain everywhere: U-labels, A-labels, case, dot.
    #[test]
    fn domains_compare_in_one_canonical_form() {
        assert_eq!(canonical_domain("Bücher.Example."), "xn--bcher-kva.example");
        assert_eq!(
            canonical_domain("XN--BCHER-KVA.example"),
            "xn--bcher-kva.example"
        );
        assert!(valid_mail_domain("bücher.example"));
        assert!(!valid_mail_domain("bü cher.example"));
        assert_eq!(to_u_labels("xn--bcher-kva.example"), "bücher.example");
        assert_eq!(
            ascii_address("a@bücher.example").as_deref(),
            Some("a@xn--bcher-kva.example")
        );
        assert_eq!(ascii_address("é@x.example"), None);
        for s in ["a+b=c d", "é", "plain"] {
            assert_eq!(xtext_decode(&xtext_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(xtext_decode("\\x{E9}@x"), Some("é@x".into()));
        for n in [
            Notify::Default,
            Notify::Never,
            Notify::On {
                success: true,
                failure: false,
                delay: true,
            },
        ] {
            assert_eq!(Notify::from_byte(n.to_byte()), Some(n));
        }
    }

    #[test]
    fn mail_flags_round_trip_through_their_octet() {
        for body_8bit in [false, true] {
            for tls in [
                TlsRequest::Default,
                TlsRequest::Required,
                TlsRequest::NotRequired,
            ] {
                for tls_report in [false, true] {
                    for smtputf8 in [false, true] {
                        let f = MailFlags {
                            body_8bit,
                            tls,
                            tls_report,
                            smtputf8,
                        };
                        assert_eq!(MailFlags::from_byte(f.to_byte()), Some(f));
                    }
                }
            }
        }
        // What earlier versions wrote: the 8BITMIME boolean.
        assert_eq!(MailFlags::from_byte(0), Some(MailFlags::default()));
        assert!(MailFlags::from_byte(1).is_some_and(|f| f.body_8bit));
        // Bits nobody wrote: damage.
        assert_eq!(MailFlags::from_byte(0b110), None);
        assert_eq!(MailFlags::from_byte(0x20), None);
    }
}
