//! What a session's message data costs: the gateway-wide in-flight budget
//! (`limits.inflight_data`) with the spill decision, and the deadlines in
//! DATA (`data_timeout`, `min_data_rate`).

use std::time::{Duration, Instant};

use super::Session;
use crate::policy::Limits;

pub use crate::model::DataBudget;

/// Deadlines in DATA. RFC 5321 §4.5.3.2.5 bounds the silence between
/// data blocks (`data_timeout`); that alone lets a client that sends one
/// octet a minute hold a session for ever. So, as Postfix's
/// `smtpd_min_data_rate`, once `data_timeout` has passed since the 354 the
/// client must also have averaged `min_data_rate` octets per second.
/// Octets beyond `message_size` earn no more time: such a message is
/// refused anyway, so a client streaming without end is cut too, at the
/// latest `data_timeout + message_size / min_data_rate` after the 354.
#[derive(Debug)]
pub(super) struct DataClock {
    pub(super) since: Instant,
    pub(super) received: u64,
}

impl DataClock {
    /// Counts `n` octets arrived at `now`; returns the new deadline.
    pub(super) fn arrived(&mut self, n: usize, now: Instant, limits: &Limits) -> Instant {
        self.received += n as u64;
        let idle = now + limits.data_timeout;
        if limits.min_data_rate == 0 {
            return idle;
        }
        let counted = self.received.min(limits.message_size as u64);
        let earned = Duration::from_secs_f64(counted as f64 / limits.min_data_rate as f64);
        idle.min(self.since + limits.data_timeout + earned)
    }
}

impl Session {
    /// Whether the in-flight data budget is used up.
    pub(super) fn budget_exhausted(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| b.used() >= self.snapshot.limits.inflight_data)
    }

    /// Holds exactly the `in_memory` octets of data against the budget.
    pub(super) fn account_data(&mut self, in_memory: usize) {
        if let Some(b) = &self.budget {
            let now_held = in_memory as u64;
            if now_held > self.held {
                b.take(now_held - self.held);
            } else {
                b.give(self.held - now_held);
            }
            self.held = now_held;
        }
    }

    /// Data past `limits.message_buffer`, or any while the budget is used
    /// up, leaves memory for the staging file.
    pub(super) fn should_spill(&self, in_memory: usize) -> bool {
        self.budget.is_some()
            && in_memory > 0
            && (in_memory >= self.snapshot.limits.message_buffer || self.budget_exhausted())
    }

    /// Gives back what this session holds of the budget.
    pub(super) fn release(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.held);
        }
        self.held = 0;
    }
}
