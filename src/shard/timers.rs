//! Connection deadlines: a min-heap of (deadline, slot). Entries are not
//! removed when a deadline moves; a connection arms a new entry only when
//! its deadline comes earlier than the armed one, and a popped entry
//! re-checks the connection's real deadline. Activity (which pushes the
//! deadline later) therefore costs no heap operation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, slot: usize) {
        self.heap.push(Reverse((at, slot)));
    }

    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next slot whose armed time has come.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, slot))| slot),
            _ => None,
        }
    }
}
