//! The queue's log lines (target `send`), typed. Each is made by the
//! queue core, carried to its journal's spool writer and said there once
//! the changes before it are durable (`spool::Work::Say`). Its `Display`
//! is the Postfix wording, written exactly so in the text format; its
//! facts are also the event's fields, each under its own key in the JSON
//! format (docs/operations.md, "Logs"). It imports only `model`.

use std::fmt;

/// What one recipient's attempt came to (`status=`; also the `outcome`
/// label of `sealgate_deliveries_total`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::EnumCount, strum::IntoStaticStr,
)]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    Sent = 0,
    Deferred = 1,
    Bounced = 2,
    Expired = 3,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Which notification went (or could not go) to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    NonDelivery,
    Delay,
    Relay,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::NonDelivery => "non-delivery notification",
            Notice::Delay => "delay notification",
            Notice::Relay => "relay notification",
        }
    }
}

/// One line of the queue's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueLine {
    /// `ID: to=<R>, relay=…, delay=N, dsn=X.Y.Z, status=… (reply)`.
    Recipient {
        id: String,
        to: String,
        /// `, notify=…, orcpt=…` where the sender gave them (RFC 3461).
        dsn_params: String,
        /// `host[ip]:port`; none before a server answered (`relay=none`).
        relay: Option<String>,
        /// Seconds since the message arrived.
        delay: u64,
        /// The enhanced status code (RFC 3463).
        dsn: crate::model::EnhancedStatus,
        status: Status,
        /// The server's reply or the failure, on one line.
        reply: String,
    },
    /// `ID: to=<R>: NOTIFY=…: no notification` (RFC 3461 §4.1).
    NotNotified {
        id: String,
        to: String,
        notify: String,
    },
    /// RFC 5321 §6.1: never a bounce for a bounce.
    NullSender {
        id: String,
    },
    /// `ID: sender NOTICE: DSN-ID`.
    Notified {
        id: String,
        notice: Notice,
        dsn_id: String,
    },
    /// The notice could not be queued; delivery goes on.
    NoticeFailed {
        id: String,
        notice: Notice,
        error: String,
    },
    /// The final notification could not be queued; the message is kept.
    NotificationKept {
        id: String,
        error: String,
    },
    /// Every recipient is done.
    Removed {
        id: String,
    },
    RemovedByAdministrator {
        id: String,
    },
    Held {
        id: String,
    },
    Released {
        id: String,
    },
}

impl QueueLine {
    pub fn id(&self) -> &str {
        match self {
            QueueLine::Recipient { id, .. }
            | QueueLine::NotNotified { id, .. }
            | QueueLine::NullSender { id }
            | QueueLine::Notified { id, .. }
            | QueueLine::NoticeFailed { id, .. }
            | QueueLine::NotificationKept { id, .. }
            | QueueLine::Removed { id }
            | QueueLine::RemovedByAdministrator { id }
            | QueueLine::Held { id }
            | QueueLine::Released { id } => id,
        }
    }

    /// Writes the line to the log, its facts as fields.
    pub fn emit(&self) {
        match self {
            QueueLine::Recipient {
                id,
                to,
                relay,
                delay,
                dsn,
                status,
                reply,
                ..
            } => tracing::info!(
                target: "send",
                queue_id = %id,
                to = %to,
                relay = relay.as_deref(),
                delay = delay,
                dsn = %dsn,
                status = status.as_str(),
                reply = %reply,
                "{self}"
            ),
            QueueLine::NotNotified { id, to, notify } => tracing::info!(
                target: "send",
                queue_id = %id,
                to = %to,
                notify = %notify,
                "{self}"
            ),
            QueueLine::Notified { id, notice, dsn_id } => tracing::info!(
                target: "send",
                queue_id = %id,
                notice = notice.as_str(),
                dsn_queue_id = %dsn_id,
                "{self}"
            ),
            QueueLine::NoticeFailed { id, notice, error } => tracing::info!(
                target: "send",
                queue_id = %id,
                notice = notice.as_str(),
                error = %error,
                "{self}"
            ),
            QueueLine::NotificationKept { id, error } => tracing::info!(
                target: "send",
                queue_id = %id,
                error = %error,
                "{self}"
            ),
            QueueLine::NullSender { id }
            | QueueLine::Removed { id }
            | QueueLine::RemovedByAdministrator { id }
            | QueueLine::Held { id }
            | QueueLine::Released { id } => {
                tracing::info!(target: "send", queue_id = %id, "{self}")
            }
        }
    }
}

impl fmt::Display for QueueLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueLine::Recipient {
                id,
                to,
                dsn_params,
                relay,
                delay,
                dsn,
                status,
                reply,
            } => write!(
                f,
                "{id}: to=<{to}>{dsn_params}, relay={}, delay={delay}, dsn={dsn}, status={} ({reply})",
                relay.as_deref().unwrap_or("none"),
                status.as_str()
            ),
            QueueLine::NotNotified { id, to, notify } => {
                write!(f, "{id}: to=<{to}>: NOTIFY={notify}: no notification")
            }
            QueueLine::NullSender { id } => write!(
                f,
                "{id}: undeliverable message with null sender: no notification"
            ),
            QueueLine::Notified { id, notice, dsn_id } => {
                write!(f, "{id}: sender {}: {dsn_id}", notice.as_str())
            }
            QueueLine::NoticeFailed { id, notice, error } => {
                write!(f, "{id}: cannot queue the sender {}: {error}", notice.as_str())
            }
            QueueLine::NotificationKept { id, error } => write!(
                f,
                "{id}: cannot queue the delivery status notification: {error}; message kept"
            ),
            QueueLine::Removed { id } => write!(f, "{id}: removed"),
            QueueLine::RemovedByAdministrator { id } => {
                write!(f, "{id}: removed by the administrator")
            }
            QueueLine::Held { id } => write!(f, "{id}: placed on hold"),
            QueueLine::Released { id } => write!(f, "{id}: released from hold"),
        }
    }
}
