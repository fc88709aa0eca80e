//! The configuration file's schema (docs/configuration.md), as plain serde
//! structs: no logic here. Every section and field is optional and has the
//! default documented in docs/configuration.md; unknown keys are errors.
//! Fields that later checks refer back to are `Spanned`, so those errors
//! carry a line number too.

use serde::Deserialize;
use toml::Spanned;

use super::units::{BareLineEndings, CipherGrade, Level, LogFormat, Size, Span, TlsVersion};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct File {
    pub server: Server,
    pub limits: Limits,
    pub tls: Tls,
    pub log: Log,
    pub admin: Admin,
    pub queue: Queue,
    pub profile: Vec<Spanned<Profile>>,
    pub route: Vec<Spanned<Route>>,
    pub dns: Dns,
    pub outbound: Outbound,
    pub tls_rpt: TlsRpt,
    pub acme: Option<Acme>,
    pub fleet: Option<Fleet>,
}

/// `[fleet]`: the Redis store several gateways share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    #[serde(default = "unset")]
    pub redis: Spanned<String>,
    #[serde(default)]
    pub node: Option<Spanned<String>>,
    #[serde(default)]
    pub password_file: Option<Spanned<String>>,
}

/// `[acme]`: the certificate the gateway orders and renews itself (RFC
/// 8555).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    #[serde(default = "unset")]
    pub directory: Spanned<String>,
    #[serde(default)]
    pub ca_files: Vec<String>,
    #[serde(default)]
    pub contact: Vec<Spanned<String>>,
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
    #[serde(default)]
    pub challenge: crate::acme::Challenge,
    #[serde(default = "default_http_listen")]
    pub http_listen: Spanned<String>,
    #[serde(default = "default_tls_alpn_listen")]
    pub tls_alpn_listen: Spanned<String>,
    #[serde(default)]
    pub key: crate::acme::KeyKind,
    #[serde(default = "default_renew_before")]
    pub renew_before: Span,
    #[serde(default = "default_key_lifetime")]
    pub key_lifetime: Span,
    #[serde(default)]
    pub dane: Option<AcmeDane>,
}

/// `[acme.dane]`: the keys' TLSA records, written by DNS UPDATE.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeDane {
    #[serde(default = "unset")]
    pub update_server: Spanned<String>,
    #[serde(default = "unset")]
    pub zone: Spanned<String>,
    #[serde(default = "unset")]
    pub tsig_name: Spanned<String>,
    #[serde(default)]
    pub tsig_algorithm: crate::acme::dane::TsigAlg,
    #[serde(default)]
    pub tsig_secret: Option<Spanned<String>>,
    #[serde(default)]
    pub tsig_secret_file: Option<Spanned<String>>,
    #[serde(default = "default_dane_ttl")]
    pub ttl: Span,
}

fn default_dane_ttl() -> Span {
    Span(crate::acme::DEFAULT_DANE_TTL)
}

fn default_http_listen() -> Spanned<String> {
    Spanned::new(0..0, crate::acme::DEFAULT_HTTP_LISTEN.into())
}

fn default_tls_alpn_listen() -> Spanned<String> {
    Spanned::new(0..0, crate::acme::DEFAULT_TLS_ALPN_LISTEN.into())
}

fn default_renew_before() -> Span {
    Span(crate::acme::DEFAULT_RENEW_BEFORE)
}

fn default_key_lifetime() -> Span {
    Span(crate::acme::DEFAULT_KEY_LIFETIME)
}

/// `[tls_rpt]`: the TLS reports sealgate sends (RFC 8460).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsRpt {
    /// Send reports at all (sessions are recorded either way); unset: yes.
    pub send: Option<bool>,
    /// Only days with a failure; unset: yes.
    pub only_failures: Option<bool>,
    /// Policy domains never sent a report.
    pub suppress: Vec<String>,
    /// `organization-name`; unset: the host name.
    pub organization: Option<String>,
    /// `contact-info`; unset: `postmaster@HOST`.
    pub contact: Option<String>,
    /// The reports' `From:`; unset: `noreply-tlsrpt@HOST`.
    pub from: Option<String>,
    /// Reports go out over this long after midnight UTC; unset: 4h.
    pub spread: Option<Span>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Banner and Received name; empty = the system host name.
    pub hostname: Spanned<String>,
    pub listen: Vec<Spanned<String>>,
    /// 0 = one shard per core.
    pub shards: usize,
    pub spool_dir: String,
    pub accept_domains: Vec<Spanned<String>>,
    pub proxy_protocol_from: Vec<String>,
    /// Threads that write accepted messages to the spool, one journal
    /// each.
    pub spool_writers: usize,
    /// Octets per journal segment file.
    pub spool_segment_size: Size,
    /// Messages larger than this keep their octets in a file of their
    /// own, referenced from the journal.
    pub spool_large_message: Size,
    /// SO_INCOMING_CPU on the shards' listeners: a connection goes to the
    /// shard on the core that received it.
    pub steer_by_cpu: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            hostname: Spanned::new(0..0, String::new()),
            listen: vec![Spanned::new(0..0, "0.0.0.0:25".into())],
            shards: 0,
            spool_dir: "/var/spool/sealgate".into(),
            accept_domains: Vec::new(),
            proxy_protocol_from: Vec::new(),
            spool_writers: 2,
            spool_segment_size: Size(16 << 20),
            spool_large_message: Size(1 << 20),
            steer_by_cpu: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub message_size: Size,
    pub recipients: usize,
    /// Unset: 20,000, or what the open-file limit allows.
    pub connections: Option<usize>,
    pub connections_per_ip: usize,
    pub command_timeout: Span,
    pub data_timeout: Span,
    /// Octets per second, averaged over the DATA phase (0: off).
    pub min_data_rate: u64,
    /// Errors before a session is closed with 421.
    pub errors: usize,
    /// How long a stopping gateway waits for sessions in DATA.
    pub shutdown_timeout: Span,
    pub bare_line_endings: BareLineEndings,
    pub message_buffer: Size,
    pub inflight_data: Size,
}

impl Default for Limits {
    fn default() -> Self {
        let d = crate::policy::Limits::default();
        Limits {
            message_size: Size(d.message_size as u64),
            recipients: d.recipients,
            connections: None,
            connections_per_ip: d.connections_per_ip,
            command_timeout: Span(d.command_timeout),
            data_timeout: Span(d.data_timeout),
            min_data_rate: d.min_data_rate,
            errors: d.errors,
            shutdown_timeout: Span(d.shutdown_timeout),
            bare_line_endings: BareLineEndings::Reject,
            message_buffer: Size(d.message_buffer as u64),
            inflight_data: Size(d.inflight_data),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub certificates: Vec<Spanned<CertPair>>,
    pub client_certificate: Option<CertPair>,
    pub ca_files: Vec<String>,
    pub system_roots: bool,
    pub default_version: TlsVersion,
    /// Write a self-signed ECDSA P-256 certificate at the first
    /// `certificates` entry when neither of its files exists.
    pub generate_self_signed: bool,
    /// Key exchange groups by IANA name (default
    /// `crate::tls::DEFAULT_GROUPS`).
    pub groups: Option<Spanned<Vec<Spanned<String>>>>,
    /// How long one session-ticket key encrypts new tickets; `"0s"`: no
    /// resumption.
    pub ticket_lifetime: Spanned<Span>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            certificates: Vec::new(),
            client_certificate: None,
            ca_files: Vec::new(),
            system_roots: true,
            default_version: TlsVersion::V1_2,
            generate_self_signed: false,
            groups: None,
            ticket_lifetime: Spanned::new(
                0..0,
                Span(std::time::Duration::from_secs(u64::from(
                    crate::tls::DEFAULT_TICKET_LIFETIME,
                ))),
            ),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub receive: Level,
    pub send: Level,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    pub listen: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: "127.0.0.1:9025".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    pub retry: Vec<Span>,
    pub lifetime: Span,
    /// A recipient that asked `NOTIFY=DELAY` (RFC 3461) and has waited
    /// this long gets one delay notification; `"0s"`: none.
    pub delay_notice: Span,
    /// Outbound: waiting for the greeting and each command reply
    /// (RFC 5321 §4.5.3.2.1–3: 5 minutes).
    pub command_timeout: Span,
    /// Outbound: waiting for the reply to the end of data (§4.5.3.2.6).
    pub data_timeout: Span,
    /// Delivery attempts in flight per destination (host or MX domain).
    pub destination_concurrency: usize,
    /// Messages one outbound connection carries, over all the attempts
    /// that reuse it; also the most one attempt takes at once.
    pub messages_per_connection: usize,
    /// How long an outbound connection waits idle in the cache for the
    /// next message to the same destination; `"0s"`: no cache.
    pub connection_idle: Span,
    /// Idle outbound connections kept per shard, at most.
    pub idle_connections: usize,
}

/// The defaults are the snapshot's own (one place for each).
impl Default for Queue {
    fn default() -> Self {
        let q = crate::snapshot::QueueSettings::default();
        let cache = crate::snapshot::ConnectionCache::default();
        Queue {
            retry: q.retry.into_iter().map(Span).collect(),
            lifetime: Span(q.lifetime),
            delay_notice: Span(q.delay_notice),
            command_timeout: Span(q.command_timeout),
            data_timeout: Span(q.data_timeout),
            destination_concurrency: q.per_destination,
            messages_per_connection: q.messages_per_connection,
            connection_idle: Span(cache.idle),
            idle_connections: cache.per_shard,
        }
    }
}

fn no_relay() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default = "unset")]
    pub name: Spanned<String>,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub sender_domains: Vec<Spanned<String>>,
    /// Spanned, so that the open-relay error points at it.
    #[serde(default = "no_relay")]
    pub relay: Spanned<bool>,
    #[serde(default)]
    pub server: ProfileServer,
    #[serde(default)]
    pub client: ProfileClient,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileServer {
    pub mandatory_tls: bool,
    pub min_cipher_bits: Option<Spanned<u16>>,
    pub request_client_cert: bool,
    pub require_verified_client_cert: bool,
    /// Absent = no name check; "" = the client's verified host name.
    pub client_cert_name: Option<String>,
    pub client_cert_sha256: Vec<Spanned<String>>,
    /// Check and report, refuse nothing.
    pub report_only: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileClient {
    pub mandatory_tls: bool,
    pub version: TlsVersion,
    pub cipher_grade: CipherGrade,
    pub verify: bool,
    pub match_names: Vec<String>,
    pub pin_sha256: Vec<Spanned<String>>,
    pub client_certificate: bool,
    /// Check and report, refuse nothing.
    pub report_only: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default = "unset")]
    pub domain: Spanned<String>,
    #[serde(default = "default_via")]
    pub via: Spanned<String>,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub profile: Option<Spanned<String>>,
}

/// A required string the file left out; `validate` reports it at the
/// table's line.
fn unset() -> Spanned<String> {
    Spanned::new(0..0, String::new())
}

fn default_via() -> Spanned<String> {
    Spanned::new(0..0, "mx".into())
}

fn default_port() -> u16 {
    25
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    pub servers: Vec<Spanned<String>>,
    /// How DNSSEC status is known (DANE needs it).
    pub dnssec: crate::dns::Dnssec,
    /// DNSKEY records to validate from (`dnssec = "validate"`); unset:
    /// the root's.
    pub trust_anchor: Option<String>,
}

/// `[outbound]`: rules from the recipients' own DNS.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// DANE (RFC 7672); unset: `enforce` when `[dns] dnssec` is on.
    pub dane: Option<Spanned<crate::policy::Enforcement>>,
    /// MTA-STS (RFC 8461); unset: `enforce`.
    pub mta_sts: Option<crate::policy::Enforcement>,
    /// How often cached MTA-STS policies are looked over for refresh;
    /// unset: an hour.
    pub mta_sts_refresh: Option<Span>,
    /// What a `TLS-Required: No` header does (RFC 8689 §5).
    pub tls_required_header: TlsRequiredHeader,
}

/// `[outbound] tls_required_header`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsRequiredHeader {
    /// The recipients' DANE and MTA-STS policies do not stop the message
    /// (TLS is still tried); the gateway's own profiles still apply.
    #[default]
    #[serde(alias = "honor")]
    Honour,
    /// The header changes nothing.
    Ignore,
}
