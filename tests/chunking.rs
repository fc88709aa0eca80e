//! CHUNKING (RFC 3030) against a sender nobody here wrote: Exim (Debian's
//! exim4-daemon-light, unpacked by tests/run.sh) relays to the gateway and
//! uses BDAT because the gateway offers CHUNKING. Messages with bodies of
//! 0, 1, 64 KiB and 10 MiB, with dot lines, must land in the spool octet
//! for octet, and the gateway's disconnect lines must show BDAT was used.
//!
//! Outbound, the gateway sends BDAT to Postfix (which offers CHUNKING):
//! Postfix's disconnect line counts `bdat=`, and the messages, dot lines
//! and all, reach the final hop behind it as they were sent.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_tool, Gateway};

fn exim() -> String {
    std::env::var("SEALGATE_EXIM")
        .unwrap_or_else(|_| "/opt/sealgate-test-peers/exim4/usr/sbin/exim4".to_string())
}

/// A body of exactly `n` octets in LF lines (as Exim reads it from
/// stdin), some starting with a dot, which BDAT sends unstuffed.
fn body(n: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(n);
    let mut line = 0usize;
    while b.len() < n {
        let room = n - b.len();
        let mut l = if line % 7 == 3 {
            b".a dot line".to_vec()
        } else {
            format!("line {line:08} of the chunking test, padded to some length").into_bytes()
        };
        l.truncate(room.saturating_sub(1));
        l.push(b'\n');
        b.extend_from_slice(&l);
        line += 1;
    }
    b
}

#[test]
fn exim_sends_with_bdat_and_every_size_arrives_intact() {
    let gw = Gateway::start("chunking", 1, "");
    let dir = common::temp_dir("exim");
    let spool = dir.join("spool");
    std::fs::create_dir_all(spool.join("db")).unwrap();
    std::fs::create_dir_all(dir.join("log")).unwrap();
    // Created here, so that the chown below gives them to the transport
    // (Exim run with -C does not hand its log files over itself).
    for log in ["mainlog", "paniclog", "rejectlog"] {
        std::fs::write(dir.join("log").join(log), "").unwrap();
    }
    // The transport runs as Debian-exim: it logs there and keeps its
    // hints in the spool.
    let (status, _, err) = run_tool(
        Command::new("chown").args(["-R", "Debian-exim"]).arg(&dir),
        None,
        Duration::from_secs(10),
    );
    assert!(status.success(), "chown: {err}");
    let conf = dir.join("exim.conf");
    std::fs::write(
        &conf,
        format!(
            "primary_hostname = client.test\n\
             exim_path = {exim}\n\
             spool_directory = {spool}\n\
             log_file_path = {log}/%slog\n\
             never_users =\n\
             keep_environment =\n\
             message_size_limit = 50M\n\
             begin routers\n\
             gateway:\n  driver = manualroute\n  route_list = * 127.0.0.1::{port}\n  transport = remote\n  self = send\n\
             begin transports\n\
             remote:\n  driver = smtp\n  hosts_try_chunking = *\n  hosts_avoid_tls = *\n  allow_localhost\n  user = Debian-exim\n\
             begin retry\n* * F,1m,1m\n",
            spool = spool.display(),
            log = dir.join("log").display(),
            port = gw.port(),
            exim = exim(),
        ),
    )
    .unwrap();
    let sizes = [0usize, 1, 64 * 1024, 10 * 1024 * 1024];
    for n in sizes {
        let mut message = format!("Subject: chunk-{n}\nFrom: sender@client.test\n\n").into_bytes();
        message.extend_from_slice(&body(n));
        let (status, out, err) = run_tool(
            Command::new(exim()).arg("-C").arg(&conf).args([
                "-odf",
                "-oi",
                "-f",
                "sender@client.test",
                "user@example.com",
            ]),
            Some(&message),
            Duration::from_secs(120),
        );
        assert!(status.success(), "exim, {n} octets: {out}{err}");
    }
    // Exim's own log: each delivery took the gateway's 250, with chunking
    // (the K flag).
    let main_log = std::fs::read_to_string(dir.join("log/mainlog")).unwrap();
    let delivered: Vec<&str> = main_log
        .lines()
        .filter(|l| l.contains(" => user@example.com"))
        .collect();
    assert_eq!(delivered.len(), sizes.len(), "{main_log}");
    for line in &delivered {
        assert!(line.contains(" K C=\"250 2.0.0 Ok: queued as "), "{line}");
    }
    gw.wait_for_count(" bdat=", sizes.len(), Duration::from_secs(30));
    assert_eq!(gw.count(" data="), 0, "{}", gw.log());
    let spooled = gw.spooled();
    for n in sizes {
        let msg = spooled
            .iter()
            .find(|m| {
                String::from_utf8_lossy(&m.message[..m.message.len().min(4096)])
                    .contains(&format!("Subject: chunk-{n}\r\n"))
            })
            .unwrap_or_else(|| panic!("no spooled message chunk-{n}"));
        let at = msg
            .message
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        let want: Vec<u8> = body(n)
            .split(|&b| b == b'\n')
            .collect::<Vec<_>>()
            .join(&b"\r\n"[..]);
        assert!(
            msg.message[at..] == want[..],
            "chunk-{n}: the body differs ({} octets, want {})",
            msg.message.len() - at,
            want.len()
        );
        assert_eq!(msg.recipients, vec!["user@example.com"]);
    }
}

#[test]
fn the_gateway_sends_bdat_to_postfix_and_dot_lines_arrive_intact() {
    let dir = common::temp_dir("bdat-out");
    let sink = common::receiver::start("127.0.0.1", &dir.join("final"), &[]);
    let pf = common::postfix::Postfix::start(
        &dir,
        &format!(
            "relay_domains = out.test\nrelayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = none\n",
            sink.port
        ),
    );
    let port = common::free_port();
    let config = common::config(port, 1, "")
        .replace(
            "accept_domains = [\"example.com\"]",
            "accept_domains = [\"out.test\"]",
        )
        .replace(
            "via = \"[127.0.0.1]:1\"",
            &format!("via = \"[127.0.0.1]:{}\"", pf.port),
        );
    let gw_dir = dir.join("gw");
    std::fs::create_dir_all(&gw_dir).unwrap();
    std::fs::write(gw_dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(gw_dir, port);
    // Lines that DATA would have to stuff: ".", "..x", ".x".
    let text = "Subject: dots\r\n\r\n.\r\n..two dots\r\n.one dot\r\nlast line\r\n";
    let mut c = common::connect(gw.addr);
    c.reply();
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<sender@client.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@out.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // Dot-stuffed on the way in, as RFC 5321 §4.5.2 asks.
    let stuffed = text
        .split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    assert!(c.cmd(&format!("{stuffed}.")).starts_with("250"));
    c.cmd("QUIT");
    let line = gw.wait_for_line("to=<user@out.test>", Duration::from_secs(60));
    assert!(line.contains("status=sent"), "{line}\n{}", gw.log());
    let disconnect = pf.wait_for_line(" bdat=", Duration::from_secs(60));
    assert!(
        disconnect.contains(" bdat=1 ") && !disconnect.contains(" data="),
        "{disconnect}"
    );
    let got = sink.wait_for_messages(1, Duration::from_secs(60), || pf.log());
    assert!(
        got[0].contains("\r\n\r\n.\r\n..two dots\r\n.one dot\r\nlast line\r\n"),
        "the body as it was sent: {:?}",
        got[0]
    );
}
