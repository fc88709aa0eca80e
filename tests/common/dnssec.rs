//! A DNSSEC test bed on loopback, from programs nobody here wrote: nsd
//! serving a signed `test.` zone and its child zones (signed ones with a DS
//! in the parent, unsigned ones delegated without, a "bogus" one whose
//! records were changed after signing), and unbound validating with the
//! key of `test.` as its trust anchor. Keys and signatures come from
//! ldns-keygen and ldns-signzone. Both servers run in the foreground and
//! are killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;

/// A child zone of `test.`.
pub struct Zone<'a> {
    /// Its name without the trailing dot, e.g. `dane.test`.
    pub name: &'a str,
    /// Records in zone-file syntax, owner names relative to the zone.
    pub records: &'a str,
    pub signed: bool,
    /// After signing, replace the first text with the second in the signed
    /// zone (its signatures then fail: the zone is bogus).
    pub tamper: Option<(&'a str, &'a str)>,
}

pub struct DnsBed {
    /// unbound, validating: the `[dns] servers` of a trust-ad gateway.
    pub resolver: u16,
    /// nsd, authoritative for `test.` and every child.
    pub authoritative: u16,
    /// The DNSKEY records of `test.` (a trust anchor for `validate`).
    pub anchor: PathBuf,
    children: Vec<Child>,
}

impl Drop for DnsBed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (tests/run.sh installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes a KSK and a ZSK for `zone` in `dir` and signs `file` with them;
/// returns their base names, KSK first (the `.key` files, and the KSK's
/// `.ds`, are beside them).
fn sign(dir: &Path, zone: &str, file: &str) -> (String, String) {
    let fqdn = format!("{zone}.");
    let ksk = run(dir, "ldns-keygen", &["-a", "ECDSAP256SHA256", "-k", &fqdn]);
    let zsk = run(dir, "ldns-keygen", &["-a", "ECDSAP256SHA256", &fqdn]);
    run(dir, "ldns-signzone", &["-o", &fqdn, file, &zsk, &ksk]);
    (ksk, zsk)
}

/// Waits until `server` answers a query for `name` (drill, bounded).
fn wait_answering(port: u16, name: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = Command::new("drill")
            .args(["-p", &port.to_string(), name, "SOA", "@127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("rcode: NOERROR"))
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} does not answer on port {port}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts nsd and unbound in `dir` for `test.` and `children`; nsd's
/// address is 127.0.0.1, so name servers and glue point there.
pub fn start(dir: &Path, children: &[Zone<'_>]) -> DnsBed {
    let dir = dir.join("dns");
    std::fs::create_dir_all(&dir).unwrap();
    let soa = "@ 300 IN SOA ns.test. admin.test. 1 3600 600 86400 300\n@ 300 IN NS ns.test.\n";
    let mut zones = Vec::new();
    let mut parent = format!("$ORIGIN test.\n$TTL 300\n{soa}ns 300 IN A 127.0.0.1\n");
    for z in children {
        let file = format!("{}.zone", z.name);
        let text = format!("$ORIGIN {}.\n$TTL 300\n{soa}{}\n", z.name, z.records);
        std::fs::write(dir.join(&file), text).unwrap();
        let label = z.name.strip_suffix(".test").expect("a child of test.");
        parent.push_str(&format!("{label} 300 IN NS ns.test.\n"));
        if z.signed {
            let (ksk, _) = sign(&dir, z.name, &file);
            // The DS goes in the parent, as a registrar would put it.
            let ds = std::fs::read_to_string(dir.join(format!("{ksk}.ds"))).unwrap();
            parent.push_str(&ds);
            let signed = format!("{file}.signed");
            if let Some((from, to)) = z.tamper {
                let text = std::fs::read_to_string(dir.join(&signed)).unwrap();
                assert!(text.contains(from), "{from} not in the signed zone");
                std::fs::write(dir.join(&signed), text.replacen(from, to, 1)).unwrap();
            }
            zones.push((z.name.to_string(), signed));
        } else {
            zones.push((z.name.to_string(), file));
        }
    }
    std::fs::write(dir.join("test.zone"), parent).unwrap();
    let (ksk, zsk) = sign(&dir, "test", "test.zone");
    zones.push(("test".into(), "test.zone.signed".into()));
    // The whole DNSKEY set of test.: hickory trusts an RRset only when
    // every key in it is an anchor (or has a DS above, and test. has no
    // parent here).
    let anchor = dir.join("test.anchor");
    let keys = [ksk, zsk]
        .iter()
        .map(|k| std::fs::read_to_string(dir.join(format!("{k}.key"))).unwrap())
        .collect::<String>();
    std::fs::write(&anchor, keys).unwrap();

    let authoritative = super::free_port();
    let mut conf = format!(
        "server:\n  ip-address: 127.0.0.1\n  port: {authoritative}\n  username: \"\"\n  chroot: \"\"\n  \
         zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  \
         zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  do-ip6: no\n\
         remote-control:\n  control-enable: no\n",
        d = dir.display()
    );
    for (name, file) in &zones {
        conf.push_str(&format!(
            "zone:\n  name: \"{name}.\"\n  zonefile: \"{file}\"\n"
        ));
    }
    std::fs::write(dir.join("nsd.conf"), conf).unwrap();
    let nsd = Command::new("nsd")
        .args(["-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nsd (tests/run.sh installs it)");
    let mut bed = DnsBed {
        resolver: 0,
        authoritative,
        anchor: anchor.clone(),
        children: vec![nsd],
    };
    wait_answering(authoritative, "test.", "nsd", &dir.join("nsd.log"));

    let resolver = super::free_port();
    // unbound answers `test.` itself by default (RFC 6761 §6.2, a name no
    // resolver should look up): `nodefault` lets the stub zone through.
    let conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {resolver}\n  do-daemonize: no\n  username: \"\"\n  \
         chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  logfile: \"{d}/unbound.log\"\n  \
         use-syslog: no\n  verbosity: 1\n  do-ip6: no\n  do-not-query-localhost: no\n  \
         access-control: 127.0.0.0/8 allow\n  trust-anchor-file: \"{a}\"\n  val-log-level: 2\n  \
         qname-minimisation: no\n  num-threads: 1\n  local-zone: \"test.\" nodefault\n\
         remote-control:\n  control-enable: no\n\
         stub-zone:\n  name: \"test.\"\n  stub-addr: 127.0.0.1@{authoritative}\n",
        d = dir.display(),
        a = anchor.display()
    );
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
    let unbound = Command::new("unbound")
        .args(["-d", "-c"])
        .arg(dir.join("unbound.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unbound (tests/run.sh installs it)");
    bed.children.push(unbound);
    bed.resolver = resolver;
    wait_answering(resolver, "test.", "unbound", &dir.join("unbound.log"));
    bed
}

/// The SHA-256 of a PEM certificate's SubjectPublicKeyInfo, hex: the
/// data of a `3 1 1` TLSA record.
pub fn spki_sha256(cert_pem: &Path) -> String {
    let pem = std::fs::read(cert_pem).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    hex(&sha256(cert.public_key().raw))
}

/// The SHA-256 of a PEM certificate, hex: the data of a `2 0 1` (or
/// `3 0 1`) TLSA record.
pub fn cert_sha256(cert_pem: &Path) -> String {
    let pem = std::fs::read(cert_pem).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    hex(&sha256(&der))
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
