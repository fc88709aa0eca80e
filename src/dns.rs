//! The resolver: hickory-resolver on a thread of its own, so a lookup never
//! blocks a shard. A shard asks with a callback; the answer comes back on
//! the shard's channel and wakes its `Poll`.
//!
//! Only forward-confirmed reverse DNS is offered for now (the host-name
//! matchers of IN-4): PTR names of the client address, each checked by
//! looking the name up again (A/AAAA) and requiring the client address
//! among the answers (FCrDNS, as Postfix's `reject_unknown_client_hostname`
//! means it). A name that does not confirm is never used.
//!
//! PTR queries go to the name servers directly (hickory's server pool):
//! the resolver proper answers every `127.in-addr.arpa` query itself with
//! `localhost` (RFC 6761 §6.3), which would hide real PTR records for
//! loopback addresses — the ones a test bed (or a local relay) uses.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::xfer::{DnsHandle, DnsRequestOptions, Protocol};
use hickory_resolver::TokioResolver;

use crate::model::{Dane, Sts, Tlsa};

mod dane;
pub mod mta_sts;
mod report;
mod tlsrpt;

use dane::{count_dane, dane_targets, Validator};
pub use dane::{DaneResult, DaneStats};
pub use mta_sts::StsCache;

type Reply = Box<dyn FnOnce(Option<String>) + Send>;
type TargetsReply = Box<dyn FnOnce(Result<Vec<Found>, LookupError>) + Send>;

enum Request {
    ClientName(IpAddr, Reply),
    /// `sealgate policy`: what DANE and MTA-STS say of a domain, as text.
    Policy {
        domain: String,
        action: PolicyQuery,
        dane: Option<u16>,
        sts: Option<StsLookup>,
        /// Why DANE, and MTA-STS, are not consulted when they are not.
        why_not: NotConsulted,
        reply: Box<dyn FnOnce(PolicyText) + Send>,
    },
    /// A policy domain's TLS report URIs (RFC 8460 §3).
    ReportRua {
        domain: String,
        reply: Box<dyn FnOnce(Result<Vec<String>, String>) + Send>,
    },
    /// POST a TLS report (RFC 8460 §5.2).
    ReportPost {
        url: String,
        body: Vec<u8>,
        roots: Arc<rustls::RootCertStore>,
        reply: Box<dyn FnOnce(Result<u16, String>) + Send>,
    },
    /// The TLSA records at `_PORT._tcp.NAME` when the answer is
    /// validated (`[acme.dane]` watches its own records).
    Tlsa {
        name: String,
        port: u16,
        reply: TlsaReply,
    },
    /// MX (or A/AAAA) targets of a domain, or A/AAAA of a fixed host; with
    /// `dane`, each host's TLSA records for that port too.
    Targets {
        name: String,
        mx: bool,
        dane: Option<u16>,
        sts: Option<StsLookup>,
        reply: TargetsReply,
    },
}

/// The answer to [`Request::Tlsa`]: the records of a validated answer,
/// `None` for an unsigned one.
type TlsaReply = Box<dyn FnOnce(Result<Option<Vec<Tlsa>>, String>) + Send>;

/// `[dns] dnssec`: how the gateway knows whether an answer is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dnssec {
    /// No DNSSEC: DANE cannot apply.
    #[default]
    Off,
    /// Trust the AD bit of the configured resolver, which must validate
    /// (Postfix's model; a resolver on loopback, so the bit cannot be
    /// forged on the way).
    TrustAd,
    /// Validate here (hickory's DNSSEC), from the DNSKEY records of
    /// `[dns] trust_anchor` (the root's when unset).
    Validate,
}

/// One delivery target: a host, one of its addresses, and what DANE and
/// MTA-STS say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub host: String,
    pub ip: IpAddr,
    pub dane: Dane,
    pub sts: Sts,
}

impl Found {
    /// An address literal (`[192.0.2.1]`): no lookup, so nothing from the
    /// recipient's DNS (RFC 5321 §4.1.3).
    pub fn literal(host: String, ip: IpAddr) -> Found {
        Found {
            host,
            ip,
            dane: Dane::None,
            sts: Sts::None,
        }
    }
}

/// Why `sealgate policy` does not consult DANE, or MTA-STS, for a route:
/// shown instead of the source's findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotConsulted {
    pub dane: &'static str,
    pub mta_sts: &'static str,
}

/// The text of `sealgate policy`, and whether a lookup in it failed (the
/// command then exits 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyText {
    pub text: String,
    pub failed: bool,
}

/// What `sealgate policy` asks of the resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyQuery {
    Show,
    Refresh,
    Forget,
}

/// Look up the recipient domain's MTA-STS policy too.
#[derive(Clone)]
pub struct StsLookup {
    /// To verify the policy host's certificate.
    pub roots: Arc<rustls::RootCertStore>,
    /// `report`: an enforced policy is only reported.
    pub enforcement: crate::policy::Enforcement,
}

/// MTA-STS on the targets (RFC 8461 §4, §5): hosts DANE decides for are
/// left to it; in enforce mode the hosts outside the patterns go, and
/// none left is a failure.
fn apply_sts(
    domain: &str,
    policy: Option<&crate::sts::Policy>,
    enforcement: crate::policy::Enforcement,
    found: Vec<Found>,
) -> Result<Vec<Found>, LookupError> {
    use crate::policy::Enforcement;
    use crate::sts::Mode;
    let Some(policy) = policy else {
        return Ok(found);
    };
    let enforce = policy.mode == Mode::Enforce && enforcement == Enforcement::Enforce;
    let mut out = Vec::with_capacity(found.len());
    for mut f in found {
        if matches!(f.dane, Dane::Usable { .. } | Dane::Unusable) {
            out.push(f);
            continue;
        }
        let mx_ok = crate::sts::mx_matches(&policy.mx, &f.host);
        f.sts = match (policy.mode, enforce, mx_ok) {
            (Mode::None, _, _) => Sts::None,
            (Mode::Enforce, true, true) => Sts::Enforce,
            (Mode::Enforce, true, false) => {
                tracing::info!(target: "send", "MTA-STS: {} is not among the MX patterns of {domain}: not used", f.host);
                continue;
            }
            (Mode::Enforce | Mode::Testing, _, mx_ok) => Sts::Testing { mx_ok },
        };
        out.push(f);
    }
    if out.is_empty() {
        return Err(LookupError::Policy(format!(
            "no MX host of {domain} matches its MTA-STS policy"
        )));
    }
    Ok(out)
}

/// Why no address could be found for a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("the domain publishes a null MX (RFC 7505): it accepts no mail")]
    NullMx,
    /// The name does not exist (NXDOMAIN) or has no address.
    #[error("{0}")]
    NotFound(String),
    /// The lookup failed (timeout, SERVFAIL): try again later.
    #[error("{0}")]
    Temporary(String),
    /// The recipient's policy rules out every host (MTA-STS in enforce
    /// mode, no MX host matching): try again later (4.7.5).
    #[error("{0}")]
    Policy(String),
}

/// A handle to the resolver thread. Dropping every handle stops it.
#[derive(Clone)]
pub struct Resolver {
    tx: tokio::sync::mpsc::UnboundedSender<Request>,
    /// Counts of the DANE lookups, for the metrics endpoint.
    pub dane_stats: Arc<DaneStats>,
    /// The MTA-STS policies known, and the fetch counts.
    pub sts: Arc<StsCache>,
}

/// Parses `[dns] servers` entries: `IP` (port 53) or `IP:port`.
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

impl Resolver {
    /// Starts the resolver thread: the given servers, or /etc/resolv.conf
    /// when there are none.
    pub fn start(
        servers: &[SocketAddr],
        timeout: Duration,
        dnssec: Dnssec,
        trust_anchor: Option<&std::path::Path>,
        sts_cache: Option<std::path::PathBuf>,
        sts_refresh: Duration,
    ) -> io::Result<Resolver> {
        let (config, opts) = settings(servers, timeout)?;
        let validating = match dnssec {
            Dnssec::Validate => {
                let anchors = match trust_anchor {
                    Some(path) => {
                        hickory_proto::dnssec::TrustAnchors::from_file(path).map_err(|e| {
                            io::Error::other(format!("[dns] trust_anchor {}: {e}", path.display()))
                        })?
                    }
                    None => hickory_proto::dnssec::TrustAnchors::default(),
                };
                let mut opts = opts.clone();
                opts.validate = true;
                Some(Arc::new(
                    TokioResolver::builder_with_config(
                        config.clone(),
                        TokioConnectionProvider::default(),
                    )
                    .with_options(opts)
                    .with_trust_anchor(Arc::new(anchors))
                    .build(),
                ))
            }
            Dnssec::Off | Dnssec::TrustAd => None,
        };
        let pool = NameServerPool::from_config(
            config.name_servers().to_vec().into(),
            opts.clone(),
            TokioConnectionProvider::default(),
        );
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let dane_stats = Arc::new(DaneStats::default());
        let stats = dane_stats.clone();
        let sts_cache_handle = Arc::new(StsCache::open(sts_cache));
        let sts_cache_all = sts_cache_handle.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .enable_io()
            .build()?;
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                let (resolver, pool) = (Arc::new(resolver), Arc::new(pool));
                let validator = match validating {
                    Some(v) => Validator::InProcess(v),
                    None => Validator::TrustAd(pool.clone()),
                };
                let validator = Arc::new(validator);
                let refresher = (resolver.clone(), sts_cache_all.clone());
                runtime.block_on(async move {
                    tokio::spawn(async move {
                        let (resolver, cache) = refresher;
                        let mut every = tokio::time::interval(sts_refresh);
                        loop {
                            every.tick().await;
                            mta_sts::refresh_due(&resolver, &cache).await;
                        }
                    });
                    while let Some(req) = rx.recv().await {
                        let (resolver, pool, stats) =
                            (resolver.clone(), pool.clone(), stats.clone());
                        let validator = validator.clone();
                        let sts_cache = sts_cache_all.clone();
                        tokio::spawn(async move {
                            match req {
                                Request::ClientName(ip, reply) => {
                                    reply(confirmed_name(&resolver, &pool, ip).await)
                                }
                                Request::Policy {
                                    domain,
                                    action,
                                    dane,
                                    sts,
                                    why_not,
                                    reply,
                                } => {
                                    let mut why_not = why_not;
                                    if dane.is_some() && dnssec == Dnssec::Off {
                                        why_not.dane = "[dns] dnssec is \"off\": DANE cannot apply";
                                    }
                                    let dane = dane.filter(|_| dnssec != Dnssec::Off);
                                    reply(
                                        report::policy_report(
                                            &resolver, &validator, &sts_cache, &domain, action,
                                            (dane, sts), why_not,
                                        )
                                        .await,
                                    )
                                }
                                Request::Tlsa { name, port, reply } => {
                                    reply(match dnssec {
                                        Dnssec::Off => Err(
                                            "[dns] dnssec is \"off\": no answer is known to be validated".into(),
                                        ),
                                        Dnssec::TrustAd | Dnssec::Validate => {
                                            dane::validated_tlsa(&validator, &name, port)
                                                .await
                                                .map_err(|e| e.to_string())
                                        }
                                    })
                                }
                                Request::ReportRua { domain, reply } => {
                                    reply(tlsrpt::rua(&resolver, &domain).await)
                                }
                                Request::ReportPost {
                                    url,
                                    body,
                                    roots,
                                    reply,
                                } => reply(tlsrpt::post(&resolver, &url, body, roots).await),
                                Request::Targets {
                                    name,
                                    mx,
                                    dane,
                                    sts,
                                    reply,
                                } => {
                                    let found = match (dane, dnssec) {
                                        (Some(port), Dnssec::TrustAd | Dnssec::Validate) => {
                                            let found =
                                                dane_targets(&validator, &name, mx, port).await;
                                            if let Ok(found) = &found {
                                                count_dane(&stats, found);
                                            }
                                            found
                                        }
                                        (Some(_), Dnssec::Off) | (None, _) => {
                                            targets(&resolver, &name, mx).await.map(|t| {
                                                t.into_iter()
                                                    .map(|(host, ip)| Found {
                                                        host,
                                                        ip,
                                                        dane: Dane::None,
                                                        sts: Sts::None,
                                                    })
                                                    .collect()
                                            })
                                        }
                                    };
                                    // MTA-STS is about MX delivery to the
                                    // recipient domain (RFC 8461 §4).
                                    let found = match (found, sts, mx) {
                                        (Ok(found), Some(lookup), true) => {
                                            let policy = mta_sts::policy(
                                                &resolver,
                                                &sts_cache,
                                                &name,
                                                lookup.roots,
                                            )
                                            .await;
                                            apply_sts(
                                                &name,
                                                policy.as_ref(),
                                                lookup.enforcement,
                                                found,
                                            )
                                        }
                                        (found, _, _) => found,
                                    };
                                    reply(found)
                                }
                            }
                        });
                    }
                });
            })?;
        Ok(Resolver {
            tx,
            dane_stats,
            sts: sts_cache_handle,
        })
    }

    /// Looks up the client's forward-confirmed name and calls `reply` with
    /// it (on the resolver thread). `None`: no PTR, or none that confirms.
    pub fn client_name(&self, ip: IpAddr, reply: impl FnOnce(Option<String>) + Send + 'static) {
        if let Err(e) = self.tx.send(Request::ClientName(ip, Box::new(reply))) {
            // The resolver thread is gone: answer "no name" right away.
            if let Request::ClientName(_, reply) = e.0 {
                reply(None);
            }
        }
    }

    /// Delivery targets, in the order to try them: with `mx`, the MX hosts
    /// of `name` by preference (equal preferences shuffled, RFC 5321 §5.1),
    /// or `name` itself when it has no MX; without, `name`'s addresses.
    ///
    /// With `dane` (the port delivery will use) and DNSSEC on, the lookups
    /// carry their DNSSEC status and each secure host's TLSA records are
    /// looked up too (RFC 7672 §2.2).
    pub fn targets(
        &self,
        name: &str,
        mx: bool,
        dane: Option<u16>,
        sts: Option<StsLookup>,
        reply: impl FnOnce(Result<Vec<Found>, LookupError>) + Send + 'static,
    ) {
        let req = Request::Targets {
            name: name.to_string(),
            mx,
            dane,
            sts,
            reply: Box::new(reply),
        };
        if let Err(e) = self.tx.send(req) {
            if let Request::Targets { reply, .. } = e.0 {
                reply(Err(LookupError::Temporary("resolver stopped".into())));
            }
        }
    }

    /// `sealgate policy`: what DANE and MTA-STS say of `domain` (the
    /// MTA-STS cache refreshed or forgotten first, as asked), as text.
    pub fn policy(
        &self,
        domain: &str,
        action: PolicyQuery,
        dane: Option<u16>,
        sts: Option<StsLookup>,
        why_not: NotConsulted,
        reply: impl FnOnce(PolicyText) + Send + 'static,
    ) {
        let req = Request::Policy {
            domain: domain.to_string(),
            action,
            dane,
            sts,
            why_not,
            reply: Box::new(reply),
        };
        if let Err(e) = self.tx.send(req) {
            if let Request::Policy { reply, .. } = e.0 {
                reply(PolicyText {
                    text: "the resolver is not running\n".into(),
                    failed: true,
                });
            }
        }
    }

    /// The `rua` URIs of `domain`'s `_smtp._tls` record (RFC 8460 §3).
    pub fn report_rua(
        &self,
        domain: &str,
        reply: impl FnOnce(Result<Vec<String>, String>) + Send + 'static,
    ) {
        let req = Request::ReportRua {
            domain: domain.to_string(),
            reply: Box::new(reply),
        };
        if let Err(e) = self.tx.send(req) {
            if let Request::ReportRua { reply, .. } = e.0 {
                reply(Err("the resolver is not running".into()));
            }
        }
    }

    /// The validated TLSA records at `_PORT._tcp.NAME`: `None` when the
    /// answer is not signed. Blocks.
    pub fn tlsa_blocking(&self, name: &str, port: u16) -> Result<Option<Vec<Tlsa>>, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let req = Request::Tlsa {
            name: name.to_string(),
            port,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        };
        if self.tx.send(req).is_err() {
            return Err("the resolver is not running".into());
        }
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .map_err(|_| "no answer from the resolver".to_string())?
    }

    /// POSTs a gzip'ed TLS report to `url` (RFC 8460 §5.2).
    pub fn post_report(
        &self,
        url: &str,
        body: Vec<u8>,
        roots: Arc<rustls::RootCertStore>,
        reply: impl FnOnce(Result<u16, String>) + Send + 'static,
    ) {
        let req = Request::ReportPost {
            url: url.to_string(),
            body,
            roots,
            reply: Box::new(reply),
        };
        if let Err(e) = self.tx.send(req) {
            if let Request::ReportPost { reply, .. } = e.0 {
                reply(Err("the resolver is not running".into()));
            }
        }
    }

    /// The same, waiting for the answer (for `sealgate explain`).
    pub fn client_name_blocking(&self, ip: IpAddr) -> Option<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.client_name(ip, move |name| {
            let _ = tx.send(name);
        });
        rx.recv().ok().flatten()
    }
}

fn settings(
    servers: &[SocketAddr],
    timeout: Duration,
) -> io::Result<(ResolverConfig, ResolverOpts)> {
    let (config, mut opts) = if servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| io::Error::other(format!("cannot read /etc/resolv.conf: {e}")))?
    } else {
        let mut config = ResolverConfig::new();
        for s in servers {
            config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
        }
        let mut opts = ResolverOpts::default();
        // Configured servers are the whole truth: no /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        (config, opts)
    };
    opts.timeout = timeout;
    opts.attempts = 2;
    Ok((config, opts))
}

/// PTR names of `ip`, asked of the name servers directly.
async fn ptr_names(pool: &NameServerPool<TokioConnectionProvider>, ip: IpAddr) -> Vec<String> {
    let query = Query::query(Name::from(ip), RecordType::PTR);
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = true;
    let mut responses = pool.lookup(query, options);
    let Some(Ok(response)) = responses.next().await else {
        return Vec::new();
    };
    response
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::PTR(name) => Some(name.0.to_string()),
            _ => None,
        })
        .collect()
}

fn lookup_error(e: &hickory_resolver::ResolveError, name: &str) -> LookupError {
    if e.is_no_records_found() || e.is_nx_domain() {
        LookupError::NotFound(format!("{name}: no such domain or no address"))
    } else {
        LookupError::Temporary(format!("{name}: {e}"))
    }
}

async fn addresses(resolver: &TokioResolver, host: &str) -> Result<Vec<IpAddr>, LookupError> {
    let fqdn = if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    };
    match resolver.lookup_ip(fqdn).await {
        Ok(ips) => Ok(ips.iter().collect()),
        Err(e) => Err(lookup_error(&e, host)),
    }
}

async fn targets(
    resolver: &TokioResolver,
    name: &str,
    mx: bool,
) -> Result<Vec<(String, IpAddr)>, LookupError> {
    if !mx {
        return Ok(addresses(resolver, name)
            .await?
            .into_iter()
            .map(|ip| (name.to_string(), ip))
            .collect());
    }
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let records: Vec<(u16, String)> = match resolver.mx_lookup(fqdn).await {
        Ok(mx) => mx
            .iter()
            .map(|r| {
                (
                    r.preference(),
                    r.exchange()
                        .to_string()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                )
            })
            .collect(),
        // RFC 5321 §5.1: no MX records: the domain itself is the host.
        Err(e) if e.is_no_records_found() && !e.is_nx_domain() => vec![(0, name.to_string())],
        Err(e) => return Err(lookup_error(&e, name)),
    };
    let mut out = Vec::new();
    let mut last_error = None;
    for host in mx_order(records)? {
        match addresses(resolver, &host).await {
            Ok(ips) => out.extend(ips.into_iter().map(|ip| (host.clone(), ip))),
            Err(e) => last_error = Some(e),
        }
    }
    if out.is_empty() {
        return Err(last_error.unwrap_or_else(|| {
            LookupError::NotFound(format!("{name}: no MX host has an address"))
        }));
    }
    Ok(out)
}

/// MX records `(preference, host)` into the hosts to try, in order (RFC
/// 5321 §5.1: by preference, equal ones shuffled); a lone `.` is a null MX
/// (RFC 7505 §3): the domain takes no mail.
fn mx_order(records: Vec<(u16, String)>) -> Result<Vec<String>, LookupError> {
    if records.len() == 1 && records[0].1.is_empty() {
        return Err(LookupError::NullMx);
    }
    let mut records: Vec<(u16, u64, String)> = records
        .into_iter()
        .filter(|(_, host)| !host.is_empty())
        .map(|(pref, host)| (pref, shuffle_key(&host), host))
        .collect();
    records.sort();
    Ok(records.into_iter().map(|(_, _, host)| host).collect())
}

/// A per-process random order among MX hosts of equal preference.
fn shuffle_key(host: &str) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    SEED.get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(host)
}

/// FCrDNS: a PTR name whose A/AAAA records include `ip`.
async fn confirmed_name(
    resolver: &TokioResolver,
    pool: &NameServerPool<TokioConnectionProvider>,
    ip: IpAddr,
) -> Option<String> {
    // At most a few names: a PTR set is small, and each costs a lookup.
    for text in ptr_names(pool, ip).await.into_iter().take(4) {
        let text = text.strip_suffix('.').unwrap_or(&text).to_ascii_lowercase();
        let Ok(addrs) = resolver.lookup_ip(format!("{text}.")).await else {
            continue;
        };
        if addrs
            .iter()
            .any(|a| crate::policy::matcher::canonical(a) == crate::policy::matcher::canonical(ip))
        {
            return Some(text);
        }
        tracing::debug!(target: "receive", "reverse name {text} of {ip} does not resolve back to it");
    }
    None
}
