//! OPS-5: `sealgate queue list/show/hold/release/delete/flush` against a
//! running gateway.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Gateway;

fn queue(cfg: &Path, args: &[&str]) -> (bool, String) {
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["queue", "-c"])
            .arg(cfg)
            .args(args),
        None,
        Duration::from_secs(20),
    );
    (status.success(), format!("{out}{err}"))
}

#[test]
fn queue_commands_on_a_running_gateway() {
    let dir = common::temp_dir("queue-admin");
    let port = common::free_port();
    let cfg = dir.join("sealgate.toml");
    let base = common::config(port, 1, "") + "\n[queue]\nretry = [\"1h\"]\n";
    std::fs::write(&cfg, &base).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    // The control socket is the owner's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("spool/sealgate.ctl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    for subject in ["first", "second"] {
        let mut c = common::connect(gw.addr);
        c.reply();
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<s@client.test>");
        c.cmd(&format!("RCPT TO:<{subject}@example.com>"));
        c.cmd("DATA");
        assert!(c
            .cmd(&format!("Subject: {subject}\r\n\r\nx\r\n."))
            .starts_with("250"));
        c.cmd("QUIT");
    }
    // Both attempts fail (the route is a closed port) and are deferred.
    gw.wait_for_count("status=deferred", 2, Duration::from_secs(30));
    let (ok, out) = queue(&cfg, &["list", "--json"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let id_of = |rcpt: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["recipients"][0]["rcpt"] == rcpt)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (first, second) = (id_of("first@example.com"), id_of("second@example.com"));
    assert_eq!(list[0]["recipients"][0]["status"], "pending");
    assert!(list[0]["recipients"][0]["last"]
        .as_str()
        .unwrap()
        .contains("connection failed"));

    // `-c` after the queue command works too.
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["queue", "list", "-c"])
            .arg(&cfg),
        None,
        Duration::from_secs(20),
    );
    assert!(
        status.success() && out.contains(&first),
        "queue list -c FILE: {out}{err}"
    );
    let (ok, out) = queue(&cfg, &["show", &first]);
    assert!(
        ok && out.contains("rcpt <first@example.com>") && out.contains("1 attempt(s)"),
        "{out}"
    );
    assert!(queue(&cfg, &["hold", &first]).0);
    let (ok, out) = queue(&cfg, &["delete", &second]);
    assert!(ok, "{out}");
    let (ok, out) = queue(&cfg, &["delete", "NOSUCHID"]);
    assert!(!ok && out.contains("no such message"), "{out}");
    let (_, out) = queue(&cfg, &["list"]);
    assert!(
        out.contains(&format!("{first}!")) && !out.contains(&second),
        "held, the other gone: {out}"
    );
    // Human times, as postqueue -p prints them, and the state in words.
    assert!(
        out.contains("-queue id-")
            && out.contains("<first@example.com> pending, held, 1 attempt(s): "),
        "{out}"
    );
    let arrival = out
        .lines()
        .find(|l| l.starts_with(&first))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_string();
    assert!(
        arrival.len() == 20 && arrival.as_bytes()[10] == b'T' && arrival.ends_with('Z'),
        "arrival in RFC 3339: {out}"
    );
    let (_, shown) = queue(&cfg, &["show", &first]);
    assert!(
        shown.contains(" ago)") && shown.contains("(held)"),
        "{shown}"
    );

    // Route to a receiver now, and flush: the held message stays.
    let recv = common::receiver::start("127.0.0.1", &dir.join("received"), &[]);
    let rport = recv.port;
    std::fs::write(
        &cfg,
        base.replace("[127.0.0.1]:1", &format!("[127.0.0.1]:{rport}")),
    )
    .unwrap();
    let (status, _, _) = common::run_tool(
        Command::new(common::BIN).args(["reload", "-c"]).arg(&cfg),
        None,
        Duration::from_secs(10),
    );
    assert!(status.success());
    gw.wait_for_log("reload: configuration reloaded", Duration::from_secs(20));
    let (ok, out) = queue(&cfg, &["flush"]);
    assert!(
        ok && out.contains("0 message(s) scheduled for delivery now; 1 held"),
        "a held message is not counted as scheduled: {out}"
    );
    let (_, out) = queue(&cfg, &["list", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Released: delivered.
    assert!(queue(&cfg, &["release", &first]).0);
    gw.wait_for_log("status=sent", Duration::from_secs(30));
    gw.wait_for_log(&format!("{first}: removed"), Duration::from_secs(30));
    let (_, out) = queue(&cfg, &["list"]);
    assert!(out.contains("0 message(s) in queue"), "{out}");
    drop(recv);
}
