//! Opening a journal: every segment read in generation order, the index
//! rebuilt, a torn end cut, damage in place skipped (docs/spool.md
//! "Recovery"); orphan large files removed.

use super::*;

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

    /// Applies one recovered record to the index.
    pub(super) fn replay(&mut self, id: &str, record: Record<'_>, location: Location) {
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
                        meta: *meta,
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
                        dsn: std::mem::take(&mut r.dsn),
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
}
