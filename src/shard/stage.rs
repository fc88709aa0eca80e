//! A connection's TLS (RFC 3207), inbound and outbound: one state at a
//! time, each owning the TLS connection it has.

/// Where a connection's TLS is; `T` is the TLS connection (the shard's
/// server side, or rustls's client).
pub(super) enum TlsStage<T> {
    /// In the clear: no STARTTLS (yet).
    Clear,
    /// STARTTLS accepted; the handshake is under way.
    Handshaking(T),
    /// The handshake completed.
    Established(T),
    /// The handshake failed (and was counted); only its alert goes out.
    Failed(T),
}

impl<T> TlsStage<T> {
    pub(super) fn conn(&self) -> Option<&T> {
        match self {
            TlsStage::Clear => None,
            TlsStage::Handshaking(t) | TlsStage::Established(t) | TlsStage::Failed(t) => Some(t),
        }
    }

    pub(super) fn conn_mut(&mut self) -> Option<&mut T> {
        match self {
            TlsStage::Clear => None,
            TlsStage::Handshaking(t) | TlsStage::Established(t) | TlsStage::Failed(t) => Some(t),
        }
    }

    pub(super) fn handshaking(&self) -> bool {
        matches!(self, TlsStage::Handshaking(_))
    }

    /// The handshake completed.
    pub(super) fn establish(&mut self) {
        *self = match std::mem::replace(self, TlsStage::Clear) {
            TlsStage::Handshaking(t) => TlsStage::Established(t),
            other @ (TlsStage::Clear | TlsStage::Established(_) | TlsStage::Failed(_)) => other,
        };
    }

    /// The handshake failed: true the first time (to be counted once).
    pub(super) fn fail(&mut self) -> bool {
        match std::mem::replace(self, TlsStage::Clear) {
            TlsStage::Handshaking(t) => {
                *self = TlsStage::Failed(t);
                true
            }
            other @ (TlsStage::Clear | TlsStage::Established(_) | TlsStage::Failed(_)) => {
                *self = other;
                false
            }
        }
    }
}
