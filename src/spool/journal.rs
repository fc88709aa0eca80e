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

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};

use super::record::{self, Body, Found, Kind, Meta, Record, END_MARKER, SEGMENT_HEADER};
use super::storage::Storage;
use super::{RcptState, RcptStatus};

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
    Recipient { index: u32, state: RcptState },
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
    /// Opens a journal: reads every segment in generation order and
    /// rebuilds the index. Nothing is written until the first commit.
    pub fn open(mut storage: S, options: Options) -> io::Result<(Journal<S>, Recovered)> {
        let mut report = Recovered::default();
        let mut found: Vec<(u64, u32)> = Vec::new();
        let mut free = Vec::new();
        let slots = storage.slots()?;
        let next_slot = slots.iter().max().map_or(0, |m| m + 1);
        for slot in slots {
            let mut h = [0u8; SEGMENT_HEADER];
            let n = storage.read_at(slot, 0, &mut h)?;
            match record::parse_segment_header(&h[..n]) {
                Some(g) => found.push((g, slot)),
                None => {
                    report.unused += 1;
                    free.push(slot);
                }
            }
        }
        found.sort_unstable();
        let mut j = Journal {
            storage,
            options,
            segments: HashMap::new(),
            order: VecDeque::new(),
            free,
            next_slot,
            next_generation: found.last().map_or(1, |(g, _)| g + 1),
            pos: SEGMENT_HEADER as u64,
            index: HashMap::new(),
            locations: Arc::new(Mutex::new(HashMap::new())),
            batch: Vec::new(),
            staged: Vec::new(),
            dirty: Vec::new(),
            batch_starts: Vec::new(),
            large_written: false,
            remove_after_sync: Vec::new(),
            retry: Vec::new(),
            stats: Arc::default(),
            rotate_first: false,
        };
        let last = found.len().saturating_sub(1);
        let mut buf = Vec::new();
        for (i, (generation, slot)) in found.iter().copied().enumerate() {
            let size = j.storage.size(slot)?;
            buf.resize(size as usize, 0);
            let n = j.storage.read_at(slot, 0, &mut buf)?;
            buf.truncate(n);
            j.segments.insert(
                slot,
                Segment {
                    generation,
                    live: 0,
                    live_bytes: 0,
                },
            );
            j.order.push_back(slot);
            report.segments += 1;
            let mut at = SEGMENT_HEADER;
            loop {
                match record::decode(&buf[at.min(buf.len())..], generation) {
                    Found::Record { id, record, len } => {
                        report.records += 1;
                        let location = Location {
                            slot,
                            offset: at as u64,
                            len: len as u32,
                        };
                        j.replay(id, record, location);
                        at += len;
                    }
                    Found::End => break,
                    Found::Torn(why) => {
                        // A whole record of this generation right after it
                        // means this one was damaged in place, not torn by
                        // a crash: say so, and read on.
                        let len = buf
                            .get(at..at + 4)
                            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                        if len >= record::RECORD_HEADER
                            && at + len < buf.len()
                            && matches!(
                                record::decode(&buf[at + len..], generation),
                                Found::Record { .. }
                            )
                        {
                            report.damaged.push((slot, at as u64, why));
                            at += len;
                            continue;
                        }
                        if i == last {
                            report.cut = Some((slot, at as u64, why));
                            j.rotate_first = true;
                        } else {
                            report.damaged.push((slot, at as u64, why));
                        }
                        break;
                    }
                }
            }
            if i == last {
                j.pos = at as u64;
            }
        }
        for live in j.index.values() {
            if let Some(s) = j.segments.get_mut(&live.location.slot) {
                s.live += 1;
                s.live_bytes += live_bytes(live);
            }
        }
        {
            let mut locs = j.lock_locations();
            for (id, live) in &j.index {
                locs.insert(id.clone(), live.location);
            }
        }
        Ok((j, report))
    }

    /// Removes large-message files no live message refers to (finished,
    /// or never acknowledged); returns how many. The gateway calls it at
    /// start; an offline scan must not (a running writer may have just
    /// written one).
    pub fn remove_orphans(&mut self) -> io::Result<usize> {
        let referenced: std::collections::HashSet<String> = self
            .index
            .values()
            .filter_map(|l| l.external.clone())
            .collect();
        let orphans: Vec<String> = self
            .storage
            .large_names()?
            .into_iter()
            .filter(|n| !referenced.contains(n))
            .collect();
        for n in &orphans {
            self.storage.remove_large(n)?;
        }
        Ok(orphans.len())
    }

    fn lock_locations(&self) -> std::sync::MutexGuard<'_, HashMap<String, Location>> {
        self.locations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one recovered record to the index.
    fn replay(&mut self, id: &str, record: Record<'_>, location: Location) {
        match record {
            Record::Message {
                meta,
                hold,
                rcpts,
                body,
            } => {
                let (external, size) = match body {
                    Body::Inline(d) => (None, d.len() as u64),
                    Body::External {
                        name, len, prefix, ..
                    } => (Some(name), prefix.len() as u64 + len),
                };
                self.index.insert(
                    id.to_string(),
                    Live {
                        location,
                        meta,
                        hold,
                        rcpts,
                        external,
                        size,
                    },
                );
            }
            Record::Recipient { index, state } => {
                if let Some(r) = self
                    .index
                    .get_mut(id)
                    .and_then(|l| l.rcpts.get_mut(index as usize))
                {
                    *r = RcptState {
                        rcpt: std::mem::take(&mut r.rcpt),
                        ..state
                    };
                }
            }
            Record::Hold | Record::Release => {
                if let Some(l) = self.index.get_mut(id) {
                    l.hold = matches!(record, Record::Hold);
                }
            }
            Record::Done => {
                self.index.remove(id);
            }
        }
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
        recipients: &[String],
        prefix: &[u8],
        data: &[u8],
    ) -> io::Result<()> {
        let rcpts: Vec<RcptState> = recipients.iter().map(|r| RcptState::fresh(r)).collect();
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
        recipients: &[String],
        prefix: &[u8],
        path: &std::path::Path,
        len: u64,
        crc: u32,
    ) -> io::Result<()> {
        let rcpts: Vec<RcptState> = recipients.iter().map(|r| RcptState::fresh(r)).collect();
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
                        ..state
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

    /// A tail segment kept by few live octets (at most half a segment)
    /// while three or more are in use: copy its messages to the head.
    fn copy_forward(&mut self) -> io::Result<()> {
        if self.order.len() < 3 {
            return Ok(());
        }
        let Some(tail) = self.order.front().copied() else {
            return Ok(());
        };
        let Some(seg) = self.segments.get(&tail) else {
            return Ok(());
        };
        if seg.live == 0 || seg.live_bytes > self.options.segment_size / 2 {
            return Ok(());
        }
        if self.staged.iter().any(|s| s.moved_from.is_some()) {
            return Ok(());
        }
        let ids: Vec<String> = self
            .index
            .iter()
            .filter(|(_, l)| l.location.slot == tail)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(live) = self.index.get(&id).cloned() else {
                continue;
            };
            let mut buf = vec![0u8; live.location.len as usize];
            self.storage
                .read_at(live.location.slot, live.location.offset, &mut buf)?;
            let generation = self.segments.get(&tail).map_or(0, |s| s.generation);
            let Found::Record {
                record: Record::Message { body, .. },
                ..
            } = record::decode(&buf, generation)
            else {
                return Err(io::Error::other(format!(
                    "{id}: journal record unreadable at {:?}",
                    live.location
                )));
            };
            let body = body.clone();
            let location = self.stage(&|out, g| {
                record::message(out, g, &id, &live.meta, live.hold, &live.rcpts, &body, b"")
            })?;
            self.staged.push(StagedMessage {
                id: id.clone(),
                live: Live {
                    location,
                    ..live.clone()
                },
                moved_from: Some(live.location),
            });
        }
        Ok(())
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

    /// Frees tail segments without live messages: wipes their header
    /// (synced), so recovery can never read their records again.
    fn reclaim(&mut self) -> io::Result<()> {
        while self.order.len() > 1 {
            let Some(tail) = self.order.front().copied() else {
                break;
            };
            if self.segments.get(&tail).is_some_and(|s| s.live > 0) {
                break;
            }
            self.storage.write_at(tail, 0, &[&[0u8; SEGMENT_HEADER]])?;
            self.storage.sync(tail)?;
            self.order.pop_front();
            self.segments.remove(&tail);
            self.free.push(tail);
            count(&self.stats.freed, 1);
        }
        Ok(())
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

/// Reads and checks the message record at `location` and returns its
/// octets (from the large file when external).
pub fn read_body<S: Storage>(
    storage: &mut S,
    id: &str,
    location: Location,
    generation: u64,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; location.len as usize];
    let n = storage.read_at(location.slot, location.offset, &mut buf)?;
    buf.truncate(n);
    body_of(storage, id, &buf, Some(generation))
}

/// The octets of the message record in `buf` (`generation`: the
/// segment's, or `None` to take the record's own).
pub fn body_of<S: Storage>(
    storage: &mut S,
    id: &str,
    buf: &[u8],
    generation: Option<u64>,
) -> io::Result<Vec<u8>> {
    let generation = generation.unwrap_or_else(|| {
        buf.get(8..12).map_or(0, |g| {
            u64::from(u32::from_le_bytes([g[0], g[1], g[2], g[3]]))
        })
    });
    match record::decode(buf, generation) {
        Found::Record {
            id: found,
            record: Record::Message { body, .. },
            ..
        } if found == id => match body {
            Body::Inline(d) => Ok(d.to_vec()),
            Body::External {
                prefix,
                name,
                len,
                crc,
            } => {
                let data = storage.read_large(&name)?;
                if data.len() as u64 != len || crc32c::crc32c(&data) != crc {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{id}: large message file {name} is damaged"),
                    ));
                }
                let mut all = Vec::with_capacity(prefix.len() + data.len());
                all.extend_from_slice(prefix);
                all.extend_from_slice(&data);
                Ok(all)
            }
        },
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{id}: the journal record moved or is damaged"),
        )),
    }
}

impl RcptState {
    pub fn fresh(rcpt: &str) -> RcptState {
        RcptState {
            rcpt: rcpt.to_string(),
            status: RcptStatus::Pending,
            attempts: 0,
            next_due: 0,
            last: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::storage::Sim;
    use proptest::prelude::*;

    fn meta(n: u64) -> Meta {
        Meta {
            arrived: 1_795_000_000 + n,
            from: format!("s{n}@b.test"),
            client: Some("127.0.0.1".parse().unwrap()),
            client_port: 1000,
            helo: "c.test".into(),
            tls: None,
            body_8bit: false,
        }
    }

    fn small() -> Options {
        Options {
            segment_size: 16 * 1024,
            large_message: 4 * 1024,
        }
    }

    fn body(n: usize, len: usize) -> Vec<u8> {
        let mut b = format!("Subject: {n}\r\n\r\n").into_bytes();
        b.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, len));
        b
    }

    #[test]
    fn messages_and_changes_survive_a_reopen() {
        let sim = Sim::default();
        let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
        let rcpts = vec![
            "\"a b\"@dest.test".to_string(),
            "\"x delivered 1 2\"@dest.test".to_string(),
            "plain@dest.test".to_string(),
        ];
        j.add_message("M1", &meta(1), &rcpts, b"Received: x\r\n", &body(1, 100))
            .unwrap();
        j.add_message("M2", &meta(2), &rcpts[2..], b"", &body(2, 10))
            .unwrap();
        assert_eq!(j.commit().unwrap(), vec!["M1", "M2"]);
        let mut delivered = RcptState::fresh("");
        delivered.status = RcptStatus::Delivered;
        delivered.attempts = 1;
        delivered.last = crate::spool::LastReply::from_text("dsn=2.0.0 250 ok");
        let mut deferred = RcptState::fresh("");
        deferred.attempts = 1;
        deferred.next_due = 1_795_000_600;
        deferred.last = crate::spool::LastReply::from_text("dsn=4.3.0 451 later");
        j.add_change(
            "M1",
            Change::Recipient {
                index: 0,
                state: delivered,
            },
        )
        .unwrap();
        j.add_change(
            "M1",
            Change::Recipient {
                index: 1,
                state: deferred,
            },
        )
        .unwrap();
        j.add_change("M1", Change::Hold).unwrap();
        j.add_change("M2", Change::Done).unwrap();
        j.commit().unwrap();

        let (mut j, report) = Journal::open(sim.crash(0, 0), small()).unwrap();
        assert!(report.cut.is_none() && report.damaged.is_empty());
        assert!(j.get("M2").is_none(), "done is done");
        let m1 = j.get("M1").unwrap().clone();
        assert!(m1.hold);
        // Exactly the three recipients, in order, each with its own state.
        let got: Vec<(&str, RcptStatus, u32)> = m1
            .rcpts
            .iter()
            .map(|r| (r.rcpt.as_str(), r.status, r.attempts))
            .collect();
        assert_eq!(
            got,
            vec![
                ("\"a b\"@dest.test", RcptStatus::Delivered, 1),
                ("\"x delivered 1 2\"@dest.test", RcptStatus::Pending, 1),
                ("plain@dest.test", RcptStatus::Pending, 0),
            ]
        );
        assert_eq!(m1.rcpts[1].next_due, 1_795_000_600);
        let mut want = b"Received: x\r\n".to_vec();
        want.extend(body(1, 100));
        assert_eq!(j.read("M1").unwrap(), want);
    }

    #[test]
    fn one_sync_per_batch() {
        let sim = Sim::default();
        let (mut j, _) = Journal::open(sim.clone(), Options::default()).unwrap();
        j.add_message("W", &meta(0), &["r@d".into()], b"", b"x")
            .unwrap();
        j.commit().unwrap();
        let before = sim.syncs();
        for n in 0..16 {
            j.add_message(
                &format!("B{n}"),
                &meta(n),
                &["r@d".into()],
                b"",
                &body(n as usize, 2000),
            )
            .unwrap();
        }
        j.commit().unwrap();
        assert_eq!(sim.syncs() - before, 1, "16 messages, one fdatasync");
    }

    #[test]
    fn large_messages_live_in_their_own_file_and_go_with_done() {
        let sim = Sim::default();
        let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
        let big = body(7, 10_000);
        j.add_message("BIG", &meta(7), &["r@d".into()], b"R: 1\r\n", &big)
            .unwrap();
        j.commit().unwrap();
        let mut sim2 = sim.clone();
        assert_eq!(sim2.large_names().unwrap(), vec!["BIG"]);
        let (mut j2, _) = Journal::open(sim.crash(0, 0), small()).unwrap();
        assert!(j2.read("BIG").unwrap().ends_with(&big));
        j.add_change("BIG", Change::Done).unwrap();
        j.commit().unwrap();
        assert!(sim2.large_names().unwrap().is_empty());
    }

    /// Thousands of short-lived messages and a few long-lived ones: the
    /// journal reuses its segments (copying the long-lived forward), so
    /// the number of segment files stays small, and every live message
    /// survives a reopen with its state.
    #[test]
    fn segments_are_reused_and_long_lived_messages_copied_forward() {
        let sim = Sim::default();
        let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
        let stats = Arc::new(Stats::default());
        j.set_stats(stats.clone());
        let mut keep = Vec::new();
        for n in 0..3000usize {
            let id = format!("M{n:05}");
            j.add_message(
                &id,
                &meta(n as u64),
                &["r@d".into(), "s@d".into()],
                b"",
                &body(n, 300),
            )
            .unwrap();
            j.commit().unwrap();
            if n % 500 == 0 {
                let mut st = RcptState::fresh("");
                st.status = RcptStatus::Delivered;
                st.attempts = 1;
                j.add_change(
                    &id,
                    Change::Recipient {
                        index: 0,
                        state: st,
                    },
                )
                .unwrap();
                keep.push(id);
            } else {
                j.add_change(&id, Change::Done).unwrap();
            }
        }
        j.commit().unwrap();
        let mut s = sim.clone();
        let files = s.slots().unwrap().len();
        assert!(
            files <= 8,
            "{files} segment files for 3000 messages of 16 KiB segments"
        );
        let (used, free) = j.segment_counts();
        assert!(used <= 4, "{used} in use, {free} free");
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            load(&stats.copied) > 0,
            "the long-lived ones were copied forward"
        );
        assert!(load(&stats.freed) > 0, "segments were freed for reuse");
        assert_eq!(load(&stats.stored), 3000);
        let (mut again, report) = Journal::open(sim.crash(0, 0), small()).unwrap();
        assert!(report.damaged.is_empty(), "{report:?}");
        let mut live: Vec<String> = again.live().map(|(id, _)| id.clone()).collect();
        live.sort();
        assert_eq!(live, keep);
        for id in &keep {
            let n: usize = id[1..].parse().unwrap();
            assert_eq!(again.read(id).unwrap(), body(n, 300));
            let l = again.get(id).unwrap();
            assert_eq!(l.rcpts[0].status, RcptStatus::Delivered);
            assert_eq!(l.rcpts[1].status, RcptStatus::Pending);
        }
    }

    #[test]
    fn a_failed_sync_refuses_the_batch_and_loses_nothing_acknowledged() {
        let sim = Sim::default();
        let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
        j.add_message("OK1", &meta(1), &["r@d".into()], b"", b"one")
            .unwrap();
        j.commit().unwrap();
        sim.fail_syncs(true);
        j.add_message("BAD", &meta(2), &["r@d".into()], b"", b"two")
            .unwrap();
        let e = j.commit().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert!(j.get("BAD").is_none());
        // Still failing: still refused.
        let again = j
            .add_message("BAD2", &meta(3), &["r@d".into()], b"", b"three")
            .and_then(|()| j.commit());
        assert!(again.is_err());
        sim.fail_syncs(false);
        j.add_message("OK2", &meta(4), &["r@d".into()], b"", b"four")
            .unwrap();
        assert_eq!(j.commit().unwrap(), vec!["OK2"]);
        for (keep, tear) in [(0, 0), (usize::MAX, 0)] {
            let (mut again, _) = Journal::open(sim.crash(keep, tear), small()).unwrap();
            let mut live: Vec<String> = again.live().map(|(id, _)| id.clone()).collect();
            live.sort();
            assert_eq!(live, vec!["OK1", "OK2"]);
            assert_eq!(again.read("OK2").unwrap(), b"four");
        }
    }

    /// A crash tears the last, unsynced write at every offset: recovery
    /// finds every message synced before it, whole, never a record of the
    /// torn batch that is not whole, and the journal goes on.
    #[test]
    fn a_write_torn_at_every_offset_never_loads_a_torn_record() {
        let sim = Sim::default();
        let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
        for n in 0..3 {
            j.add_message(
                &format!("OK{n}"),
                &meta(n),
                &["r@d".into()],
                b"",
                &body(n as usize, 700),
            )
            .unwrap();
        }
        j.commit().unwrap();
        // The next batch is written but its sync never happens.
        sim.fail_syncs(true);
        let torn: Vec<(String, Vec<u8>)> = (0..3)
            .map(|n| (format!("T{n}"), body(10 + n, 500 + 100 * n)))
            .collect();
        for (id, b) in &torn {
            j.add_message(id, &meta(9), &["r@d".into()], b"", b)
                .unwrap();
        }
        // Write it without the sync (as a crash between the two would).
        j.write_batch().unwrap();
        let written: usize = torn.iter().map(|(_, b)| b.len()).sum::<usize>() + 1000;
        for tear in 0..written {
            let crashed = sim.crash(0, tear);
            let (mut again, report) = Journal::open(crashed, small()).unwrap();
            assert!(report.damaged.is_empty(), "tear {tear}: {report:?}");
            for n in 0..3 {
                assert_eq!(
                    again.read(&format!("OK{n}")).unwrap(),
                    body(n, 700),
                    "tear {tear}"
                );
            }
            let ids: Vec<String> = again.live().map(|(id, _)| id.clone()).collect();
            for id in ids {
                if let Some((_, b)) = torn.iter().find(|(t, _)| *t == id) {
                    assert_eq!(
                        &again.read(&id).unwrap(),
                        b,
                        "tear {tear}: {id} loaded torn"
                    );
                }
            }
            // And it takes new messages after the cut.
            again
                .add_message("NEW", &meta(1), &["r@d".into()], b"", b"new")
                .unwrap();
            assert_eq!(again.commit().unwrap(), vec!["NEW"], "tear {tear}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Messages of these sizes, then a commit.
        Batch(Vec<usize>),
        /// A live message (by position) delivered (done) or deferred.
        Done(usize),
        Defer(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop::collection::vec(0usize..6000, 1..6).prop_map(Op::Batch),
            2 => any::<usize>().prop_map(Op::Done),
            1 => any::<usize>().prop_map(Op::Defer),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Whatever runs, and wherever a crash cuts the writes not yet
        /// synced (dropped, or kept in part, or torn inside one), recovery
        /// finds every acknowledged message that was not done, whole, and
        /// never a record that was torn.
        #[test]
        fn recovery_never_loses_an_acknowledged_message(
            ops in prop::collection::vec(op(), 1..40),
            keep in 0usize..8,
            tear in 0usize..4000,
            fail_at in prop::option::of(0usize..40),
        ) {
            let sim = Sim::default();
            let (mut j, _) = Journal::open(sim.clone(), small()).unwrap();
            let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
            let mut done: Vec<String> = Vec::new();
            let mut all: HashMap<String, Vec<u8>> = HashMap::new();
            let mut n = 0usize;
            for (step, op) in ops.iter().enumerate() {
                sim.fail_syncs(fail_at == Some(step));
                match op {
                    Op::Batch(sizes) => {
                        let mut ids = Vec::new();
                        for size in sizes {
                            n += 1;
                            let id = format!("M{n}");
                            let b = body(n, *size);
                            all.insert(id.clone(), b.clone());
                            if j.add_message(&id, &meta(n as u64), &["r@d".into()], b"", &b).is_ok() {
                                ids.push(id);
                            }
                        }
                        if let Ok(stored) = j.commit() {
                            for id in stored {
                                let b = all[&id].clone();
                                acked.push((id, b));
                            }
                        }
                    }
                    Op::Done(k) | Op::Defer(k) => {
                        let live: Vec<&(String, Vec<u8>)> =
                            acked.iter().filter(|(id, _)| !done.contains(id)).collect();
                        if live.is_empty() {
                            continue;
                        }
                        let id = live[k % live.len()].0.clone();
                        if matches!(op, Op::Done(_)) {
                            j.add_change(&id, Change::Done).unwrap_or(());
                            done.push(id);
                        } else {
                            let mut st = RcptState::fresh("");
                            st.attempts = 1;
                            st.next_due = 5;
                            j.add_change(&id, Change::Recipient { index: 0, state: st }).unwrap_or(());
                        }
                    }
                }
            }
            sim.fail_syncs(false);
            let (mut again, _) = Journal::open(sim.crash(keep, tear), small()).unwrap();
            for (id, b) in &acked {
                if done.contains(id) {
                    continue;
                }
                prop_assert!(again.get(id).is_some(), "{} lost", id);
                prop_assert_eq!(&again.read(id).unwrap(), b);
            }
            // Whatever else came back is whole (an unacknowledged message
            // may, an unfinished DONE may leave one live: never torn).
            let ids: Vec<String> = again.live().map(|(id, _)| id.clone()).collect();
            for id in ids {
                prop_assert_eq!(&again.read(&id).unwrap(), &all[&id]);
            }
        }
    }
}
