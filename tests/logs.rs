//! OPS-3: Postfix-style log lines for a TLS delivery and a reject, JSON
//! lines that parse, and a reload that turns on debug for `receive`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, Gateway};

fn send(gw: &Gateway, rcpt: &str) -> String {
    let mut c = common::connect(gw.addr);
    c.reply();
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<s@client.test>");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    if r.starts_with("250") {
        c.cmd("DATA");
        c.cmd("Subject: logs\r\n\r\nx\r\n.");
    }
    c.cmd("QUIT");
    r
}

#[test]
fn text_and_json_lines_and_debug_after_reload() {
    // B: the next hop, logging JSON.
    let dir_b = common::temp_dir("logs-b");
    let port_b = common::free_port();
    std::fs::write(
        dir_b.join("sealgate.toml"),
        common::config(port_b, 1, "") + "\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let b = Gateway::start_in(dir_b, port_b);

    // A: routes everything to B, logs text.
    let dir_a = common::temp_dir("logs-a");
    let port_a = common::free_port();
    let cfg_a = dir_a.join("sealgate.toml");
    let base =
        common::config(port_a, 1, "").replace("[127.0.0.1]:1", &format!("[127.0.0.1]:{port_b}"));
    std::fs::write(&cfg_a, &base).unwrap();
    let a = Gateway::start_in(dir_a, port_a);

    assert_eq!(
        send(&a, "someone@elsewhere.test"),
        "554 5.7.1 Relay access denied\r\n"
    );
    assert!(send(&a, "user@example.com").starts_with("250"));
    a.wait_for_log("status=sent", Duration::from_secs(30));
    let log = a.log();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{log}"))
            .to_string()
    };
    let reject =
        line("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 Relay access denied;");
    assert!(
        reject.contains(
            "from=<s@client.test> to=<someone@elsewhere.test> proto=ESMTP helo=<client.test>"
        ),
        "{reject}"
    );
    let tls = line("TLS connection established to 127.0.0.1[127.0.0.1]");
    assert!(
        tls.contains(&format!(
            "127.0.0.1[127.0.0.1]:{port_b}: TLSv1.3 with cipher TLS13_"
        )) && tls.contains(" bits)"),
        "{tls}"
    );
    assert!(
        tls.contains("Untrusted TLS connection"),
        "B's self-signed certificate: {tls}"
    );
    let sent = line("status=sent");
    assert!(
        sent.contains(": to=<user@example.com>, relay=127.0.0.1[127.0.0.1]")
            && sent.contains(", dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as "),
        "{sent}"
    );
    assert!(line("(queue active)").contains(": client=[127.0.0.1]:"));
    // The refused session: Postfix's per-command summary.
    assert!(
        log.lines()
            .any(|l| l.contains("disconnect from [127.0.0.1]")
                && l.contains(" ehlo=1 mail=1 rcpt=1 quit=1 commands=4 messages=0 errors=1")),
        "{log}"
    );

    // The text format is the wording alone: no field is appended.
    for needle in ["(queue active)", "status=sent", "Relay access denied;"] {
        let l = line(needle);
        assert!(
            !l.contains("queue_id=") && !l.contains("client_address="),
            "{l}"
        );
    }
    assert!(line("(queue active)").ends_with("(queue active)"));

    // B's JSON: every line parses, carries the same wording as `message`,
    // and each fact under its own key.
    assert!(send(&b, "someone@elsewhere.test").starts_with("554"));
    b.wait_for_log("(queue active)", Duration::from_secs(30));
    b.wait_for_log("status=deferred", Duration::from_secs(30));
    b.wait_for_log("NOQUEUE: reject: RCPT", Duration::from_secs(30));
    b.wait_for_log("disconnect from", Duration::from_secs(30));
    let mut lines = Vec::new();
    for l in b.log().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["target"].is_string() && v["timestamp"].is_string(),
            "{l}"
        );
        lines.push(v);
    }
    let find = |needle: &str| {
        lines
            .iter()
            .find(|v| v["message"].as_str().unwrap_or("").contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:?}"))
    };
    let tls = find("Anonymous TLS connection established from [127.0.0.1]");
    assert_eq!(tls["client_address"], "127.0.0.1", "{tls}");
    assert_eq!(tls["tls_version"], "TLSv1.3", "{tls}");
    assert!(
        tls["tls_cipher"].as_str().unwrap().starts_with("TLS13_"),
        "{tls}"
    );
    assert_eq!(tls["tls_trust"], "Anonymous", "{tls}");
    let queued = find("(queue active)");
    let id = queued["queue_id"].as_str().expect("queue_id").to_string();
    assert!(queued["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{id}: client=")));
    assert_eq!(queued["client_address"], "127.0.0.1", "{queued}");
    assert_eq!(queued["from"], "s@client.test", "{queued}");
    assert_eq!(queued["nrcpt"], 1, "{queued}");
    assert!(queued["size"].as_u64().unwrap() > 0, "{queued}");
    // B's own attempt (its route is a closed port): the recipient's line.
    let deferred = find("status=deferred");
    assert_eq!(deferred["queue_id"], id.as_str(), "{deferred}");
    assert_eq!(deferred["to"], "user@example.com", "{deferred}");
    assert_eq!(deferred["status"], "deferred", "{deferred}");
    assert!(
        deferred["dsn"].as_str().unwrap().starts_with("4."),
        "{deferred}"
    );
    assert!(deferred["delay"].is_u64(), "{deferred}");
    let reject = find("NOQUEUE: reject: RCPT from unknown[127.0.0.1]");
    assert_eq!(reject["to"], "someone@elsewhere.test", "{reject}");
    assert_eq!(reject["from"], "s@client.test", "{reject}");
    assert_eq!(reject["reply_code"], 554, "{reject}");
    assert_eq!(reject["dsn"], "5.7.1", "{reject}");
    assert_eq!(reject["helo"], "client.test", "{reject}");
    let connect = find("connect from [127.0.0.1]");
    assert!(
        connect["client_port"].is_u64() && connect["shard"].is_u64(),
        "{connect}"
    );
    let gone = find("disconnect from [127.0.0.1]");
    assert!(gone["messages"].is_u64(), "{gone}");

    // A reload that sets log.receive = "debug" shows handshake details.
    assert!(!a.log().contains("TLS ClientHello"));
    std::fs::write(&cfg_a, format!("{base}\n[log]\nreceive = \"debug\"\n")).unwrap();
    let (status, _, _) = common::run_tool(
        std::process::Command::new(common::BIN)
            .args(["reload", "-c"])
            .arg(&cfg_a),
        None,
        Duration::from_secs(10),
    );
    assert!(status.success());
    a.wait_for_log("reload: configuration reloaded", Duration::from_secs(20));
    let mut c = common::connect(a.addr);
    c.reply();
    c.cmd("EHLO debug.test");
    assert!(c.cmd("STARTTLS").starts_with("220"));
    let config = common::tls_client_config(&a.dir);
    let conn =
        rustls::ClientConnection::new(Arc::clone(&config), "mx.test".try_into().unwrap()).unwrap();
    let mut t = Client::new(rustls::StreamOwned::new(conn, c.stream));
    t.cmd("EHLO debug.test");
    t.cmd("QUIT");
    a.wait_for_log(
        "TLS ClientHello: SNI=mx.test cipher suites offered: TLS13_",
        Duration::from_secs(20),
    );
}

/// The first line a newcomer reads says where to send, where to look,
/// where the mail goes and how to stop.
#[test]
fn the_ready_line_says_where_to_look_where_mail_goes_and_how_to_stop() {
    let gw = common::Gateway::start("ready-line", 1, "");
    let line = gw.wait_for_line("sealgate ready", Duration::from_secs(20));
    assert!(
        line.contains(&format!("listening on 127.0.0.1:{}", gw.port()))
            && line.contains("status page and metrics on http://127.0.0.1:")
            && line.contains("mail goes to [127.0.0.1]:1 unless a route says otherwise")
            && line.contains("stop with Ctrl-C or SIGTERM"),
        "{line}"
    );
    gw.stop();
}
