//! One append-only journal (docs/spool.md "Journal"): fixed-size segment
//! files holding records, an in-memory index of the live messages, group
//! commit, segment reuse and copy-forward.
//!
//! Records are staged with [`Journal::add_message`] and
//! [`Journal::add_change`], then [`Journal::commit`] writes everything
//! staged with one vectored write (two when the batch crosses into a new
//! segment) followed by one `fdatasync` per segment written. Only after
//! `commit` returns `Ok` may a message be acknowledged.
//!
//! Segments are used oldest first and freed only from the oldest end (the
//! tail): records about a message always come after the message, so
//! freeing the tail never leaves a state or DONE record pointing at a
//! message that recovery would still find. A tail segment kept alive by a
//! few long-lived messages is freed by copying them forward to the head
//! with their current state. A freed segment's header is wiped (and
//! synced) at once, and it is reused with a new generation: records left
//! from its earlier use carry the old generation and read as the end.
//!
//! Here: the index, staging and group commit; `recovery` opening and
//! replaying; `space` freeing and copying forward; `read` reading a
//! message record back.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};

use super::record::{self, Body, Found, Kind, Meta, Record, END_MARKER, SEGMENT_HEADER};
use super::storage::Storage;
use super::{RcptState, RcptStatus};

mod read;
mod recovery;
mod space;

pub use read::{body_of, read_body};

/// Sizes of a journal.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Octets per segment file.
    pub segment_size: u64,
    /// A message record larger than this keeps its octets in a file of
    /// its own.
    pub large_message: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_size: 16 << 20,
            large_message: 1 << 20,
        }
    }
}

/// What the journals did, for the metrics endpoint (shared by all).
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages made durable.
    pub stored: std::sync::atomic::AtomicU64,
    /// Batches written (one vectored write each, two across segments).
    pub writes: std::sync::atomic::AtomicU64,
    /// `fdatasync` calls on segments (headers of new segments included).
    pub syncs: std::sync::atomic::AtomicU64,
    /// Long-lived messages copied forward.
    pub copied: std::sync::atomic::AtomicU64,
    /// Segments freed for reuse.
    pub freed: std::sync::atomic::AtomicU64,
}

fn count(c: &std::sync::atomic::AtomicU64, n: u64) {
    c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// Where a message record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub slot: u32,
    pub offset: u64,
    pub len: u32,
}

/// The locations of a journal's live messages, shared with readers on
/// other threads (delivery).
pub type Locations = Arc<Mutex<HashMap<String, Location>>>;

/// A live message, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub location: Location,
    pub meta: Meta,
    pub hold: bool,
    pub rcpts: Vec<RcptState>,
    /// The large-message file, when the octets are not in the record.
    pub external: Option<String>,
    /// Octets of the message (Received header included).
    pub size: u64,
}

/// A delivery-state change for a live message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Recipient { index: u32, state: Box<RcptState> },
    Hold,
    Release,
    Done,
}

/// What recovery found.
#[derive(Debug, Default, Clone)]
pub struct Recovered {
    pub segments: usize,
    pub records: usize,
    /// Where the last segment's records ended in a torn record, and why.
    pub cut: Option<(u32, u64, &'static str)>,
    /// Torn or undecodable records before the last segment's end: damage
    /// (a lying disk, a bad block, an edit), not a crash.
    pub damaged: Vec<(u32, u64, &'static str)>,
    /// Segment files whose header is not one (never completed, or wiped
    /// when freed): reused.
    pub unused: usize,
    /// Large-message files no live message refers to, removed.
    pub orphans_removed: usize,
}

struct Segment {
    generation: u64,
    /// Live messages whose MESSAGE record is here, and their octets.
    live: usize,
    live_bytes: u64,
}

/// A message staged in the current batch, indexed once it is durable.
struct StagedMessage {
    id: String,
    live: Live,
    /// A copy forward replaces the entry at this location.
    moved_from: Option<Location>,
}

pub struct Journal<S: Storage> {
    storage: S,
    options: Options,
    segments: HashMap<u32, Segment>,
    /// Segments in use, oldest first; the last is the head.
    order: VecDeque<u32>,
    free: Vec<u32>,
    next_slot: u32,
    next_generation: u64,
    /// Write position in the head (records written and synced end here).
    pos: u64,
    index: HashMap<String, Live>,
    locations: Locations,
    /// Records staged for the head, from `pos`.
    batch: Vec<u8>,
    staged: Vec<StagedMessage>,
    /// Segments written since the last sync.
    dirty: Vec<u32>,
    /// Where this batch's writes began, per segment (to cut them off
    /// again when the batch fails).
    batch_starts: Vec<(u32, u64)>,
    large_written: bool,
    /// Large files of messages that are done, removed after the next
    /// sync.
    remove_after_sync: Vec<String>,
    /// Changes that could not be staged (a failed rotation): staged again
    /// at the next commit.
    retry: Vec<(String, Change)>,
    stats: Arc<Stats>,
    /// Start on a fresh segment before writing (after a torn end or a
    /// failed sync: never write over bytes whose fate is unknown).
    rotate_first: bool,
}

fn live_bytes(l: &Live) -> u64 {
    u64::from(l.location.len)
}

impl<S: Storage> Journal<S> {
    fn lock_locations(&self) -> std::sync::MutexGuard<'_, HashMap<String, Location>> {
        self.locations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts into `stats` from now on.
    pub fn set_stats(&mut self, stats: Arc<Stats>) {
        self.stats = stats;
    }

    pub fn locations(&self) -> Locations {
        self.locations.clone()
    }

    /// The live messages (after recovery: what to deliver).
    pub fn live(&self) -> impl Iterator<Item = (&String, &Live)> {
        self.index.iter()
    }

    pub fn get(&self, id: &str) -> Option<&Live> {
        self.index.get(id)
    }

    /// Segments in use and free (for reports and tests).
    pub fn segment_counts(&self) -> (usize, usize) {
        (self.order.len(), self.free.len())
    }

    fn head_generation(&self) -> Option<u64> {
        self.order
            .back()
            .and_then(|s| self.segments.get(s))
            .map(|s| s.generation)
    }

    /// Stages one record; `encode` writes it for a generation. Returns
    /// where it will lie.
    fn stage(&mut self, encode: &dyn Fn(&mut Vec<u8>, u64)) -> io::Result<Location> {
        if self.order.is_empty() || self.rotate_first {
            self.rotate()?;
        }
        // Encoded straight into the batch; taken back out if it does not
        // fit the head, to go into a new one.
        let mut rotated = false;
        loop {
            let start = self.batch.len();
            let generation = self.head_generation().unwrap_or(0);
            encode(&mut self.batch, generation);
            let len = self.batch.len() - start;
            let end = self.pos + (self.batch.len() + END_MARKER.len()) as u64;
            if end <= self.options.segment_size {
                return Ok(Location {
                    slot: *self.order.back().unwrap_or(&0),
                    offset: self.pos + start as u64,
                    len: len as u32,
                });
            }
            self.batch.truncate(start);
            if rotated
                || len as u64 + (SEGMENT_HEADER + END_MARKER.len()) as u64
                    > self.options.segment_size
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a journal record of {len} octets does not fit a segment of {}",
                        self.options.segment_size
                    ),
                ));
            }
            self.write_batch()?;
            self.rotate()?;
            rotated = true;
        }
    }

    /// Writes the staged records (and an end marker) at `pos` in the head.
    fn write_batch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let slot = *self.order.back().unwrap_or(&0);
        if !self.batch_starts.iter().any(|(s, _)| *s == slot) {
            self.batch_starts.push((slot, self.pos));
        }
        self.storage
            .write_at(slot, self.pos, &[&self.batch, &END_MARKER])?;
        count(&self.stats.writes, 1);
        self.pos += self.batch.len() as u64;
        self.batch.clear();
        if !self.dirty.contains(&slot) {
            self.dirty.push(slot);
        }
        Ok(())
    }

    /// Starts a new head: a free segment with a new generation (its header
    /// synced before any record goes in), or a new zero-filled file.
    fn rotate(&mut self) -> io::Result<()> {
        let generation = self.next_generation;
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.next_slot;
                self.storage.create(slot, self.options.segment_size)?;
                self.next_slot += 1;
                slot
            }
        };
        let header = record::segment_header(generation);
        let written = self
            .storage
            .write_at(slot, 0, &[&header, &END_MARKER])
            .and_then(|()| self.storage.sync(slot));
        count(&self.stats.syncs, 1);
        if let Err(e) = written {
            self.free.push(slot);
            return Err(e);
        }
        self.next_generation += 1;
        self.segments.insert(
            slot,
            Segment {
                generation,
                live: 0,
                live_bytes: 0,
            },
        );
        self.order.push_back(slot);
        self.pos = SEGMENT_HEADER as u64;
        self.rotate_first = false;
        Ok(())
    }

    /// Stages a new message. `prefix` (the Received header) and `data` are
    /// stored as one. Its id is indexed once [`Journal::commit`] succeeds.
    pub fn add_message(
        &mut self,
        id: &str,
        meta: &Meta,
        recipients: &[crate::model::Recipient],
        prefix: &[u8],
        data: &[u8],
    ) -> io::Result<()> {
        let rcpts: Vec<RcptState> = recipients.iter().map(RcptState::fresh).collect();
        self.add(id, meta, rcpts, false, prefix, data)
    }

    /// Stages a message with its recipients' states and hold as they are
    /// (an import from the old spool format).
    pub fn add_stored(
        &mut self,
        id: &str,
        meta: &Meta,
        rcpts: Vec<RcptState>,
        hold: bool,
        message: &[u8],
    ) -> io::Result<()> {
        self.add(id, meta, rcpts, hold, b"", message)
    }

    fn add(
        &mut self,
        id: &str,
        meta: &Meta,
        rcpts: Vec<RcptState>,
        hold: bool,
        prefix: &[u8],
        data: &[u8],
    ) -> io::Result<()> {
        let size = (prefix.len() + data.len()) as u64;
        let mut external = None;
        if prefix.len() + data.len() > self.options.large_message {
            let name = id.to_string();
            self.storage.write_large(&name, &[data])?;
            self.large_written = true;
            external = Some((name, data.len() as u64, crc32c::crc32c(data)));
        }
        self.stage_message(id, meta, rcpts, hold, prefix, data, external, size)
    }

    /// Stages a message whose data a session streamed to `path` (the
    /// spool's staging area, same filesystem, synced): the file is moved
    /// into `large/`, its name made durable with the batch.
    #[allow(clippy::too_many_arguments)]
    pub fn add_adopted(
        &mut self,
        id: &str,
        meta: &Meta,
        recipients: &[crate::model::Recipient],
        prefix: &[u8],
        path: &std::path::Path,
        len: u64,
        crc: u32,
    ) -> io::Result<()> {
        let rcpts: Vec<RcptState> = recipients.iter().map(RcptState::fresh).collect();
        self.storage.adopt_large(id, path)?;
        self.large_written = true;
        let size = prefix.len() as u64 + len;
        let external = Some((id.to_string(), len, crc));
        self.stage_message(id, meta, rcpts, false, prefix, b"", external, size)
    }

    #[allow(clippy::too_many_arguments)]
    fn stage_message(
        &mut self,
        id: &str,
        meta: &Meta,
        rcpts: Vec<RcptState>,
        hold: bool,
        prefix: &[u8],
        data: &[u8],
        external: Option<(String, u64, u32)>,
        size: u64,
    ) -> io::Result<()> {
        let body = match &external {
            Some((name, len, crc)) => Body::External {
                prefix,
                name: name.clone(),
                len: *len,
                crc: *crc,
            },
            None => Body::Inline(data),
        };
        let inline_prefix: &[u8] = if external.is_some() { b"" } else { prefix };
        let staged = self
            .stage(&|out, g| record::message(out, g, id, meta, hold, &rcpts, &body, inline_prefix));
        let location = match staged {
            Ok(l) => l,
            Err(e) => {
                if let Some((name, _, _)) = &external {
                    let _ = self.storage.remove_large(name);
                }
                return Err(e);
            }
        };
        self.staged.push(StagedMessage {
            id: id.to_string(),
            live: Live {
                location,
                meta: meta.clone(),
                hold,
                rcpts,
                external: external.map(|(n, _, _)| n),
                size,
            },
            moved_from: None,
        });
        Ok(())
    }

    /// Stages a delivery-state change of a live message and applies it to
    /// the index at once (the index is the truth a copy forward writes).
    /// Unknown ids are ignored (a message already done).
    pub fn add_change(&mut self, id: &str, change: Change) -> io::Result<()> {
        if !self.index.contains_key(id) {
            return Ok(());
        }
        let staged = match &change {
            Change::Recipient { index, state } => {
                self.stage(&|out, g| record::recipient(out, g, id, *index, state))
            }
            Change::Hold => self.stage(&|out, g| record::mark(out, g, id, Kind::Hold)),
            Change::Release => self.stage(&|out, g| record::mark(out, g, id, Kind::Release)),
            Change::Done => self.stage(&|out, g| record::mark(out, g, id, Kind::Done)),
        };
        if let Err(e) = staged {
            // Not lost: staged again at the next commit.
            self.retry.push((id.to_string(), change));
            return Err(e);
        }
        let Some(live) = self.index.get_mut(id) else {
            return Ok(());
        };
        match change {
            Change::Recipient { index, state } => {
                if let Some(r) = live.rcpts.get_mut(index as usize) {
                    *r = RcptState {
                        rcpt: std::mem::take(&mut r.rcpt),
                        dsn: std::mem::take(&mut r.dsn),
                        ..*state
                    };
                }
            }
            Change::Hold => live.hold = true,
            Change::Release => live.hold = false,
            Change::Done => {
                if let Some(live) = self.index.remove(id) {
                    if let Some(s) = self.segments.get_mut(&live.location.slot) {
                        s.live = s.live.saturating_sub(1);
                        s.live_bytes = s.live_bytes.saturating_sub(live_bytes(&live));
                    }
                    if let Some(name) = live.external {
                        self.remove_after_sync.push(name);
                    }
                }
                self.lock_locations().remove(id);
            }
        }
        Ok(())
    }

    /// Whether anything waits for a commit.
    pub fn pending(&self) -> bool {
        !self.batch.is_empty()
            || !self.dirty.is_empty()
            || !self.staged.is_empty()
            || !self.retry.is_empty()
    }

    /// Writes everything staged, syncs it, and only then indexes the new
    /// messages; returns their ids. On an error nothing staged is
    /// indexed (every message of the batch must be refused), and the next
    /// commit starts a fresh segment.
    pub fn commit(&mut self) -> io::Result<Vec<String>> {
        let mut result = Ok(());
        for (id, change) in std::mem::take(&mut self.retry) {
            if let Err(e) = self.add_change(&id, change) {
                result = Err(e);
            }
        }
        let result = result
            .and_then(|()| self.copy_forward())
            .and_then(|()| self.write_and_sync());
        match result {
            Ok(()) => {}
            Err(e) => {
                self.abandon();
                return Err(e);
            }
        }
        let mut stored = Vec::new();
        {
            let staged = std::mem::take(&mut self.staged);
            let mut locs = self.lock_locations();
            for s in &staged {
                locs.insert(s.id.clone(), s.live.location);
            }
            drop(locs);
            let moved = staged.iter().filter(|s| s.moved_from.is_some()).count();
            count(&self.stats.copied, moved as u64);
            count(&self.stats.stored, (staged.len() - moved) as u64);
            if moved > 0 {
                tracing::info!(
                    "spool: {moved} long-lived message(s) copied forward, freeing their segment"
                );
            }
            for s in staged {
                if let Some(from) = s.moved_from {
                    if let Some(seg) = self.segments.get_mut(&from.slot) {
                        seg.live = seg.live.saturating_sub(1);
                        seg.live_bytes = seg.live_bytes.saturating_sub(u64::from(from.len));
                    }
                } else {
                    stored.push(s.id.clone());
                }
                if let Some(seg) = self.segments.get_mut(&s.live.location.slot) {
                    seg.live += 1;
                    seg.live_bytes += live_bytes(&s.live);
                }
                self.index.insert(s.id, s.live);
            }
        }
        self.batch_starts.clear();
        for name in std::mem::take(&mut self.remove_after_sync) {
            let _ = self.storage.remove_large(&name);
        }
        self.reclaim()?;
        Ok(stored)
    }

    fn write_and_sync(&mut self) -> io::Result<()> {
        self.write_batch()?;
        if self.large_written {
            self.storage.sync_large_dir()?;
        }
        for slot in std::mem::take(&mut self.dirty) {
            count(&self.stats.syncs, 1);
            if let Err(e) = self.storage.sync(slot) {
                self.dirty.push(slot);
                return Err(e);
            }
        }
        self.large_written = false;
        Ok(())
    }

    /// After a failed write or sync: forget the staged messages (their
    /// sessions are told we do not have them), try to cut them off on
    /// disk too (an end marker where the batch began, synced: a message
    /// refused must not come back after a crash, to be delivered as well
    /// as resent), and write the next batch into a fresh segment.
    fn abandon(&mut self) {
        for s in std::mem::take(&mut self.staged) {
            // A copy forward shares the live original's file.
            if let (Some(name), None) = (s.live.external, s.moved_from) {
                let _ = self.storage.remove_large(&name);
            }
        }
        for (slot, offset) in std::mem::take(&mut self.batch_starts) {
            if self.storage.write_at(slot, offset, &[&END_MARKER]).is_ok() {
                let _ = self.storage.sync(slot);
            }
        }
        self.batch.clear();
        self.dirty.clear();
        // DONE records of this batch may be lost: keep those files (a
        // message that comes back is delivered again, never empty).
        self.remove_after_sync.clear();
        self.large_written = false;
        self.rotate_first = true;
    }

    /// The stored octets of a live message (Received header and data),
    /// checked.
    pub fn read(&mut self, id: &str) -> io::Result<Vec<u8>> {
        let live =
            self.index.get(id).cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{id}: not live"))
            })?;
        let generation = self
            .segments
            .get(&live.location.slot)
            .map_or(0, |s| s.generation);
        read_body(&mut self.storage, id, live.location, generation)
    }

    pub fn storage(&mut self) -> &mut S {
        &mut self.storage
    }
}

impl RcptState {
    /// A recipient as it arrives: pending, never tried.
    pub fn fresh(rcpt: &crate::model::Recipient) -> RcptState {
        RcptState {
            rcpt: rcpt.address.clone(),
            dsn: rcpt.dsn.clone(),
            status: RcptStatus::Pending,
            attempts: 0,
            next_due: 0,
            last: None,
            delay_notified: false,
        }
    }
}

#[cfg(test)]
mod tests;
