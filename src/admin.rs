//! The admin endpoint (OPS-4): Prometheus text exposition at
//! `http://[admin.listen]/metrics`, served by hyper on a small tokio
//! runtime of its own: connections are served concurrently, a request's
//! headers must arrive within 5 seconds and fit 16 KiB, and a connection
//! lives at most 30 seconds, so a slow or stuck client never delays a
//! scrape. Counters live per shard (each written by its shard alone, on its
//! own cache line) and are read here, at scrape time, by a
//! `prometheus-client` collector that encodes them: nothing on the
//! connection path touches a shared counter.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use strum::IntoEnumIterator;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The gateway's log buffer, for its count of dropped lines (set when
/// logging starts).
pub static LOG_BUFFER: std::sync::OnceLock<Arc<crate::logbuf::LogBuffer>> =
    std::sync::OnceLock::new();

use crate::delivery::queue::Counted;
use crate::delivery::{TlsLevel, WouldRefuse};
use crate::dns::DaneResult;
use crate::state::{HandshakeFailure, ShardStats, Shared};

/// How long a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Request headers larger than this are refused (hyper's smallest buffer
/// is 8 KiB).
const MAX_HEADERS: usize = 16 * 1024;

/// What the endpoint serves from.
struct Sources {
    registry: Registry,
    shared: Arc<Shared>,
    certificates: Vec<PathBuf>,
}

/// The answer to one request (any query): `GET /metrics` the exposition
/// text, `GET /` the status page, `GET /status.json` the same as JSON,
/// anything else a 404. Status and content type, body.
fn answer(
    method: &hyper::Method,
    path: &str,
    from: &Sources,
) -> (hyper::StatusCode, &'static str, String) {
    let ok = hyper::StatusCode::OK;
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return (
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "read-only: GET /, /status.json, /metrics\n".into(),
        );
    }
    match path {
        "/metrics" => (ok, prometheus_text::CONTENT_TYPE, render(&from.registry)),
        "/" => (
            ok,
            "text/html; charset=utf-8",
            crate::status::read(&from.shared, &from.certificates).html(),
        ),
        "/status.json" => (
            ok,
            "application/json",
            serde_json::to_string_pretty(&crate::status::read(&from.shared, &from.certificates))
                .unwrap_or_default(),
        ),
        _ => (
            hyper::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "try /, /status.json or /metrics\n".to_string(),
        ),
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("admin.listen {listen}: {source}")]
    Listen {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the admin runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot start the admin thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Starts the endpoint on its own thread; returns the address it is
/// bound to.
pub fn start(
    listen: &str,
    shared: Arc<Shared>,
    certificates: Vec<PathBuf>,
) -> Result<std::net::SocketAddr, StartError> {
    let bound = |source| StartError::Listen {
        listen: listen.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(bound)?;
    listener.set_nonblocking(true).map_err(bound)?;
    let at = listener.local_addr().map_err(bound)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let sources = Arc::new(Sources {
        registry: registry(shared.clone(), certificates.clone()),
        shared,
        certificates,
    });
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("admin endpoint: {e}");
                        return;
                    }
                };
                loop {
                    let stream = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!("admin endpoint: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let sources = sources.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (status, content_type, body) =
                                    answer(req.method(), req.uri().path(), &sources);
                                let response = hyper::Response::builder()
                                    .status(status)
                                    .header(hyper::header::CONTENT_TYPE, content_type)
                                    .body(http_body_util::Full::new(hyper::body::Bytes::from(
                                        body,
                                    )));
                                async move { response }
                            },
                        );
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .max_buf_size(MAX_HEADERS)
                            .keep_alive(false)
                            .title_case_headers(true)
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                    });
                }
            })
        })
        .map_err(StartError::Thread)?;
    Ok(at)
}

/// `sealgate_tls_downgrades_total{from,to}`: every change for the worse,
/// zero until seen.
fn downgrades(delivery: &crate::delivery::Gauges) -> Vec<(Labels, u64)> {
    let seen = delivery
        .postures
        .lock()
        .map(|p| p.counts())
        .unwrap_or_default();
    let mut out = Vec::new();
    for from in TlsLevel::iter() {
        for to in TlsLevel::iter() {
            if from.rank() <= to.rank() {
                continue;
            }
            let n = seen
                .iter()
                .find(|(f, t, _)| *f == from && *t == to)
                .map_or(0, |(_, _, n)| *n);
            out.push((
                vec![("from", from.label().into()), ("to", to.label().into())],
                n,
            ));
        }
    }
    out
}

/// The gateway's metrics as a prometheus-client [`Collector`]: every
/// family is read from the shards' and the scheduler's atomics at scrape
/// time and encoded by the library (names, escaping, HELP/TYPE lines).
struct Metrics {
    shared: Arc<Shared>,
    certificates: Arc<Vec<PathBuf>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("shards", &self.shared.stats.len())
            .field("certificates", &self.certificates)
            .finish()
    }
}

/// A label set as prometheus-client encodes it.
type Labels = Vec<(&'static str, String)>;

/// One metric family of constant counters or gauges.
enum Family {
    Counter(Vec<(Labels, u64)>),
    Gauge(Vec<(Labels, i64)>),
}

impl Family {
    fn encode(
        self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
    ) -> Result<(), std::fmt::Error> {
        match self {
            Family::Counter(series) => {
                let mut family =
                    encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (labels, value) in series {
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
            Family::Gauge(series) => {
                let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for (labels, value) in series {
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

fn load(n: &AtomicU64) -> u64 {
    n.load(Ordering::Relaxed)
}

/// A `result="ok"|"failed"` pair of counters.
fn ok_failed(ok: &AtomicU64, failed: &AtomicU64) -> Family {
    Family::Counter(vec![
        (vec![("result", "ok".into())], load(ok)),
        (vec![("result", "failed".into())], load(failed)),
    ])
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A family with one series per shard and label set: `shard="N"`
    /// first, then the labels `series` gives.
    fn per_shard(&self, series: &dyn Fn(&ShardStats) -> Vec<(Labels, u64)>) -> Vec<(Labels, u64)> {
        let mut out = Vec::new();
        for (i, s) in self.shared.stats.iter().enumerate() {
            for (mut labels, value) in series(s) {
                labels.insert(0, ("shard", i.to_string()));
                out.push((labels, value));
            }
        }
        out
    }

    /// Every family, in exposition order. The counters are named without
    /// their `_total`, which the encoder adds.
    fn families(&self) -> Vec<(&'static str, &'static str, Family)> {
        let shared = &self.shared;
        let mut f = vec![
            (
                "sealgate_connections_accepted",
                "Inbound connections accepted.",
                Family::Counter(self.per_shard(&|s| vec![(vec![], load(&s.accepted))])),
            ),
            (
                "sealgate_connections_active",
                "Inbound connections open now.",
                Family::Gauge(
                    self.per_shard(&|s| vec![(vec![], load(&s.active))])
                        .into_iter()
                        .map(|(l, v)| (l, gauge(v)))
                        .collect(),
                ),
            ),
            (
                "sealgate_messages_accepted",
                "Messages answered 250 after DATA.",
                Family::Counter(self.per_shard(&|s| vec![(vec![], load(&s.messages))])),
            ),
            (
                "sealgate_outbound_connections",
                "Outbound connections: opened, attempts carried by an idle one (reused), idle ones that went away.",
                Family::Counter(self.per_shard(&|s| {
                    vec![
                        (vec![("event", "opened".into())], load(&s.outbound_opened)),
                        (vec![("event", "reused".into())], load(&s.outbound_reused)),
                        (vec![("event", "idle_gone".into())], load(&s.outbound_idle_gone)),
                    ]
                })),
            ),
            (
                "sealgate_starttls",
                "Inbound STARTTLS handshakes by result.",
                Family::Counter(self.per_shard(&|s| {
                    let mut series = vec![(vec![("result", "ok".into())], load(&s.starttls_ok))];
                    for (why, n) in HandshakeFailure::iter().zip(&s.starttls_failed) {
                        series.push((
                            vec![("result", "failed".into()), ("reason", why.label().into())],
                            load(n),
                        ));
                    }
                    series
                })),
            ),
            (
                "sealgate_refused",
                "Refused MAIL and RCPT commands by reason.",
                Family::Counter(self.per_shard(&|s| {
                    vec![
                        (
                            vec![("reason", "mandatory_tls".into())],
                            load(&s.mandatory_tls_refusals),
                        ),
                        (vec![("reason", "policy".into())], load(&s.rejects)),
                    ]
                })),
            ),
            (
                "sealgate_connections_refused",
                "Inbound connections answered 421 at a connection limit, by limit.",
                Family::Counter(self.per_shard(&|s| {
                    vec![
                        (
                            vec![("limit", "connections".into())],
                            load(&s.refused_total_limit),
                        ),
                        (
                            vec![("limit", "connections_per_ip".into())],
                            load(&s.refused_per_ip_limit),
                        ),
                    ]
                })),
            ),
        ];
        if let Some(st) = shared.spool.get() {
            for (name, help, c) in [
                (
                    "sealgate_spool_messages_stored",
                    "Messages made durable in the journals.",
                    &st.stored,
                ),
                (
                    "sealgate_spool_writes",
                    "Vectored writes of record batches into journal segments.",
                    &st.writes,
                ),
                (
                    "sealgate_spool_syncs",
                    "fdatasync calls on journal segments (group commit: one per batch).",
                    &st.syncs,
                ),
                (
                    "sealgate_spool_copied_forward",
                    "Long-lived messages copied forward to free a segment.",
                    &st.copied,
                ),
                (
                    "sealgate_spool_segments_freed",
                    "Journal segments freed for reuse.",
                    &st.freed,
                ),
            ] {
                f.push((name, help, Family::Counter(vec![(vec![], load(c))])));
            }
        }
        let now = crate::model::unix_now();
        let oldest = load(&shared.delivery.queue_oldest_arrival);
        let age = if oldest == 0 {
            0
        } else {
            now.saturating_sub(oldest)
        };
        let mut deliveries = Vec::new();
        for outcome in Counted::iter() {
            for tls in TlsLevel::iter() {
                deliveries.push((
                    vec![
                        ("outcome", outcome.as_str().into()),
                        ("tls", tls.label().into()),
                    ],
                    load(&shared.delivery.deliveries[outcome as usize][tls.index()]),
                ));
            }
        }
        let mut would_refuse: Vec<(Labels, u64)> = WouldRefuse::iter()
            .map(|w| {
                let (source, reason) = w.labels();
                (
                    vec![("source", source.into()), ("reason", reason.into())],
                    load(&shared.delivery.would_refuse[w.index()]),
                )
            })
            .collect();
        // Report-only inbound profiles, summed over the shards.
        for kind in crate::policy::RefusalKind::iter() {
            let n = shared
                .stats
                .iter()
                .map(|s| load(&s.would_refuse[kind as usize]))
                .sum();
            let reason: &'static str = kind.into();
            would_refuse.push((
                vec![
                    ("source", "profile.server".into()),
                    ("reason", reason.into()),
                ],
                n,
            ));
        }
        let dane_lookups = shared.dane.get().map(|d| {
            DaneResult::iter()
                .zip(&d.results)
                .map(|(r, n)| (vec![("result", r.label().into())], load(n)))
                .collect()
        });
        let mut expiry = Vec::new();
        let mut remaining = Vec::new();
        for (path, _, _, not_after) in crate::tls::days_left(&self.certificates) {
            let file = vec![("file", path.display().to_string())];
            remaining.push((file.clone(), not_after - gauge(now)));
            expiry.push((file, not_after));
        }
        f.extend([
            (
                "sealgate_queue_messages",
                "Messages in the queue.",
                Family::Gauge(vec![(vec![], gauge(load(&shared.delivery.queue_messages)))]),
            ),
            (
                "sealgate_queue_oldest_age_seconds",
                "Age of the oldest queued message.",
                Family::Gauge(vec![(vec![], gauge(age))]),
            ),
            (
                "sealgate_deliveries",
                "Delivery outcomes per recipient, by the TLS of the attempt.",
                Family::Counter(deliveries),
            ),
            (
                "sealgate_policy_would_refuse",
                "What a report-only rule would have refused (deliveries, inbound MAIL), by rule and reason.",
                Family::Counter(would_refuse),
            ),
            (
                "sealgate_tls_downgrades",
                "Deliveries to a destination domain whose TLS was worse than the last one's, by level.",
                Family::Counter(downgrades(&shared.delivery)),
            ),
            (
                "sealgate_tls_required_no",
                "Messages whose delivery set a recipient's DANE or MTA-STS policy aside for their TLS-Required: No header (RFC 8689).",
                Family::Counter(vec![(vec![], load(&shared.delivery.tls_required_no))]),
            ),
            (
                "sealgate_log_lines_dropped",
                "Log lines dropped because the log writer fell behind (4 MiB wait; shards never wait for it).",
                Family::Counter(vec![(
                    vec![],
                    LOG_BUFFER.get().map_or(0, |b| b.dropped()),
                )]),
            ),
            (
                "sealgate_reloads",
                "Configuration reloads by result.",
                ok_failed(&shared.reloads_ok, &shared.reloads_failed),
            ),
            (
                "sealgate_acme_renewals",
                "ACME orders (first issuance and renewals) by result.",
                ok_failed(&shared.acme.renewals_ok, &shared.acme.renewals_failed),
            ),
            (
                "sealgate_acme_key_roll",
                "The ACME key roll's state: 1 for the state it is in (off without [acme.dane]).",
                Family::Gauge({
                    use strum::IntoEnumIterator;
                    let now = crate::acme::RollPhase::from_repr(
                        shared.acme.roll.load(Ordering::Relaxed),
                    )
                    .unwrap_or(crate::acme::RollPhase::Off);
                    crate::acme::RollPhase::iter()
                        .map(|p| {
                            let name: &'static str = p.into();
                            (vec![("state", name.into())], i64::from(p == now))
                        })
                        .collect()
                }),
            ),
            (
                "sealgate_last_reload_timestamp_seconds",
                "Unix time of the last successful reload (0: none).",
                Family::Gauge(vec![(vec![], gauge(load(&shared.last_reload)))]),
            ),
            (
                "sealgate_certificate_expiry_timestamp_seconds",
                "When each configured certificate expires (Unix time); subtract time() for the time left.",
                Family::Gauge(expiry),
            ),
            (
                "sealgate_certificate_expiry_remaining_seconds",
                "Time left until each configured certificate expires.",
                Family::Gauge(remaining),
            ),
        ]);
        if let Some(fleet) = shared.fleet.get() {
            f.push((
                "sealgate_fleet_store_up",
                "1 while the fleet's store (Redis) answers, 0 during an outage.",
                Family::Gauge(vec![(vec![], i64::from(fleet.up.load(Ordering::Relaxed)))]),
            ));
            f.push((
                "sealgate_fleet_nodes_up",
                "Nodes of the fleet whose heartbeat is in the store, as last read.",
                Family::Gauge(vec![(
                    vec![],
                    fleet.nodes.lock().map_or(0, |n| gauge(n.len() as u64)),
                )]),
            ));
        }
        if let Some(sts) = shared.sts.get() {
            f.push((
                "sealgate_mta_sts_fetches",
                "MTA-STS policy fetches, by result (RFC 8461).",
                ok_failed(&sts.stats.fetched, &sts.stats.failed),
            ));
        }
        if let Some(series) = dane_lookups {
            f.push((
                "sealgate_dane_lookups",
                "DANE lookups per MX host, by result (RFC 7672).",
                Family::Counter(series),
            ));
        }
        f
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, family) in self.families() {
            family.encode(&mut encoder, name, help)?;
        }
        Ok(())
    }
}

/// The exposition text (Prometheus text format 0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    if let Err(e) = prometheus_text::encode(&mut out, registry) {
        tracing::warn!("admin endpoint: cannot encode the metrics: {e}");
    }
    out
}

/// The registry the endpoint encodes: one collector over the gateway's
/// counters.
pub fn registry(shared: Arc<Shared>, certificates: Vec<PathBuf>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Metrics {
        shared,
        certificates: Arc::new(certificates),
    }));
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition reads the live counters at each scrape, under the
    /// names and labels the operators' dashboards use.
    #[test]
    fn families_read_the_counters_at_scrape_time() {
        let shared = Shared::new(crate::snapshot::Snapshot::for_tests("h", &["a"]), 2);
        let registry = registry(shared.clone(), vec![]);
        let before = render(&registry);
        assert!(before.contains("sealgate_messages_accepted_total{shard=\"1\"} 0\n"));
        assert!(
            !before.contains("sealgate_spool_"),
            "no journal, no spool family"
        );
        shared.stats[1].messages.fetch_add(3, Ordering::Relaxed);
        shared.stats[0].starttls_failed[1].fetch_add(2, Ordering::Relaxed);
        shared.delivery.deliveries[Counted::Bounced as usize][TlsLevel::Trusted.index()]
            .fetch_add(1, Ordering::Relaxed);
        shared.spool.set(Arc::default()).ok();
        let after = render(&registry);
        for line in [
            "# TYPE sealgate_messages_accepted_total counter\n",
            "sealgate_messages_accepted_total{shard=\"1\"} 3\n",
            "sealgate_starttls_total{shard=\"0\",result=\"failed\",reason=\"incompatible\"} 2\n",
            "sealgate_deliveries_total{outcome=\"bounced\",tls=\"trusted\"} 1\n",
            "# TYPE sealgate_connections_active gauge\n",
            "sealgate_spool_syncs_total 0\n",
            "sealgate_queue_oldest_age_seconds 0\n",
        ] {
            assert!(after.contains(line), "{line:?} missing from\n{after}");
        }
        assert!(!after.contains("# EOF"), "Prometheus text, not OpenMetrics");
    }

    /// The derived label tables say what dashboards (and
    /// docs/operations.md) name, in the counters' order.
    #[test]
    fn labels_are_the_documented_ones() {
        use crate::delivery::WouldRefuse;
        use crate::dns::DaneResult;
        use crate::policy::RefusalKind;
        let labels = |v: Vec<&'static str>| v.join(" ");
        assert_eq!(
            labels(TlsLevel::iter().map(TlsLevel::label).collect()),
            "dane mta-sts verified trusted untrusted none"
        );
        assert_eq!(
            labels(Counted::iter().map(Counted::as_str).collect()),
            "sent deferred bounced expired"
        );
        assert_eq!(
            labels(
                HandshakeFailure::iter()
                    .map(HandshakeFailure::label)
                    .collect()
            ),
            "protocol incompatible certificate alert_received decrypt connection timeout other"
        );
        assert_eq!(
            labels(DaneResult::iter().map(DaneResult::label).collect()),
            "ok unusable insecure bogus tempfail"
        );
        assert_eq!(
            labels(RefusalKind::iter().map(Into::into).collect()),
            "relay_denied tls_required cipher client_cert_missing client_cert_unverified client_cert_name client_cert_pin"
        );
        assert_eq!(
            WouldRefuse::iter()
                .map(WouldRefuse::index)
                .collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
    }
}
