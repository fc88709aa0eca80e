//! `[tls] groups` and session resumption against `openssl s_client`: the
//! groups allowed decide the key exchange (and refuse a client with none of
//! them), a client that comes back with its ticket resumes, across a reload
//! that keeps `ticket_lifetime`, and not after one that changes it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{run_tool, Gateway};

const LIMIT: Duration = Duration::from_secs(30);

/// One STARTTLS session by s_client (EHLO and QUIT inside TLS, waiting
/// for the server to close so that the ticket is read), keeping or
/// reusing the session in `sess`; returns its exit status and output.
fn s_client(gw: &Gateway, groups: &str, sess: &Path, reuse: bool) -> (Option<i32>, String) {
    let mut c = Command::new("openssl");
    c.args([
        "s_client",
        "-starttls",
        "smtp",
        "-crlf",
        "-ign_eof",
        "-groups",
        groups,
    ])
    .arg("-connect")
    .arg(gw.addr.to_string())
    .arg(if reuse { "-sess_in" } else { "-sess_out" })
    .arg(sess);
    let (status, out, err) = run_tool(&mut c, Some(b"EHLO openssl.test\nQUIT\n"), LIMIT);
    (status.code(), format!("{out}{err}"))
}

fn reload(gw: &Gateway, n: usize) {
    let ok = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    gw.wait_for_count("reload: configuration reloaded", n, LIMIT);
}

/// Rewrites the gateway's configuration file.
fn edit(gw: &Gateway, from: &str, to: &str) {
    let path = gw.dir.join("sealgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn groups_decide_the_key_exchange_and_clients_resume_across_reloads() {
    let gw = Gateway::start("tls-session", 1, "");
    // Only secp384r1 and X25519 allowed.
    edit(
        &gw,
        "generate_self_signed = true\n",
        "generate_self_signed = true\ngroups = [\"secp384r1\", \"X25519\"]\n",
    );
    reload(&gw, 1);

    let sess = gw.dir.join("session.pem");
    // A client that offers only P-256 has no group in common.
    let (code, out) = s_client(&gw, "P-256", &sess, false);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("alert handshake failure") || out.contains("handshake failure"),
        "{out}"
    );

    // secp384r1 when the client asks for it first.
    let (code, out) = s_client(&gw, "P-384:X25519", &sess, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("New, TLSv1.3"), "{out}");
    assert!(out.contains("221 "), "{out}");
    let line = gw.wait_for_line("TLS connection established from", LIMIT);
    assert!(line.contains("key-exchange secp384r1"), "{line}");
    assert!(!line.contains("resumed"), "{line}");

    // The ticket from that session resumes the next one ...
    let (code, out) = s_client(&gw, "P-384:X25519", &sess, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Reused, TLSv1.3"), "{out}");
    gw.wait_for_count(" resumed", 1, LIMIT);

    // ... and still after a reload that keeps ticket_lifetime (the keys
    // stay; each resumed session hands out a fresh ticket, saved anew).
    reload(&gw, 2);
    let (code, out) = s_client(&gw, "P-384:X25519", &sess, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Reused, TLSv1.3"), "{out}");
    gw.wait_for_count(" resumed", 2, LIMIT);

    // A changed lifetime starts fresh keys: the old ticket is refused and
    // the client falls back to a full handshake.
    edit(
        &gw,
        "groups = [\"secp384r1\", \"X25519\"]\n",
        "groups = [\"secp384r1\", \"X25519\"]\nticket_lifetime = \"1h\"\n",
    );
    reload(&gw, 3);
    let (code, out) = s_client(&gw, "P-384:X25519", &sess, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("New, TLSv1.3"), "{out}");
    // That session's line is in before the count is read.
    gw.wait_for_count("TLS connection established from", 4, LIMIT);
    assert_eq!(gw.count(" resumed"), 2, "{}", gw.log());

    // ticket_lifetime = "0s": no ticket, so s_client has no session to
    // save (TLS 1.3 keeps a session only from a ticket).
    edit(&gw, "ticket_lifetime = \"1h\"", "ticket_lifetime = \"0s\"");
    reload(&gw, 4);
    let fresh = gw.dir.join("none.pem");
    let (code, out) = s_client(&gw, "X25519", &fresh, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("221 "), "{out}");
    assert!(!fresh.exists(), "no ticket may be issued: {out}");
    gw.wait_for_count("TLS connection established from", 5, LIMIT);
    assert_eq!(gw.count(" resumed"), 2, "{}", gw.log());
    gw.stop();
}
