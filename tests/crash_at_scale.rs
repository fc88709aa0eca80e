//! IN-6 at scale: `sealgate-load --mode plain` drives a gateway that
//! relays to the `sealgate-load sink`; the gateway is SIGKILLed 20 times
//! at random moments and restarted on the same spool. Its journal
//! segments are small (64 KiB), so that under this load segments rotate
//! several times a second, freed ones are reused and long-lived messages
//! (deferred by the kills) are copied forward: kills land in the middle
//! of all three. At
//! the end every message the gateway answered `250` must have reached the
//! sink at least once (matched by the queue id in its Received header),
//! and the spool must drain. The counts are printed (and quoted in
//! docs/security.md): `cargo test --test crash_at_scale -- --nocapture`.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Gateway;

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// xorshift64*, seeded from the clock; the seed is printed so a failing
/// run's kill times can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Queued messages for the sink (the slow domain's stay queued).
fn queued(dir: &Path) -> usize {
    common::queue_states(&dir.join("spool"))
        .iter()
        .filter(|(_, rcpts)| rcpts.iter().any(|r| r.rcpt.ends_with("@example.com")))
        .count()
}

#[test]
fn every_acknowledged_message_reaches_the_sink_despite_kills() {
    let load = common::load_generator();
    let dir = common::temp_dir("crash-scale");
    let dump = dir.join("sink");
    std::fs::create_dir_all(&dump).unwrap();
    let sink_port = common::free_port();
    let mut sink = Command::new(&load);
    sink.args([
        "sink",
        "--listen",
        &format!("127.0.0.1:{sink_port}"),
        "--dump",
    ])
    .arg(&dump)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut sink = Reaped(sink.spawn().expect("start the sink"));
    // The sink says it is ready on stderr.
    {
        use std::io::BufRead;
        let stderr = sink.0.stderr.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stderr)
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("sink ready"), "{line}");
    }

    let port = common::free_port();
    // slow.example is accepted but routed to a closed port: its messages
    // stay queued, deferred again every second, long-lived among the
    // quickly delivered ones (what copy-forward is for).
    let config = common::config(port, 2, "connections_per_ip = 1000")
        .replace(
            "[limits]",
            "spool_segment_size = \"64KiB\"\nspool_large_message = \"16KiB\"\n\n[limits]",
        )
        .replace(
            "accept_domains = [\"example.com\"]",
            "accept_domains = [\"example.com\", \"slow.example\"]",
        )
        + &format!(
            "\n[[route]]\ndomain = \"example.com\"\nvia = \"[127.0.0.1]:{sink_port}\"\n\n\
             [queue]\nretry = [\"1s\"]\n"
        );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let mut gw = Gateway::start_in(dir.clone(), port);

    let accepted_log = dir.join("accepted");
    let seconds = 20;
    let log_arg = accepted_log.display().to_string();
    let loader = common::load_command(
        port,
        "plain",
        &[
            "--concurrency",
            "8",
            // Open loop at a rate the relay (a debug build, on a CI
            // machine's few cores) delivers well within the test's time.
            "--rate",
            "40",
            "--messages-per-conn",
            "3",
            "--size",
            "4096",
            "--duration",
            &format!("{seconds}s"),
            "--timeout",
            "5s",
            "--accepted-log",
            &log_arg,
        ],
    )
    .spawn()
    .expect("start sealgate-load");
    let slow = common::load_command(
        port,
        "plain",
        &[
            "--concurrency",
            "1",
            "--rate",
            "3",
            "--to-domain",
            "slow.example",
            "--duration",
            &format!("{seconds}s"),
            "--timeout",
            "5s",
        ],
    )
    .spawn()
    .expect("start the slow sealgate-load");

    let seed = Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut kills = 0;
    let mut copies = 0;
    // Twenty kills at random moments, 0.2–1 s apart (the load runs 20 s,
    // so nearly all land under load; a kill during delivery only is still
    // a kill). The pauses are the test's load pattern, not
    // synchronisation.
    while kills < 20 {
        std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
        copies += gw.log().matches("copied forward").count();
        let dir = gw.kill();
        kills += 1;
        gw = Gateway::start_in(dir, port);
    }
    let kills_done_at = started.elapsed();
    let out = loader.wait_with_output().expect("sealgate-load");
    let _ = slow.wait_with_output();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("sealgate-load --json report");

    // Every queue id the gateway answered 250 with.
    let acked = common::accepted_ids(&accepted_log);
    assert!(
        acked.len() > 100,
        "too little load to mean anything: {report}"
    );

    // The spool drains (deliveries interrupted by kills are retried).
    let deadline = Instant::now() + Duration::from_secs(40);
    while queued(&dir) > 0 {
        assert!(
            Instant::now() < deadline,
            "spool did not drain: {} left\n{}",
            queued(&dir),
            gw.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    copies += gw.log().matches("copied forward").count();
    gw.terminate();
    let (status, _) = gw.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    // How much the journals turned over: the newest segment generation is
    // the number of segments ever started; the files, how many exist.
    let mut generations = 0u64;
    let mut files = 0;
    for n in 0.. {
        let j = sealgate::spool::journal_dir(&dir.join("spool"), n);
        if !j.is_dir() {
            break;
        }
        for f in std::fs::read_dir(&j).unwrap().flatten() {
            if !f.file_name().to_string_lossy().starts_with("segment-") {
                continue;
            }
            files += 1;
            let head = std::fs::read(f.path()).unwrap();
            if let Some(g) = sealgate::spool::record::parse_segment_header(&head[..64]) {
                generations = generations.max(g);
            }
        }
    }

    // Queue ids in what the sink received.
    let mut delivered = Vec::new();
    for f in std::fs::read_dir(&dump).unwrap() {
        let text = std::fs::read(f.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&text);
        let id = text
            .split(" id ")
            .nth(1)
            .and_then(|rest| rest.split([';', '\r', '\n', ' ']).next())
            .expect("a Received header with the queue id")
            .to_string();
        delivered.push(id);
    }
    let unique: HashSet<&String> = delivered.iter().collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    println!(
        "crash at scale (seed {seed:#x}): {kills} SIGKILLs in the first {kills_done_at:.1?} of {seconds} s of load; \
         journals: newest segment generation {generations} in {files} segment file(s), {copies} copy-forward(s); \
         {} messages answered 250, {} deliveries to the sink ({} distinct, {} duplicates), \
         {} accepted-but-unacknowledged delivered too, {} missing; load report: {}",
        acked.len(),
        delivered.len(),
        unique.len(),
        delivered.len() - unique.len(),
        unique.len().saturating_sub(acked.len()),
        missing.len(),
        report["sessions"]
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    // The kills fell among rotations, reuse and copies forward: the
    // journals started more segments than there are files, and copied.
    assert!(
        generations > files as u64,
        "segments were not reused: generation {generations}, {files} files"
    );
    assert!(copies > 0, "no long-lived message was copied forward");
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}
