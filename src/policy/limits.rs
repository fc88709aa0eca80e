//! The limits a session enforces (`[limits]`), with their defaults.

use std::time::Duration;

use crate::model::BareLineEndings;

#[derive(Debug, Clone)]
pub struct Limits {
    /// RFC 5321 §4.5.3.1.4: 512 octets including CRLF.
    pub command_line: usize,
    /// RFC 5321 §4.5.3.1.6: 1000 octets including CRLF.
    pub text_line: usize,
    pub message_size: usize,
    pub recipients: usize,
    pub connections: usize,
    pub connections_per_ip: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Octets per second a client must average in DATA once
    /// `data_timeout` has passed since the 354 (0: no such floor).
    pub min_data_rate: u64,
    /// Errors (4xx/5xx replies to commands) before the session is closed.
    pub errors: usize,
    /// How long a stopping gateway lets sessions finish their messages.
    pub shutdown_timeout: Duration,
    pub bare_line_endings: BareLineEndings,
    /// Octets of one message's data a session holds in memory; beyond
    /// them the data streams to the spool's staging area as it arrives.
    pub message_buffer: usize,
    /// Octets of message data held in memory by all sessions and spool
    /// writer queues together; past it, MAIL and DATA get `452 4.3.1`
    /// and sessions in DATA stream every chunk to storage.
    pub inflight_data: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            command_line: 512,
            text_line: 1000,
            message_size: 25_000_000,
            recipients: 1000,
            connections: 20_000,
            connections_per_ip: 50,
            // RFC 5321 §4.5.3.2.7: server timeout of at least 5 minutes.
            command_timeout: Duration::from_secs(300),
            // RFC 5321 §4.5.3.2.6 gives the client 10 minutes for the
            // final dot; we wait as long between data chunks.
            data_timeout: Duration::from_secs(600),
            // As Postfix's smtpd_min_data_rate: a slow-drip client cannot
            // hold a session open forever by sending a byte now and then.
            min_data_rate: 500,
            errors: 20,
            shutdown_timeout: Duration::from_secs(30),
            bare_line_endings: BareLineEndings::Reject,
            message_buffer: 256 * 1024,
            inflight_data: 256 * 1024 * 1024,
        }
    }
}

/// The process's open-file limit once the gateway has raised it (0 until
/// then): what `limits.connections` defaults to depends on it.
pub static OPEN_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Descriptors kept for everything but inbound connections: outbound
/// connections, the spool's journals and staging files, the listeners.
pub const RESERVED_FILES: u64 = 1024;

/// `limits.connections` when the file does not set it: 20,000, or fewer
/// where the open-file limit would not cover them (each connection is a
/// descriptor, and past the limit accepts fail instead of answering 421).
pub fn default_connections() -> usize {
    let d = Limits::default().connections;
    match std::sync::atomic::AtomicU64::load(&OPEN_FILES, std::sync::atomic::Ordering::Relaxed) {
        0 => d,
        n => d.min(n.saturating_sub(RESERVED_FILES).max(64) as usize),
    }
}
