//! The durable spool (IN-6): a message is answered `250` only after its
//! envelope and data are on stable storage.
//!
//! The spool is a set of append-only journals (`journal-N/`), one per
//! spool writer thread, each made of fixed-size segment files
//! ([`journal`], byte format in [`record`] and docs/spool.md). A writer
//! takes every message that arrived while its previous sync ran, appends
//! them with one vectored write, calls `fdatasync` once, and only then do
//! their sessions answer `250` (group commit). Delivery-state changes
//! (recipient delivered, failed, deferred; hold; release; done) are
//! records in the same journal and ride on the next sync.

pub mod journal;
pub mod legacy;
pub mod record;
pub mod storage;

use std::io;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{Envelope, Message};
pub use journal::{Change, Options, Stats};
use journal::{Journal, Locations, Recovered};
use record::Meta;
use storage::Disk;

/// A message handed over by a shard, with the host name for its
/// `Received:` header.
/// Writes a stored message's trace header: its envelope, the host name
/// that received it, the queue id the spool gives it, its arrival time.
pub type TraceHeader = fn(&Envelope, &str, &str, SystemTime) -> String;

pub struct Incoming<'a> {
    pub message: &'a Message,
    pub hostname: &'a str,
    /// Writes the trace header that heads the stored message
    /// (`Received:`, RFC 5321 §4.4) for the queue id and arrival time the
    /// spool gives it: the caller's, so the spool knows nothing of SMTP.
    pub trace: TraceHeader,
    /// The data before `message.data`, when it was streamed to staging.
    pub spill: Option<Spill>,
}

/// A stored message: its queue id, and what delivery needs to know of it
/// (`None` for stores that deliver nothing, such as the load
/// generator's sink).
pub struct Stored {
    pub id: String,
    pub entry: Option<Entry>,
}

/// A queued message as delivery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// The journal that holds it (its state changes go there).
    pub journal: usize,
    pub meta: Meta,
    pub hold: bool,
    pub rcpts: Vec<RcptState>,
    /// Octets, Received header included.
    pub size: u64,
}

/// Where spool writers put the messages shards accept. The gateway's is
/// a journal; the load generator's sink discards or dumps. Each writer
/// thread owns one store.
pub trait Store: Send {
    /// Stores a batch: one result per message, in order; an `Ok` is
    /// durable when this returns.
    fn store(&mut self, batch: &mut [Incoming<'_>]) -> Vec<io::Result<Stored>>;

    /// Records a delivery-state change (written and synced with the next
    /// batch, or by [`Store::flush`]).
    fn change(&mut self, _id: &str, _change: Change) {}

    /// Whether changes wait for a sync.
    fn pending(&self) -> bool {
        false
    }

    /// Syncs what waits.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Delivery state of one recipient (OUT-4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RcptState {
    pub rcpt: String,
    /// What the recipient asked to be told (RFC 3461): fixed at arrival.
    pub dsn: crate::model::RcptDsn,
    pub status: RcptStatus,
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_due: u64,
    /// The last attempt's outcome (`None` before the first).
    pub last: Option<LastReply>,
    /// A delay notification (RFC 3464 `Action: delayed`) went to the
    /// sender for it: one per recipient.
    pub delay_notified: bool,
}

/// A recipient's last outcome: its RFC 3463 status and the server's reply
/// or our reason. Written in the journal as one text, `dsn=STATUS DETAIL`
/// (docs/spool.md), read back once by the record decoder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastReply {
    pub status: crate::model::EnhancedStatus,
    pub detail: String,
}

impl LastReply {
    /// The journal's text back into its parts; `None` for the empty text
    /// of a recipient never tried.
    pub fn from_text(text: &str) -> Option<LastReply> {
        if text.is_empty() {
            return None;
        }
        let rest = text.strip_prefix("dsn=").unwrap_or(text);
        let (status, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        // The journal holds what the gateway wrote (a valid code); a text
        // without one reads as a temporary failure of unknown kind.
        let status = crate::model::EnhancedStatus::parse(status).unwrap_or(
            crate::model::EnhancedStatus::new(crate::model::StatusClass::PersistentTransient, 0, 0),
        );
        Some(LastReply {
            status,
            detail: detail.to_string(),
        })
    }
}

impl std::fmt::Display for LastReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dsn={} {}", self.status, self.detail)
    }
}

/// The journal's text of a recipient's last outcome (empty: never tried).
pub fn last_text(last: &Option<LastReply>) -> String {
    last.as_ref().map(|l| l.to_string()).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RcptStatus {
    Pending,
    Delivered,
    /// Permanently failed or expired; a bounce goes to the sender.
    Failed,
}

impl RcptStatus {
    /// As `sealgate queue list --json` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            RcptStatus::Pending => "pending",
            RcptStatus::Delivered => "delivered",
            RcptStatus::Failed => "failed",
        }
    }
}

/// A message read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub id: String,
    pub arrived: u64,
    pub from: String,
    pub recipients: Vec<String>,
    /// `None` for a message the gateway made itself.
    pub client: Option<IpAddr>,
    pub helo: String,
    /// `version cipher bits verify`, when the message came over TLS.
    pub tls: Option<String>,
    /// 8BITMIME, REQUIRETLS or `TLS-Required: No`, a TLS report.
    pub flags: crate::model::MailFlags,
    /// The message as stored: Received header and data.
    pub message: Vec<u8>,
}

pub fn journal_dir(root: &Path, n: usize) -> PathBuf {
    root.join(format!("journal-{n}"))
}

/// The envelope facts a journal keeps, from an accepted message.
pub fn meta_of(env: &Envelope, arrived: SystemTime) -> Meta {
    Meta {
        arrived: arrived
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        from: env.from.clone(),
        client: env.peer.as_ref().map(|p| p.ip),
        client_port: env.peer.as_ref().map_or(0, |p| p.port),
        helo: env.helo.clone(),
        tls: env.tls.as_ref().map(|t| {
            format!(
                "{} {} {} {}",
                t.version,
                t.cipher,
                t.bits,
                t.verify.as_str()
            )
        }),
        flags: env.flags,
        dsn: env.dsn.clone(),
    }
}

/// The gateway's store: one journal on disk.
pub struct JournalStore {
    number: usize,
    journal: Journal<Disk>,
    counter: AtomicU16,
}

fn same_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl JournalStore {
    /// A queue id unique across journals and restarts: microseconds since
    /// the epoch, the journal, a per-journal counter (hex, 19 characters).
    pub fn next_id(&self, now: SystemTime) -> String {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let micros = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        format!(
            "{:013X}{:02X}{:04X}",
            micros & 0xF_FFFF_FFFF_FFFF,
            self.number & 0xFF,
            counter
        )
    }

    pub fn number(&self) -> usize {
        self.number
    }

    pub fn locations(&self) -> Locations {
        self.journal.locations()
    }

    /// Every live message (after recovery), for delivery.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .journal
            .live()
            .map(|(id, l)| Entry {
                id: id.clone(),
                journal: self.number,
                meta: l.meta.clone(),
                hold: l.hold,
                rcpts: l.rcpts.clone(),
                size: l.size,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Imports the messages of the old file-per-message spool under
    /// `root` (recipients' states and hold kept), durably, then removes
    /// their files. Returns how many.
    pub fn import_legacy(&mut self, root: &Path) -> io::Result<legacy::Recovery> {
        let report = legacy::recover(root)?;
        let mut imported = Vec::new();
        for path in &report.queued {
            let m = match legacy::read(path) {
                Ok(m) => m,
                Err(why) => {
                    tracing::warn!("spool: cannot import {}: {why}", path.display());
                    continue;
                }
            };
            let state = legacy::DeliveryState::load(path, &m.recipients);
            let meta = Meta {
                arrived: m.arrived,
                from: m.from.clone(),
                client: m.client,
                client_port: 0,
                helo: m.helo.clone(),
                tls: m.tls.clone(),
                flags: m.flags,
                dsn: crate::model::MessageDsn::default(),
            };
            self.journal
                .add_stored(&m.id, &meta, state.rcpts, state.hold, &m.message)?;
            imported.push(path.clone());
        }
        if !imported.is_empty() {
            self.journal.commit()?;
        }
        for path in &imported {
            legacy::remove_imported(path)?;
        }
        legacy::remove_empty_dirs(root);
        Ok(report)
    }
}

impl Store for JournalStore {
    fn store(&mut self, batch: &mut [Incoming<'_>]) -> Vec<io::Result<Stored>> {
        let arrived = SystemTime::now();
        let mut results: Vec<io::Result<Stored>> = Vec::with_capacity(batch.len());
        for item in batch.iter_mut() {
            let env = &item.message.envelope;
            let id = self.next_id(arrived);
            let header = (item.trace)(env, item.hostname, &id, arrived);
            let meta = meta_of(env, arrived);
            let mut size = (header.len() + item.message.data.len()) as u64;
            let staged = match item.spill.as_mut() {
                // Streamed: the staging file becomes the message's own file.
                Some(spill) => spill
                    .finish(&item.message.data)
                    .and_then(|(path, len, crc)| {
                        size = header.len() as u64 + len;
                        self.journal.add_adopted(
                            &id,
                            &meta,
                            &env.recipients,
                            header.as_bytes(),
                            &path,
                            len,
                            crc,
                        )?;
                        spill.adopted = true;
                        Ok(())
                    }),
                None => self.journal.add_message(
                    &id,
                    &meta,
                    &env.recipients,
                    header.as_bytes(),
                    &item.message.data,
                ),
            };
            results.push(staged.map(|()| Stored {
                id: id.clone(),
                entry: Some(Entry {
                    id,
                    journal: self.number,
                    meta,
                    hold: false,
                    rcpts: env.recipients.iter().map(RcptState::fresh).collect(),
                    size,
                }),
            }));
        }
        if let Err(e) = self.journal.commit() {
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(same_error(&e));
                }
            }
        }
        results
    }

    fn change(&mut self, id: &str, change: Change) {
        if let Err(e) = self.journal.add_change(id, change) {
            tracing::error!("{id}: cannot record a delivery-state change: {e}");
        }
    }

    fn pending(&self) -> bool {
        self.journal.pending()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.journal.commit().map(|_| ())
    }
}

/// What opening the spool found.
pub struct Opened {
    /// One store per journal (at least `writers`; more when an earlier
    /// run had more writers: their journals must still be served).
    pub stores: Vec<JournalStore>,
    /// Per journal, what its recovery found.
    pub recovered: Vec<Recovered>,
}

/// Opens (creating) the journals under `root` and recovers each.
pub fn open(
    root: &Path,
    writers: usize,
    options: Options,
    stats: &Arc<Stats>,
) -> io::Result<Opened> {
    let mut count = writers.max(1);
    while journal_dir(root, count).exists() {
        count += 1;
    }
    let mut stores = Vec::with_capacity(count);
    let mut recovered = Vec::with_capacity(count);
    for n in 0..count {
        let disk = Disk::open(&journal_dir(root, n))?;
        let (mut journal, report) = Journal::open(disk, options)?;
        let mut report = report;
        report.orphans_removed = journal.remove_orphans()?;
        journal.set_stats(stats.clone());
        stores.push(JournalStore {
            number: n,
            journal,
            counter: AtomicU16::new(0),
        });
        recovered.push(report);
    }
    Ok(Opened { stores, recovered })
}

/// Reads queued messages for delivery, on another thread than the
/// writers: looks a message up in its journal's shared locations and
/// checks the record it reads.
pub struct Reader {
    journals: Vec<(Disk, Locations)>,
}

impl Reader {
    pub fn new(root: &Path, stores: &[JournalStore]) -> io::Result<Reader> {
        let mut journals = Vec::with_capacity(stores.len());
        for s in stores {
            // Opened (and synced) by `open` already.
            journals.push((
                Disk::open_existing(&journal_dir(root, s.number))?,
                s.locations(),
            ));
        }
        Ok(Reader { journals })
    }

    /// The stored octets of a queued message (Received header and data).
    pub fn read(&mut self, journal: usize, id: &str) -> io::Result<Vec<u8>> {
        let (disk, locations) = self
            .journals
            .get_mut(journal)
            .ok_or_else(|| io::Error::other(format!("{id}: no journal {journal}")))?;
        // A copy forward may move it between the look-up and the read:
        // look again once.
        let mut last = io::Error::other(format!("{id}: not in the journal"));
        for _ in 0..2 {
            let location = locations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .copied();
            let Some(location) = location else {
                break;
            };
            let mut buf = vec![0u8; location.len as usize];
            let n = storage::Storage::read_at(disk, location.slot, location.offset, &mut buf)?;
            buf.truncate(n);
            match journal::body_of(disk, id, &buf, None) {
                Ok(data) => return Ok(data),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Every live message under `root`, read offline (tests, `sealgate spool
/// export`): the journals are scanned as recovery would, nothing written.
pub fn read_all(root: &Path) -> io::Result<Vec<Spooled>> {
    let mut out = Vec::new();
    for (_, mut journal, _) in scan(root)? {
        let ids: Vec<String> = journal.live().map(|(id, _)| id.clone()).collect();
        for id in ids {
            let data = journal.read(&id)?;
            let Some(l) = journal.get(&id) else { continue };
            out.push(Spooled {
                id: id.clone(),
                arrived: l.meta.arrived,
                from: l.meta.from.clone(),
                recipients: l.rcpts.iter().map(|r| r.rcpt.clone()).collect(),
                client: l.meta.client,
                helo: l.meta.helo.clone(),
                tls: l.meta.tls.clone(),
                flags: l.meta.flags,
                message: data,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Opens every journal under `root` read-only (nothing is written by
/// opening); `(number, journal, what its scan found)`.
pub fn scan(root: &Path) -> io::Result<Vec<(usize, Journal<Disk>, Recovered)>> {
    let mut out = Vec::new();
    let mut n = 0;
    while journal_dir(root, n).is_dir() {
        let disk = Disk::open_existing(&journal_dir(root, n))?;
        let (journal, report) = Journal::open(disk, Options::default())?;
        out.push((n, journal, report));
        n += 1;
    }
    Ok(out)
}

/// Why storing failed, as the client hears it (RFC 3463): out of space,
/// quota or file size is `452 4.3.1`; anything else `451 4.3.0`.
pub fn store_failure(e: &std::io::Error) -> crate::model::StoreFailure {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => crate::model::StoreFailure::Full,
        _ => crate::model::StoreFailure::Other,
    }
}

/// Work for one spool writer besides the shards' messages: delivery-state
/// changes of its journal's messages, and messages delivery itself
/// creates (bounces), answered on `reply`.
pub enum Work {
    Change(String, Change),
    /// Log lines (target `send`) to write once every change sent before
    /// them is written and synced: nothing is said about an outcome before
    /// it is durable in the journal, so a crash after a `status=sent` line
    /// never delivers that recipient again.
    Say(Vec<crate::logs::QueueLine>),
    /// Several of these, in order (one wake-up of the writer).
    Batch(Vec<Work>),
    Store {
        message: Box<Message>,
        hostname: String,
        reply: crossbeam_channel::Sender<Result<String, crate::model::StoreFailure>>,
    },
}

/// `sealgate spool verify`: every segment of every journal read and
/// CRC-checked as recovery would, every live message's octets read and
/// checked (large files too). Prints one line per journal; exit 1 when
/// anything is damaged. A torn end of a journal's last segment (a write a
/// crash interrupted, never acknowledged) is reported but is no damage.
pub fn verify_command(root: &Path) -> std::process::ExitCode {
    let journals = match scan(root) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{}: {e}", root.display());
            return std::process::ExitCode::from(1);
        }
    };
    if journals.is_empty() {
        println!("{}: no journal", root.display());
    }
    let mut damaged = 0;
    let mut total = 0;
    for (n, mut journal, report) in journals {
        let ids: Vec<String> = journal.live().map(|(id, _)| id.clone()).collect();
        let mut unreadable = Vec::new();
        for id in &ids {
            if let Err(e) = journal.read(id) {
                unreadable.push(format!("{id}: {e}"));
            }
        }
        total += ids.len();
        println!(
            "journal-{n}: {} segment(s) in use, {} unused; {} record(s); {} live message(s); torn end: {}; damaged: {}",
            report.segments,
            report.unused,
            report.records,
            ids.len(),
            report
                .cut
                .map_or("none".to_string(), |(s, o, why)| format!("segment {s} offset {o} ({why})")),
            report.damaged.len() + unreadable.len()
        );
        for (slot, offset, why) in &report.damaged {
            println!("  damage: segment {slot} offset {offset}: {why}");
        }
        for u in &unreadable {
            println!("  damage: {u}");
        }
        damaged += report.damaged.len() + unreadable.len();
    }
    println!("{total} live message(s); {damaged} damaged place(s)");
    if damaged > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// `sealgate spool export ID`: the message as stored (RFC 5322 text,
/// CRLF line endings, sealgate's Received header first) on standard
/// output.
pub fn export_command(root: &Path, id: &str) -> std::process::ExitCode {
    use std::io::Write as _;
    let found = scan(root).and_then(|journals| {
        for (_, mut journal, _) in journals {
            if journal.get(id).is_some() {
                return journal.read(id).map(Some);
            }
        }
        Ok(None)
    });
    match found {
        Ok(Some(data)) => {
            let mut out = io::stdout().lock();
            if out.write_all(&data).and_then(|()| out.flush()).is_err() {
                return std::process::ExitCode::from(1);
            }
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("{id}: no such message in the spool");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{}: {e}", root.display());
            std::process::ExitCode::from(1)
        }
    }
}

/// Where sessions stream message data past `limits.message_buffer` while
/// it arrives (`<spool_dir>/staging/`, emptied at every start: nothing in
/// it was ever acknowledged), and the in-flight budget they account
/// against.
pub struct SpillArea {
    pub dir: PathBuf,
    pub budget: Arc<crate::model::DataBudget>,
    counter: std::sync::atomic::AtomicU64,
}

impl SpillArea {
    /// Creates (or empties) `root/staging`.
    pub fn open(root: &Path) -> io::Result<SpillArea> {
        let dir = root.join("staging");
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(&dir)?,
            Err(e) => return Err(e),
        }
        Ok(SpillArea {
            dir,
            budget: Arc::default(),
            counter: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A new staging file for one message's data.
    pub fn create(&self) -> Spill {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        let (file, failed) = match file {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        Spill {
            path,
            file,
            len: 0,
            crc: 0,
            failed,
            adopted: false,
        }
    }
}

/// One message's data past its in-memory part, in the order it arrived.
/// Removed when dropped unless a journal adopted it.
pub struct Spill {
    path: PathBuf,
    file: Option<std::fs::File>,
    len: u64,
    crc: u32,
    /// The first write error: the message is refused at its end.
    failed: Option<io::Error>,
    adopted: bool,
}

impl Spill {
    /// Appends data (a write error is kept for the end of the message).
    pub fn append(&mut self, data: &[u8]) {
        use std::io::Write as _;
        if self.failed.is_some() {
            return;
        }
        if let Some(f) = &mut self.file {
            match f.write_all(data) {
                Ok(()) => {
                    self.len += data.len() as u64;
                    self.crc = crc32c::crc32c_append(self.crc, data);
                }
                Err(e) => self.failed = Some(e),
            }
        }
    }

    pub fn failure(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }

    /// Appends the last part, syncs, and hands the file to the caller
    /// (its path, length and CRC-32C); it is no longer removed on drop.
    fn finish(&mut self, tail: &[u8]) -> io::Result<(PathBuf, u64, u32)> {
        self.append(tail);
        if let Some(e) = &self.failed {
            return Err(same_error(e));
        }
        let f = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("staging file not open"))?;
        f.sync_all()?;
        Ok((self.path.clone(), self.len, self.crc))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        if !self.adopted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
