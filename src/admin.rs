//! The admin endpoint (OPS-4): Prometheus text exposition at
//! `http://[admin.listen]/metrics`, served by hyper on a small tokio
//! runtime of its own: connections are served concurrently, a request's
//! headers must arrive within 5 seconds and fit 16 KiB, and a connection
//! lives at most 30 seconds, so a slow or stuck client never delays a
//! scrape. Counters live per shard (each written by its shard alone, on its
//! own cache line) and are summed here, at scrape time: nothing on the
//! connection path touches a shared counter.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::shard::Shared;

/// How long a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Request headers larger than this are refused (hyper's smallest buffer
/// is 8 KiB).
const MAX_HEADERS: usize = 16 * 1024;

/// The answer to one request: `GET /metrics` (any query) gets the
/// exposition text, anything else a 404.
fn answer(
    method: &hyper::Method,
    path: &str,
    shared: &Shared,
    certificates: &[PathBuf],
) -> (hyper::StatusCode, String) {
    if (method == hyper::Method::GET || method == hyper::Method::HEAD) && path == "/metrics" {
        (hyper::StatusCode::OK, render(shared, certificates))
    } else {
        (hyper::StatusCode::NOT_FOUND, "try /metrics\n".to_string())
    }
}

/// Starts the endpoint on its own thread.
pub fn start(listen: &str, shared: Arc<Shared>, certificates: Vec<PathBuf>) -> Result<(), String> {
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| format!("admin.listen {listen}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("admin.listen {listen}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the admin runtime: {e}"))?;
    let certificates = Arc::new(certificates);
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
                    let (shared, certificates) = (shared.clone(), certificates.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (status, body) =
                                    answer(req.method(), req.uri().path(), &shared, &certificates);
                                let response = hyper::Response::builder()
                                    .status(status)
                                    .header(
                                        hyper::header::CONTENT_TYPE,
                                        "text/plain; version=0.0.4; charset=utf-8",
                                    )
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
        .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    Ok(())
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition text.
pub fn render(shared: &Shared, certificates: &[PathBuf]) -> String {
    let mut o = String::with_capacity(4096);
    let per_shard = |o: &mut String,
                     name: &str,
                     kind: &str,
                     help: &str,
                     get: &dyn Fn(&crate::shard::ShardStats) -> u64| {
        metric(o, name, kind, help);
        for (i, s) in shared.stats.iter().enumerate() {
            let _ = writeln!(o, "{name}{{shard=\"{i}\"}} {}", get(s));
        }
    };
    per_shard(
        &mut o,
        "sealgate_connections_accepted_total",
        "counter",
        "Inbound connections accepted.",
        &|s| s.accepted.load(Ordering::Relaxed),
    );
    per_shard(
        &mut o,
        "sealgate_connections_active",
        "gauge",
        "Inbound connections open now.",
        &|s| s.active.load(Ordering::Relaxed),
    );
    per_shard(
        &mut o,
        "sealgate_messages_accepted_total",
        "counter",
        "Messages answered 250 after DATA.",
        &|s| s.messages.load(Ordering::Relaxed),
    );
    metric(
        &mut o,
        "sealgate_starttls_total",
        "counter",
        "Inbound STARTTLS handshakes by result.",
    );
    for (i, s) in shared.stats.iter().enumerate() {
        let _ = writeln!(
            o,
            "sealgate_starttls_total{{shard=\"{i}\",result=\"ok\"}} {}",
            s.starttls_ok.load(Ordering::Relaxed)
        );
        for (why, n) in crate::shard::HandshakeFailure::ALL
            .iter()
            .zip(&s.starttls_failed)
        {
            let _ = writeln!(
                o,
                "sealgate_starttls_total{{shard=\"{i}\",result=\"failed\",reason=\"{}\"}} {}",
                why.label(),
                n.load(Ordering::Relaxed)
            );
        }
    }
    // A per-shard counter split by one more label.
    type Get = fn(&crate::shard::ShardStats) -> &std::sync::atomic::AtomicU64;
    let per_shard_by =
        |o: &mut String, name: &str, help: &str, label: &str, series: &[(&str, Get)]| {
            metric(o, name, "counter", help);
            for (i, s) in shared.stats.iter().enumerate() {
                for (value, get) in series {
                    let n = get(s).load(Ordering::Relaxed);
                    let _ = writeln!(o, "{name}{{shard=\"{i}\",{label}=\"{value}\"}} {n}");
                }
            }
        };
    per_shard_by(
        &mut o,
        "sealgate_refused_total",
        "Refused MAIL and RCPT commands by reason.",
        "reason",
        &[
            ("mandatory_tls", |s| &s.mandatory_tls_refusals),
            ("policy", |s| &s.rejects),
        ],
    );
    per_shard_by(
        &mut o,
        "sealgate_connections_refused_total",
        "Inbound connections answered 421 at a connection limit, by limit.",
        "limit",
        &[
            ("connections", |s| &s.refused_total_limit),
            ("connections_per_ip", |s| &s.refused_per_ip_limit),
        ],
    );
    if let Some(st) = shared.spool.get() {
        for (name, help, c) in [
            (
                "sealgate_spool_messages_stored_total",
                "Messages made durable in the journals.",
                &st.stored,
            ),
            (
                "sealgate_spool_writes_total",
                "Vectored writes of record batches into journal segments.",
                &st.writes,
            ),
            (
                "sealgate_spool_syncs_total",
                "fdatasync calls on journal segments (group commit: one per batch).",
                &st.syncs,
            ),
            (
                "sealgate_spool_copied_forward_total",
                "Long-lived messages copied forward to free a segment.",
                &st.copied,
            ),
            (
                "sealgate_spool_segments_freed_total",
                "Journal segments freed for reuse.",
                &st.freed,
            ),
        ] {
            metric(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", c.load(Ordering::Relaxed));
        }
    }
    metric(
        &mut o,
        "sealgate_queue_messages",
        "gauge",
        "Messages in the queue.",
    );
    let _ = writeln!(
        o,
        "sealgate_queue_messages {}",
        shared.delivery.queue_messages.load(Ordering::Relaxed)
    );
    metric(
        &mut o,
        "sealgate_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest queued message.",
    );
    let oldest = shared.delivery.queue_oldest_arrival.load(Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let _ = writeln!(
        o,
        "sealgate_queue_oldest_age_seconds {}",
        if oldest == 0 {
            0
        } else {
            now.saturating_sub(oldest)
        }
    );
    metric(
        &mut o,
        "sealgate_deliveries_total",
        "counter",
        "Delivery outcomes per recipient, by the TLS of the attempt.",
    );
    for (i, outcome) in ["sent", "deferred", "bounced", "expired"]
        .iter()
        .enumerate()
    {
        for tls in crate::delivery::TlsLevel::ALL {
            let _ = writeln!(
                o,
                "sealgate_deliveries_total{{outcome=\"{outcome}\",tls=\"{}\"}} {}",
                tls.label(),
                shared.delivery.deliveries[i][tls.index()].load(Ordering::Relaxed)
            );
        }
    }
    metric(
        &mut o,
        "sealgate_reloads_total",
        "counter",
        "Configuration reloads by result.",
    );
    let _ = writeln!(
        o,
        "sealgate_reloads_total{{result=\"ok\"}} {}",
        shared.reloads_ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        o,
        "sealgate_reloads_total{{result=\"failed\"}} {}",
        shared.reloads_failed.load(Ordering::Relaxed)
    );
    metric(
        &mut o,
        "sealgate_last_reload_timestamp_seconds",
        "gauge",
        "Unix time of the last successful reload (0: none).",
    );
    let _ = writeln!(
        o,
        "sealgate_last_reload_timestamp_seconds {}",
        shared.last_reload.load(Ordering::Relaxed)
    );
    metric(
        &mut o,
        "sealgate_certificate_expiry_timestamp_seconds",
        "gauge",
        "When each configured certificate expires (Unix time); subtract time() for the time left.",
    );
    metric(
        &mut o,
        "sealgate_certificate_expiry_remaining_seconds",
        "gauge",
        "Time left until each configured certificate expires.",
    );
    for (path, _, _, not_after) in crate::tls::days_left(certificates) {
        let file = path
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        let _ = writeln!(
            o,
            "sealgate_certificate_expiry_timestamp_seconds{{file=\"{file}\"}} {not_after}"
        );
        let _ = writeln!(
            o,
            "sealgate_certificate_expiry_remaining_seconds{{file=\"{file}\"}} {}",
            not_after - now as i64
        );
    }
    o
}
