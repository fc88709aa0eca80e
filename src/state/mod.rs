//! What the running gateway's threads share: the policy snapshot (swapped
//! by a reload), the stop flag, each shard's counters (`stats.rs`), the
//! connection admission across shards (`admission.rs`), the reload counts
//! and the gauges and caches other threads publish. The shards write it;
//! the metrics endpoint, the status page and the control thread read it.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::snapshot::Snapshot;

pub mod admission;
pub mod stats;

pub use stats::{HandshakeFailure, ShardStats};

/// State shared by all shards and the control thread.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub stopping: AtomicBool,
    pub stats: Vec<ShardStats>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Unix seconds of the last successful reload (0: none).
    pub last_reload: AtomicU64,
    /// Written by the delivery scheduler.
    pub delivery: Arc<crate::delivery::Gauges>,
    /// Written by the spool's journals.
    pub spool: std::sync::OnceLock<Arc<crate::spool::Stats>>,
    /// Written by the resolver's DANE lookups.
    pub dane: std::sync::OnceLock<Arc<crate::dns::DaneStats>>,
    /// The resolver's MTA-STS cache and fetch counts.
    pub sts: std::sync::OnceLock<Arc<crate::dns::StsCache>>,
    /// Open inbound connections, in total and per client address.
    pub admission: admission::Admission,
    /// Where sessions stream large message data (the gateway sets it; a
    /// sink without it keeps messages in memory).
    pub spill: std::sync::OnceLock<Arc<crate::spool::SpillArea>>,
    /// Written by the ACME thread.
    pub acme: Arc<crate::acme::Stats>,
    /// Written by the fleet thread, with `[fleet]`.
    pub fleet: std::sync::OnceLock<Arc<crate::fleet::Stats>>,
}

impl Shared {
    pub fn new(snapshot: Snapshot, shards: usize) -> Arc<Shared> {
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            stopping: AtomicBool::new(false),
            stats: (0..shards).map(|_| ShardStats::default()).collect(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload: AtomicU64::new(0),
            delivery: Arc::default(),
            spool: std::sync::OnceLock::new(),
            dane: std::sync::OnceLock::new(),
            sts: std::sync::OnceLock::new(),
            admission: admission::Admission::default(),
            spill: std::sync::OnceLock::new(),
            acme: Arc::default(),
            fleet: std::sync::OnceLock::new(),
        })
    }
}
