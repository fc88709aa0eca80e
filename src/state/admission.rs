//! Connection admission (§2 limits): `limits.connections` in total and
//! `limits.connections_per_ip` per client address, across all shards.
//!
//! The kernel spreads one client's connections over every shard's
//! listener, so a per-shard count could not enforce either limit. The
//! total is one atomic counter. The per-address counts live in a map cut
//! into stripes by a keyed hash, so that two shards accepting from
//! different clients almost never meet on the same stripe; a stripe is
//! held only for one map update, at accept and at close. Nothing here is
//! touched while a session runs.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const STRIPES: usize = 64;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.connections` reached.
    Total,
    /// `limits.connections_per_ip` reached for this client.
    PerIp,
}

pub struct Admission {
    total: AtomicUsize,
    per_ip: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    hasher: RandomState,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            total: AtomicUsize::new(0),
            per_ip: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Admission {
    /// Counts a new connection against the total; false (and nothing
    /// counted) when `max` connections are already open.
    pub fn admit_total(&self, max: usize) -> bool {
        let before = self.total.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn release_total(&self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    /// A connection that was admitted (and counted against `ip`, if any)
    /// has closed.
    pub fn release(&self, ip: Option<IpAddr>) {
        self.release_total();
        if let Some(ip) = ip {
            self.release_ip(ip);
        }
    }

    /// Counts a connection from `ip`; false (and nothing counted) when
    /// `max` connections from it are already open.
    pub fn admit_ip(&self, ip: IpAddr, max: usize) -> bool {
        let mut map = self.stripe(ip);
        let n = map.entry(ip).or_insert(0);
        if *n as usize >= max {
            if *n == 0 {
                map.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    pub fn release_ip(&self, ip: IpAddr) {
        let mut map = self.stripe(ip);
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }

    /// Connections open now (for tests and metrics).
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections open now from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.stripe(ip).get(&ip).copied().unwrap_or(0)
    }

    fn stripe(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let i = (self.hasher.hash_one(ip) as usize) % STRIPES;
        // A panic while holding a stripe cannot leave a count half-written
        // (each update is one statement), so a poisoned stripe is usable.
        self.per_ip[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limit_counts_each_address_alone() {
        let a = Admission::default();
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "::1".parse().unwrap());
        assert!(a.admit_ip(x, 2));
        assert!(a.admit_ip(x, 2));
        assert!(!a.admit_ip(x, 2));
        assert!(a.admit_ip(y, 2));
        a.release_ip(x);
        assert!(a.admit_ip(x, 2));
        assert_eq!(a.open_from(x), 2);
        a.release_ip(x);
        a.release_ip(x);
        a.release_ip(y);
        assert_eq!(a.open_from(x), 0);
        assert!(a.per_ip.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    #[test]
    fn total_limit_refuses_without_counting() {
        let a = Admission::default();
        assert!(a.admit_total(2));
        assert!(a.admit_total(2));
        assert!(!a.admit_total(2));
        assert_eq!(a.open(), 2);
        a.release_total();
        assert!(a.admit_total(2));
    }
}
