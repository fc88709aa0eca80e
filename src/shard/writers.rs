//! Spool writers: a small pool of threads that store accepted messages,
//! so a shard never waits for a disk. A shard hands over a finished
//! message and goes on serving its other connections; the writer stores
//! it (for the spool: write, fsync, rename, fsync the directory), then
//! reports back over the shard's channel and wakes its `Poll`. Only then
//! does the session answer `250`.
//!
//! Running several fsyncs at once also lets the filesystem commit them
//! together (ext4's journal batches concurrent syncs), which is where most
//! of the message throughput comes from.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use super::Completion;
use crate::smtp::server::Message;
use crate::spool::Store;

/// One message to store for the connection at `slot` (checked against
/// `serial`, since slots are reused).
pub struct Job {
    pub shard: usize,
    pub slot: usize,
    pub serial: u64,
    pub message: Box<Message>,
    pub hostname: String,
}

/// Where a shard's completions go.
pub struct Reply {
    pub done: Sender<Completion>,
    pub waker: Arc<Waker>,
}

pub struct Writers {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Starts `threads` writers serving every shard: `stores[i]` and
    /// `replies[i]` belong to shard `i`.
    pub fn start(
        stores: Vec<Arc<dyn Store>>,
        replies: Vec<Reply>,
        threads: usize,
        stored: Option<Sender<crate::delivery::Event>>,
    ) -> io::Result<Writers> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let stores = Arc::new(stores);
        let replies = Arc::new(replies);
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let (rx, stores, replies): (Receiver<Job>, _, _) =
                (rx.clone(), stores.clone(), replies.clone());
            let stored = stored.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("spool-writer-{i}"))
                    .spawn(move || work(rx, &stores, &replies, stored.as_ref()))?,
            );
        }
        Ok(Writers {
            jobs: Some(tx),
            threads: handles,
        })
    }

    pub fn sender(&self) -> Sender<Job> {
        self.jobs.clone().expect("writers are running until stop")
    }

    /// Finishes every queued job, then stops the threads.
    pub fn stop(mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn work(
    jobs: Receiver<Job>,
    stores: &[Arc<dyn Store>],
    replies: &[Reply],
    stored: Option<&Sender<crate::delivery::Event>>,
) {
    // Ends when every sender (the shards and the pool) is gone.
    for job in jobs {
        let env = &job.message.envelope;
        let result = match stores[job.shard].accept(env, &job.hostname, &job.message.data) {
            Ok(id) => {
                tracing::info!(
                    target: "receive",
                    "{id}: client=[{}]:{}, from=<{}>, size={}, nrcpt={} (queue active)",
                    env.peer.ip, env.peer.port, env.from, job.message.data.len(), env.recipients.len()
                );
                // Hand the message to delivery once it is durable.
                if let (Some(tx), Some(path)) = (stored, stores[job.shard].path_of(&id)) {
                    let _ = tx.send(crate::delivery::Event::Queued(path));
                }
                Ok(id)
            }
            Err(e) => {
                tracing::error!(
                    target: "receive",
                    "NOQUEUE: cannot store message from [{}]:{}: {e}",
                    env.peer.ip, env.peer.port
                );
                Err(crate::smtp::server::StoreFailure::of(&e))
            }
        };
        let reply = &replies[job.shard];
        if reply
            .done
            .send(Completion::Stored {
                slot: job.slot,
                serial: job.serial,
                result,
            })
            .is_ok()
        {
            let _ = reply.waker.wake();
        }
    }
}
