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

type Reply = Box<dyn FnOnce(Option<String>) + Send>;
type TargetsReply = Box<dyn FnOnce(Result<Vec<(String, IpAddr)>, LookupError>) + Send>;

enum Request {
    ClientName(IpAddr, Reply),
    /// MX (or A/AAAA) targets of a domain, or A/AAAA of a fixed host.
    Targets {
        name: String,
        mx: bool,
        reply: TargetsReply,
    },
}

/// Why no address could be found for a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    NullMx,
    /// The name does not exist (NXDOMAIN) or has no address.
    NotFound(String),
    /// The lookup failed (timeout, SERVFAIL): try again later.
    Temporary(String),
}

/// A handle to the resolver thread. Dropping every handle stops it.
#[derive(Clone)]
pub struct Resolver {
    tx: tokio::sync::mpsc::UnboundedSender<Request>,
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
    pub fn start(servers: &[SocketAddr], timeout: Duration) -> io::Result<Resolver> {
        let (config, opts) = settings(servers, timeout)?;
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .enable_io()
            .build()?;
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                let (resolver, pool) = (Arc::new(resolver), Arc::new(pool));
                runtime.block_on(async move {
                    while let Some(req) = rx.recv().await {
                        let (resolver, pool) = (resolver.clone(), pool.clone());
                        tokio::spawn(async move {
                            match req {
                                Request::ClientName(ip, reply) => {
                                    reply(confirmed_name(&resolver, &pool, ip).await)
                                }
                                Request::Targets { name, mx, reply } => {
                                    reply(targets(&resolver, &name, mx).await)
                                }
                            }
                        });
                    }
                });
            })?;
        Ok(Resolver { tx })
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
    pub fn targets(
        &self,
        name: &str,
        mx: bool,
        reply: impl FnOnce(Result<Vec<(String, IpAddr)>, LookupError>) + Send + 'static,
    ) {
        let req = Request::Targets {
            name: name.to_string(),
            mx,
            reply: Box::new(reply),
        };
        if let Err(e) = self.tx.send(req) {
            if let Request::Targets { reply, .. } = e.0 {
                reply(Err(LookupError::Temporary("resolver stopped".into())));
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
    // RFC 7505 §3: a single MX of "." declares that the domain takes no mail.
    if records.len() == 1 && records[0].1.is_empty() {
        return Err(LookupError::NullMx);
    }
    let mut records: Vec<(u16, u64, String)> = records
        .into_iter()
        .filter(|(_, host)| !host.is_empty())
        .map(|(pref, host)| (pref, shuffle_key(&host), host))
        .collect();
    records.sort();
    let mut out = Vec::new();
    let mut last_error = None;
    for (_, _, host) in records {
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
