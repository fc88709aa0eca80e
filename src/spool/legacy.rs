//! The spool format before the journal (one `queue/<ID>.msg` file per
//! message, delivery state in `<ID>.state`): read once at start, imported
//! into the journal, then removed, so an upgrade loses nothing
//! (docs/spool.md "Upgrading from the file-per-message spool").

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{RcptState, RcptStatus, Spooled};

const MAGIC: &str = "SEALGATE-SPOOL 1";

/// Why an old spool file is not a message (it is quarantined).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("no end of header")]
    NoEndOfHeader,
    #[error("header is not UTF-8")]
    NotUtf8,
    #[error("not a sealgate spool file (bad magic)")]
    BadMagic,
    #[error("bad {0}")]
    BadField(&'static str),
    #[error("bad body type {0:?}")]
    BadBodyType(String),
    #[error("unknown header field {0:?}")]
    UnknownField(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("truncated or padded: size {size}, found {found} octets")]
    WrongSize { size: usize, found: usize },
    #[error("no recipients")]
    NoRecipients,
}

/// Reads and checks one spool file. Any deviation from the format, and a
/// size that does not match, is an error: such a file is not a message.
pub fn read(path: &Path) -> Result<Spooled, FormatError> {
    let bytes = fs::read(path).map_err(|e| FormatError::Read(e.to_string()))?;
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Result<Spooled, FormatError> {
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or(FormatError::NoEndOfHeader)?;
    let header = std::str::from_utf8(&bytes[..split]).map_err(|_| FormatError::NotUtf8)?;
    let message = &bytes[split + 2..];
    let mut lines = header.lines();
    if lines.next() != Some(MAGIC) {
        return Err(FormatError::BadMagic);
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
            "from" => from = Some(bracketed().ok_or(FormatError::BadField("from"))?),
            "rcpt" => recipients.push(bracketed().ok_or(FormatError::BadField("rcpt"))?),
            "client" => client = value.split(' ').next().and_then(|ip| ip.parse().ok()),
            "helo" => helo = Some(value.to_string()),
            "tls" => tls = Some(value.to_string()),
            "body" => {
                body_8bit = match value {
                    "8BITMIME" => true,
                    "7BIT" => false,
                    other => return Err(FormatError::BadBodyType(other.to_string())),
                }
            }
            "size" => size = value.parse::<usize>().ok(),
            other => return Err(FormatError::UnknownField(other.to_string())),
        }
    }
    let size = size.ok_or(FormatError::Missing("size"))?;
    if size != message.len() {
        return Err(FormatError::WrongSize {
            size,
            found: message.len(),
        });
    }
    if recipients.is_empty() {
        return Err(FormatError::NoRecipients);
    }
    Ok(Spooled {
        id: id.ok_or(FormatError::Missing("id"))?,
        arrived: arrived.ok_or(FormatError::Missing("arrival time"))?,
        from: from.ok_or(FormatError::Missing("from"))?,
        recipients,
        client: Some(client.ok_or(FormatError::Missing("client"))?),
        helo: helo.ok_or(FormatError::Missing("helo"))?,
        tls,
        flags: crate::model::MailFlags {
            body_8bit,
            ..Default::default()
        },
        message: message.to_vec(),
    })
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
                .map(|r| RcptState::fresh(&crate::model::Recipient::plain(r.clone())))
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
                        status,
                        attempts: attempts.parse().unwrap_or(0),
                        next_due: due.parse().unwrap_or(0),
                        last: super::LastReply::from_text(f.next().unwrap_or("")),
                        ..RcptState::fresh(&crate::model::Recipient::plain(rcpt))
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
    pub quarantined: Vec<(PathBuf, FormatError)>,
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

/// Removes an imported message's files (state first: the journal holds
/// both now), then, when nothing else is left, the old directories.
pub fn remove_imported(msg: &Path) -> io::Result<()> {
    let _ = fs::remove_file(state_path(msg));
    fs::remove_file(msg)
}

/// Removes the old layout's empty directories (`quarantine/` stays while
/// it holds files for a human).
pub fn remove_empty_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !e.file_name().to_string_lossy().starts_with("shard-") {
            continue;
        }
        for sub in ["tmp", "queue", "quarantine"] {
            let _ = fs::remove_dir(dir.join(sub));
        }
        let _ = fs::remove_dir(&dir);
    }
}
