//! Key rollover with DANE (RFC 7671 §8.1, "current + next"), sans-IO: the
//! keys, what is published, what a validating resolver shows, the
//! certificate in service and `now` in; one step out. The ACME thread
//! performs the step, records it, and asks again.
//!
//! There is always a current key (in service) and a next key, and a TLSA
//! `3 1 1` record for each at every `_PORT._tcp.NAME`. A key goes into
//! service only after its record has been seen validated for two TTLs, so
//! no resolver that honours the TTL still holds an answer without it;
//! the key it replaces keeps its record two more TTLs (a client may have
//! looked up the records just before the switch), then the record is
//! removed and a new next key is made and published.

use serde::{Deserialize, Serialize};

/// Which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Which {
    Current,
    Next,
}

/// What is recorded between steps (in `state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaneState {
    /// The SPKI SHA-256 (hex) of every record this gateway has published
    /// and not removed.
    pub published: Vec<String>,
    /// Since when the current key's record has been seen validated
    /// without a break (Unix time); 0: not seen.
    pub current_seen_since: i64,
    /// Likewise for the next key.
    pub next_seen_since: i64,
    /// The key a switch replaced, whose record goes two TTLs after
    /// `switched_at`.
    pub old: Option<String>,
    pub switched_at: i64,
    /// `sealgate acme roll`: roll as soon as the next key is ready.
    pub roll_asked: bool,
    /// The owner names the records were written at.
    #[serde(default)]
    pub owners: Vec<String>,
}

/// The keys on disk: their SPKI SHA-256, hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub current: Option<String>,
    pub next: Option<String>,
}

/// The inputs besides the recorded state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub keys: Keys,
    /// The SPKI SHA-256 of the certificate in service (from ACME), if any.
    pub served: Option<String>,
    /// The TTL of the records written (seconds).
    pub ttl: i64,
    /// The current key is older than `key_lifetime`.
    pub key_old: bool,
    /// The certificate is due for renewal (on the same key).
    pub renewal_due: bool,
    pub now: i64,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A certificate for the next key went into service but the switch
    /// was not recorded (a crash): record it now.
    FinishSwitch,
    /// Make the key (and keep it on disk before anything is published).
    NewKey(Which),
    /// Add the TLSA records for this key.
    Publish(String),
    /// Delete the TLSA records for this key.
    Remove(String),
    /// Order a certificate for the key and put it into service; for
    /// `Which::Next` that is the switch.
    Order(Which),
    /// Nothing until `until` (Unix time), or until the records are seen.
    Wait { until: i64, why: &'static str },
}

/// How often records not yet seen validated are looked up again.
pub const LOOK_AGAIN: i64 = 1;

/// The next step.
pub fn step(s: &DaneState, f: &Facts) -> Step {
    let two_ttls = 2 * f.ttl;
    // A switch interrupted after the certificate went into service.
    if f.served.is_some() && f.served == f.keys.next {
        return Step::FinishSwitch;
    }
    let Some(current) = &f.keys.current else {
        return Step::NewKey(Which::Current);
    };
    // A new next key waits until the replaced key's record is gone, so
    // that at most three records exist at a time.
    if f.keys.next.is_none() && s.old.is_none() {
        return Step::NewKey(Which::Next);
    }
    for key in [Some(current), f.keys.next.as_ref()].into_iter().flatten() {
        if !s.published.contains(key) {
            return Step::Publish(key.clone());
        }
    }
    if let Some(old) = &s.old {
        let at = s.switched_at + two_ttls;
        if f.now >= at {
            return Step::Remove(old.clone());
        }
        return Step::Wait {
            until: at,
            why: "the replaced key's record stays two TTLs",
        };
    }
    let ready = |since: i64| since > 0 && f.now >= since + two_ttls;
    let ready_at = |since: i64| {
        if since > 0 {
            since + two_ttls
        } else {
            f.now + LOOK_AGAIN
        }
    };
    // No certificate on the current key yet (the first one).
    if f.served.as_ref() != Some(current) {
        if ready(s.current_seen_since) {
            return Step::Order(Which::Current);
        }
        return Step::Wait {
            until: ready_at(s.current_seen_since),
            why: "the current key's record must be seen validated for two TTLs",
        };
    }
    if f.key_old || s.roll_asked {
        if ready(s.next_seen_since) {
            return Step::Order(Which::Next);
        }
        return Step::Wait {
            until: ready_at(s.next_seen_since),
            why: "the next key's record must be seen validated for two TTLs",
        };
    }
    if f.renewal_due {
        return Step::Order(Which::Current);
    }
    // Steady: keep watching the records (a record removed by hand shows).
    Step::Wait {
        until: f.now + 60,
        why: "steady",
    }
}

/// Records a lookup: `validated` when the key's record was in a validated
/// answer.
pub fn observe(s: &mut DaneState, which: Which, validated: bool, now: i64) {
    let since = match which {
        Which::Current => &mut s.current_seen_since,
        Which::Next => &mut s.next_seen_since,
    };
    match (validated, *since) {
        (true, 0) => *since = now,
        (true, _) => {}
        (false, _) => *since = 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(now: i64) -> Facts {
        Facts {
            keys: Keys {
                current: Some("c".into()),
                next: Some("n".into()),
            },
            served: Some("c".into()),
            ttl: 10,
            key_old: false,
            renewal_due: false,
            now,
        }
    }

    fn steady() -> DaneState {
        DaneState {
            published: vec!["c".into(), "n".into()],
            current_seen_since: 1,
            next_seen_since: 1,
            ..DaneState::default()
        }
    }

    /// The first start: keys, then both records, then the first
    /// certificate only after the current record is seen for two TTLs.
    #[test]
    fn the_first_certificate_waits_for_its_record() {
        let mut s = DaneState::default();
        let mut f = Facts {
            keys: Keys::default(),
            served: None,
            ..facts(100)
        };
        assert_eq!(step(&s, &f), Step::NewKey(Which::Current));
        f.keys.current = Some("c".into());
        assert_eq!(step(&s, &f), Step::NewKey(Which::Next));
        f.keys.next = Some("n".into());
        assert_eq!(step(&s, &f), Step::Publish("c".into()));
        s.published.push("c".into());
        assert_eq!(step(&s, &f), Step::Publish("n".into()));
        s.published.push("n".into());
        assert!(matches!(step(&s, &f), Step::Wait { until: 101, .. }));
        observe(&mut s, Which::Current, true, 100);
        assert!(matches!(step(&s, &f), Step::Wait { until: 120, .. }));
        f.now = 120;
        assert_eq!(step(&s, &f), Step::Order(Which::Current));
    }

    /// A roll: the next key goes into service only after its record has
    /// been seen for two TTLs; the old record goes two TTLs later; then a
    /// new next key.
    #[test]
    fn a_roll_switches_only_to_a_seen_key_and_cleans_up_after_two_ttls() {
        let mut s = steady();
        s.next_seen_since = 0;
        let mut f = facts(1000);
        f.key_old = true;
        assert!(matches!(step(&s, &f), Step::Wait { until: 1001, .. }));
        observe(&mut s, Which::Next, true, 1000);
        f.now = 1019;
        assert!(matches!(step(&s, &f), Step::Wait { until: 1020, .. }));
        // A break in the sightings starts the wait again.
        observe(&mut s, Which::Next, false, 1019);
        observe(&mut s, Which::Next, true, 1020);
        f.now = 1039;
        assert!(matches!(step(&s, &f), Step::Wait { .. }));
        f.now = 1040;
        assert_eq!(step(&s, &f), Step::Order(Which::Next));
        // Switched: the next key is now current.
        s.old = Some("c".into());
        s.switched_at = 1040;
        f.keys = Keys {
            current: Some("n".into()),
            next: None,
        };
        f.served = Some("n".into());
        f.key_old = false;
        assert!(matches!(step(&s, &f), Step::Wait { until: 1060, .. }));
        f.now = 1060;
        assert_eq!(step(&s, &f), Step::Remove("c".into()));
        s.old = None;
        s.published.retain(|k| k != "c");
        assert_eq!(step(&s, &f), Step::NewKey(Which::Next));
        f.keys.next = Some("m".into());
        assert_eq!(step(&s, &f), Step::Publish("m".into()));
    }

    #[test]
    fn a_crash_after_the_new_certificate_finishes_the_switch() {
        let s = steady();
        let mut f = facts(5000);
        f.served = Some("n".into());
        assert_eq!(step(&s, &f), Step::FinishSwitch);
    }

    #[test]
    fn renewal_keeps_the_key_and_asking_rolls() {
        let mut s = steady();
        let mut f = facts(5000);
        f.renewal_due = true;
        assert_eq!(step(&s, &f), Step::Order(Which::Current));
        f.renewal_due = false;
        assert!(matches!(step(&s, &f), Step::Wait { why: "steady", .. }));
        s.roll_asked = true;
        assert_eq!(step(&s, &f), Step::Order(Which::Next));
    }
}
