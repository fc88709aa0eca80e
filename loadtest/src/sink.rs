//! `sealgate-load sink`: an SMTP server that accepts every message (any
//! recipient, STARTTLS when given a certificate) and discards it or dumps
//! it to a directory. It runs on sealgate's own shards and session, with a
//! store that does not fsync: the downstream of relay benchmarks and tests.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sealgate::policy::{AcceptDomains, Limits};
use sealgate::shard::Shards;
use sealgate::snapshot::Snapshot;
use sealgate::spool::{Incoming, Store, Stored};
use sealgate::state::Shared;

/// Counts messages; writes them to `dump` when set (not fsynced).
/// When this sink process started (microseconds since the epoch).
static RUN: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
});

struct SinkStore {
    dump: Option<PathBuf>,
    shard: usize,
    count: Arc<AtomicU64>,
}

impl Store for SinkStore {
    fn store(&mut self, batch: &mut [Incoming<'_>]) -> Vec<io::Result<Stored>> {
        batch
            .iter()
            .map(|m| {
                self.accept(&m.message.envelope, &m.message.data)
                    .map(|id| Stored { id, entry: None })
            })
            .collect()
    }
}

impl SinkStore {
    fn accept(&self, env: &sealgate::smtp::server::Envelope, data: &[u8]) -> io::Result<String> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        // The sink's start (microseconds) and process make each run's ids
        // its own: a restarted sink never writes over an earlier dump.
        let id = format!("SINK{:X}P{}S{}N{n}", *RUN, std::process::id(), self.shard);
        if let Some(dir) = &self.dump {
            let mut text = format!("X-Sink-From: <{}>\r\n", env.from);
            for r in &env.recipients {
                text.push_str(&format!("X-Sink-Rcpt: <{}>\r\n", r.address));
            }
            if let Some(t) = &env.tls {
                text.push_str(&format!("X-Sink-TLS: {} {}\r\n", t.version, t.cipher));
            }
            let mut bytes = text.into_bytes();
            bytes.extend_from_slice(data);
            // Never over an existing file.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(format!("{id}.eml")))?;
            std::io::Write::write_all(&mut f, &bytes)?;
        }
        Ok(id)
    }
}

pub struct SinkOptions {
    pub listen: SocketAddr,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub dump: Option<PathBuf>,
    pub shards: usize,
}

/// A running sink; stop it with [`Sink::stop`].
pub struct Sink {
    shards: Shards,
    pub received: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

impl Sink {
    pub fn start(o: &SinkOptions) -> Result<Sink, String> {
        let tls = match &o.cert {
            None => None,
            Some((cert, key)) => {
                let ck = sealgate::tls::load_cert_and_key(cert, key).map_err(|e| e.to_string())?;
                Some(sealgate::tls::server_config(ck, cert).map_err(|e| e.to_string())?)
            }
        };
        if let Some(dir) = &o.dump {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let snapshot = Snapshot {
            tls,
            relay_everyone: true,
            ..Snapshot::plain(
                "sink.sealgate-load".into(),
                AcceptDomains::default(),
                Limits {
                    message_size: 100_000_000,
                    ..Limits::default()
                },
            )
        };
        let shards = o.shards.max(1);
        let received = Arc::new(AtomicU64::new(0));
        // Nothing is synced: two writers keep up with any load.
        let stores: Vec<sealgate::shard::writers::WriterStore> = (0..2)
            .map(|shard| {
                (
                    Box::new(SinkStore {
                        dump: o.dump.clone(),
                        shard,
                        count: received.clone(),
                    }) as Box<dyn Store>,
                    None,
                )
            })
            .collect();
        let shared = Shared::new(snapshot, shards);
        let shards = Shards::start(&[o.listen], false, stores, None, None, shared.clone())
            .map_err(|e| e.to_string())?;
        Ok(Sink {
            shards,
            received,
            shared,
        })
    }

    /// Connections accepted so far (how many a relay under test opened).
    pub fn connections(&self) -> u64 {
        self.shared
            .stats
            .iter()
            .map(|s| s.accepted.load(Ordering::Relaxed))
            .sum()
    }

    pub fn stop(self) -> u64 {
        self.shards.stop();
        self.received.load(Ordering::Relaxed)
    }
}

/// Reads back a dumped message (tests).
pub fn read_dump(dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        out.push(fs::read(e?.path())?);
    }
    Ok(out)
}
