//! When to order a certificate, sans-IO: the stored certificate's facts,
//! the configuration and `now` in; the next step out. The ACME thread
//! (`acme::run`) performs it; `sealgate acme status` shows the same
//! decision.

use std::time::Duration;

/// What is known of the stored certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The names it carries (SAN DNS names), in the canonical form.
    pub names: Vec<String>,
    /// Its end of validity (Unix time).
    pub not_after: i64,
    /// When its key went into service (Unix time).
    pub key_since: i64,
}

/// How orders have gone lately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// Orders failed since the last success.
    pub count: u32,
    /// When the last one failed (Unix time).
    pub last: i64,
}

/// What the configuration asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `domains`, canonical, sorted.
    pub names: Vec<String>,
    /// `renew_before`.
    pub renew_before: Duration,
    /// `key_lifetime`; zero: never roll.
    pub key_lifetime: Duration,
}

/// Why an order is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    /// No certificate is stored.
    NoCertificate,
    /// `domains` changed: the stored certificate names others.
    NamesChanged,
    /// It ends within `renew_before`.
    RenewalDue,
    /// `sealgate acme renew`.
    Asked,
}

/// The next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Order now; with a new key when `new_key` (the key is older than
    /// `key_lifetime`, or there is none).
    Order { reason: Reason, new_key: bool },
    /// Nothing to do before `until` (Unix time).
    Wait { until: i64 },
}

/// The first retry after a failed order, and the longest wait between
/// retries: doubling from one to the other (RFC 8555 §6.6 asks clients
/// not to hammer a server that refuses them).
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
pub const LONGEST_RETRY: Duration = Duration::from_secs(6 * 3600);

/// How long after the `count`th failure in a row the next try waits.
pub fn backoff(count: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << count.saturating_sub(1).min(16));
    doubled.min(LONGEST_RETRY)
}

/// The day the renewal falls due (Unix time).
pub fn renewal_due(stored: &Stored, wanted: &Wanted) -> i64 {
    stored.not_after - secs(wanted.renew_before)
}

/// A stored certificate this close to its end is warned about each day.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);

/// Whole seconds as a Unix-time difference.
pub fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Decides the next step.
pub fn next(
    stored: Option<&Stored>,
    wanted: &Wanted,
    failures: Failures,
    asked: bool,
    now: i64,
) -> Next {
    let key_old = |s: &Stored| {
        !wanted.key_lifetime.is_zero() && now >= s.key_since + secs(wanted.key_lifetime)
    };
    let reason = match stored {
        None => Some(Reason::NoCertificate),
        Some(_) if asked => Some(Reason::Asked),
        Some(s) if s.names != wanted.names => Some(Reason::NamesChanged),
        Some(s) if now >= renewal_due(s, wanted) => Some(Reason::RenewalDue),
        Some(_) => None,
    };
    let Some(reason) = reason else {
        let until = stored.map_or(now, |s| renewal_due(s, wanted));
        return Next::Wait { until };
    };
    // A failure holds off the next automatic try; asking does not wait.
    if failures.count > 0 && !asked {
        let retry = failures.last + secs(backoff(failures.count));
        if now < retry {
            return Next::Wait { until: retry };
        }
    }
    // Renewal keeps the key (its DANE 3 1 1 records stay valid) until it
    // is older than key_lifetime; then the renewal rolls it.
    let new_key = stored.is_none_or(key_old);
    Next::Order { reason, new_key }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn wanted() -> Wanted {
        Wanted {
            names: vec!["mx1.example.org".into()],
            renew_before: Duration::from_secs(30 * 86_400),
            key_lifetime: Duration::from_secs(365 * 86_400),
        }
    }

    fn stored(not_after: i64, key_since: i64) -> Stored {
        Stored {
            names: vec!["mx1.example.org".into()],
            not_after,
            key_since,
        }
    }

    #[test]
    fn nothing_stored_orders_with_a_new_key() {
        assert_eq!(
            next(None, &wanted(), Failures::default(), false, 0),
            Next::Order {
                reason: Reason::NoCertificate,
                new_key: true
            }
        );
    }

    /// Renewal falls due `renew_before` ahead of the end, and keeps the
    /// key.
    #[test]
    fn renewal_is_due_renew_before_the_end_and_keeps_the_key() {
        let s = stored(90 * DAY, 0);
        assert_eq!(
            next(Some(&s), &wanted(), Failures::default(), false, 59 * DAY),
            Next::Wait { until: 60 * DAY }
        );
        assert_eq!(
            next(Some(&s), &wanted(), Failures::default(), false, 60 * DAY),
            Next::Order {
                reason: Reason::RenewalDue,
                new_key: false
            }
        );
    }

    #[test]
    fn an_old_key_rolls_at_renewal_and_zero_never_rolls() {
        let s = stored(400 * DAY, 0);
        let due = 370 * DAY;
        assert_eq!(
            next(Some(&s), &wanted(), Failures::default(), false, due),
            Next::Order {
                reason: Reason::RenewalDue,
                new_key: true
            }
        );
        let never = Wanted {
            key_lifetime: Duration::ZERO,
            ..wanted()
        };
        assert_eq!(
            next(Some(&s), &never, Failures::default(), false, due),
            Next::Order {
                reason: Reason::RenewalDue,
                new_key: false
            }
        );
    }

    #[test]
    fn changed_names_and_asking_order_at_once() {
        let s = Stored {
            names: vec!["old.example.org".into()],
            ..stored(90 * DAY, 0)
        };
        assert_eq!(
            next(Some(&s), &wanted(), Failures::default(), false, DAY),
            Next::Order {
                reason: Reason::NamesChanged,
                new_key: false
            }
        );
        let s = stored(90 * DAY, 0);
        let failed = Failures {
            count: 3,
            last: DAY,
        };
        assert_eq!(
            next(Some(&s), &wanted(), failed, true, DAY),
            Next::Order {
                reason: Reason::Asked,
                new_key: false
            }
        );
    }

    /// Failures back off: 1 min, 2, 4, … at most 6 h.
    #[test]
    fn failures_back_off_doubling_up_to_six_hours() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(40), LONGEST_RETRY);
        let failed = Failures {
            count: 2,
            last: 1000,
        };
        assert_eq!(
            next(None, &wanted(), failed, false, 1100),
            Next::Wait { until: 1120 }
        );
        assert!(matches!(
            next(None, &wanted(), failed, false, 1120),
            Next::Order { .. }
        ));
    }
}
