//! Journal tests: on simulated storage, with faults.

use super::*;
use crate::spool::storage::Sim;
use proptest::prelude::*;

fn meta(n: u64) -> Meta {
    Meta {
        arrived: 1_795_000_000 + n,
        from: format!("s{n}@b.test"),
        client: Some("127.0.0.1".parse().unwrap()),
        client_port: 1000,
        helo: "c.test".into(),
        tls: None,
        flags: Default::default(),
        dsn: Default::default(),
    }
}

fn small() -> Options {
    Options {
        segment_size: 16 * 1024,
        large_message: 4 * 1024,
    }
}

fn body(n: usize, len: usize) -> Vec<u8> {
    let mut b = format!("Subject: {n}\r\n\r\n").into_bytes();
    b.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, len));
    b
}

#[test]
fn messages_and_changes_survive_a_reopen() {
    let sim = Sim::default();
    let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
    let rcpts: Vec<crate::model::Recipient> = vec![
        "\"a b\"@dest.test".into(),
        "\"x delivered 1 2\"@dest.test".into(),
        "plain@dest.test".into(),
    ];
    j.add_message("M1", &meta(1), &rcpts, b"Received: x\r\n", &body(1, 100))
        .unwrap();
    j.add_message("M2", &meta(2), &rcpts[2..], b"", &body(2, 10))
        .unwrap();
    assert_eq!(j.commit().unwrap(), vec!["M1", "M2"]);
    let mut delivered = RcptState::fresh(&"".into());
    delivered.status = RcptStatus::Delivered;
    delivered.attempts = 1;
    delivered.last = crate::spool::LastReply::from_text("dsn=2.0.0 250 ok");
    let mut deferred = RcptState::fresh(&"".into());
    deferred.attempts = 1;
    deferred.next_due = 1_795_000_600;
    deferred.last = crate::spool::LastReply::from_text("dsn=4.3.0 451 later");
    j.add_change(
        "M1",
        Change::Recipient {
            index: 0,
            state: Box::new(delivered),
        },
    )
    .unwrap();
    j.add_change(
        "M1",
        Change::Recipient {
            index: 1,
            state: Box::new(deferred),
        },
    )
    .unwrap();
    j.add_change("M1", Change::Hold).unwrap();
    j.add_change("M2", Change::Done).unwrap();
    j.commit().unwrap();

    let (mut j, report) = Journal::open(sim.crash(0, 0), small()).unwrap();
    assert!(report.cut.is_none() && report.damaged.is_empty());
    assert!(j.get("M2").is_none(), "done is done");
    let m1 = j.get("M1").unwrap().clone();
    assert!(m1.hold);
    // Exactly the three recipients, in order, each with its own state.
    let got: Vec<(&str, RcptStatus, u32)> = m1
        .rcpts
        .iter()
        .map(|r| (r.rcpt.as_str(), r.status, r.attempts))
        .collect();
    assert_eq!(
        got,
        vec![
            ("\"a b\"@dest.test", RcptStatus::Delivered, 1),
            ("\"x delivered 1 2\"@dest.test", RcptStatus::Pending, 1),
            ("plain@dest.test", RcptStatus::Pending, 0),
        ]
    );
    assert_eq!(m1.rcpts[1].next_due, 1_795_000_600);
    let mut want = b"Received: x\r\n".to_vec();
    want.extend(body(1, 100));
    assert_eq!(j.read("M1").unwrap(), want);
}

#[test]
fn one_sync_per_batch() {
    let sim = Sim::default();
    let (mut j, _) = Journal::open(sim.clone(), Options::default()).unwrap();
    j.add_message("W", &meta(0), &["r@d".into()], b"", b"x")
        .unwrap();
    j.commit().unwrap();
    let before = sim.syncs();
    for n in 0..16 {
        j.add_message(
            &format!("B{n}"),
            &meta(n),
            &["r@d".into()],
            b"",
            &body(n as usize, 2000),
        )
        .unwrap();
    }
    j.commit().unwrap();
    assert_eq!(sim.syncs() - before, 1, "16 messages, one fdatasync");
}

#[test]
fn large_messages_live_in_their_own_file_and_go_with_done() {
    let sim = Sim::default();
    let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
    let big = body(7, 10_000);
    j.add_message("BIG", &meta(7), &["r@d".into()], b"R: 1\r\n", &big)
        .unwrap();
    j.commit().unwrap();
    let mut sim2 = sim.clone();
    assert_eq!(sim2.large_names().unwrap(), vec!["BIG"]);
    let (mut j2, _) = Journal::open(sim.crash(0, 0), small()).unwrap();
    assert!(j2.read("BIG").unwrap().ends_with(&big));
    j.add_change("BIG", Change::Done).unwrap();
    j.commit().unwrap();
    assert!(sim2.large_names().unwrap().is_empty());
}

/// Thousands of short-lived messages and a few long-lived ones: the
/// journal reuses its segments (copying the long-lived forward), so
/// the number of segment files stays small, and every live message
/// survives a reopen with its state.
#[test]
fn segments_are_reused_and_long_lived_messages_copied_forward() {
    let sim = Sim::default();
    let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
    let stats = Arc::new(Stats::default());
    j.set_stats(stats.clone());
    let mut keep = Vec::new();
    for n in 0..3000usize {
        let id = format!("M{n:05}");
        j.add_message(
            &id,
            &meta(n as u64),
            &["r@d".into(), "s@d".into()],
            b"",
            &body(n, 300),
        )
        .unwrap();
        j.commit().unwrap();
        if n % 500 == 0 {
            let mut st = RcptState::fresh(&"".into());
            st.status = RcptStatus::Delivered;
            st.attempts = 1;
            j.add_change(
                &id,
                Change::Recipient {
                    index: 0,
                    state: Box::new(st),
                },
            )
            .unwrap();
            keep.push(id);
        } else {
            j.add_change(&id, Change::Done).unwrap();
        }
    }
    j.commit().unwrap();
    let mut s = sim.clone();
    let files = s.slots().unwrap().len();
    assert!(
        files <= 8,
        "{files} segment files for 3000 messages of 16 KiB segments"
    );
    let (used, free) = j.segment_counts();
    assert!(used <= 4, "{used} in use, {free} free");
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        load(&stats.copied) > 0,
        "the long-lived ones were copied forward"
    );
    assert!(load(&stats.freed) > 0, "segments were freed for reuse");
    assert_eq!(load(&stats.stored), 3000);
    let (mut again, report) = Journal::open(sim.crash(0, 0), small()).unwrap();
    assert!(report.damaged.is_empty(), "{report:?}");
    let mut live: Vec<String> = again.live().map(|(id, _)| id.clone()).collect();
    live.sort();
    assert_eq!(live, keep);
    for id in &keep {
        let n: usize = id[1..].parse().unwrap();
        assert_eq!(again.read(id).unwrap(), body(n, 300));
        let l = again.get(id).unwrap();
        assert_eq!(l.rcpts[0].status, RcptStatus::Delivered);
        assert_eq!(l.rcpts[1].status, RcptStatus::Pending);
    }
}

#[test]
fn a_failed_sync_refuses_the_batch_and_loses_nothing_acknowledged() {
    let sim = Sim::default();
    let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
    j.add_message("OK1", &meta(1), &["r@d".into()], b"", b"one")
        .unwrap();
    j.commit().unwrap();
    sim.fail_syncs(true);
    j.add_message("BAD", &meta(2), &["r@d".into()], b"", b"two")
        .unwrap();
    let e = j.commit().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert!(j.get("BAD").is_none());
    // Still failing: still refused.
    let again = j
        .add_message("BAD2", &meta(3), &["r@d".into()], b"", b"three")
        .and_then(|()| j.commit());
    assert!(again.is_err());
    sim.fail_syncs(false);
    j.add_message("OK2", &meta(4), &["r@d".into()], b"", b"four")
        .unwrap();
    assert_eq!(j.commit().unwrap(), vec!["OK2"]);
    for (keep, tear) in [(0, 0), (usize::MAX, 0)] {
        let (mut again, _) = Journal::open(sim.crash(keep, tear), small()).unwrap();
        let mut live: Vec<String> = again.live().map(|(id, _)| id.clone()).collect();
        live.sort();
        assert_eq!(live, vec!["OK1", "OK2"]);
        assert_eq!(again.read("OK2").unwrap(), b"four");
    }
}

/// A crash tears the last, unsynced write at every offset: recovery
/// finds every message synced before it, whole, never a record of the
/// torn batch that is not whole, and the journal goes on.
#[test]
fn a_write_torn_at_every_offset_never_loads_a_torn_record() {
    let sim = Sim::default();
    let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
    for n in 0..3 {
        j.add_message(
            &format!("OK{n}"),
            &meta(n),
            &["r@d".into()],
            b"",
            &body(n as usize, 700),
        )
        .unwrap();
    }
    j.commit().unwrap();
    // The next batch is written but its sync never happens.
    sim.fail_syncs(true);
    let torn: Vec<(String, Vec<u8>)> = (0..3)
        .map(|n| (format!("T{n}"), body(10 + n, 500 + 100 * n)))
        .collect();
    for (id, b) in &torn {
        j.add_message(id, &meta(9), &["r@d".into()], b"", b)
            .unwrap();
    }
    // Write it without the sync (as a crash between the two would).
    j.write_batch().unwrap();
    let written: usize = torn.iter().map(|(_, b)| b.len()).sum::<usize>() + 1000;
    for tear in 0..written {
        let crashed = sim.crash(0, tear);
        let (mut again, report) = Journal::open(crashed, small()).unwrap();
        assert!(report.damaged.is_empty(), "tear {tear}: {report:?}");
        for n in 0..3 {
            assert_eq!(
                again.read(&format!("OK{n}")).unwrap(),
                body(n, 700),
                "tear {tear}"
            );
        }
        let ids: Vec<String> = again.live().map(|(id, _)| id.clone()).collect();
        for id in ids {
            if let Some((_, b)) = torn.iter().find(|(t, _)| *t == id) {
                assert_eq!(
                    &again.read(&id).unwrap(),
                    b,
                    "tear {tear}: {id} loaded torn"
                );
            }
        }
        // And it takes new messages after the cut.
        again
            .add_message("NEW", &meta(1), &["r@d".into()], b"", b"new")
            .unwrap();
        assert_eq!(again.commit().unwrap(), vec!["NEW"], "tear {tear}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Messages of these sizes, then a commit.
    Batch(Vec<usize>),
    /// A live message (by position) delivered (done) or deferred.
    Done(usize),
    Defer(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(0usize..6000, 1..6).prop_map(Op::Batch),
        2 => any::<usize>().prop_map(Op::Done),
        1 => any::<usize>().prop_map(Op::Defer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever runs, and wherever a crash cuts the writes not yet
    /// synced (dropped, or kept in part, or torn inside one), recovery
    /// finds every acknowledged message that was not done, whole, and
    /// never a record that was torn.
    #[test]
    fn recovery_never_loses_an_acknowledged_message(
        ops in prop::collection::vec(op(), 1..40),
        keep in 0usize..8,
        tear in 0usize..4000,
        fail_at in prop::option::of(0usize..40),
    ) {
        let sim = Sim::default();
        let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
        let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
        let mut done: Vec<String> = Vec::new();
        let mut all: HashMap<String, Vec<u8>> = HashMap::new();
        let mut n = 0usize;
        for (step, op) in ops.iter().enumerate() {
            sim.fail_syncs(fail_at == Some(step));
            match op {
                Op::Batch(sizes) => {
                    let mut ids = Vec::new();
                    for size in sizes {
                        n += 1;
                        let id = format!("M{n}");
                        let b = body(n, *size);
                        all.insert(id.clone(), b.clone());
                        if j.add_message(&id, &meta(n as u64), &["r@d".into()], b"", &b).is_ok() {
                            ids.push(id);
                        }
                    }
                    if let Ok(stored) = j.commit() {
                        for id in stored {
                            let b = all[&id].clone();
                            acked.push((id, b));
                        }
                    }
                }
                Op::Done(k) | Op::Defer(k) => {
                    let live: Vec<&(String, Vec<u8>)> =
                        acked.iter().filter(|(id, _)| !done.contains(id)).collect();
                    if live.is_empty() {
                        continue;
                    }
                    let id = live[k % live.len()].0.clone();
                    if matches!(op, Op::Done(_)) {
                        j.add_change(&id, Change::Done).unwrap_or(());
                        done.push(id);
                    } else {
                        let mut st = RcptState::fresh(&"".into());
                        st.attempts = 1;
                        st.next_due = 5;
                        j.add_change(&id, Change::Recipient { index: 0, state: Box::new(st) }).unwrap_or(());
                    }
                }
            }
        }
        sim.fail_syncs(false);
        let (mut again, _) = Journal::open(sim.crash(keep, tear), small()).unwrap();
        for (id, b) in &acked {
            if done.contains(id) {
                continue;
            }
            prop_assert!(again.get(id).is_some(), "{} lost", id);
            prop_assert_eq!(&again.read(id).unwrap(), b);
        }
        // Whatever else came back is whole (an unacknowledged message
        // may, an unfinished DONE may leave one live: never torn).
        let ids: Vec<String> = again.live().map(|(id, _)| id.clone()).collect();
        for id in ids {
            prop_assert_eq!(&again.read(&id).unwrap(), &all[&id]);
        }
    }
}
