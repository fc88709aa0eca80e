//! Space: tail segments freed when no live message is left in them, and
//! long-lived messages copied forward so a nearly empty tail can go
//! (docs/spool.md "Space").

use super::*;

impl<S: Storage> Journal<S> {
    /// A tail segment kept by few live octets (at most half a segment)
    /// while three or more are in use: copy its messages to the head.
    pub(super) fn copy_forward(&mut self) -> io::Result<()> {
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

    /// Frees tail segments without live messages: wipes their header
    /// (synced), so recovery can never read their records again.
    pub(super) fn reclaim(&mut self) -> io::Result<()> {
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
}
