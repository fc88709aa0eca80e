//! Test support: start a real `sealgate run` process on a private
//! directory and loopback port, wait for it to say it is ready, read its
//! log and its spool, stop it. Every wait is bounded.

#![allow(dead_code)]

pub mod bind;
pub mod dnsmasq;
pub mod dnssec;
pub mod pebble;
pub mod pki;
pub mod postfix;
pub mod receiver;
pub mod smtp_sink;
pub mod sts;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sealgate");

/// The load generator `sealgate-load`, built beside the gateway (by
/// `cargo test --workspace`; built here when a test of this package runs
/// alone). Cargo gives tests the path only of their own package's
/// binaries, hence the sibling path.
pub fn load_generator() -> PathBuf {
    let path = Path::new(BIN).with_file_name("sealgate-load");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "sealgate-load"])
            .status()
            .expect("cargo build -p sealgate-load");
        assert!(status.success(), "cannot build sealgate-load");
    }
    path
}

/// `sealgate-load --target 127.0.0.1:PORT --mode MODE --json ARGS…`,
/// with its JSON report on a pipe (stdout) and stderr discarded.
pub fn load_command(port: u16, mode: &str, args: &[&str]) -> Command {
    let mut c = Command::new(load_generator());
    c.args([
        "--target",
        &format!("127.0.0.1:{port}"),
        "--mode",
        mode,
        "--json",
    ])
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    c
}

/// Queue ids from a `sealgate-load --accepted-log` file: every message
/// the gateway answered `250`.
pub fn accepted_ids(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.strip_prefix("250 2.0.0 Ok: queued as ")
                .unwrap_or_else(|| panic!("unexpected accepted line {l:?}"))
                .to_string()
        })
        .collect()
}

/// A free loopback port (bound and released; the gateway binds it next).
///
/// Never the same port twice in one test process: tests run in parallel,
/// the gateway binds with SO_REUSEPORT, and two gateways handed the same
/// port would both bind it and share its connections.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Every directory `temp_dir` made in this test process.
static TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Runs when the test binary exits (passed or failed): removes every
/// directory `temp_dir` made, whoever still holds it. Set
/// `SEALGATE_KEEP_TEST_DIRS=1` to keep them for a post-mortem.
extern "C" fn remove_temp_dirs() {
    if std::env::var_os("SEALGATE_KEEP_TEST_DIRS").is_some() {
        return;
    }
    let dirs = TEMP_DIRS.lock().map(|d| d.clone()).unwrap_or_default();
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A fresh private directory, removed when the test process exits (see
/// `remove_temp_dirs`). Tests in one binary run in parallel and may ask
/// for the same name, so each call gets its own number as well as the
/// process id: no test can remove another's files.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain function that only touches the file
        // system and a static; libc runs it once, at exit.
        unsafe {
            libc::atexit(remove_temp_dirs);
        }
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sealgate-it-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Ok(mut dirs) = TEMP_DIRS.lock() {
        dirs.push(dir.clone());
    }
    dir
}

/// The standard test configuration: one loopback port, `shards` shards,
/// spool and self-signed certificate inside `dir`, plus `extra` TOML
/// appended to `[limits]`.
pub fn config(port: u16, shards: usize, limits: &str) -> String {
    format!(
        r#"[server]
hostname = "mx.test"
listen = ["127.0.0.1:{port}"]
shards = {shards}
spool_dir = "spool"
accept_domains = ["example.com"]

[limits]
{limits}

[tls]
certificates = [ {{ cert = "tls/server.crt", key = "tls/server.key" }} ]
generate_self_signed = true

[admin]
listen = "127.0.0.1:0"

# Tests never deliver beyond loopback: everything goes to a closed port
# and stays queued unless a test routes it elsewhere.
[[route]]
domain = "*"
via = "[127.0.0.1]:1"
"#
    )
}

#[derive(Default)]
struct Log {
    text: String,
    exited: bool,
}

pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    log: Arc<(Mutex<Log>, Condvar)>,
}

impl Gateway {
    /// Starts a gateway in a fresh directory.
    pub fn start(name: &str, shards: usize, limits: &str) -> Gateway {
        let dir = temp_dir(name);
        let port = free_port();
        std::fs::write(dir.join("sealgate.toml"), config(port, shards, limits)).unwrap();
        Gateway::start_in(dir, port)
    }

    /// Starts (or restarts) a gateway on an existing directory.
    pub fn start_in(dir: PathBuf, port: u16) -> Gateway {
        Gateway::start_with(dir, port, Command::new(BIN))
    }

    /// As `start_in`, with `command` as the program: `sealgate` itself
    /// with extra settings (limits), or a wrapper such as strace whose last
    /// argument is the sealgate binary.
    pub fn start_with(dir: PathBuf, port: u16, mut command: Command) -> Gateway {
        let mut child = command
            .args(["run", "-c"])
            .arg(dir.join("sealgate.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sealgate");
        let stderr = child.stderr.take().unwrap();
        let log: Arc<(Mutex<Log>, Condvar)> = Arc::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*sink;
                let mut l = m.lock().unwrap();
                l.text.push_str(&line);
                l.text.push('\n');
                cv.notify_all();
            }
            let (m, cv) = &*sink;
            m.lock().unwrap().exited = true;
            cv.notify_all();
        });
        let gw = Gateway {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            log,
        };
        gw.wait_for_log("sealgate ready", Duration::from_secs(20));
        gw
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGHUP: the gateway reloads its configuration.
    pub fn hangup(&self) {
        if let Some(c) = &self.child {
            signal(c, 1);
        }
    }

    /// The gateway's resident memory now, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Waits until the log contains `needle`; panics with the log after
    /// `limit` or if the process exits first.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        self.wait_for_count(needle, 1, limit)
    }

    /// Waits until a log line contains `needle`; returns the first such.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> String {
        self.wait_for_log(needle, limit);
        self.log()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
            .unwrap_or_default()
    }

    /// How often `needle` is in the log now.
    pub fn count(&self, needle: &str) -> usize {
        self.log.0.lock().unwrap().text.matches(needle).count()
    }

    /// Waits until the log contains `needle` at least `n` times.
    pub fn wait_for_count(&self, needle: &str, n: usize, limit: Duration) {
        let (m, cv) = &*self.log;
        let deadline = Instant::now() + limit;
        let mut l = m.lock().unwrap();
        while l.text.matches(needle).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || l.exited {
                panic!("gateway log never showed {needle:?}:\n{}", l.text);
            }
            l = cv.wait_timeout(l, left).unwrap().0;
        }
    }

    /// Waits for the log reader to see the process exit.
    fn wait_for_exit_log(&self, limit: Duration) {
        let (m, cv) = &*self.log;
        let deadline = Instant::now() + limit;
        let mut l = m.lock().unwrap();
        while !l.exited {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "gateway did not exit");
            l = cv.wait_timeout(l, left).unwrap().0;
        }
    }

    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().text.clone()
    }

    /// SIGTERM, then wait for a clean exit; returns the whole log.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        signal(&child, libc_sigterm());
        let status = wait_bounded(&mut child, Duration::from_secs(20));
        assert!(
            status.success(),
            "gateway exited with {status}:\n{}",
            self.log()
        );
        self.wait_for_exit_log(Duration::from_secs(5));
        self.log()
    }

    /// Sends SIGTERM and returns at once.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            signal(c, libc_sigterm());
        }
    }

    /// Waits (bounded) for the process to exit after `terminate`; returns
    /// its status and the whole log.
    pub fn wait_exit(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = wait_bounded(&mut child, limit);
        self.wait_for_exit_log(Duration::from_secs(5));
        // Keep the directory: the caller reads the spool next.
        self.dir = PathBuf::new();
        (status, self.log())
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(mut self) -> PathBuf {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        std::mem::take(&mut self.dir)
    }

    /// Every message in the spool, read with the gateway's own parser.
    pub fn spooled(&self) -> Vec<sealgate::spool::Spooled> {
        spooled(&self.dir.join("spool"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.dir.as_os_str().is_empty() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn spooled(root: &Path) -> Vec<sealgate::spool::Spooled> {
    if !root.exists() {
        return Vec::new();
    }
    sealgate::spool::read_all(root).unwrap_or_else(|e| panic!("{}: {e}", root.display()))
}

/// Each queued message's recipients with their delivery state, as the
/// journal records them (read offline).
pub fn queue_states(root: &Path) -> Vec<(String, Vec<sealgate::spool::RcptState>)> {
    let mut out = Vec::new();
    for (_, journal, _) in sealgate::spool::scan(root).unwrap() {
        for (id, live) in journal.live() {
            out.push((id.clone(), live.rcpts.clone()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn libc_sigterm() -> i32 {
    15
}

fn signal(child: &Child, sig: i32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs an external program with a time limit; returns (status, stdout, stderr).
pub fn run_tool(
    cmd: &mut Command,
    input: Option<&[u8]>,
    limit: Duration,
) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e} (tests/run.sh installs the test peers)")
        });
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input).unwrap();
    }
    drop(stdin);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, limit);
    (status, t_out.join().unwrap(), t_err.join().unwrap())
}

/// A minimal blocking SMTP client over any stream, for driving the
/// gateway byte by byte in tests.
pub struct Client<S: Read + Write> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads one complete reply (all lines); returns it as text.
    pub fn reply(&mut self) -> String {
        self.try_reply().expect("read reply")
    }

    pub fn try_reply(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(end) = complete_reply(&self.buf) {
                let r: Vec<u8> = self.buf.drain(..end).collect();
                return Ok(String::from_utf8_lossy(&r).into_owned());
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                let r = String::from_utf8_lossy(&self.buf).into_owned();
                self.buf.clear();
                return Ok(r);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command line and reads the reply; an empty string when the
    /// connection broke.
    pub fn try_cmd(&mut self, line: &str) -> String {
        if self
            .stream
            .write_all(format!("{line}\r\n").as_bytes())
            .is_err()
        {
            return String::new();
        }
        self.try_reply().unwrap_or_default()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn unread(&self) -> &[u8] {
        &self.buf
    }
}

/// The length of the first complete reply in `buf` (RFC 5321 §4.2.1: the
/// last line has a space after the code).
fn complete_reply(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(lf) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + lf + 1];
        start += lf + 1;
        if line.len() < 4 || line[3] != b'-' {
            return Some(start);
        }
    }
    None
}

/// A gateway that accepts mail for `domains` and delivers all of it by
/// MX to port `mx_port`, trusting only the CA `ca_cert`, its metrics on
/// `admin`, retrying after an hour; `tail` is appended (more tables).
pub fn mx_relay_config(
    (port, admin): (u16, u16),
    domains: &[&str],
    ca_cert: &Path,
    mx_port: u16,
    tail: &str,
) -> String {
    let accept = domains
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    config(port, 1, "")
        .replace(
            "accept_domains = [\"example.com\"]",
            &format!("accept_domains = [{accept}]"),
        )
        .replace(
            "via = \"[127.0.0.1]:1\"",
            &format!("via = \"mx\"\nport = {mx_port}"),
        )
        .replace(
            "generate_self_signed = true\n",
            &format!(
                "generate_self_signed = true\nca_files = [\"{}\"]\nsystem_roots = false\n",
                ca_cert.display()
            ),
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{admin}\""),
        )
        + "\n[queue]\nretry = [\"1h\"]\n"
        + tail
}

/// A delivery log line says the recipient was deferred with `4.7.5` (a
/// TLS or policy failure) for the reason `why`.
pub fn assert_deferred_tls(line: &str, why: &str) {
    assert!(
        line.contains("status=deferred") && line.contains("dsn=4.7.5") && line.contains(why),
        "not deferred 4.7.5 for {why:?}: {line}"
    );
}

/// Sends one message through the gateway (EHLO, MAIL, each RCPT, DATA,
/// QUIT), asserting every step is accepted. The body is `body of SUBJECT`.
pub fn send_mail(gw: &Gateway, from: &str, rcpts: &[&str], subject: &str) {
    let mut c = connect(gw.addr);
    c.reply();
    c.cmd("EHLO client.test");
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for r in rcpts {
        assert!(c.cmd(&format!("RCPT TO:<{r}>")).starts_with("250"));
    }
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd(&format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n."))
        .starts_with("250"));
    c.cmd("QUIT");
}

pub fn connect(addr: SocketAddr) -> Client<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    Client::new(s)
}

/// A connection from a chosen loopback source address, and the first
/// reply (the banner, or a refusal).
pub fn open_from(source: &str, to: SocketAddr) -> (Client<TcpStream>, String) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(source.parse().unwrap(), 0).into())
        .unwrap();
    sock.connect(&to.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut c = Client::new(stream);
    let first = c.reply();
    (c, first)
}

/// A connection from a chosen loopback source address (to match IP
/// profiles), past the banner and EHLO.
pub fn connect_from(source: &str, to: SocketAddr) -> Client<TcpStream> {
    let (mut c, banner) = open_from(source, to);
    assert!(banner.starts_with("220"), "{banner}");
    c.cmd("EHLO client.test");
    c
}

/// The body of `GET /metrics` from the admin listener on `port`.
pub fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
    body.to_string()
}

/// The sum of every sample whose line starts with `series`.
pub fn value(body: &str, series: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(series))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// `sealgate ARGS -c DIR/sealgate.toml`, bounded by `limit`: whether it
/// succeeded, its standard output and error.
pub fn sealgate_in(dir: &Path, args: &[&str], limit: Duration) -> (bool, String, String) {
    let (status, out, err) = run_tool(
        Command::new(BIN)
            .args(args)
            .arg("-c")
            .arg(dir.join("sealgate.toml")),
        None,
        limit,
    );
    (status.success(), out, err)
}

/// `sealgate check -c FILE`: the exit code and everything it printed.
pub fn check_config(file: &Path) -> (Option<i32>, String) {
    let (status, out, err) = run_tool(
        Command::new(BIN).args(["check", "-c"]).arg(file),
        None,
        Duration::from_secs(20),
    );
    (status.code(), format!("{out}{err}"))
}

/// A rustls client config that trusts the gateway's generated certificate.
pub fn tls_client_config(dir: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(dir.join("tls/server.crt")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

const SMTPLIB_SEND: &str = r#"
import json, smtplib, sys
a = json.loads(sys.argv[1])
s = smtplib.SMTP("127.0.0.1", a["port"], timeout=20)
s.ehlo("client.test")
refused = s.sendmail(a["from"], a["to"], a["message"].encode("utf-8"),
                     mail_options=a["mail"], rcpt_options=a["rcpt"])
assert refused == {}, refused
s.quit()
print("sent")
"#;

/// Python's smtplib sends `message` (CRLF line ends, UTF-8 allowed) from
/// `from` to `to`, with `mail` options on MAIL (`SMTPUTF8`, `RET=HDRS`…)
/// and `rcpt` options on every RCPT (`NOTIFY=…`); panics unless the
/// gateway took it for every recipient.
pub fn smtplib_send(
    gw: &Gateway,
    from: &str,
    to: &[&str],
    message: &str,
    mail: &[&str],
    rcpt: &[&str],
) {
    let args = serde_json::json!({
        "port": gw.port(), "from": from, "to": to, "message": message,
        "mail": mail, "rcpt": rcpt,
    });
    let (status, out, err) = run_tool(
        Command::new("python3").args(["-c", SMTPLIB_SEND, &args.to_string()]),
        None,
        Duration::from_secs(30),
    );
    assert!(
        status.success() && out.contains("sent"),
        "smtplib from {from} to {to:?}: {out}{err}"
    );
}

/// Waits (30 s at most) until an SMTP server a test started, `what`,
/// greets with `220` on `port`, then says QUIT. A server that is still
/// starting refuses the connection, so this polls.
pub fn wait_for_banner(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            // A server still starting may take the connection and drop it.
            let mut c = Client::new(s);
            if c.try_reply().is_ok_and(|r| r.starts_with("220")) {
                let _ = c.stream.write_all(b"QUIT\r\n");
                let _ = c.try_reply();
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never answered on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
