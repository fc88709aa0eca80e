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

fn sighup(gw: &Gateway) {
    let pid = std::fs::read_to_string(gw.dir.join("spool/sealgate.pid")).unwrap();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .unwrap();
    assert!(ok.success());
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
            let (status, out, err) = common::run_tool(
                std::process::Command::new(common::BIN)
                    .args(["reload", "-c"])
                    .arg(&file),
                None,
                Duration::from_secs(20),
            );
            assert!(status.success(), "{out}{err}");
        } else {
            sighup(&gw);
        }
        gw.wait_for_count(RELOADED, before + 1, Duration::from_secs(20));
    }
    // The last of the ten (i = 9) put A back; now switch to B while the
    // session accepted under A is still open.
    let before = gw.count(RELOADED);
    std::fs::write(&file, config(port, false)).unwrap();
    sighup(&gw);
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
    sighup(&gw);
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
    let reload = || {
        common::run_tool(
            std::process::Command::new(common::BIN)
                .args(["reload", "-c"])
                .arg(&file),
            None,
            Duration::from_secs(20),
        )
    };
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
