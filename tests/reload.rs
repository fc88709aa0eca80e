//! OPS-2: SIGHUP (and `sealgate reload`) swap the policy snapshot without
//! dropping a connection; a broken file keeps the old policy; sessions in
//! flight keep the snapshot they started with.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Gateway};

/// Config A: 127.0.0.7 must use TLS. Config B: it need not.
fn config(port: u16, mandatory: bool) -> String {
    format!(
        "{}\n[[profile]]\nname = \"seven\"\nhosts = [\"127.0.0.7\"]\n[profile.server]\nmandatory_tls = {mandatory}\n",
        common::config(port, 2, "")
    )
}

fn mail_reply(c: &mut Client<TcpStream>) -> String {
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@client.test>")
}

const RELOADED: &str = "reload: configuration reloaded";

/// `sealgate ARGS -c FILE` against the running gateway: its exit status,
/// standard output and error. The bound is generous: a lookup against a
/// resolver that never answers takes its timeouts (the gateway answers
/// within 60 s).
fn sealgate(args: &[&str], file: &std::path::Path) -> (std::process::ExitStatus, String, String) {
    common::run_tool(
        std::process::Command::new(common::BIN)
            .args(args)
            .arg("-c")
            .arg(file),
        None,
        Duration::from_secs(120),
    )
}

/// `sealgate reload -c FILE`.
fn sealgate_reload(file: &std::path::Path) -> (std::process::ExitStatus, String, String) {
    sealgate(&["reload"], file)
}

#[test]
fn reload_under_load_swaps_policy_for_new_sessions_only() {
    let dir = common::temp_dir("reload");
    let port = common::free_port();
    let file = dir.join("sealgate.toml");
    std::fs::write(&file, config(port, true)).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    // Load: complete sessions with a message, back to back, on 3 threads.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), gw.addr);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut c = common::connect(addr);
                    let good = c.try_reply().unwrap_or_default().starts_with("220")
                        && c.try_cmd("EHLO load.test").starts_with("250")
                        && c.try_cmd("MAIL FROM:<l@load.test>").starts_with("250")
                        && c.try_cmd("RCPT TO:<u@example.com>").starts_with("250")
                        && c.try_cmd("DATA").starts_with("354")
                        && c.try_cmd("Subject: load\r\n\r\nx\r\n.").starts_with("250")
                        && c.try_cmd("QUIT").starts_with("221");
                    let counter = if good { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // A session that starts under A and is still open across the reloads.
    let mut old = common::connect_from("127.0.0.7", gw.addr);
    // Ten reloads alternating B (even i) and A (odd i), one of them through
    // `sealgate reload`.
    for i in 0..10 {
        let before = gw.count(RELOADED);
        std::fs::write(&file, config(port, i % 2 == 1)).unwrap();
        if i == 4 {
            let (status, out, err) = sealgate_reload(&file);
            assert!(status.success(), "{out}{err}");
        } else {
            gw.hangup();
        }
        gw.wait_for_count(RELOADED, before + 1, Duration::from_secs(20));
    }
    // The last of the ten (i = 9) put A back; now switch to B while the
    // session accepted under A is still open.
    let before = gw.count(RELOADED);
    std::fs::write(&file, config(port, false)).unwrap();
    gw.hangup();
    gw.wait_for_count(RELOADED, before + 1, Duration::from_secs(20));
    // The session accepted under A keeps A: TLS still required.
    assert_eq!(
        mail_reply(&mut old),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    // A new session from the same address runs under B.
    let mut new = common::connect_from("127.0.0.7", gw.addr);
    assert_eq!(mail_reply(&mut new), "250 2.1.0 Sender ok\r\n");

    // A broken file: errors logged, the running policy (B) stays.
    std::fs::write(
        &file,
        format!(
            "{}\n[limits]\nmessage_size = \"lots\"\n",
            config(port, true)
        ),
    )
    .unwrap();
    gw.hangup();
    gw.wait_for_log("reload failed", Duration::from_secs(20));
    assert!(
        gw.log().contains("limits.message_size: invalid size"),
        "{}",
        gw.log()
    );
    let mut after = common::connect_from("127.0.0.7", gw.addr);
    assert_eq!(
        mail_reply(&mut after),
        "250 2.1.0 Sender ok\r\n",
        "old policy kept"
    );

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("sessions during reloads: {ok} ok, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0, "no session may fail across reloads");
}

/// `sealgate reload` waits for the gateway's answer: exit 0 with what was
/// reloaded, or exit 1 with every error when the gateway refused the new
/// configuration (here a certificate file that does not exist, which only
/// the gateway's own load finds) — and the old configuration stays.
#[test]
fn sealgate_reload_reports_the_gateways_answer() {
    let dir = common::temp_dir("reload-cli");
    let port = common::free_port();
    let file = dir.join("sealgate.toml");
    std::fs::write(&file, config(port, true)).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let reload = || sealgate_reload(&file);
    let (status, out, err) = reload();
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("configuration reloaded"), "{out}{err}");

    let broken = config(port, false).replace(
        "[tls]\ncertificates = [ { cert = \"tls/server.crt\"",
        "[tls]\ncertificates = [ { cert = \"tls/missing.crt\"",
    );
    assert_ne!(broken, config(port, false));
    std::fs::write(&file, broken).unwrap();
    let (status, out, err) = reload();
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("tls/missing.crt"), "{out}{err}");
    assert!(err.contains("reload failed"), "{out}{err}");
    // The running policy is A still: 127.0.0.7 must use TLS.
    let mut c = common::connect_from("127.0.0.7", gw.addr);
    assert!(mail_reply(&mut c).starts_with("530"), "A stays in force");
    gw.stop();
}

/// `[queue]` follows a reload: a failure after it is retried by the new
/// `retry`, an attempt after it waits by the new `command_timeout`, and a
/// recipient expires by the new `lifetime`; a retry scheduled before it
/// keeps its time. A restart-only key changed in the same file is named
/// in the answer, keeps its running value, and the rest applies.
#[test]
fn queue_settings_follow_a_reload() {
    let dir = common::temp_dir("reload-queue");
    let port = common::free_port();
    let file = dir.join("sealgate.toml");
    // A next hop that takes the connection and never greets.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let before = common::config(port, 1, "")
        + "\n[queue]\nretry = [\"1h\"]\nlifetime = \"5d\"\ncommand_timeout = \"5m\"\n";
    std::fs::write(&file, &before).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let queue_list = || {
        let (status, out, err) = sealgate(&["queue", "list", "--json"], &file);
        assert!(status.success(), "{out}{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let due_in = |list: &serde_json::Value, rcpt: &str| -> Option<i64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        list.as_array()?
            .iter()
            .find(|m| m["recipients"][0]["rcpt"] == rcpt)
            .and_then(|m| m["recipients"][0]["next_due"].as_i64())
            .map(|due| due - now)
    };

    common::send_mail(&gw, "s@client.test", &["early@example.com"], "early");
    gw.wait_for_count("status=deferred", 1, Duration::from_secs(30));
    let wait = due_in(&queue_list(), "early@example.com").expect("queued");
    assert!(wait > 3000, "retry [\"1h\"]: next attempt in {wait} s");

    // The new file: a quick retry, a short lifetime and command timeout,
    // the silent next hop, and another listen address (restart only).
    let other_port = common::free_port();
    let after = common::config(port, 1, "")
        .replace(
            &format!("listen = [\"127.0.0.1:{port}\"]"),
            &format!("listen = [\"127.0.0.1:{other_port}\"]"),
        )
        .replace(
            "via = \"[127.0.0.1]:1\"",
            &format!("via = \"[127.0.0.1]:{silent_port}\""),
        )
        + "\n[queue]\nretry = [\"1s\"]\nlifetime = \"4s\"\ncommand_timeout = \"1s\"\n";
    std::fs::write(&file, &after).unwrap();
    let (status, out, err) = sealgate_reload(&file);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("reload: server.listen: needs a restart"),
        "{out}{err}"
    );
    assert_eq!(
        out.matches("needs a restart").count(),
        1,
        "only what changed: {out}"
    );
    assert!(out.contains(RELOADED), "{out}");
    gw.wait_for_log(
        "reload: server.listen: needs a restart",
        Duration::from_secs(5),
    );

    // Still on the old address (the message below goes to it).
    common::send_mail(&gw, "s@client.test", &["late@example.com"], "late");
    // The greeting never comes: deferred after the new 1 s, not 5 min.
    let line = gw.wait_for_line("to=<late@example.com>", Duration::from_secs(30));
    assert!(line.contains("status=deferred"), "{line}");
    assert!(line.contains("timeout"), "{line}");
    // Retried each second, then expired by the new lifetime (4 s).
    gw.wait_for_log("status=expired", Duration::from_secs(60));
    let log = gw.log();
    let expired = log.lines().find(|l| l.contains("status=expired")).unwrap();
    assert!(expired.contains("to=<late@example.com>"), "{expired}");
    let deferred = log
        .lines()
        .filter(|l| l.contains("to=<late@example.com>") && l.contains("status=deferred"))
        .count();
    assert!(
        deferred >= 2,
        "retried by the new schedule before it expired:\n{log}"
    );
    // The retry scheduled before the reload keeps its time.
    let wait = due_in(&queue_list(), "early@example.com").expect("still queued");
    assert!(wait > 3000, "next attempt in {wait} s");
    drop(silent);
    gw.stop();
}

/// One truth about what needs a restart: a file that changes every key
/// docs/configuration.md marks "restart" is answered with exactly those
/// keys, and nothing else is named.
#[test]
fn the_restart_keys_are_the_documented_ones() {
    let dir = common::temp_dir("reload-restart-keys");
    let running = dir.join("a.toml");
    let changed = dir.join("b.toml");
    std::fs::write(
        &running,
        "[server]\nlisten = [\"127.0.0.1:2525\"]\nshards = 1\nspool_dir = \"spool\"\n",
    )
    .unwrap();
    std::fs::write(
        &changed,
        r#"[server]
listen = ["127.0.0.1:2526"]
shards = 2
spool_dir = "spool2"
spool_writers = 3
spool_segment_size = "32MiB"
spool_large_message = "2MiB"
steer_by_cpu = true
[log]
format = "json"
[admin]
listen = "127.0.0.1:9026"
[dns]
servers = ["127.0.0.1:5353"]
dnssec = "validate"
trust_anchor = "anchor.keys"
[outbound]
mta_sts_refresh = "2h"
[fleet]
redis = "redis://127.0.0.1:6380/1"
node = "mx9"
password_file = "redis.pass"
"#,
    )
    .unwrap();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join("redis.pass"))
            .unwrap();
        f.write_all(b"secret\n").unwrap();
    }
    let load = |p: &std::path::Path| sealgate::config::load(Some(p)).expect("a valid file");
    let mut named = sealgate::run::needs_restart(&load(&running), &load(&changed));
    named.sort_unstable();
    assert!(sealgate::run::needs_restart(&load(&running), &load(&running)).is_empty());

    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut section = String::new();
    let mut documented = Vec::new();
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h
                .trim_matches(|c| c == '`' || c == '[' || c == ']')
                .to_string();
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if line.starts_with("| `") && cells.get(3) == Some(&"restart") {
            documented.push(format!("{section}.{}", cells[1].trim_matches('`')));
        }
    }
    documented.sort_unstable();
    assert_eq!(named, documented);
}

/// What one new session sees of the `[server]` and `[limits]` keys: the
/// banner's host name, the SIZE offered, whether a domain is accepted,
/// and the reply to the recipient one over the limit.
fn session_view(gw: &Gateway) -> (String, String, String, String) {
    let mut c = common::connect(gw.addr);
    let banner = c.reply();
    let ehlo = c.cmd("EHLO client.test");
    let size = ehlo
        .lines()
        .find_map(|l| l.get(4..).filter(|t| t.starts_with("SIZE")))
        .unwrap_or("")
        .to_string();
    c.cmd("MAIL FROM:<s@client.test>");
    let other = c.cmd("RCPT TO:<a@other.test>");
    let mut over = String::new();
    for i in 0..3 {
        over = c.cmd(&format!("RCPT TO:<r{i}@example.com>"));
    }
    quit(c);
    (banner, size, other, over)
}

/// QUIT, then the gateway's close: the connection no longer counts
/// against `connections_per_ip` once the end of stream is read.
fn quit(mut c: Client<TcpStream>) {
    use std::io::Read;
    assert!(c.cmd("QUIT").starts_with("221"));
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
}

/// The session-side keys follow a reload too: `hostname`,
/// `accept_domains`, `limits.message_size`, `limits.recipients`,
/// `limits.errors` and `limits.connections_per_ip`, seen by the next
/// session.
#[test]
fn server_and_limits_keys_follow_a_reload() {
    let dir = common::temp_dir("reload-server-keys");
    let port = common::free_port();
    let file = dir.join("sealgate.toml");
    std::fs::write(
        &file,
        common::config(
            port,
            1,
            "message_size = \"1MB\"\nrecipients = 5\nerrors = 5",
        ),
    )
    .unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let (banner, size, other, over) = session_view(&gw);
    assert!(banner.starts_with("220 mx.test "), "{banner}");
    assert_eq!(size, "SIZE 1000000");
    assert!(
        other.starts_with("550") || other.starts_with("554"),
        "{other}"
    );
    assert!(over.starts_with("250"), "{over}");
    // Two sessions at once from one address; three bad commands go on.
    let mut first = common::connect(gw.addr);
    first.reply();
    let mut second = common::connect(gw.addr);
    assert!(second.reply().starts_with("220"));
    for _ in 0..3 {
        assert!(second.cmd("BOGUS").starts_with("500"));
    }
    assert!(second.cmd("NOOP").starts_with("250"));
    quit(second);

    let after = common::config(
        port,
        1,
        "message_size = \"2MB\"\nrecipients = 2\nerrors = 3\nconnections_per_ip = 2",
    )
    .replace("hostname = \"mx.test\"", "hostname = \"relay.test\"")
    .replace(
        "accept_domains = [\"example.com\"]",
        "accept_domains = [\"example.com\", \"other.test\"]",
    );
    std::fs::write(&file, after).unwrap();
    let (status, out, err) = sealgate_reload(&file);
    assert!(status.success(), "{out}{err}");
    assert!(!out.contains("needs a restart"), "{out}");
    let (banner, size, other, over) = session_view(&gw);
    assert!(banner.starts_with("220 relay.test "), "{banner}");
    assert_eq!(size, "SIZE 2000000");
    assert!(other.starts_with("250"), "{other}");
    assert!(over.starts_with("452"), "{over}");
    // `first` still holds a connection: one more is allowed, not two.
    let mut second = common::connect(gw.addr);
    assert!(second.reply().starts_with("220"));
    let mut third = common::connect(gw.addr);
    assert_eq!(
        third.reply(),
        "421 4.7.0 Too many connections from your address, try again later\r\n"
    );
    // Three errors end a session now.
    for _ in 0..3 {
        assert!(second.cmd("BOGUS").starts_with("500"));
    }
    assert_eq!(
        second.reply(),
        "421 4.7.0 Too many errors, closing connection\r\n"
    );
    drop(first);
    gw.stop();
}

/// `[outbound]` follows a reload: the running gateway's `policy show`
/// (the same snapshot delivery decides by) reports the new MTA-STS mode
/// and, with a route profile added, that the profile now decides.
#[test]
fn outbound_keys_follow_a_reload() {
    let dir = common::temp_dir("reload-outbound");
    let port = common::free_port();
    let file = dir.join("sealgate.toml");
    // DNS on loopback, where nothing answers: the modes come first, and
    // nothing waits on the network.
    let base = common::config(port, 1, "") + "\n[dns]\nservers = [\"127.0.0.1:1\"]\n";
    std::fs::write(&file, &base).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let show = || {
        let (status, out, err) = sealgate(&["policy", "show", "partner.test"], &file);
        assert!(status.success(), "{out}{err}");
        out
    };
    let before = show();
    assert!(before.contains("mta_sts = \"enforce\""), "{before}");
    assert!(before.contains("no profile of its own"), "{before}");

    let after = base.clone()
        + "\n[outbound]\nmta_sts = \"report\"\n\n[[profile]]\nname = \"partner\"\n\
           [profile.client]\nmandatory_tls = true\n\n[[route]]\ndomain = \"partner.test\"\n\
           via = \"[127.0.0.1]:1\"\nprofile = \"partner\"\n";
    std::fs::write(&file, after).unwrap();
    let (status, out, err) = sealgate_reload(&file);
    assert!(status.success(), "{out}{err}");
    let shown = show();
    assert!(shown.contains("mta_sts = \"report\""), "{shown}");
    assert!(shown.contains("profile \"partner\" decides TLS"), "{shown}");
    gw.stop();
}

/// `sealgate reload` of a broken file: refused, and the running gateway
/// hears of it — it logs the errors and counts the failed reload — and
/// keeps serving under its configuration.
#[test]
fn a_broken_file_is_logged_and_counted_by_the_gateway() {
    let dir = common::temp_dir("reload-broken");
    let port = common::free_port();
    let admin = common::free_port();
    let file = dir.join("sealgate.toml");
    let good = common::config(port, 1, "").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{admin}\""),
    );
    std::fs::write(&file, &good).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    std::fs::write(
        &file,
        good.replace("[limits]\n", "[limits]\nrecipients = \"many\"\n"),
    )
    .unwrap();
    let (status, out, err) = sealgate_reload(&file);
    assert!(!status.success(), "{out}{err}");
    assert!(err.contains("limits.recipients"), "{err}");
    gw.wait_for_log("reload failed", Duration::from_secs(10));
    assert!(gw.log().contains("limits.recipients"), "{}", gw.log());
    let metrics = common::scrape(admin);
    assert_eq!(
        common::value(&metrics, "sealgate_reloads_total{result=\"failed\"}"),
        1
    );
    // Still serving.
    let mut c = common::connect(gw.addr);
    assert!(c.reply().starts_with("220"));
    gw.stop();
}

/// `sealgate policy`: a lookup that failed says so and exits 1 (it is not
/// "no policy"); a fixed-host route says why MTA-STS is not consulted.
#[test]
fn policy_says_when_a_lookup_failed_and_why_a_source_is_not_consulted() {
    let dir = common::temp_dir("policy-failed");
    let port = common::free_port();
    let file = dir.join("sealgate.toml");
    std::fs::write(
        &file,
        common::config(port, 1, "")
            + "\n[dns]\nservers = [\"127.0.0.1:1\"]\n\n[[route]]\ndomain = \"partner.test\"\nvia = \"mx\"\n",
    )
    .unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let (status, out, err) = sealgate(&["policy", "refresh", "partner.test"], &file);
    assert!(!status.success(), "{out}{err}");
    assert!(
        err.contains("MTA-STS: the lookup of _mta-sts.partner.test. TXT failed:"),
        "{out}{err}"
    );
    assert!(!err.contains("no policy cached"), "{err}");
    let (status, out, err) = sealgate(&["policy", "show", "elsewhere.test"], &file);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("MTA-STS: not consulted: MTA-STS applies to delivery by MX; this route goes to a fixed host")
            && out.contains("DANE: not consulted: [outbound] dane is \"off\""),
        "{out}"
    );
    gw.stop();
}
