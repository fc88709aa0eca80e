//! Queue tests: events in, effects out, simulated time.

use super::*;
use crate::spool::record::Meta;

fn settings() -> QueueSettings {
    QueueSettings {
        retry: vec![
            Duration::from_secs(60),
            Duration::from_secs(300),
            Duration::from_secs(900),
        ],
        lifetime: Duration::from_secs(3600),
        delay_notice: Duration::from_secs(600),
        per_destination: 10,
        messages_per_connection: 10,
        command_timeout: Duration::from_secs(1),
        data_timeout: Duration::from_secs(1),
    }
}

fn entry(id: &str, from: &str, rcpts: &[&str]) -> Entry {
    Entry {
        id: id.into(),
        journal: 0,
        meta: Meta {
            arrived: 1000,
            from: from.into(),
            client: Some("127.0.0.1".parse().unwrap()),
            client_port: 1,
            helo: "c".into(),
            tls: None,
            flags: Default::default(),
            dsn: Default::default(),
        },
        hold: false,
        rcpts: rcpts
            .iter()
            .map(|r| RcptState::fresh(&(*r).into()))
            .collect(),
        size: 10,
    }
}

fn snap() -> Arc<Snapshot> {
    Arc::new(Snapshot::for_tests("mx.test", &["example.com"]))
}

fn outcome(verdict: Verdict, status: &str) -> Outcome {
    Outcome {
        verdict,
        status: crate::model::EnhancedStatus::parse(status).expect("a status"),
        detail: format!("{status} said the server"),
        next_hop_dsn: false,
    }
}

/// The notification among the effects.
fn bounce_in(e: &[Effect]) -> Option<Bounce> {
    e.iter().find_map(|e| match e {
        Effect::Bounce(b) => Some(b.clone()),
        _ => None,
    })
}

/// Runs what is due at `now`; answers every lookup; returns the
/// attempts dispatched (attempt, ids, recipients per message).
fn dispatch_due(q: &mut Queue, now: u64) -> Vec<(u64, Vec<String>, Vec<Vec<String>>)> {
    q.run_due(now, &snap());
    let mut out = Vec::new();
    loop {
        let effects = q.take_effects();
        if effects.is_empty() {
            return out;
        }
        for e in effects {
            match e {
                Effect::Resolve { attempt, .. } => q.resolved(
                    attempt,
                    Ok(vec![crate::dns::Found {
                        host: "mx.example.com".into(),
                        ip: "192.0.2.1".parse().unwrap(),
                        dane: crate::model::Dane::None,
                        sts: crate::model::Sts::None,
                    }]),
                    now,
                ),
                Effect::Dispatch(d) => out.push((
                    d.attempt,
                    d.messages.iter().map(|m| m.id.clone()).collect(),
                    d.messages
                        .iter()
                        .map(|m| m.recipients.iter().map(|r| r.address.clone()).collect())
                        .collect(),
                )),
                Effect::Record { .. }
                | Effect::Say { .. }
                | Effect::Bounce(_)
                | Effect::Count { .. }
                | Effect::Posture { .. } => {}
            }
        }
    }
}

fn finish(q: &mut Queue, attempt: u64, outcomes: Vec<Vec<Outcome>>, now: u64) -> Vec<Effect> {
    q.finished(
        AttemptResult {
            attempt,
            outcomes,
            relay: Some("mx.example.com[192.0.2.1]:25".into()),
            tls_level: TlsLevel::Verified,
            would_refuse: Vec::new(),
            set_aside: false,
            observed: None,
            sessions: Vec::new(),
        },
        now,
    );
    q.take_effects()
}

fn states(effects: &[Effect]) -> Vec<(u32, RcptStatus, u64, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record {
                change: Change::Recipient { index, state },
                ..
            } => Some((
                *index,
                state.status,
                state.next_due,
                crate::spool::last_text(&state.last),
            )),
            _ => None,
        })
        .collect()
}

fn said(effects: &[Effect]) -> String {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Say { lines, .. } => Some(
                lines
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn done(effects: &[Effect]) -> bool {
    effects.iter().any(|e| {
        matches!(
            e,
            Effect::Record {
                change: Change::Done,
                ..
            }
        )
    })
}

#[test]
fn temporary_failures_follow_the_retry_schedule_then_deliver() {
    let mut q = Queue::new(settings());
    q.queued(entry("M", "s@client.test", &["u@example.com"]));
    let mut now = 1000;
    // Attempt 1 at once, then after 60, 300, 900, 900 s (the last step
    // repeats).
    for wait in [60, 300, 900, 900] {
        let d = dispatch_due(&mut q, now);
        assert_eq!(d.len(), 1, "at {now}");
        let e = finish(
            &mut q,
            d[0].0,
            vec![vec![outcome(Verdict::Temporary, "4.3.0")]],
            now,
        );
        assert_eq!(states(&e)[0].2, now + wait);
        assert!(said(&e).contains("status=deferred"), "{}", said(&e));
        assert!(
            dispatch_due(&mut q, now + wait - 1).is_empty(),
            "not before it is due"
        );
        now += wait;
    }
    let d = dispatch_due(&mut q, now);
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![outcome(Verdict::Delivered, "2.0.0")]],
        now,
    );
    assert_eq!(states(&e)[0].1, RcptStatus::Delivered);
    assert!(done(&e) && said(&e).contains("M: removed"));
    assert!(q.is_empty());
}

#[test]
fn past_the_lifetime_a_temporary_failure_expires_with_4_4_7_and_bounces() {
    let mut q = Queue::new(settings());
    q.queued(entry(
        "M",
        "s@client.test",
        &["u@example.com", "v@example.com"],
    ));
    let d = dispatch_due(&mut q, 1000);
    // v delivered; u still failing an hour after arrival.
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![
            outcome(Verdict::Temporary, "4.4.1"),
            outcome(Verdict::Delivered, "2.0.0"),
        ]],
        1000 + 3600,
    );
    let st = states(&e);
    assert_eq!(st[0].1, RcptStatus::Failed);
    assert!(
        st[0].3.starts_with("dsn=4.4.7 delivery time expired"),
        "{}",
        st[0].3
    );
    let bounce = bounce_in(&e).expect("a bounce");
    assert_eq!(bounce.from, "s@client.test");
    assert_eq!(bounce.entries.len(), 1);
    assert_eq!(bounce.entries[0].0.rcpt, "u@example.com");
    assert_eq!(bounce.entries[0].1, crate::delivery::dsn::Action::Failed);
    assert!(bounce.finishes);
    assert!(!done(&e), "done only once the bounce is queued");
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::Count {
            outcome: Counted::Expired,
            ..
        }
    )));
    q.bounced(&bounce, Ok("DSN1".into()));
    let e = q.take_effects();
    assert!(done(&e));
    assert!(said(&e).contains("M: sender non-delivery notification: DSN1"));
}

#[test]
fn the_oldest_arrival_follows_the_queue() {
    let mut q = Queue::new(settings());
    let mut old = entry("OLD", "s@c.test", &["u@example.com"]);
    old.meta.arrived = 900;
    q.queued(entry("NEW", "s@c.test", &["u@example.com"]));
    q.queued(old);
    assert_eq!(q.oldest_arrival(), Some(900));
    assert_eq!(
        q.admin(&QueueChange::Delete("OLD".into()), 1000).unwrap(),
        Answer::Deleted("OLD".into())
    );
    assert_eq!(q.oldest_arrival(), Some(1000));
    q.admin(&QueueChange::Delete("NEW".into()), 1000).unwrap();
    assert_eq!(q.oldest_arrival(), None);
}

#[test]
fn a_permanent_failure_of_a_bounce_makes_no_bounce() {
    let mut q = Queue::new(settings());
    q.queued(entry("B", "", &["gone@example.com"]));
    let d = dispatch_due(&mut q, 1000);
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![outcome(Verdict::Permanent, "5.1.1")]],
        1001,
    );
    assert!(!e.iter().any(|e| matches!(e, Effect::Bounce(_))));
    assert!(done(&e));
    assert!(said(&e).contains("undeliverable message with null sender: no notification"));
}

#[test]
fn a_bounce_that_cannot_be_queued_keeps_the_message() {
    let mut q = Queue::new(settings());
    q.queued(entry("M", "s@client.test", &["gone@example.com"]));
    let d = dispatch_due(&mut q, 1000);
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![outcome(Verdict::Permanent, "5.1.1")]],
        1001,
    );
    q.bounced(
        &bounce_in(&e).expect("a bounce"),
        Err(crate::delivery::BounceError::Store(
            crate::model::StoreFailure::Full,
        )),
    );
    let e = q.take_effects();
    assert!(!done(&e), "kept in the journal");
    assert!(said(&e).contains("message kept"));
}

#[test]
fn destination_concurrency_and_messages_per_connection_are_kept() {
    let mut s = settings();
    s.per_destination = 2;
    s.messages_per_connection = 2;
    let mut q = Queue::new(s);
    for n in 0..7 {
        q.queued(entry(&format!("M{n}"), "s@c.test", &["u@example.com"]));
    }
    // Two attempts of two messages; the other three wait.
    let d = dispatch_due(&mut q, 1000);
    assert_eq!(d.iter().map(|a| a.1.len()).collect::<Vec<_>>(), vec![2, 2]);
    assert!(
        dispatch_due(&mut q, 1001).is_empty(),
        "two in flight already"
    );
    finish(
        &mut q,
        d[0].0,
        vec![vec![outcome(Verdict::Delivered, "2.0.0")]; 2],
        1001,
    );
    // (Waiting ones are looked at again a second later.)
    let next = dispatch_due(&mut q, 1002);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1.len(), 2);
    // Another destination is not held up by these.
    q.queued(entry("OTHER", "s@c.test", &["u@elsewhere.test"]));
    let other = dispatch_due(&mut q, 1002);
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].1, vec!["OTHER"]);
}

#[test]
fn recipients_of_one_message_split_by_destination() {
    let mut q = Queue::new(settings());
    q.queued(entry(
        "M",
        "s@c.test",
        &["a@one.test", "b@two.test", "c@one.test"],
    ));
    let mut d = dispatch_due(&mut q, 1000);
    d.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        d.iter().map(|a| a.2[0].clone()).collect::<Vec<_>>(),
        vec![
            vec!["a@one.test".to_string(), "c@one.test".to_string()],
            vec!["b@two.test".to_string()]
        ]
    );
}

#[test]
fn requiretls_messages_never_share_a_connection_with_others() {
    use crate::model::TlsRequest;
    let mut q = Queue::new(settings());
    let with = |id: &str, tls| {
        let mut e = entry(id, "s@c.test", &["a@one.test"]);
        e.meta.flags.tls = tls;
        e
    };
    q.queued(with("A", TlsRequest::Default));
    q.queued(with("B", TlsRequest::Required));
    q.queued(with("C", TlsRequest::Default));
    q.queued(with("D", TlsRequest::Required));
    q.queued(with("E", TlsRequest::NotRequired));
    let mut d: Vec<Vec<String>> = dispatch_due(&mut q, 1000)
        .into_iter()
        .map(|a| a.1)
        .collect();
    d.sort();
    assert_eq!(
        d,
        vec![
            vec!["A".to_string(), "C".to_string()],
            vec!["B".to_string(), "D".to_string()],
            vec!["E".to_string()]
        ]
    );
}

#[test]
fn the_posture_of_an_attempt_is_reported_for_its_domains() {
    let mut q = Queue::new(settings());
    q.queued(entry("M", "s@c.test", &["a@One.test", "b@one.test"]));
    let d = dispatch_due(&mut q, 1000);
    let effects = finish(
        &mut q,
        d[0].0,
        vec![vec![
            outcome(Verdict::Temporary, "4.4.1"),
            outcome(Verdict::Temporary, "4.4.1"),
        ]],
        1001,
    );
    let posture: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Posture {
                domains, outcome, ..
            } => Some((domains.clone(), outcome.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        posture,
        vec![(
            vec!["one.test".to_string()],
            Err("4.4.1 4.4.1 said the server".to_string())
        )]
    );
}

#[test]
fn hold_stops_delivery_release_resumes_it_and_delete_waits_for_attempts() {
    let mut q = Queue::new(settings());
    q.queued(entry("M", "s@c.test", &["u@example.com"]));
    assert_eq!(
        q.admin(&QueueChange::Hold("M".into()), 1000).unwrap(),
        Answer::Held("M".into())
    );
    let e = q.take_effects();
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::Record {
            change: Change::Hold,
            ..
        }
    )));
    assert!(dispatch_due(&mut q, 1000).is_empty(), "held");
    assert!(q.view("M").unwrap().hold);
    q.admin(&QueueChange::Release("M".into()), 2000).unwrap();
    let e = q.take_effects();
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::Record {
            change: Change::Release,
            ..
        }
    )));
    let d = dispatch_due(&mut q, 2000);
    assert_eq!(d.len(), 1);
    let busy = q.admin(&QueueChange::Delete("M".into()), 2000).unwrap_err();
    assert_eq!(busy, AdminError::Busy("M".into()));
    assert_eq!(
        busy.to_string(),
        "M: a delivery attempt is running; try again"
    );
    finish(
        &mut q,
        d[0].0,
        vec![vec![outcome(Verdict::Temporary, "4.0.0")]],
        2001,
    );
    assert_eq!(
        q.admin(&QueueChange::Delete("M".into()), 2001).unwrap(),
        Answer::Deleted("M".into())
    );
    assert!(done(&q.take_effects()));
    assert_eq!(
        q.admin(&QueueChange::Hold("M".into()), 2001).unwrap_err(),
        AdminError::NoSuchMessage("M".into())
    );
}

#[test]
fn lookups_fail_as_the_rfcs_say() {
    for (error, status, verdict) in [
        (LookupError::NullMx, "5.1.10", RcptStatus::Failed),
        (
            LookupError::NotFound("NXDOMAIN".into()),
            "5.1.2",
            RcptStatus::Failed,
        ),
        (
            LookupError::Temporary("SERVFAIL".into()),
            "4.4.3",
            RcptStatus::Pending,
        ),
    ] {
        let mut q = Queue::new(settings());
        q.queued(entry("M", "s@c.test", &["u@example.com"]));
        q.run_due(1000, &snap());
        let attempt = q
            .take_effects()
            .iter()
            .find_map(|e| match e {
                Effect::Resolve {
                    attempt,
                    mx: true,
                    name,
                    dane: None,
                    sts: None,
                } if name == "example.com" => Some(*attempt),
                _ => None,
            })
            .expect("an MX lookup");
        q.resolved(attempt, Err(error), 1000);
        let st = states(&q.take_effects());
        assert_eq!(st[0].1, verdict, "{status}");
        assert!(
            st[0].3.starts_with(&format!("dsn={status} ")),
            "{}",
            st[0].3
        );
    }
}

#[test]
fn a_message_that_cannot_be_read_is_deferred_not_sent_empty() {
    let mut q = Queue::new(settings());
    q.queued(entry("A", "s@c.test", &["u@example.com"]));
    q.queued(entry("B", "s@c.test", &["u@example.com"]));
    let d = dispatch_due(&mut q, 1000);
    q.unreadable(d[0].0, "A", 1000);
    let st = states(&q.take_effects());
    assert_eq!(st[0].1, RcptStatus::Pending);
    assert!(st[0].3.contains("could not be read"));
    // The attempt goes on with B only.
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![outcome(Verdict::Delivered, "2.0.0")]],
        1001,
    );
    assert!(said(&e).contains("B: removed"));
    assert!(q.view("A").is_some() && q.view("B").is_none());
}

/// An entry whose recipients asked `notify` each.
fn entry_notify(id: &str, rcpts: &[(&str, crate::model::Notify)]) -> Entry {
    let mut e = entry(id, "s@client.test", &[]);
    e.rcpts = rcpts
        .iter()
        .map(|(a, n)| {
            let mut r: crate::model::Recipient = (*a).into();
            r.dsn.notify = *n;
            RcptState::fresh(&r)
        })
        .collect();
    e
}

const SUCCESS: crate::model::Notify = crate::model::Notify::On {
    success: true,
    failure: true,
    delay: false,
};
const DELAY: crate::model::Notify = crate::model::Notify::On {
    success: false,
    failure: true,
    delay: true,
};

/// RFC 3461 §4.1: NOTIFY=NEVER silences the bounce of that recipient
/// (said in the log); another recipient's failure is still reported.
#[test]
fn notify_never_silences_the_bounce_of_its_recipient() {
    use crate::model::Notify;
    let mut q = Queue::new(settings());
    q.queued(entry_notify("N", &[("never@example.com", Notify::Never)]));
    let d = dispatch_due(&mut q, 1000);
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![outcome(Verdict::Permanent, "5.1.1")]],
        1001,
    );
    assert!(bounce_in(&e).is_none(), "no notification for NOTIFY=NEVER");
    assert!(done(&e));
    assert!(
        said(&e).contains("N: to=<never@example.com>: NOTIFY=NEVER: no notification"),
        "{}",
        said(&e)
    );

    q.queued(entry_notify(
        "M",
        &[
            ("never@example.com", Notify::Never),
            ("plain@example.com", Notify::Default),
        ],
    ));
    let d = dispatch_due(&mut q, 2000);
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![
            outcome(Verdict::Permanent, "5.1.1"),
            outcome(Verdict::Permanent, "5.1.1"),
        ]],
        2001,
    );
    let b = bounce_in(&e).expect("the other recipient's failure is reported");
    let reported: Vec<&str> = b.entries.iter().map(|(r, _)| r.rcpt.as_str()).collect();
    assert_eq!(reported, ["plain@example.com"]);
}

/// RFC 3461 §5.2.2: NOTIFY=SUCCESS to a next hop that did not offer DSN
/// gets a "relayed" notice once delivered; to one that did, none (the
/// next hop reports); without SUCCESS, none.
#[test]
fn success_to_a_hop_without_dsn_is_reported_relayed() {
    use crate::delivery::dsn::Action;
    use crate::model::Notify;
    let mut q = Queue::new(settings());
    q.queued(entry_notify(
        "R",
        &[
            ("a@example.com", SUCCESS),
            ("b@example.com", Notify::Default),
        ],
    ));
    let d = dispatch_due(&mut q, 1000);
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![
            outcome(Verdict::Delivered, "2.0.0"),
            outcome(Verdict::Delivered, "2.0.0"),
        ]],
        1001,
    );
    let b = bounce_in(&e).expect("a relay notice");
    assert_eq!(b.entries.len(), 1);
    assert_eq!(b.entries[0].0.rcpt, "a@example.com");
    assert_eq!(b.entries[0].1, Action::Relayed);
    assert_eq!(b.relay.as_deref(), Some("mx.example.com[192.0.2.1]:25"));
    assert!(b.finishes);
    q.bounced(&b, Ok("DSN2".into()));
    assert!(said(&q.take_effects()).contains("R: sender relay notification: DSN2"));

    q.queued(entry_notify("S", &[("a@example.com", SUCCESS)]));
    let d = dispatch_due(&mut q, 2000);
    let mut ok = outcome(Verdict::Delivered, "2.0.0");
    ok.next_hop_dsn = true;
    let e = finish(&mut q, d[0].0, vec![vec![ok]], 2001);
    assert!(bounce_in(&e).is_none(), "the next hop took the request on");
    assert!(done(&e));
}

/// RFC 3461 §4.1 DELAY: one notice once the recipient has waited
/// `delay_notice`, not before and not again; delivery goes on.
#[test]
fn notify_delay_gets_one_notice_after_delay_notice() {
    use crate::delivery::dsn::Action;
    let mut q = Queue::new(settings());
    q.queued(entry_notify("D", &[("slow@example.com", DELAY)]));
    // Arrived at 1000; delay_notice is 600 s.
    let d = dispatch_due(&mut q, 1000);
    let e = finish(
        &mut q,
        d[0].0,
        vec![vec![outcome(Verdict::Temporary, "4.2.0")]],
        1000,
    );
    assert!(bounce_in(&e).is_none(), "not before delay_notice");
    let mut now = 1060;
    let mut notices = 0;
    // Attempts at 1060, 1360, 2260 (the notice) and 3160.
    for _ in 0..4 {
        let d = dispatch_due(&mut q, now);
        assert_eq!(d.len(), 1, "at {now}");
        let e = finish(
            &mut q,
            d[0].0,
            vec![vec![outcome(Verdict::Temporary, "4.2.0")]],
            now,
        );
        if let Some(b) = bounce_in(&e) {
            notices += 1;
            assert!(now - 1000 >= 600, "at {now}");
            assert_eq!(b.entries[0].1, Action::Delayed);
            assert!(!b.finishes, "delivery goes on");
            assert_eq!(b.retry_until, 1000 + 3600);
        }
        now = states(&e)[0].2;
    }
    assert_eq!(notices, 1, "one delay notice");
    assert!(!q.is_empty());
}
