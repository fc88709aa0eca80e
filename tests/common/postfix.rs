//! A private Postfix instance for tests: its own configuration and queue
//! directories under the test's directory, listening on a loopback port,
//! stopped on drop — by `postfix stop`, and by signalling its master
//! process if that did not end it (the test's directory, with the
//! configuration `postfix stop` needs, may already be gone). Needs root and the Debian postfix package (tests/run.sh
//! installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Postfix {
    pub config_dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    /// The master daemon's pid (from the queue's pid file).
    master: Option<i32>,
}

/// The services a relaying Postfix needs, none chrooted.
const MASTER: &str = "\
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
";

impl Postfix {
    /// Postfix as the MX host of every domain in `domains`: STARTTLS with
    /// `key` and `chain` (leaf first), relaying what it accepts to the
    /// final hop on `relay_port`.
    pub fn tls_relay(
        dir: &Path,
        domains: &[&str],
        relay_port: u16,
        key: &Path,
        chain: &Path,
    ) -> Postfix {
        Postfix::start(
            dir,
            &format!(
                "relay_domains = {}\nrelayhost = [127.0.0.1]:{relay_port}\nsmtp_tls_security_level = none\n\
                 smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {}, {}\n",
                domains.join(" "),
                key.display(),
                chain.display()
            ),
        )
    }

    /// Starts Postfix in `dir` with `extra` appended to main.cf.
    pub fn start(dir: &Path, extra: &str) -> Postfix {
        Postfix::start_at(dir, extra, super::free_port())
    }

    /// Likewise on a chosen port (a receiver restarted with another
    /// configuration where the last one listened).
    pub fn start_at(dir: &Path, extra: &str, port: u16) -> Postfix {
        let config_dir = dir.join("pf");
        let (queue, data) = (dir.join("pfqueue"), dir.join("pfdata"));
        for d in [&config_dir, &queue, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        let ok = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .expect("chown");
        assert!(ok.success());
        // Postfix's queue and config directories must be reachable by the
        // postfix user through every parent.
        let mut p = dir.to_path_buf();
        loop {
            let _ = Command::new("chmod").arg("a+x").arg(&p).status();
            if !p.pop() || p.as_os_str().is_empty() || p == Path::new("/") {
                break;
            }
        }
        let log = dir.join("postfix.log");
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\nmail_owner = postfix\nsetgid_group = postdrop\n\
             myhostname = postfix.test\nmydomain = test\nmyorigin = $myhostname\nmydestination =\n\
             inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             smtpd_peername_lookup = no\nalias_maps =\nalias_database =\nbiff = no\n\
             maillog_file = {log}\nmaillog_file_prefixes = {dir}\n{extra}\n",
            q = queue.display(),
            d = data.display(),
            log = log.display(),
            dir = dir.display(),
        );
        std::fs::write(config_dir.join("main.cf"), main).unwrap();
        std::fs::write(
            config_dir.join("master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER}"),
        )
        .unwrap();
        let status = Command::new("postfix")
            .arg("-c")
            .arg(&config_dir)
            .arg("start")
            .status()
            .expect("postfix (tests/run.sh installs it)");
        assert!(
            status.success(),
            "postfix did not start; see {}",
            log.display()
        );
        let mut pf = Postfix {
            config_dir,
            port,
            log,
            master: None,
        };
        // Ready when smtpd answers.
        super::wait_for_banner(port, "postfix");
        pf.master = std::fs::read_to_string(queue.join("pid/master.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        assert!(
            pf.master.is_some(),
            "no master.pid under {}",
            queue.display()
        );
        pf
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a line of Postfix's log contains `needle`; returns the
    /// first such. postlogd writes the log after the fact, so a test
    /// that saw the SMTP exchange end polls the file for its line.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Postfix's log never showed {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (bounded) for `pid` to be gone.
fn gone_within(pid: i32, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while alive(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let stopped = Command::new("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let Some(pid) = self.master else {
            return;
        };
        // SIGTERM makes the master stop its children and exit (what
        // `postfix stop` does, when it still finds its configuration).
        if !stopped || !gone_within(pid, Duration::from_secs(5)) {
            // SAFETY: kill(2) on the master pid this instance wrote.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            if !gone_within(pid, Duration::from_secs(5)) {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}
