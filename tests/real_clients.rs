//! IN-1, IN-2, IN-3 against programs nobody here wrote: Python's smtplib,
//! swaks and `openssl s_client -starttls smtp`. Each delivers a message
//! that must land complete in the spool, with the Received header showing
//! the TLS details when TLS was used.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_tool, Gateway};

const TOOL_LIMIT: Duration = Duration::from_secs(30);

fn find_by_subject<'a>(
    spooled: &'a [sealgate::spool::Spooled],
    subject: &str,
) -> &'a sealgate::spool::Spooled {
    spooled
        .iter()
        .find(|m| String::from_utf8_lossy(&m.message).contains(&format!("Subject: {subject}")))
        .unwrap_or_else(|| panic!("no spooled message with subject {subject}"))
}

fn assert_tls_received(msg: &sealgate::spool::Spooled) {
    let text = String::from_utf8_lossy(&msg.message);
    let received = text.split("\r\n\r\n").next().unwrap();
    assert!(received.starts_with("Received: from "), "{received}");
    assert!(received.contains("with ESMTPS id"), "{received}");
    assert!(
        received.contains("(version=TLSv1.3 cipher=TLS13_")
            || received.contains("(version=TLSv1.2 cipher=TLS_ECDHE_"),
        "{received}"
    );
    assert!(
        received.contains(" bits=") && received.contains(" verify=NO)"),
        "{received}"
    );
}

const PYTHON_CLIENT: &str = r#"
import smtplib, ssl, sys
from email.message import EmailMessage
port, mode, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = EmailMessage()
m["Subject"] = subject
m["From"] = "sender@client.test"
m["To"] = "user@example.com"
m.set_content("first line\n.leading dot\nlast line\n")
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
if mode == "tls":
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
refused = s.send_message(m)
assert refused == {}, refused
s.quit()
print("sent")
"#;

#[test]
fn python_smtplib_plain_and_starttls() {
    let gw = Gateway::start("python", 1, "");
    for (mode, subject) in [("plain", "python-plain"), ("tls", "python-tls")] {
        let (status, out, err) = run_tool(
            Command::new("python3").args([
                "-c",
                PYTHON_CLIENT,
                &gw.port().to_string(),
                mode,
                subject,
            ]),
            None,
            TOOL_LIMIT,
        );
        assert!(
            status.success() && out.contains("sent"),
            "python {mode}: {out}{err}"
        );
    }
    let spooled = gw.spooled();
    let plain = find_by_subject(&spooled, "python-plain");
    let text = String::from_utf8_lossy(&plain.message);
    assert!(
        text.contains("with ESMTP id") && !text.contains("version=TLS"),
        "{text}"
    );
    assert!(
        text.contains("\r\n.leading dot\r\nlast line\r\n"),
        "dot-unstuffed, complete: {text}"
    );
    assert_eq!(plain.recipients, vec!["user@example.com"]);
    assert!(plain.tls.is_none());
    let tls = find_by_subject(&spooled, "python-tls");
    assert_tls_received(tls);
    assert!(String::from_utf8_lossy(&tls.message).ends_with("last line\r\n"));
    assert!(tls.tls.is_some());
}

#[test]
fn swaks_with_tls() {
    let gw = Gateway::start("swaks", 1, "");
    let (status, out, err) = run_tool(
        Command::new("swaks").args([
            "--server",
            "127.0.0.1",
            "--port",
            &gw.port().to_string(),
            "--tls",
            "--from",
            "sender@client.test",
            "--to",
            "user@example.com",
            "--header",
            "Subject: swaks-tls",
            "--body",
            "hello from swaks",
            "--timeout",
            "20",
        ]),
        None,
        TOOL_LIMIT,
    );
    assert!(status.success(), "swaks failed:\n{out}\n{err}");
    let spooled = gw.spooled();
    let msg = find_by_subject(&spooled, "swaks-tls");
    assert_tls_received(msg);
    assert!(String::from_utf8_lossy(&msg.message).contains("hello from swaks"));
    assert_eq!(msg.from, "sender@client.test");
}

#[test]
fn openssl_s_client_starttls() {
    let gw = Gateway::start("openssl", 1, "");
    // Drive s_client as a person would: send a line, wait for the reply.
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-quiet",
            "-connect",
        ])
        .arg(gw.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (tests/run.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard = std::thread::spawn({
        let (pid, finished) = (child.id(), finished.clone());
        move || {
            // Bound the conversation: kill s_client if it hangs.
            std::thread::park_timeout(Duration::from_secs(30));
            if !finished.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    });
    let mut expect = |code: &str| loop {
        let line = lines.next().expect("s_client closed").unwrap();
        if line.starts_with(&format!("{code} ")) {
            return line;
        }
        assert!(
            line.starts_with(&format!("{code}-")),
            "expected {code}, got {line:?}"
        );
    };
    // s_client did EHLO and STARTTLS itself; -quiet hides the session
    // before the handshake. RFC 3207 §4.2: EHLO again inside TLS.
    writeln!(stdin, "EHLO openssl.test").unwrap();
    expect("250");
    writeln!(stdin, "MAIL FROM:<sender@client.test>").unwrap();
    expect("250");
    writeln!(stdin, "RCPT TO:<user@example.com>").unwrap();
    expect("250");
    writeln!(stdin, "DATA").unwrap();
    expect("354");
    write!(stdin, "Subject: openssl-tls\n\nhello from s_client\n.\n").unwrap();
    let queued = expect("250");
    assert!(queued.contains("queued as"), "{queued}");
    writeln!(stdin, "QUIT").unwrap();
    expect("221");
    drop(stdin);
    let _ = child.wait();
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    guard.thread().unpark();
    let spooled = gw.spooled();
    let msg = find_by_subject(&spooled, "openssl-tls");
    assert_tls_received(msg);
    assert!(String::from_utf8_lossy(&msg.message).ends_with("hello from s_client\r\n"));
}
