//! The immutable snapshot of everything a connection needs to know about
//! the configuration: policy (domains, limits, profiles, routes) and the
//! TLS configurations built from it. Built by `config`, swapped whole on
//! reload; a connection keeps the `Arc<Snapshot>` it was accepted under.

use std::sync::Arc;

use crate::policy::{AcceptDomains, Limits};

#[derive(Debug)]
pub struct Snapshot {
    /// Banner and Received host name.
    pub hostname: String,
    pub accept_domains: AcceptDomains,
    pub limits: Limits,
    /// The STARTTLS server configuration; `None` when no certificate is
    /// configured (STARTTLS is then not advertised).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Every client may relay to any domain. For the load generator's sink
    /// only; a configuration file cannot set it.
    pub relay_everyone: bool,
    /// Connection profiles and their index.
    pub profiles: crate::policy::Profiles,
    /// The STARTTLS configuration that also asks the client for a
    /// certificate (without requiring one); used for clients whose profile
    /// wants one.
    pub tls_ask_cert: Option<Arc<rustls::ServerConfig>>,
    /// Verifies client certificate chains after the handshake.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// Where mail for each domain goes.
    pub routes: crate::policy::route::Routes,
    /// Outbound TLS configurations and the CA store.
    pub outbound: crate::tls::outbound::Outbound,
    /// Balancers allowed to send a PROXY header (addresses and prefixes).
    pub proxy_from: crate::policy::matcher::ProfileIndex,
    /// DANE for routes without a profile of their own (`[outbound] dane`).
    pub dane: crate::policy::Enforcement,
    /// MTA-STS likewise (`[outbound] mta_sts`).
    pub mta_sts: crate::policy::Enforcement,
    /// `[outbound] tls_required_header = "honour"`: a `TLS-Required: No`
    /// message goes despite the recipients' DANE and MTA-STS (RFC 8689 §5).
    pub honour_tls_required_no: bool,
    /// `[tls_rpt]`.
    pub tls_rpt: crate::tlsrpt::Settings,
    /// The outbound connection cache (`[queue]`).
    pub connection_cache: ConnectionCache,
    /// The rest of `[queue]`: retries, expiry, concurrency, timeouts.
    pub queue: QueueSettings,
    /// `[acme]`, when the gateway keeps its certificate by ACME.
    pub acme: Option<crate::acme::Settings>,
}

/// `[queue]`'s delivery settings. A reload applies them to what happens
/// next: a failure after the reload is retried by the new schedule, an
/// attempt started after it waits by the new timeouts; a retry already
/// scheduled keeps its time (`sealgate queue flush` tries everything now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// `retry`: delays between attempts of a recipient; the last repeats.
    pub retry: Vec<std::time::Duration>,
    /// `lifetime`: a recipient still failing temporarily this long after
    /// its message arrived expires.
    pub lifetime: std::time::Duration,
    /// `delay_notice`: `NOTIFY=DELAY` recipients are told once after this
    /// long in the queue; zero: never.
    pub delay_notice: std::time::Duration,
    /// `destination_concurrency`: attempts in flight per destination.
    pub per_destination: usize,
    /// `messages_per_connection`: messages one connection carries, over
    /// all the attempts that reuse it; also the most one attempt takes.
    pub messages_per_connection: usize,
    /// `command_timeout`: the greeting and each reply.
    pub command_timeout: std::time::Duration,
    /// `data_timeout`: the reply to the end of data.
    pub data_timeout: std::time::Duration,
}

impl QueueSettings {
    /// The outbound session's timeouts: the greeting and every command
    /// wait `command_timeout`, but RFC 5321 §4.5.3.2.4 and .5 (2 and 3
    /// minutes) are never exceeded; the end of data waits `data_timeout`.
    pub fn timeouts(&self) -> crate::model::Timeouts {
        let two = std::time::Duration::from_secs(120);
        let three = std::time::Duration::from_secs(180);
        crate::model::Timeouts {
            greeting: self.command_timeout,
            command: self.command_timeout,
            data_start: self.command_timeout.min(two),
            data_block: self.command_timeout.min(three),
            data_end: self.data_timeout,
        }
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        let m = |n: u64| std::time::Duration::from_secs(n * 60);
        QueueSettings {
            retry: vec![m(5), m(10), m(30), m(60), m(120), m(240)],
            lifetime: std::time::Duration::from_secs(5 * 86_400),
            delay_notice: m(240),
            per_destination: 20,
            messages_per_connection: 100,
            command_timeout: m(5),
            data_timeout: m(10),
        }
    }
}

/// The outbound connection cache: after a transaction the connection
/// stays open, idle, for the next message to the same destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCache {
    /// `connection_idle`: zero turns the cache off.
    pub idle: std::time::Duration,
    /// `idle_connections`: idle connections per shard, at most.
    pub per_shard: usize,
}

impl Default for ConnectionCache {
    fn default() -> Self {
        ConnectionCache {
            idle: std::time::Duration::from_secs(2),
            per_shard: 64,
        }
    }
}

impl Snapshot {
    /// A snapshot for tests and tools: the given host name and domains,
    /// default limits, no TLS.
    pub fn for_tests(hostname: &str, accept_domains: &[&str]) -> Self {
        Snapshot::plain(
            hostname.to_string(),
            AcceptDomains::new(accept_domains),
            Limits::default(),
        )
    }

    /// A snapshot with no TLS, no profiles, no routes and nothing taken
    /// from the recipients' DNS: for `explain`, the load generator's sink
    /// and tests, which set what they need over it.
    pub fn plain(hostname: String, accept_domains: AcceptDomains, limits: Limits) -> Self {
        let tls_rpt = crate::tlsrpt::Settings::for_host(&hostname);
        Snapshot {
            hostname,
            accept_domains,
            limits,
            tls: None,
            relay_everyone: false,
            profiles: crate::policy::Profiles::default(),
            tls_ask_cert: None,
            client_verifier: None,
            routes: Default::default(),
            outbound: crate::tls::outbound::Outbound::opportunistic(),
            proxy_from: Default::default(),
            dane: crate::policy::Enforcement::Off,
            mta_sts: crate::policy::Enforcement::Off,
            honour_tls_required_no: true,
            tls_rpt,
            connection_cache: ConnectionCache::default(),
            queue: QueueSettings::default(),
            acme: None,
        }
    }

    /// OPS-8: whether connections from `ip` start with a PROXY header.
    pub fn proxy_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.proxy_from
            .select(&crate::policy::matcher::Client {
                ip,
                name: None,
                sender_domain: None,
            })
            .is_some()
    }
}
