//! MTA-STS on the resolver thread (RFC 8461 §3): the `_mta-sts` TXT
//! lookup, the HTTPS fetch of the policy file, and the cache, persisted
//! in the spool directory so a restart keeps it. The rules are `sts`'s.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use http_body_util::BodyExt;

use crate::sts::{self, Cache, Cached, Next, Policy, PolicyError, MAX_POLICY_SIZE, NEGATIVE_TTL};

/// How long a policy fetch may take, whole (RFC 8461 §3.3: a minute at
/// most is suggested).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a policy file could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{host}: no address")]
    NoAddress { host: String },
    #[error("{host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("{host}: TLS: {reason}")]
    Tls { host: String, reason: String },
    #[error("{host}: HTTP status {status} (redirects are not followed)")]
    Status { host: String, status: u16 },
    #[error("{host}: content type {0:?} is not text/plain", .content_type)]
    ContentType { host: String, content_type: String },
    #[error("{host}: the policy is larger than 64 KiB")]
    TooLarge { host: String },
    #[error("{host}: {reason}")]
    Http { host: String, reason: String },
    #[error("{host}: no answer within {secs} s", secs = FETCH_TIMEOUT.as_secs())]
    Timeout { host: String },
    #[error("{host}: {0}", .error)]
    Policy { host: String, error: PolicyError },
}

impl FetchError {
    /// RFC 8460 §4.3.2: what the failure is in a TLS report.
    pub fn tls_report_result(&self) -> crate::tlsrpt::ResultType {
        use crate::tlsrpt::ResultType;
        match self {
            FetchError::Tls { .. } => ResultType::StsWebpkiInvalid,
            FetchError::Policy { .. }
            | FetchError::ContentType { .. }
            | FetchError::TooLarge { .. } => ResultType::StsPolicyInvalid,
            FetchError::NoAddress { .. }
            | FetchError::Connect { .. }
            | FetchError::Status { .. }
            | FetchError::Http { .. }
            | FetchError::Timeout { .. } => ResultType::StsPolicyFetchError,
        }
    }
}

/// What the MTA-STS lookups found, for `sealgate_mta_sts_fetches_total`.
#[derive(Debug, Default)]
pub struct StsStats {
    /// Policies fetched and parsed.
    pub fetched: std::sync::atomic::AtomicU64,
    /// Fetches that failed (a cached policy may have stood in).
    pub failed: std::sync::atomic::AtomicU64,
}

/// The cache with the file it is kept in.
pub struct StsCache {
    cache: Mutex<Cache>,
    file: Option<PathBuf>,
    pub stats: StsStats,
    /// The CA store of the last lookup, for background refreshes.
    roots: Mutex<Option<Arc<rustls::RootCertStore>>>,
    /// Domains whose policy could not be fetched and none applies (their
    /// TLS reports say why), until a fetch succeeds.
    failures: Mutex<std::collections::HashMap<String, FetchError>>,
}

impl StsCache {
    /// Loads the cache kept in `file` (none yet, or unreadable: empty).
    pub fn open(file: Option<PathBuf>) -> StsCache {
        let cache = file
            .as_deref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| match serde_json::from_slice::<Cache>(&b) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("MTA-STS cache unreadable, starting empty: {e}");
                    None
                }
            })
            .unwrap_or_default();
        StsCache {
            cache: Mutex::new(cache),
            file,
            stats: StsStats::default(),
            roots: Mutex::new(None),
            failures: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the cache (a temporary file renamed over the old one).
    fn save(&self) {
        let Some(file) = &self.file else { return };
        let text = match serde_json::to_vec_pretty(&*self.lock()) {
            Ok(t) => t,
            Err(e) => return tracing::warn!("MTA-STS cache not saved: {e}"),
        };
        let tmp = file.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, file)) {
            tracing::warn!("MTA-STS cache not saved to {}: {e}", file.display());
        }
    }

    /// A policy was fetched: counted, cached, saved.
    fn fetched(&self, domain: &str, id: String, policy: Policy, now: u64) {
        self.stats
            .fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().store(
            domain,
            Cached {
                id,
                policy,
                fetched: now,
            },
        );
        self.save();
    }

    pub fn snapshot(&self) -> Cache {
        self.lock().clone()
    }

    /// `domain`'s cached policy.
    pub fn get(&self, domain: &str) -> Option<Cached> {
        self.lock().policies.get(domain).cloned()
    }

    /// Why `domain`'s policy could not be had, when none applies for it.
    pub fn fetch_failure(&self, domain: &str) -> Option<FetchError> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .cloned()
    }

    fn set_failure(&self, domain: &str, e: Option<FetchError>) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Some(e) => {
                f.insert(domain.to_string(), e);
            }
            None => {
                f.remove(domain);
            }
        }
    }

    /// A policy another node of the fleet fetched: taken when this node
    /// has none for the domain, or an older one. Returns whether it was.
    pub fn adopt(&self, domain: &str, cached: Cached) -> bool {
        let taken = {
            let mut c = self.lock();
            let newer = c
                .policies
                .get(domain)
                .is_none_or(|mine| mine.fetched < cached.fetched);
            if newer {
                c.store(domain, cached);
            }
            newer
        };
        if taken {
            self.set_failure(domain, None);
            self.save();
        }
        taken
    }

    pub fn forget(&self, domain: &str) -> bool {
        let gone = {
            let mut c = self.lock();
            c.absent.remove(domain);
            c.policies.remove(domain).is_some()
        };
        self.save();
        gone
    }
}

/// The `_mta-sts.DOMAIN` TXT record's id: `None` when there is none.
async fn txt_id(resolver: &TokioResolver, domain: &str) -> Option<Result<String, PolicyError>> {
    let name = format!("_mta-sts.{}.", domain.trim_end_matches('.'));
    match resolver.txt_lookup(name).await {
        Ok(txt) => {
            let texts: Vec<String> = txt
                .iter()
                .map(|t| {
                    t.txt_data()
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect::<String>()
                })
                .collect();
            Some(sts::record_id(&texts))
        }
        Err(_) => None,
    }
}

/// GET `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (RFC 8461 §3.3):
/// the certificate verified for that name against `roots`, no redirects,
/// `text/plain`, at most 64 KiB.
pub async fn fetch(
    resolver: &TokioResolver,
    domain: &str,
    roots: Arc<rustls::RootCertStore>,
) -> Result<Policy, FetchError> {
    let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(resolver, &host, roots)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout { host }),
    }
}

/// An HTTP/1.1 connection over TLS to `host`:`port`, the certificate
/// verified for `host` against `roots` (the MTA-STS fetch, the TLS report
/// POST).
pub async fn https(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
    roots: Arc<rustls::RootCertStore>,
) -> Result<
    hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    FetchError,
> {
    let e = |reason: String| FetchError::Connect {
        host: host.to_string(),
        reason,
    };
    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolver
            .lookup_ip(format!("{host}."))
            .await
            .map(|l| l.iter().collect())
            .map_err(|_| FetchError::NoAddress {
                host: host.to_string(),
            })?,
    };
    let ip = ips.first().copied().ok_or_else(|| FetchError::NoAddress {
        host: host.to_string(),
    })?;
    let tcp = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|err| e(err.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| e(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|err| e(err.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|err| FetchError::Tls {
            host: host.to_string(),
            reason: err.to_string(),
        })?;
    let http = |reason: String| FetchError::Http {
        host: host.to_string(),
        reason,
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|err| http(err.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn fetch_inner(
    resolver: &TokioResolver,
    host: &str,
    roots: Arc<rustls::RootCertStore>,
) -> Result<Policy, FetchError> {
    let http = |reason: String| FetchError::Http {
        host: host.to_string(),
        reason,
    };
    let mut sender = https(resolver, host, 443, roots).await?;
    let request = hyper::Request::get("/.well-known/mta-sts.txt")
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "sealgate")
        .body(http_body_util::Full::<hyper::body::Bytes>::default())
        .map_err(|err| http(err.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| http(err.to_string()))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(FetchError::Status {
            host: host.to_string(),
            status: response.status().as_u16(),
        });
    }
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"))
    {
        return Err(FetchError::ContentType {
            host: host.to_string(),
            content_type,
        });
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_POLICY_SIZE)
        .collect()
        .await
        .map_err(|_| FetchError::TooLarge {
            host: host.to_string(),
        })?
        .to_bytes();
    sts::parse(&String::from_utf8_lossy(&body)).map_err(|error| FetchError::Policy {
        host: host.to_string(),
        error,
    })
}

/// The policy that applies to `domain` now: the cached one, or one fetched
/// because the TXT id is new; a failed fetch keeps an unexpired cached
/// policy (RFC 8461 §5.1).
pub async fn policy(
    resolver: &TokioResolver,
    cache: &StsCache,
    domain: &str,
    roots: Arc<rustls::RootCertStore>,
) -> Option<Policy> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let now = crate::model::unix_now();
    *cache.roots.lock().unwrap_or_else(|p| p.into_inner()) = Some(roots.clone());
    if cache
        .lock()
        .absent
        .get(&domain)
        .is_some_and(|until| *until > now)
    {
        return None;
    }
    let txt = txt_id(resolver, &domain).await;
    let next = cache.lock().next(&domain, txt.clone(), now);
    match next {
        Next::Use(c) => Some(c.policy),
        Next::Nothing => {
            if txt.is_none() {
                cache.lock().absent.insert(domain, now + NEGATIVE_TTL);
            }
            None
        }
        Next::Fetch { id, fallback } => match fetch(resolver, &domain, roots).await {
            Ok(policy) => {
                tracing::info!(
                    target: "send",
                    "MTA-STS policy of {domain} (id {id}): mode {:?}, max_age {}, mx {:?}",
                    policy.mode, policy.max_age, policy.mx
                );
                cache.fetched(&domain, id, policy.clone(), now);
                cache.set_failure(&domain, None);
                Some(policy)
            }
            Err(e) => {
                cache
                    .stats
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match fallback {
                    Some(c) => {
                        tracing::warn!(target: "send", "MTA-STS policy of {domain}: fetch failed ({e}); the cached policy stays in force");
                        Some(c.policy)
                    }
                    None => {
                        tracing::warn!(target: "send", "MTA-STS policy of {domain}: fetch failed ({e}); none applies");
                        cache.set_failure(&domain, Some(e.clone()));
                        None
                    }
                }
            }
        },
    }
}

/// How often the cache is looked over for policies about to expire, unless
/// `[outbound] mta_sts_refresh` says otherwise.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);

/// Fetches again, in the background, every cached policy past half its
/// `max_age` (at most a day before it expires; RFC 8461 §10.2: refresh
/// before expiry, so a policy never lapses between deliveries); a failure
/// keeps the cached one.
pub async fn refresh_due(resolver: &TokioResolver, cache: &StsCache) {
    let now = crate::model::unix_now();
    let roots = cache
        .roots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (due, expired) = {
        let mut c = cache.lock();
        let expired = c.expire(now);
        (c.due_for_refresh(now), expired)
    };
    if expired {
        cache.save();
    }
    let Some(roots) = roots else { return };
    for domain in due {
        let id = match txt_id(resolver, &domain).await {
            Some(Ok(id)) => id,
            // No record (now): the cached policy runs out by itself.
            Some(Err(_)) | None => continue,
        };
        match fetch(resolver, &domain, roots.clone()).await {
            Ok(policy) => {
                tracing::info!(target: "send", "MTA-STS policy of {domain} refreshed (id {id})");
                cache.fetched(&domain, id, policy, now);
            }
            Err(e) => {
                cache
                    .stats
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(target: "send", "MTA-STS policy of {domain}: refresh failed ({e}); the cached policy stays in force");
            }
        }
    }
}

/// The cache file in the spool directory.
pub fn cache_file(spool: &Path) -> PathBuf {
    spool.join("mta-sts.json")
}
