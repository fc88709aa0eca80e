//! OPS-4: `/metrics` in Prometheus text format, checked by `promtool check
//! metrics`, with counters that agree with what the clients did: the
//! test's own scripted clients (refusals of each kind) and a run of the
//! load generator.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::{scrape, value, Client, Gateway};

/// A scrape once no connection is open. A shard logs a disconnect and
/// then drops the connection from its gauge, so after the last
/// "disconnect from" line the gauge may lag a moment: wait (bounded).
fn scrape_when_idle(admin: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(admin);
        if value(&body, "sealgate_connections_active{") == 0 {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn promtool(body: &str) {
    let (status, out, err) = common::run_tool(
        Command::new("promtool").args(["check", "metrics"]),
        Some(body.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(status.success(), "promtool: {out}{err}\n{body}");
}

#[test]
fn metrics_agree_with_the_clients() {
    let dir = common::temp_dir("metrics");
    let port = common::free_port();
    let admin = common::free_port();
    let config = common::config(port, 2, "").replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{admin}\""))
        + "\n[[profile]]\nname = \"seven\"\nhosts = [\"127.0.0.7\"]\n[profile.server]\nmandatory_tls = true\n";
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    // Load in the background while scraping.
    let addr = gw.addr;
    let tls_dir = dir.clone();
    let load = std::thread::spawn(move || {
        for i in 0..20 {
            let mut c = common::connect(addr);
            c.reply();
            c.cmd("EHLO load.test");
            if i % 2 == 0 {
                assert!(c.cmd("STARTTLS").starts_with("220"));
                let conn = rustls::ClientConnection::new(
                    common::tls_client_config(&tls_dir),
                    "mx.test".try_into().unwrap(),
                )
                .unwrap();
                let mut t = Client::new(rustls::StreamOwned::new(conn, c.stream));
                t.cmd("EHLO load.test");
                t.cmd("MAIL FROM:<l@load.test>");
                t.cmd("RCPT TO:<u@example.com>");
                t.cmd("DATA");
                assert!(t.cmd("Subject: m\r\n\r\nx\r\n.").starts_with("250"));
                t.cmd("QUIT");
            } else {
                c.cmd("MAIL FROM:<l@load.test>");
                c.cmd("RCPT TO:<u@example.com>");
                c.cmd("DATA");
                assert!(c.cmd("Subject: m\r\n\r\nx\r\n.").starts_with("250"));
                c.cmd("QUIT");
            }
        }
    });
    promtool(&scrape(admin));
    load.join().unwrap();
    // One relay refusal, one mandatory-TLS refusal.
    let mut c = common::connect(gw.addr);
    c.reply();
    c.cmd("EHLO x.test");
    c.cmd("MAIL FROM:<a@x.test>");
    assert!(c.cmd("RCPT TO:<b@elsewhere.test>").starts_with("554"));
    c.cmd("QUIT");
    let mut seven = common::connect_from("127.0.0.7", gw.addr);
    assert!(seven.cmd("MAIL FROM:<a@x.test>").starts_with("530"));
    seven.cmd("QUIT");
    // Two failed handshakes: bytes that are not TLS after the 220, and a
    // client that hangs up mid-handshake.
    let mut garbage = common::connect(gw.addr);
    garbage.reply();
    garbage.cmd("EHLO x.test");
    assert!(garbage.cmd("STARTTLS").starts_with("220"));
    garbage.send(b"this is not a TLS record\r\n");
    let mut rest = Vec::new();
    let _ = garbage.stream.read_to_end(&mut rest);
    let mut quitter = common::connect(gw.addr);
    quitter.reply();
    quitter.cmd("EHLO x.test");
    assert!(quitter.cmd("STARTTLS").starts_with("220"));
    drop(quitter);
    // Deliveries to the closed route are deferred.
    gw.wait_for_count("status=deferred", 20, Duration::from_secs(60));
    gw.wait_for_count("disconnect from", 24, Duration::from_secs(20));
    let body = scrape_when_idle(admin);
    promtool(&body);
    assert_eq!(
        value(&body, "sealgate_messages_accepted_total{"),
        20,
        "{body}"
    );
    // The journals made the same 20 durable, in at most as many syncs
    // (group commit; this test's clients send one at a time).
    assert_eq!(
        value(&body, "sealgate_spool_messages_stored_total"),
        20,
        "{body}"
    );
    let syncs = value(&body, "sealgate_spool_syncs_total");
    assert!((1..=20 + 8).contains(&syncs), "{syncs} syncs: {body}");
    assert_eq!(
        value(&body, "sealgate_connections_accepted_total{"),
        24,
        "{body}"
    );
    assert_eq!(value(&body, "sealgate_connections_active{"), 0, "{body}");
    assert_eq!(
        value(&body, "sealgate_starttls_total{shard=\"0\",result=\"ok\"}")
            + value(&body, "sealgate_starttls_total{shard=\"1\",result=\"ok\"}"),
        10,
        "{body}"
    );
    let failed = |reason: &str| -> u64 {
        body.lines()
            .filter(|l| {
                l.starts_with("sealgate_starttls_total{")
                    && l.contains("result=\"failed\"")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        (failed("protocol"), failed("connection"), failed("timeout")),
        (1, 1, 0),
        "{body}"
    );
    assert!(body.contains("sealgate_refused_total{shard="), "{body}");
    let refused = |reason: &str| -> u64 {
        body.lines()
            .filter(|l| {
                l.starts_with("sealgate_refused_total{")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        (refused("policy"), refused("mandatory_tls")),
        (1, 1),
        "{body}"
    );
    assert_eq!(value(&body, "sealgate_queue_messages "), 20, "{body}");
    assert_eq!(
        value(
            &body,
            "sealgate_deliveries_total{outcome=\"deferred\",tls=\"none\"}"
        ),
        20,
        "{body}"
    );
    assert!(
        body.contains("sealgate_certificate_expiry_remaining_seconds{file="),
        "{body}"
    );
}

/// The acceptance's own wording: `/metrics` scraped during a run of the
/// load generator passes promtool, and the counters agree with the
/// generator's report.
#[test]
fn metrics_agree_with_the_load_generator() {
    let dir = common::temp_dir("metrics-load");
    let port = common::free_port();
    let admin = common::free_port();
    let config = common::config(port, 2, "connections_per_ip = 1000").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{admin}\""),
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let loader = common::load_command(
        port,
        "message",
        &[
            "--concurrency",
            "8",
            "--messages-per-conn",
            "2",
            "--duration",
            "4s",
        ],
    )
    .spawn()
    .expect("start sealgate-load");
    // Scrape while the load runs: once the first messages are stored.
    gw.wait_for_count("(queue active)", 10, Duration::from_secs(20));
    let during = scrape(admin);
    promtool(&during);
    let mut loader = loader;
    assert!(
        loader.try_wait().unwrap().is_none(),
        "the scrape was taken while the load ran"
    );
    let out = loader.wait_with_output().expect("sealgate-load");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let sessions = report["sessions"].as_u64().unwrap();
    let failed = report["sessions_failed"].as_u64().unwrap();
    let messages = report["messages"].as_u64().unwrap();
    assert!(sessions > 20, "{report}");
    // Sessions still open when the run's time was up are cut by the
    // generator and counted as failed; they may have sent some messages.
    gw.wait_for_count(
        "disconnect from",
        (sessions + failed) as usize,
        Duration::from_secs(20),
    );
    let after = scrape_when_idle(admin);
    promtool(&after);
    let accepted = value(&after, "sealgate_messages_accepted_total{");
    let connections = value(&after, "sealgate_connections_accepted_total{");
    let tls_ok = value(&after, "sealgate_starttls_total{shard=\"0\",result=\"ok\"}")
        + value(&after, "sealgate_starttls_total{shard=\"1\",result=\"ok\"}");
    println!(
        "load generator: {sessions} sessions (+{failed} cut at the end), {messages} messages; \
         metrics: {connections} connections, {tls_ok} STARTTLS ok, {accepted} messages accepted"
    );
    assert_eq!(connections, sessions + failed, "{after}");
    assert!(
        (messages..=messages + 2 * failed).contains(&accepted),
        "metrics say {accepted} accepted, the generator saw {messages} (+ up to {} in cut sessions)",
        2 * failed
    );
    assert!(
        (sessions..=sessions + failed).contains(&tls_ok),
        "{tls_ok} STARTTLS vs {sessions} sessions"
    );
    assert_eq!(value(&after, "sealgate_connections_active{"), 0, "{after}");
    // The queue gauge follows as the scheduler loads each stored message
    // (they stay queued: the test route is a closed port).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let queued = value(&scrape(admin), "sealgate_queue_messages ");
        if queued == accepted {
            break;
        }
        assert!(
            queued < accepted && std::time::Instant::now() < deadline,
            "queue gauge {queued}, {accepted} accepted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The endpoint serves connections concurrently with limits: a client
/// that drips its request one octet a second does not delay a scrape, and
/// is cut once its headers are overdue (5 s); other paths get a 404.
#[test]
fn a_slow_client_does_not_delay_a_scrape() {
    use std::io::Write;
    let dir = common::temp_dir("metrics-slow");
    let port = common::free_port();
    let admin = common::free_port();
    let config = common::config(port, 1, "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{admin}\""),
    );
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let _gw = Gateway::start_in(dir, port);

    let mut slow = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    slow.write_all(b"G").unwrap();
    let dripper = std::thread::spawn(move || {
        // One octet a second (the client's pattern, not synchronisation)
        // until the server hangs up or the request is sent.
        for b in b"ET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n".iter() {
            std::thread::sleep(Duration::from_secs(1));
            if slow.write_all(&[*b]).is_err() {
                break;
            }
        }
        // Hung up on (end of stream or reset), not still waiting.
        let mut rest = Vec::new();
        let _ = slow.set_read_timeout(Some(Duration::from_secs(30)));
        match slow.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    });
    // Meanwhile, three scrapes, each served while the slow client is
    // still sending its request.
    for _ in 0..3 {
        let body = scrape(admin);
        promtool(&body);
    }
    assert!(
        !dripper.is_finished(),
        "the scrapes waited for the slow client"
    );
    assert!(dripper.join().unwrap(), "the slow client was never cut off");

    // Another path: 404.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.write_all(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
}
