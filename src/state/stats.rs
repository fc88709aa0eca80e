//! What a shard counts for the metrics endpoint, and the fixed set of
//! reasons an inbound handshake fails.

use std::io;
use std::sync::atomic::AtomicU64;
use strum::EnumCount;

/// Counters one shard writes and anyone may read. Each shard has its own
/// cache line, so counting costs no cross-core traffic.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub messages: AtomicU64,
    pub starttls_ok: AtomicU64,
    /// Failed handshakes, indexed by [`HandshakeFailure`].
    pub starttls_failed: [AtomicU64; HandshakeFailure::COUNT],
    /// MAIL refused because the profile demands TLS.
    pub mandatory_tls_refusals: AtomicU64,
    /// Other refused MAIL/RCPT (relay denied, certificate checks …).
    pub rejects: AtomicU64,
    /// Connections refused with 421 at `limits.connections`.
    pub refused_total_limit: AtomicU64,
    /// Connections refused with 421 at `limits.connections_per_ip`.
    pub refused_per_ip_limit: AtomicU64,
    /// What report-only profiles would have refused, by
    /// [`crate::policy::Refusal::index`].
    pub would_refuse: [AtomicU64; crate::policy::RefusalKind::COUNT],
    /// Outbound connections opened.
    pub outbound_opened: AtomicU64,
    /// Attempts carried by an idle (cached) outbound connection.
    pub outbound_reused: AtomicU64,
    /// Idle outbound connections the next hop closed, or that died as they
    /// were reused.
    pub outbound_idle_gone: AtomicU64,
}

/// Why an inbound STARTTLS handshake failed: the `reason` label of
/// `sealgate_starttls_total{result="failed"}`. A small fixed set, so the
/// metric's cardinality stays bounded whatever clients do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::EnumCount, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum HandshakeFailure {
    /// Not TLS, or TLS out of order (a plaintext client, a scanner).
    Protocol,
    /// Nothing in common: versions, suites, groups, signature schemes.
    Incompatible,
    /// The client's certificate could not be used.
    Certificate,
    /// The client sent a fatal alert (often: it does not trust ours).
    #[strum(serialize = "alert_received")]
    Alert,
    /// A record failed to decrypt.
    Decrypt,
    /// The client closed or reset the connection mid-handshake.
    Connection,
    /// `command_timeout` passed mid-handshake.
    Timeout,
    Other,
}

impl HandshakeFailure {
    /// The `reason` label of the handshake-failure counter.
    pub fn label(self) -> &'static str {
        self.into()
    }

    /// The reason for an error from the TLS layer: rustls's own, or the
    /// socket's.
    pub fn of(e: &io::Error) -> HandshakeFailure {
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return HandshakeFailure::Connection;
        };
        match tls {
            rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::InvalidMessage(_)
            | rustls::Error::PeerMisbehaved(_) => HandshakeFailure::Protocol,
            rustls::Error::PeerIncompatible(_) => HandshakeFailure::Incompatible,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                HandshakeFailure::Certificate
            }
            rustls::Error::AlertReceived(_) => HandshakeFailure::Alert,
            rustls::Error::DecryptError => HandshakeFailure::Decrypt,
            _ => HandshakeFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HandshakeFailure;
    use std::io;

    #[test]
    fn handshake_failures_map_to_a_fixed_set_of_reasons() {
        let tls = |e: rustls::Error| HandshakeFailure::of(&io::Error::other(e));
        assert_eq!(
            tls(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            )),
            HandshakeFailure::Protocol
        );
        assert_eq!(
            tls(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::NoCipherSuitesInCommon
            )),
            HandshakeFailure::Incompatible
        );
        assert_eq!(
            tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
            )),
            HandshakeFailure::Alert
        );
        assert_eq!(tls(rustls::Error::DecryptError), HandshakeFailure::Decrypt);
        assert_eq!(
            HandshakeFailure::of(&io::Error::from(io::ErrorKind::ConnectionReset)),
            HandshakeFailure::Connection
        );
        use strum::{EnumCount, IntoEnumIterator};
        let labels: std::collections::HashSet<&str> =
            HandshakeFailure::iter().map(|h| h.label()).collect();
        assert_eq!(labels.len(), HandshakeFailure::COUNT);
    }
}
