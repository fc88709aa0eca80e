//! The admin endpoint (OPS-4): Prometheus text exposition at
//! `http://[admin.listen]/metrics`. Counters live per shard (each written by
//! its shard alone, on its own cache line) and are summed here, at scrape
//! time: nothing on the connection path touches a shared counter.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::shard::Shared;

/// Starts the endpoint on its own thread (one request at a time: a
/// scraper, not a web server).
pub fn start(listen: &str, shared: Arc<Shared>, certificates: Vec<PathBuf>) -> Result<(), String> {
    let listener = TcpListener::bind(listen).map_err(|e| format!("admin.listen {listen}: {e}"))?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if request.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
                    ("200 OK", render(&shared, &certificates))
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let mut w = &stream;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
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
