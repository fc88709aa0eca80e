//! BIND 9 as the primary of `example.org`, signing it itself
//! (`dnssec-policy`, inline signing) and taking RFC 2136 updates signed by
//! a TSIG key; unbound validating it from the zone's key. Both on
//! loopback, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ZONE: &str = "example.org";
pub const KEY_NAME: &str = "sealgate-update";

pub struct BindBed {
    /// named: the primary, where updates go.
    pub primary: u16,
    /// unbound: the validating resolver.
    pub resolver: u16,
    /// The TSIG secret, base64.
    pub secret: String,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for BindBed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port free for UDP and TCP.
fn dns_port() -> u16 {
    loop {
        let port = super::free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `dig` against `port`: its whole output.
pub fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+tries=1", "+time=2"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("dig (tests/run.sh installs bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` until it holds; panics with `what` and the log after 30 s.
fn wait_until(what: &str, log: &Path, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts named with `records` in the zone (TTL 2 s) and unbound trusting
/// the zone's key.
pub fn start(dir: &Path, records: &str) -> BindBed {
    let dir = dir.join("bind");
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let primary = dns_port();
    let resolver = dns_port();
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).unwrap();
    let secret = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    std::fs::write(
        dir.join("zone"),
        format!(
            "$TTL 2\n@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 60 60 3600 1\n@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n{records}"
        ),
    )
    .unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("named.conf"),
        format!(
            r#"options {{
  directory "{d}";
  listen-on port {primary} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  pid-file none;
  recursion no;
  dnssec-validation no;
  key-directory "{d}/keys";
}};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};
dnssec-policy "fast" {{
  keys {{ csk lifetime unlimited algorithm ecdsap256sha256; }};
  dnskey-ttl 2; max-zone-ttl 60; zone-propagation-delay 1; retire-safety 1; publish-safety 1;
}};
zone "{ZONE}" {{
  type primary;
  file "{d}/zone";
  dnssec-policy "fast";
  inline-signing yes;
  allow-update {{ key "{KEY_NAME}"; }};
}};
"#
        ),
    )
    .unwrap();
    let log = dir.join("named.log");
    let named = Command::new("named")
        .args(["-g", "-c"])
        .arg(dir.join("named.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("named (tests/run.sh installs bind9)");
    let mut bed = BindBed {
        primary,
        resolver,
        secret,
        dir: dir.clone(),
        children: vec![named],
    };
    // Signed: the DNSKEY answer carries its signature.
    wait_until("named does not serve the signed zone", &log, || {
        dig(primary, &[ZONE, "DNSKEY", "+dnssec"]).contains("RRSIG")
    });
    let anchor: String = std::fs::read_dir(&keys)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .flat_map(|t| {
            t.lines()
                .filter(|l| !l.starts_with(';'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("anchor.key"), anchor + "\n").unwrap();
    std::fs::write(
        dir.join("unbound.conf"),
        format!(
            r#"server:
  interface: 127.0.0.1
  port: {resolver}
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: ""
  use-syslog: no
  logfile: "{d}/unbound.log"
  trust-anchor-file: "{d}/anchor.key"
  cache-max-ttl: 2
  cache-max-negative-ttl: 1
stub-zone:
  name: "{ZONE}"
  stub-addr: 127.0.0.1@{primary}
"#
        ),
    )
    .unwrap();
    let unbound = Command::new("unbound")
        .arg("-d")
        .arg("-c")
        .arg(dir.join("unbound.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unbound (tests/run.sh installs it)");
    bed.children.push(unbound);
    wait_until(
        "unbound does not validate the zone",
        &dir.join("unbound.log"),
        || dig(resolver, &[ZONE, "SOA", "+dnssec"]).contains(" ad;"),
    );
    bed
}

/// The `3 1 1` records at `owner` in a validated answer from unbound
/// (lower-case hex); `None` when the answer is not validated.
pub fn validated_tlsa(bed: &BindBed, owner: &str) -> Option<Vec<String>> {
    parse_validated(&dig(bed.resolver, &[owner, "TLSA", "+dnssec"]))
}

/// The `3 1 1` records of a `dig +dnssec` answer when its AD flag is set.
pub fn parse_validated(out: &str) -> Option<Vec<String>> {
    let flags = out.lines().find(|l| l.contains(";; flags:"))?;
    if !flags
        .split(';')
        .nth(2)?
        .split_whitespace()
        .any(|f| f == "ad")
    {
        return None;
    }
    Some(
        out.lines()
            .filter(|l| !l.starts_with(';'))
            .filter_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                let at = fields.iter().position(|f| *f == "TLSA")?;
                (fields.get(at + 1..at + 4)? == ["3", "1", "1"])
                    .then(|| fields[at + 4..].concat().to_ascii_lowercase())
            })
            .collect(),
    )
}
