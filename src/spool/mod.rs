//! The durable spool (IN-6): a message is answered `250` only after its
//! envelope and data are on stable storage.
//!
//! Each shard owns a directory, so shards never contend on a lock or a
//! directory inode. Storing a message: write `tmp/<id>` (created
//! exclusively), fsync it, rename it to `queue/<id>.msg`, fsync `queue/`.
//! Only a file that reached `queue/` by rename is a message: a crash before
//! the rename leaves a file in `tmp/`, which recovery deletes (it was never
//! acknowledged); a crash after the directory fsync leaves a complete
//! message. The format is described in docs/spool.md.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::smtp::server::Envelope;

const MAGIC: &str = "SEALGATE-SPOOL 1";

/// Where a shard puts the messages it accepts. The gateway's [`Spool`]
/// stores them durably; the load generator's sink discards or dumps them.
/// Several spool writer threads call one store at once.
pub trait Store: Send + Sync {
    /// Takes one message; returns its queue id once it is safe to answer
    /// `250`. `hostname` is ours, for the `Received:` header.
    fn accept(&self, env: &Envelope, hostname: &str, data: &[u8]) -> io::Result<String>;

    /// Where a stored message lies, for delivery (`None`: not kept).
    fn path_of(&self, _id: &str) -> Option<PathBuf> {
        None
    }
}

impl Store for Spool {
    fn accept(&self, env: &Envelope, hostname: &str, data: &[u8]) -> io::Result<String> {
        let arrived = SystemTime::now();
        let id = self.next_id(arrived);
        let header = crate::smtp::received::header(env, hostname, &id, arrived);
        self.store(&id, env, arrived, header.as_bytes(), data)?;
        Ok(id)
    }

    fn path_of(&self, id: &str) -> Option<PathBuf> {
        Some(self.queue.join(format!("{id}.msg")))
    }
}

/// The steps of [`Spool::store`], in the order they happen. Only after
/// the last has succeeded may the gateway answer `250`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStep {
    /// Create `tmp/ID` (O_EXCL, mode 0600).
    Create,
    /// Write the spool header, the Received header and the message.
    Write,
    /// fsync the file: its data is on disk.
    SyncData,
    /// Rename `tmp/ID` to `queue/ID.msg`: recovery will load it.
    Rename,
    /// fsync `queue/`: the new name is on disk.
    SyncDir,
}

/// A fault injector for tests: called before each step; an error it
/// returns is treated as that step's own failure.
pub type FaultHook = Arc<dyn Fn(StoreStep) -> io::Result<()> + Send + Sync>;

/// One shard's spool directory.
pub struct Spool {
    tmp: PathBuf,
    queue: PathBuf,
    /// Kept open to fsync the directory after each rename.
    queue_dir: File,
    shard: u16,
    counter: AtomicU16,
    faults: Option<FaultHook>,
}

impl Spool {
    /// Opens (creating as needed) `root/shard-N/{tmp,queue,quarantine}`.
    pub fn open(root: &Path, shard: u16) -> io::Result<Spool> {
        let dir = shard_dir(root, shard);
        let tmp = dir.join("tmp");
        let queue = dir.join("queue");
        for d in [&tmp, &queue, &dir.join("quarantine")] {
            fs::create_dir_all(d)?;
        }
        // The new directories must themselves survive a crash.
        File::open(&dir)?.sync_all()?;
        File::open(root)?.sync_all()?;
        let queue_dir = File::open(&queue)?;
        Ok(Spool {
            tmp,
            queue,
            queue_dir,
            shard,
            counter: AtomicU16::new(0),
            faults: None,
        })
    }

    /// Fails store steps on demand (tests: disk full at any point).
    pub fn with_faults(mut self, hook: FaultHook) -> Spool {
        self.faults = Some(hook);
        self
    }

    /// A queue id unique across shards and restarts: microseconds since
    /// the epoch, the shard, a per-shard counter (hex, 19 characters).
    pub fn next_id(&self, now: SystemTime) -> String {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let micros = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        format!(
            "{:013X}{:02X}{:04X}",
            micros & 0xF_FFFF_FFFF_FFFF,
            self.shard & 0xFF,
            counter
        )
    }

    /// Stores one message durably. `prefix` is prepended to `data` (the
    /// Received header). Returns only after data and name are on disk.
    pub fn store(
        &self,
        id: &str,
        env: &Envelope,
        arrived: SystemTime,
        prefix: &[u8],
        data: &[u8],
    ) -> io::Result<()> {
        let final_path = self.queue.join(format!("{id}.msg"));
        if final_path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("queue id {id} already in use"),
            ));
        }
        let tmp_path = self.tmp.join(id);
        let header = encode_header(id, env, arrived, prefix.len() + data.len());
        let step = |s: StoreStep| self.faults.as_ref().map_or(Ok(()), |hook| hook(s));
        let mut renamed = false;
        let result = (|| {
            step(StoreStep::Create)?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp_path)?;
            step(StoreStep::Write)?;
            f.write_all(header.as_bytes())?;
            f.write_all(prefix)?;
            f.write_all(data)?;
            step(StoreStep::SyncData)?;
            f.sync_all()?;
            step(StoreStep::Rename)?;
            fs::rename(&tmp_path, &final_path)?;
            renamed = true;
            step(StoreStep::SyncDir)?;
            self.queue_dir.sync_all()
        })();
        if result.is_err() {
            // Nothing half-written may remain where recovery would load it;
            // and a message the client is told we lack must not be
            // delivered as well as resent (its name may or may not be on
            // disk once the directory fsync failed).
            let _ = fs::remove_file(&tmp_path);
            if renamed {
                let _ = fs::remove_file(&final_path);
                let _ = self.queue_dir.sync_all();
            }
        }
        result
    }
}

pub fn shard_dir(root: &Path, shard: u16) -> PathBuf {
    root.join(format!("shard-{shard}"))
}

fn encode_header(id: &str, env: &Envelope, arrived: SystemTime, size: usize) -> String {
    use std::fmt::Write as _;
    let secs = arrived
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut h = String::with_capacity(256);
    let _ = writeln!(h, "{MAGIC}");
    let _ = writeln!(h, "id {id}");
    let _ = writeln!(h, "arrived {secs}");
    // Addresses and the HELO name passed the command parser: printable
    // ASCII without spaces outside quoted local parts, never CR or LF.
    let _ = writeln!(h, "from <{}>", env.from);
    for r in &env.recipients {
        let _ = writeln!(h, "rcpt <{r}>");
    }
    let _ = writeln!(h, "client {} {}", env.peer.ip, env.peer.port);
    let _ = writeln!(h, "helo {}", env.helo);
    if let Some(t) = &env.tls {
        let _ = writeln!(
            h,
            "tls {} {} {} {}",
            t.version,
            t.cipher,
            t.bits,
            t.verify.as_str()
        );
    }
    let _ = writeln!(
        h,
        "body {}",
        if env.body_8bit { "8BITMIME" } else { "7BIT" }
    );
    let _ = writeln!(h, "size {size}");
    h.push('\n');
    h
}

/// A message read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub id: String,
    pub arrived: u64,
    pub from: String,
    pub recipients: Vec<String>,
    pub client: IpAddr,
    pub helo: String,
    /// `version cipher bits verify`, when the message came over TLS.
    pub tls: Option<String>,
    /// `BODY=8BITMIME` was declared on MAIL FROM (RFC 6152), so the relay
    /// must declare it again, or refuse, on the way out.
    pub body_8bit: bool,
    /// The message as stored: Received header and data.
    pub message: Vec<u8>,
}

/// Reads and checks one spool file. Any deviation from the format, and a
/// size that does not match, is an error: such a file is not a message.
pub fn read(path: &Path) -> Result<Spooled, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Result<Spooled, String> {
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or("no end of header")?;
    let header = std::str::from_utf8(&bytes[..split]).map_err(|_| "header is not UTF-8")?;
    let message = &bytes[split + 2..];
    let mut lines = header.lines();
    if lines.next() != Some(MAGIC) {
        return Err("not a sealgate spool file (bad magic)".into());
    }
    let (mut id, mut arrived, mut from, mut client, mut helo, mut size) =
        (None, None, None, None, None, None);
    let mut recipients = Vec::new();
    let mut tls = None;
    let mut body_8bit = false;
    for line in lines {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let bracketed = || {
            value
                .strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .map(str::to_string)
        };
        match key {
            "id" => id = Some(value.to_string()),
            "arrived" => arrived = value.parse().ok(),
            "from" => from = Some(bracketed().ok_or("bad from")?),
            "rcpt" => recipients.push(bracketed().ok_or("bad rcpt")?),
            "client" => client = value.split(' ').next().and_then(|ip| ip.parse().ok()),
            "helo" => helo = Some(value.to_string()),
            "tls" => tls = Some(value.to_string()),
            "body" => {
                body_8bit = match value {
                    "8BITMIME" => true,
                    "7BIT" => false,
                    other => return Err(format!("bad body type {other:?}")),
                }
            }
            "size" => size = value.parse::<usize>().ok(),
            other => return Err(format!("unknown header field {other:?}")),
        }
    }
    let size = size.ok_or("missing size")?;
    if size != message.len() {
        return Err(format!(
            "truncated or padded: size {size}, found {} octets",
            message.len()
        ));
    }
    if recipients.is_empty() {
        return Err("no recipients".into());
    }
    Ok(Spooled {
        id: id.ok_or("missing id")?,
        arrived: arrived.ok_or("missing arrival time")?,
        from: from.ok_or("missing from")?,
        recipients,
        client: client.ok_or("missing client")?,
        helo: helo.ok_or("missing helo")?,
        tls,
        body_8bit,
        message: message.to_vec(),
    })
}

/// Delivery state of one recipient (OUT-4), kept beside the message so a
/// restart resumes exactly where delivery stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptState {
    pub rcpt: String,
    pub status: RcptStatus,
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_due: u64,
    /// The last reply or reason (`dsn=… detail`).
    pub last: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptStatus {
    Pending,
    Delivered,
    /// Permanently failed or expired; a bounce goes to the sender.
    Failed,
}

impl RcptStatus {
    fn as_str(self) -> &'static str {
        match self {
            RcptStatus::Pending => "pending",
            RcptStatus::Delivered => "delivered",
            RcptStatus::Failed => "failed",
        }
    }
}

/// The `<id>.state` file beside `<id>.msg`: `hold 0|1`, then per
/// recipient `rcpt <addr> <status> <attempts> <next_due> <last…>`.
/// Absent means: every recipient pending, due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    pub hold: bool,
    pub rcpts: Vec<RcptState>,
}

pub fn state_path(msg: &Path) -> PathBuf {
    msg.with_extension("state")
}

impl DeliveryState {
    /// The initial state of a message.
    pub fn fresh(recipients: &[String]) -> DeliveryState {
        DeliveryState {
            hold: false,
            rcpts: recipients
                .iter()
                .map(|r| RcptState {
                    rcpt: r.clone(),
                    status: RcptStatus::Pending,
                    attempts: 0,
                    next_due: 0,
                    last: String::new(),
                })
                .collect(),
        }
    }

    /// Reads the state of the message at `msg`, or its fresh state.
    pub fn load(msg: &Path, recipients: &[String]) -> DeliveryState {
        let Ok(text) = fs::read_to_string(state_path(msg)) else {
            return DeliveryState::fresh(recipients);
        };
        let mut st = DeliveryState {
            hold: false,
            rcpts: Vec::new(),
        };
        for line in text.lines() {
            let mut f = line.splitn(6, ' ');
            match f.next() {
                Some("hold") => st.hold = f.next() == Some("1"),
                Some("rcpt") => {
                    let (Some(rcpt), Some(status), Some(attempts), Some(due)) =
                        (f.next(), f.next(), f.next(), f.next())
                    else {
                        continue;
                    };
                    let status = match status {
                        "delivered" => RcptStatus::Delivered,
                        "failed" => RcptStatus::Failed,
                        _ => RcptStatus::Pending,
                    };
                    st.rcpts.push(RcptState {
                        rcpt: rcpt.to_string(),
                        status,
                        attempts: attempts.parse().unwrap_or(0),
                        next_due: due.parse().unwrap_or(0),
                        last: f.next().unwrap_or("").to_string(),
                    });
                }
                _ => {}
            }
        }
        // A state file that lost recipients (it never should) must not
        // lose mail: fall back to delivering everything still unknown.
        for r in recipients {
            if !st.rcpts.iter().any(|s| &s.rcpt == r) {
                st.rcpts.push(
                    DeliveryState::fresh(std::slice::from_ref(r))
                        .rcpts
                        .remove(0),
                );
            }
        }
        st
    }

    /// Replaces the state file atomically and durably.
    pub fn save(&self, msg: &Path) -> io::Result<()> {
        use std::fmt::Write as _;
        let mut text = format!("hold {}\n", u8::from(self.hold));
        for r in &self.rcpts {
            let last: String = r
                .last
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = writeln!(
                text,
                "rcpt {} {} {} {} {}",
                r.rcpt,
                r.status.as_str(),
                r.attempts,
                r.next_due,
                last
            );
        }
        let path = state_path(msg);
        let tmp = path.with_extension("state.tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Removes a finished message and its state (state first: a crash in
/// between leaves a message that is delivered again, never one lost).
pub fn remove_message(msg: &Path) -> io::Result<()> {
    let _ = fs::remove_file(state_path(msg));
    fs::remove_file(msg)?;
    if let Some(dir) = msg.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What recovery found at start.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Complete messages, ready for delivery.
    pub queued: Vec<PathBuf>,
    /// Unacknowledged partial files in `tmp/`, deleted.
    pub removed_partial: Vec<PathBuf>,
    /// Files in `queue/` that failed to parse, moved to `quarantine/`,
    /// with the reason.
    pub quarantined: Vec<(PathBuf, String)>,
}

/// Scans every shard directory under `root` (whatever the shard count
/// was when they were written): deletes partial files, checks every
/// queued file, quarantines the unreadable.
pub fn recover(root: &Path) -> io::Result<Recovery> {
    let mut report = Recovery::default();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e),
    };
    let mut shard_dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shard-"))
        })
        .collect();
    shard_dirs.sort();
    for dir in shard_dirs {
        for f in list(&dir.join("tmp"))? {
            fs::remove_file(&f)?;
            report.removed_partial.push(f);
        }
        let quarantine = dir.join("quarantine");
        for f in list(&dir.join("queue"))? {
            match f.extension().and_then(|e| e.to_str()) {
                Some("msg") => {}
                // A state whose message is gone (removed after delivery).
                Some("state") if !f.with_extension("msg").exists() => {
                    let _ = fs::remove_file(&f);
                    continue;
                }
                _ => continue,
            }
            match read(&f) {
                Ok(_) => report.queued.push(f),
                Err(why) => {
                    fs::create_dir_all(&quarantine)?;
                    let to = quarantine.join(f.file_name().unwrap_or_default());
                    fs::rename(&f, &to)?;
                    report.quarantined.push((to, why));
                }
            }
        }
    }
    Ok(report)
}

fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut v: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::server::{ClientVerify, Peer, TlsFacts};

    fn envelope() -> Envelope {
        Envelope {
            from: String::new(),
            recipients: vec!["a@example.com".into(), "b@example.com".into()],
            helo: "client.test".into(),
            esmtp: true,
            body_8bit: false,
            peer: Peer {
                ip: "127.0.0.1".parse().unwrap(),
                port: 5000,
                name: None,
            },
            tls: Some(TlsFacts {
                version: "TLSv1.3",
                cipher: "TLS13_AES_128_GCM_SHA256".into(),
                bits: 128,
                verify: ClientVerify::No,
                client_cert: None,
            }),
        }
    }

    fn temp_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("sealgate-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn store_then_recover_round_trip() {
        let root = temp_root("rt");
        let spool = Spool::open(&root, 3).unwrap();
        let now = SystemTime::now();
        let id = spool.next_id(now);
        assert_ne!(id, spool.next_id(now));
        spool
            .store(
                &id,
                &envelope(),
                now,
                b"Received: x\r\n",
                b"Subject: s\r\n\r\nbody\r\n",
            )
            .unwrap();
        let report = recover(&root).unwrap();
        assert_eq!(report.queued.len(), 1);
        let m = read(&report.queued[0]).unwrap();
        assert_eq!(m.id, id);
        assert_eq!(m.from, "");
        assert_eq!(m.recipients, vec!["a@example.com", "b@example.com"]);
        assert_eq!(
            m.tls.as_deref(),
            Some("TLSv1.3 TLS13_AES_128_GCM_SHA256 128 NO")
        );
        assert_eq!(m.message, b"Received: x\r\nSubject: s\r\n\r\nbody\r\n");
        assert!(!m.body_8bit);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn body_8bitmime_survives_the_spool() {
        let root = temp_root("8bit");
        let spool = Spool::open(&root, 0).unwrap();
        let now = SystemTime::now();
        let id = spool.next_id(now);
        let mut env = envelope();
        env.body_8bit = true;
        spool
            .store(
                &id,
                &env,
                now,
                b"",
                "Subject: caf\u{e9}\r\n\r\n\u{e9}\r\n".as_bytes(),
            )
            .unwrap();
        let report = recover(&root).unwrap();
        let m = read(&report.queued[0]).unwrap();
        assert!(m.body_8bit, "BODY=8BITMIME must be carried to delivery");
        fs::remove_dir_all(&root).unwrap();
    }

    /// Disk full at each step of a store: the store fails with an error
    /// the session turns into `452 4.3.1`, nothing is left in `tmp/` or
    /// `queue/`, and recovery loads nothing; the spool then works again.
    #[test]
    fn a_failure_at_any_store_step_leaves_nothing_behind() {
        use crate::smtp::server::StoreFailure;
        let steps = [
            StoreStep::Create,
            StoreStep::Write,
            StoreStep::SyncData,
            StoreStep::Rename,
            StoreStep::SyncDir,
        ];
        for failing in steps {
            let root = temp_root(&format!("fault-{failing:?}"));
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let log = seen.clone();
            let spool = Spool::open(&root, 0)
                .unwrap()
                .with_faults(Arc::new(move |s| {
                    log.lock().unwrap().push(s);
                    if s == failing {
                        Err(io::Error::from_raw_os_error(libc::ENOSPC))
                    } else {
                        Ok(())
                    }
                }));
            let now = SystemTime::now();
            let id = spool.next_id(now);
            let err = spool
                .store(&id, &envelope(), now, b"Received: x\r\n", b"body\r\n")
                .unwrap_err();
            assert_eq!(StoreFailure::of(&err), StoreFailure::Full, "{failing:?}");
            // The steps ran in order up to the failing one, none after.
            let upto = steps.iter().position(|s| *s == failing).unwrap();
            assert_eq!(*seen.lock().unwrap(), steps[..=upto], "{failing:?}");
            let dir = shard_dir(&root, 0);
            for sub in ["tmp", "queue"] {
                let left: Vec<_> = fs::read_dir(dir.join(sub)).unwrap().collect();
                assert!(left.is_empty(), "{failing:?}: {sub}/ keeps {left:?}");
            }
            let report = recover(&root).unwrap();
            assert!(report.queued.is_empty() && report.removed_partial.is_empty());
            // The same spool, no longer failing, stores again.
            let ok = Spool::open(&root, 0).unwrap();
            let id = ok.next_id(now);
            ok.store(&id, &envelope(), now, b"", b"x\r\n").unwrap();
            assert_eq!(recover(&root).unwrap().queued.len(), 1);
            fs::remove_dir_all(&root).unwrap();
        }
    }

    #[test]
    fn other_errors_are_not_reported_as_storage_full() {
        use crate::smtp::server::StoreFailure;
        for (errno, want) in [
            (libc::ENOSPC, StoreFailure::Full),
            (libc::EDQUOT, StoreFailure::Full),
            (libc::EFBIG, StoreFailure::Full),
            (libc::EIO, StoreFailure::Other),
            (libc::EACCES, StoreFailure::Other),
        ] {
            assert_eq!(StoreFailure::of(&io::Error::from_raw_os_error(errno)), want);
        }
    }

    #[test]
    fn recovery_removes_partial_and_quarantines_corrupt() {
        let root = temp_root("rec");
        let spool = Spool::open(&root, 0).unwrap();
        let now = SystemTime::now();
        let good = spool.next_id(now);
        spool.store(&good, &envelope(), now, b"", b"x\r\n").unwrap();
        // A write that never reached the rename.
        fs::write(
            shard_dir(&root, 0).join("tmp/PARTIAL"),
            b"SEALGATE-SPOOL 1\nid P\n",
        )
        .unwrap();
        // A truncated queue file (say, a disk that lied about fsync).
        let bytes = fs::read(shard_dir(&root, 0).join(format!("queue/{good}.msg"))).unwrap();
        fs::write(
            shard_dir(&root, 0).join("queue/TRUNC.msg"),
            &bytes[..bytes.len() - 2],
        )
        .unwrap();
        fs::write(
            shard_dir(&root, 0).join("queue/JUNK.msg"),
            b"\x00\x01garbage",
        )
        .unwrap();
        let report = recover(&root).unwrap();
        assert_eq!(report.queued.len(), 1);
        assert_eq!(report.removed_partial.len(), 1);
        assert_eq!(report.quarantined.len(), 2);
        assert!(report
            .quarantined
            .iter()
            .any(|(_, why)| why.contains("truncated")));
        assert!(!shard_dir(&root, 0).join("tmp/PARTIAL").exists());
        assert!(shard_dir(&root, 0).join("quarantine/TRUNC.msg").exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
