//! The connection slots of a shard.

use super::conn::Conn;

/// A minimal slab: connection slots reused through a free list, so a
/// token is a plain index.
#[derive(Default)]
pub(super) struct Slab {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    len: usize,
}

impl Slab {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn vacant(&self) -> usize {
        self.free.last().copied().unwrap_or(self.slots.len())
    }

    pub(super) fn insert(&mut self, idx: usize, conn: Conn) {
        if self.free.last() == Some(&idx) {
            self.free.pop();
        } else {
            debug_assert_eq!(idx, self.slots.len());
            self.slots.push(None);
        }
        self.slots[idx] = Some(conn);
        self.len += 1;
    }

    pub(super) fn get_mut(&mut self, idx: usize) -> Option<&mut Conn> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }

    pub(super) fn remove(&mut self, idx: usize) -> Option<Conn> {
        let c = self.slots.get_mut(idx)?.take()?;
        self.free.push(idx);
        self.len -= 1;
        Some(c)
    }

    /// The slots that hold a connection now.
    pub(super) fn occupied(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| self.slots[*i].is_some())
            .collect()
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = Conn> + '_ {
        self.free.clear();
        self.len = 0;
        self.slots.drain(..).flatten()
    }
}
