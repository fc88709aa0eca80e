//! Certificates by ACME with DANE (RFC 7671 §8.1): BIND 9 signs
//! `example.org` (`dnssec-policy`) and takes the gateway's TSIG-signed
//! updates (RFC 2136), unbound validates it, Pebble issues. An observer
//! polls `openssl s_client` and `dig` every few hundred milliseconds
//! through every roll and must never see the gateway serve a key whose
//! `3 1 1` record is not in a validated answer. A roll survives SIGKILL at
//! each of its steps; a wrong TSIG secret is a clear error and no roll.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bind::{self, BindBed};
use common::pebble::{pebble, serial_and_key, served, Pebble};
use common::{run_tool, Gateway};

const LIMIT: Duration = Duration::from_secs(90);
const NAME: &str = "mx1.example.org";

/// The DNS and ACME world: BIND, unbound, Pebble resolving through BIND.
fn world(dir: &Path) -> (BindBed, Pebble, u16) {
    let bed = bind::start(
        dir,
        &format!("{} IN A 127.0.0.1\n", NAME.trim_end_matches(".example.org")),
    );
    let http_port = common::free_port();
    let acme = pebble(
        &dir.join("pebble"),
        http_port,
        common::free_port(),
        bed.primary,
    );
    (bed, acme, http_port)
}

fn config(port: u16, bed: &BindBed, acme: &Pebble, http_port: u16, secret: &str) -> String {
    common::config(port, 1, "")
        + &format!(
            r#"
[dns]
servers = ["127.0.0.1:{resolver}"]
dnssec = "trust-ad"

[acme]
directory = "https://127.0.0.1:{acme_port}/dir"
ca_files = ["{ca}"]
domains = ["{NAME}"]
http_listen = "127.0.0.1:{http_port}"

[acme.dane]
update_server = "127.0.0.1:{primary}"
zone = "{zone}."
tsig_name = "{key}"
tsig_algorithm = "hmac-sha256"
tsig_secret = "{secret}"
ttl = "2s"
"#,
            resolver = bed.resolver,
            acme_port = acme.port,
            ca = acme.ca.display(),
            primary = bed.primary,
            zone = bind::ZONE,
            key = bind::KEY_NAME,
        )
}

/// Polls what a client sees: the key served for NAME (when it is the ACME
/// certificate) against the validated TLSA records. Every mismatch is
/// kept; `stop` ends it.
struct Observer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    fn start(gw_addr: std::net::SocketAddr, dir: &Path, resolver: u16, port: u16) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, v, dir) = (stop.clone(), seen.clone(), dir.to_path_buf());
        let owner = format!("_{port}._tcp.{NAME}");
        let thread = std::thread::spawn(move || {
            let bed_view = ObserverDns { resolver };
            while !s.load(Ordering::Relaxed) {
                if let Some((issuer, key)) = served_key(gw_addr, &dir) {
                    if issuer.contains("Pebble") {
                        let records = bed_view.validated(&owner);
                        let ok = records.as_ref().is_some_and(|r| r.contains(&key));
                        let line = format!(
                            "served {key}: validated {records:?}: {}",
                            if ok { "ok" } else { "NOT VISIBLE" }
                        );
                        v.lock().unwrap().push(line);
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Observer {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops; returns every observation.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

struct ObserverDns {
    resolver: u16,
}

impl ObserverDns {
    fn validated(&self, owner: &str) -> Option<Vec<String>> {
        let out = bind::dig(self.resolver, &[owner, "TLSA", "+dnssec"]);
        bind::parse_validated(&out)
    }
}

/// The issuer line and SPKI SHA-256 the gateway serves for NAME; `None`
/// when the handshake did not complete (the gateway restarting).
fn served_key(addr: std::net::SocketAddr, dir: &Path) -> Option<(String, String)> {
    let (status, out, _) = run_tool(
        Command::new("openssl")
            .args([
                "s_client",
                "-starttls",
                "smtp",
                "-crlf",
                "-servername",
                NAME,
            ])
            .arg("-connect")
            .arg(addr.to_string()),
        Some(b"QUIT\n"),
        LIMIT,
    );
    if !status.success() {
        return None;
    }
    let issuer = out.lines().find(|l| l.starts_with("issuer="))?.to_string();
    let begin = out.find("-----BEGIN CERTIFICATE-----")?;
    let end = out.find("-----END CERTIFICATE-----")? + 25;
    let file = dir.join(format!("observed-{}.pem", std::process::id()));
    std::fs::write(&file, format!("{}\n", &out[begin..end])).ok()?;
    Some((issuer, common::dnssec::spki_sha256(&file)))
}

/// `sealgate ARGS -c DIR/sealgate.toml` (an ACME order may take its
/// retries: 330 s at most).
fn sealgate(dir: &Path, args: &[&str]) -> (bool, String, String) {
    common::sealgate_in(dir, args, Duration::from_secs(330))
}

fn status(dir: &Path) -> serde_json::Value {
    let (ok, out, err) = sealgate(dir, &["acme", "status", "--json"]);
    assert!(ok, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

fn assert_always_visible(seen: &[String]) {
    assert!(!seen.is_empty(), "the observer saw the certificate");
    assert!(
        seen.iter().all(|l| l.ends_with(": ok")),
        "a key was served without a validated TLSA record:\n{}",
        seen.join("\n")
    );
}

#[test]
fn keys_roll_only_to_records_seen_validated() {
    let dir = common::temp_dir("acme-dane");
    let (bed, acme, http_port) = world(&dir);
    let port = common::free_port();
    std::fs::write(
        dir.join("sealgate.toml"),
        config(port, &bed, &acme, http_port, &bed.secret),
    )
    .unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let observer = Observer::start(gw.addr, &dir, bed.resolver, port);
    let owner = format!("_{port}._tcp.{NAME}");

    // First issuance: both keys published, the current one in service
    // once its record has been seen validated for two TTLs.
    gw.wait_for_log(
        &format!("acme: installed the certificate for {NAME}"),
        LIMIT,
    );
    let first = status(&dir);
    let current = first["certificate"]["spki_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let records = bind::validated_tlsa(&bed, &owner).expect("validated");
    assert_eq!(records.len(), 2, "current and next: {records:?}");
    assert!(records.contains(&current));
    let next = records.iter().find(|r| **r != current).unwrap().clone();

    // A renewal keeps the key and its record.
    let (ok, out, err) = sealgate(&dir, &["acme", "renew"]);
    assert!(ok, "{out}{err}");
    let (_, pem) = served(&gw, NAME);
    assert_eq!(serial_and_key(&dir, &pem).1, current);

    // A roll: the next key goes into service; the old record goes two
    // TTLs later; a new next key is published.
    let (ok, out, err) = sealgate(&dir, &["acme", "roll"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("key roll for"), "{out}");
    gw.wait_for_log("acme: key roll: the next key is in service", LIMIT);
    let (_, pem) = served(&gw, NAME);
    assert_eq!(serial_and_key(&dir, &pem).1, next, "the next key serves");
    gw.wait_for_log(&format!("acme: removed TLSA 3 1 1 {current}"), LIMIT);
    gw.wait_for_count("acme: published TLSA 3 1 1", 3, LIMIT);
    wait_for_records(&bed, &owner, &next, &current);
    let (ok, out, err) = sealgate(&dir, &["acme", "status"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("current key:   {next}")), "{out}");
    assert!(out.contains("roll:          steady"), "{out}");
    assert!(
        out.contains(&format!(
            "TLSA {owner}. 3 1 1 {next} (current, validated since"
        )),
        "{out}"
    );
    assert_always_visible(&observer.finish());
    gw.stop();
}

/// Waits (the resolver caches for a TTL) until a validated answer at
/// `owner` holds two records, `present` among them and `gone` not.
fn wait_for_records(bed: &BindBed, owner: &str, present: &str, gone: &str) {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let r = bind::validated_tlsa(bed, owner);
        if r.as_ref().is_some_and(|r| {
            r.len() == 2 && r.iter().any(|k| k == present) && !r.iter().any(|k| k == gone)
        }) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no validated answer with {present} and without {gone}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILL right after the next key's record is published, during the
/// wait before the switch, and right after the switch: each restart
/// resumes the roll, and no key is ever served without its record.
#[test]
fn a_roll_resumes_after_sigkill_at_each_step() {
    let dir = common::temp_dir("acme-dane-kill");
    let (bed, acme, http_port) = world(&dir);
    let port = common::free_port();
    std::fs::write(
        dir.join("sealgate.toml"),
        config(port, &bed, &acme, http_port, &bed.secret),
    )
    .unwrap();
    let owner = format!("_{port}._tcp.{NAME}");

    // Killed after publishing the next key's record (the first start
    // publishes the current key's, then the next one's).
    let gw = Gateway::start_in(dir.clone(), port);
    gw.wait_for_count("acme: published TLSA 3 1 1", 2, LIMIT);
    let dir = gw.kill();
    let gw = Gateway::start_in(dir.clone(), port);
    let observer = Observer::start(gw.addr, &dir, bed.resolver, port);
    gw.wait_for_log(
        &format!("acme: installed the certificate for {NAME}"),
        LIMIT,
    );
    assert!(
        !gw.log().contains("acme: made the"),
        "the keys survived:\n{}",
        gw.log()
    );
    let current = status(&dir)["certificate"]["spki_sha256"]
        .as_str()
        .unwrap()
        .to_string();

    // Killed during the wait before the switch: the roll asked for is
    // recorded and goes on after the restart.
    let (ok, out, err) = sealgate(&dir, &["acme", "roll"]);
    assert!(ok, "{out}{err}");
    let dir = gw.kill();
    let gw = Gateway::start_in(dir.clone(), port);
    gw.wait_for_log("acme: key roll: the next key is in service", LIMIT);
    let switched = status(&dir)["certificate"]["spki_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(switched, current);

    // Killed right after the switch: the restart keeps the new key and
    // removes the old record two TTLs after the switch.
    let dir = gw.kill();
    let gw = Gateway::start_in(dir.clone(), port);
    gw.wait_for_log(&format!("acme: removed TLSA 3 1 1 {current}"), LIMIT);
    wait_for_records(&bed, &owner, &switched, &current);
    assert_always_visible(&observer.finish());
    gw.stop();
}

/// A TSIG secret the server does not know: the update is refused with a
/// clear error, nothing is published, nothing is ordered.
#[test]
fn a_wrong_tsig_secret_is_a_clear_error_and_no_roll() {
    let dir = common::temp_dir("acme-dane-tsig");
    let (bed, acme, http_port) = world(&dir);
    let port = common::free_port();
    let wrong = "d3JvbmcgYnV0IHdlbGwtZm9ybWVkIHNlY3JldCEhISE=";
    std::fs::write(
        dir.join("sealgate.toml"),
        config(port, &bed, &acme, http_port, wrong),
    )
    .unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    gw.wait_for_log("refused: Not authorized (NOTAUTH)", LIMIT);
    let log = gw.log();
    assert!(
        log.contains("check tsig_name, tsig_algorithm and the secret"),
        "{log}"
    );
    assert!(log.contains("the key roll waits"), "{log}");
    assert!(!log.contains("acme: published"), "{log}");
    assert!(!log.contains("acme: ordering"), "{log}");
    let s = status(&dir);
    assert!(s["certificate"].is_null(), "{s}");
    assert!(
        s["last_error"].as_str().unwrap_or("").contains("NOTAUTH"),
        "{s}"
    );
    gw.stop();
}
