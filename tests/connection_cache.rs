//! The outbound connection cache against Postfix as the receiver (its
//! smtpd logs each connection's commands when it ends: `mail=N/N
//! rset=…`):
//!
//! - messages sent one after another to one destination ride one
//!   connection (TLS once), RSET between transactions, QUIT once idle past
//!   `[queue] connection_idle`;
//! - a receiver that drops idle connections (`smtpd_timeout`, with its
//!   `421`) loses nothing and counts no failed attempt: the next message
//!   goes on a fresh connection;
//! - `connection_idle = "0s"`: a connection per message, as before;
//! - a next hop that answers garbage on a reused connection: the attempt
//!   fails cleanly (deferred), the connection is dropped, and the retry
//!   goes on a fresh one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::Ca;
use common::postfix::Postfix;
use common::Gateway;

const LIMIT: Duration = Duration::from_secs(60);

/// Postfix with STARTTLS (a certificate from `ca`), relaying cache.test to
/// a final sink; `extra` goes into main.cf.
fn postfix(dir: &Path, ca: &Ca, sink_port: u16, extra: &str) -> Postfix {
    let (crt, key) = ca.leaf(&dir.join("pki"), "postfix-server", &["mx.cache.test"]);
    Postfix::start(
        dir,
        &format!(
            "relay_domains = cache.test\nrelayhost = [127.0.0.1]:{sink_port}\nsmtp_tls_security_level = none\n\
             smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {}, {}\n{extra}",
            key.display(),
            crt.display()
        ),
    )
}

/// A gateway in `dir`/gw routing cache.test to `pf_port`; `queue` goes
/// into `[queue]`. With its metrics port.
fn gateway(dir: &Path, ca: &Ca, pf_port: u16, queue: &str) -> (Gateway, u16) {
    let dir = dir.join("gw");
    std::fs::create_dir_all(&dir).unwrap();
    let port = common::free_port();
    let admin = common::free_port();
    let config = common::config(port, 1, "")
        .replace(
            "accept_domains = [\"example.com\"]",
            "accept_domains = [\"cache.test\"]",
        )
        .replace(
            "via = \"[127.0.0.1]:1\"",
            &format!("via = \"[127.0.0.1]:{pf_port}\""),
        )
        .replace(
            "generate_self_signed = true\n",
            &format!(
                "generate_self_signed = true\nca_files = [\"{}\"]\nsystem_roots = false\n",
                ca.cert_path.display()
            ),
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{admin}\""),
        )
        + &format!("\n[queue]\nretry = [\"1h\"]\n{queue}\n");
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    (Gateway::start_in(dir, port), admin)
}

/// A test's peers: the gateway (metrics on `admin`), Postfix (`pf_extra`
/// in its main.cf) relaying to a final sink; dropped in that order. A test
/// binds every field (`_sink` and the like keep a peer to the end).
struct Bed {
    gw: Gateway,
    admin: u16,
    pf: Postfix,
    sink: common::receiver::Receiver,
    dir: std::path::PathBuf,
}

fn bed(name: &str, pf_extra: &str, queue: &str) -> Bed {
    let dir = common::temp_dir(name);
    let ca = Ca::new(&dir.join("pki"), "ca");
    let sink = common::receiver::start("127.0.0.1", &dir.join("final"), &[]);
    let pf = postfix(&dir, &ca, sink.port, pf_extra);
    let (gw, admin) = gateway(&dir, &ca, pf.port, queue);
    Bed {
        gw,
        admin,
        pf,
        sink,
        dir,
    }
}

/// Sends `n` messages one at a time, each once the last was delivered.
fn send_in_turn(gw: &Gateway, prefix: &str, n: usize) {
    for i in 0..n {
        let rcpt = format!("{prefix}{i}@cache.test");
        common::send_mail(gw, "sender@client.test", &[&rcpt], &format!("to {rcpt}"));
        let line = gw.wait_for_line(&format!("to=<{rcpt}>"), LIMIT);
        assert!(line.contains("status=sent"), "{line}\n{}", gw.log());
    }
}

/// Postfix's `disconnect from` lines of the sessions that said EHLO (one
/// per connection, with the counts of its commands; the start-up check
/// only says QUIT).
fn disconnects(pf: &Postfix) -> Vec<String> {
    pf.log()
        .lines()
        .filter(|l| l.contains("disconnect from") && l.contains("ehlo="))
        .map(str::to_string)
        .collect()
}

#[test]
fn messages_in_turn_ride_one_connection_to_postfix() {
    // Idle long enough that the turns below never outwait it.
    let Bed {
        gw,
        admin,
        pf,
        sink: _sink,
        dir: _dir,
    } = bed("cache-pf", "", "connection_idle = \"30s\"");
    send_in_turn(&gw, "turn", 6);
    assert_eq!(gw.count("TLS connection established to"), 1, "{}", gw.log());
    assert_eq!(gw.count("reusing the connection"), 5, "{}", gw.log());
    let metrics = common::scrape(admin);
    for (event, n) in [("opened", 1), ("reused", 5), ("idle_gone", 0)] {
        assert_eq!(
            common::value(
                &metrics,
                &format!("sealgate_outbound_connections_total{{shard=\"0\",event=\"{event}\"}}")
            ),
            n,
            "{event}: {metrics}"
        );
    }
    // Stopping closes the idle connection with QUIT.
    let log = gw.stop();
    let line = pf.wait_for_line("mail=", LIMIT);
    assert!(
        line.contains(" starttls=1 ")
            && line.contains(" mail=6 ")
            && line.contains(" rcpt=6 ")
            && line.contains(" bdat=6 ")
            && line.contains(" rset=5 ")
            && line.contains(" quit=1 "),
        "one connection, six transactions (BDAT: Postfix offers CHUNKING), RSET between, QUIT at the end: {line}\n{log}"
    );
    assert_eq!(disconnects(&pf).len(), 1, "{}", pf.log());
}

#[test]
fn a_receiver_that_drops_idle_connections_loses_nothing() {
    let Bed {
        gw,
        admin,
        pf,
        sink,
        dir: _dir,
    } = bed(
        "cache-drop",
        "smtpd_timeout = 1s\n",
        "connection_idle = \"60s\"",
    );
    // smtpd drops a client idle for a second, with "421 … timeout".
    send_in_turn(&gw, "first", 1);
    // Postfix gave up on the idle connection.
    pf.wait_for_line("timeout after", LIMIT);
    send_in_turn(&gw, "second", 1);
    let log = gw.log();
    assert!(!log.contains("failed"), "no failure logged: {log}");
    assert!(
        log.contains("the idle connection was closed by the server")
            || log.contains("the idle connection was gone"),
        "{log}"
    );
    assert_eq!(gw.count("TLS connection established to"), 2, "{log}");
    let metrics = common::scrape(admin);
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_outbound_connections_total{shard=\"0\",event=\"idle_gone\"}"
        ),
        1,
        "{metrics}"
    );
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_deliveries_total{outcome=\"deferred\",tls=\"trusted\"}"
        ),
        0,
        "{metrics}"
    );
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_deliveries_total{outcome=\"sent\",tls=\"trusted\"}"
        ),
        2,
        "{metrics}"
    );
    let arrived = sink.wait_for_messages(2, LIMIT, || pf.log());
    assert!(
        arrived.iter().any(|m| m.contains("to first0@cache.test"))
            && arrived.iter().any(|m| m.contains("to second0@cache.test")),
        "both messages reached the final hop: {arrived:?}"
    );
    drop(gw);
}

#[test]
fn no_cache_means_a_connection_per_message() {
    let Bed {
        gw,
        pf,
        admin: _admin,
        sink: _sink,
        dir: _dir,
    } = bed("cache-off", "", "connection_idle = \"0s\"");
    send_in_turn(&gw, "each", 3);
    assert_eq!(gw.count("TLS connection established to"), 3);
    assert_eq!(gw.count("reusing the connection"), 0);
    drop(gw);
    // Each connection ends with QUIT after its one transaction.
    let deadline = std::time::Instant::now() + LIMIT;
    // postlogd writes the log after the fact: poll it, as
    // `Postfix::wait_for_line` does.
    while disconnects(&pf).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", pf.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    for line in disconnects(&pf) {
        assert!(
            line.contains(" mail=1 ") && line.contains(" quit=1 ") && !line.contains("rset="),
            "{line}"
        );
    }
}

#[test]
fn garbage_on_a_reused_connection_fails_the_attempt_and_drops_it() {
    let dir = common::temp_dir("cache-garbage");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let receiver = common::receiver::start("127.0.0.1", &dir.join("final"), &["--garbage-on-rset"]);
    let (gw, _admin) = gateway(&dir, &ca, receiver.port, "connection_idle = \"60s\"");
    send_in_turn(&gw, "first", 1);
    common::send_mail(&gw, "sender@client.test", &["second@cache.test"], "second");
    let line = gw.wait_for_line("to=<second@cache.test>", LIMIT);
    assert!(
        line.contains("status=deferred") && line.contains("protocol error"),
        "{line}\n{}",
        gw.log()
    );
    assert_eq!(gw.count("reusing the connection"), 1, "{}", gw.log());
    // The retry (flushed now) goes on a fresh connection: no RSET, no
    // garbage, delivered.
    let (status, out, err) = common::run_tool(
        std::process::Command::new(common::BIN)
            .args(["queue", "flush", "-c"])
            .arg(dir.join("gw/sealgate.toml")),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    gw.wait_for_count("to=<second@cache.test>", 2, LIMIT);
    let log = gw.log();
    let last = log
        .lines()
        .rfind(|l| l.contains("to=<second@cache.test>"))
        .unwrap_or_default();
    assert!(last.contains("status=sent"), "{last}\n{log}");
    assert_eq!(gw.count("reusing the connection"), 1, "{log}");
    receiver.wait_for_messages(2, LIMIT, || gw.log());
}

#[test]
fn a_reload_closes_idle_connections_with_quit() {
    let Bed {
        gw,
        pf,
        dir,
        admin: _admin,
        sink: _sink,
    } = bed("cache-reload", "", "connection_idle = \"60s\"");
    send_in_turn(&gw, "before", 1);
    let (status, out, err) = common::run_tool(
        std::process::Command::new(common::BIN)
            .args(["reload", "-c"])
            .arg(dir.join("gw/sealgate.toml")),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    // Long before its 60 s were up, the idle connection ended with QUIT.
    let line = pf.wait_for_line("mail=", LIMIT);
    assert!(
        line.contains(" bdat=1 ") && line.contains(" quit=1 "),
        "{line}"
    );
    // The next message opens a connection under the new configuration.
    send_in_turn(&gw, "after", 1);
    assert_eq!(gw.count("TLS connection established to"), 2, "{}", gw.log());
    assert_eq!(gw.count("reusing the connection"), 0, "{}", gw.log());
}
