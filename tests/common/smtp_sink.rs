//! Postfix's `smtp-sink(1)` as a receiver: it answers every command, and
//! dumps each message it accepts to a file of its own in `dir`, with the
//! MAIL and RCPT arguments it was given (`X-Mail-Args:`, `X-Rcpt-Args:`)
//! before the message. It never offers SMTPUTF8; with `-N` it does not
//! offer DSN either. Needs root (it drops to the postfix user) and the
//! Debian postfix package (tests/run.sh installs it). Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts smtp-sink on 127.0.0.1 and a free port with `flags` (see
/// smtp-sink(1): `-N` no DSN, `-f RCPT -B "550 …"` refuse every
/// recipient, …), dumping into `dir`; returns once it answers.
pub fn start(dir: &Path, flags: &[&str]) -> SmtpSink {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("chown")
        .arg("postfix")
        .arg(dir)
        .status()
        .expect("chown");
    assert!(ok.success());
    // The postfix user must reach the dump directory through every parent.
    let mut p = dir.to_path_buf();
    while p.pop() && !p.as_os_str().is_empty() && p != Path::new("/") {
        let _ = Command::new("chmod").arg("a+x").arg(&p).status();
    }
    let port = super::free_port();
    // The template is expanded by strftime(3); smtp-sink appends a random
    // hex number, so each message gets its own file.
    let template = format!("{}/%Y%m%d%H%M%S.", dir.display());
    let child = Command::new("smtp-sink")
        .args(["-u", "postfix", "-d", &template])
        .args(flags)
        .arg(format!("127.0.0.1:{port}"))
        .arg("64")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink (tests/run.sh installs postfix)");
    let sink = SmtpSink {
        child,
        port,
        dir: dir.to_path_buf(),
    };
    super::wait_for_banner(port, "smtp-sink");
    sink
}

impl SmtpSink {
    /// Every message dumped so far (smtp-sink writes the file before its
    /// 250 to the end of data), sorted.
    pub fn messages(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The one message whose text contains `needle`; panics (with what
    /// did arrive) unless exactly one does.
    pub fn one_with(&self, needle: &str) -> String {
        let all = self.messages();
        let hits: Vec<&String> = all.iter().filter(|m| m.contains(needle)).collect();
        assert_eq!(hits.len(), 1, "messages with {needle:?}: {all:#?}");
        hits[0].clone()
    }
}
