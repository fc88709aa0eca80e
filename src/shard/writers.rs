//! Spool writers: one thread per store (for the gateway, per journal), so
//! a shard never waits for a disk. A shard hands over a finished message
//! and goes on serving its other connections. A writer takes every
//! message that arrived while its previous sync ran (group commit: no
//! artificial delay, the batch is whatever waited), stores them with one
//! write and one sync, then reports back over each shard's channel and
//! wakes its `Poll`. Only then do the sessions answer `250`.
//!
//! Delivery-state changes arrive on the writer's own channel; they are
//! written and synced with the next batch, or after [`CHANGE_LINGER`] when
//! no message comes; the log lines about them wait until then. While
//! changes wait, more changes do not wake the writer (they ride the same
//! sync). A writer with nothing to do sleeps on its bell
//! ([`crate::handoff`]): no spinning, and a hand-off to a writer that is
//! awake costs no system call.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::Waker;

use super::Completion;
use crate::handoff::{self, Bell, Receiver, TryRecvError};
use crate::model::ClientText;
use crate::smtp::server::{Message, StoreFailure};
use crate::spool::{Incoming, Spill, Store, Work};

/// How long delivery-state changes wait for a batch of messages to ride
/// on before they are synced by themselves.
pub const CHANGE_LINGER: Duration = Duration::from_millis(50);

/// Most messages in one batch.
const MAX_BATCH: usize = 1024;

/// One message to store for the connection at `slot` of `shard`
/// (checked against `serial`, since slots are reused).
pub struct Job {
    pub shard: usize,
    pub slot: usize,
    pub serial: u64,
    pub message: Box<Message>,
    pub hostname: String,
    /// The message's data before `message.data`, streamed to staging.
    pub spill: Option<Spill>,
}

/// Where a shard's completions go.
pub(crate) struct Reply {
    pub done: Sender<Completion>,
    pub waker: Arc<Waker>,
}

pub struct Writers {
    jobs: Option<handoff::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

/// A store and, for the gateway's journals, its channel of [`Work`].
pub type WriterStore = (Box<dyn Store>, Option<Receiver<Work>>);

impl Writers {
    /// Starts one writer per store; all take messages from one channel.
    /// `stored` hears of every message stored (delivery).
    pub(crate) fn start(
        stores: Vec<WriterStore>,
        replies: Vec<Reply>,
        stored: Option<handoff::Sender<crate::delivery::Event>>,
    ) -> io::Result<Writers> {
        // A writer's own channel of work rings its bell; a message from a
        // shard rings the first writer asleep.
        let bells: Vec<Arc<Bell>> = stores
            .iter()
            .map(|(_, work)| work.as_ref().and_then(Receiver::bell).unwrap_or_default())
            .collect();
        let (tx, rx) = handoff::channel::<Job>(bells.clone());
        let replies = Arc::new(replies);
        let mut handles = Vec::with_capacity(stores.len());
        for (i, ((store, work), bell)) in stores.into_iter().zip(bells).enumerate() {
            let (rx, replies, stored) = (rx.clone(), replies.clone(), stored.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("spool-writer-{i}"))
                    .spawn(move || {
                        Writer {
                            store,
                            say: Vec::new(),
                            replies: &replies,
                            stored: stored.as_ref(),
                        }
                        .run(rx, work, &bell)
                    })?,
            );
        }
        Ok(Writers {
            jobs: Some(tx),
            threads: handles,
        })
    }

    pub fn sender(&self) -> handoff::Sender<Job> {
        self.jobs.clone().expect("writers are running until stop")
    }

    /// Finishes every queued job (once the shards, holding the other
    /// senders, are gone), then stops the threads.
    pub fn stop(mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Messages to store: data, Received host name, staged data, whom to
/// tell.
type Batch = Vec<(Box<Message>, String, Option<Spill>, To)>;

/// Whom a stored message is reported to.
enum To {
    Shard {
        shard: usize,
        slot: usize,
        serial: u64,
    },
    Direct(Sender<Result<String, StoreFailure>>),
}

struct Writer<'a> {
    store: Box<dyn Store>,
    /// Log lines waiting for the changes before them to be durable.
    say: Vec<crate::logs::QueueLine>,
    replies: &'a [Reply],
    stored: Option<&'a handoff::Sender<crate::delivery::Event>>,
}

impl Writer<'_> {
    fn run(mut self, jobs: Receiver<Job>, work: Option<Receiver<Work>>, bell: &Bell) {
        let mut work = work;
        let mut flush_at: Option<Instant> = None;
        let mut jobs_closed = false;
        loop {
            let mut batch: Batch = Vec::new();
            // Everything that waited joins this batch.
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(j) => batch.push(Self::job(j)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        jobs_closed = true;
                        break;
                    }
                }
            }
            if let Some(rx) = &work {
                loop {
                    match rx.try_recv() {
                        Ok(w) => self.take(w, &mut batch),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            work = None;
                            break;
                        }
                    }
                }
            }
            if !batch.is_empty() {
                self.store_batch(batch);
                flush_at = None;
            }
            if self.store.pending() || !self.say.is_empty() {
                let now = Instant::now();
                let at = *flush_at.get_or_insert(now + CHANGE_LINGER);
                if now >= at {
                    self.flush();
                    flush_at = None;
                    continue;
                }
                // Changes that come meanwhile ride this sync.
                if let Some(rx) = &work {
                    rx.quiet();
                }
            } else if let Some(rx) = work.as_ref().filter(|rx| rx.is_quiet()) {
                // Synced: the next change rings again; one more look for
                // any that came while quiet.
                rx.listen();
                continue;
            }
            if jobs_closed {
                // The shards are gone; delivery may still record changes
                // until it stops (it drops its senders then).
                if let Some(rx) = work.take() {
                    while let Some(w) = rx.recv_blocking() {
                        let mut batch = Vec::new();
                        self.take(w, &mut batch);
                        if !batch.is_empty() {
                            self.store_batch(batch);
                        }
                    }
                }
                self.flush();
                return;
            }
            let timeout = flush_at.map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
            });
            bell.sleep(timeout, || {
                jobs.has_news()
                    || work
                        .as_ref()
                        .is_some_and(|rx| !rx.is_quiet() && rx.has_news())
            });
        }
    }

    fn job(j: Job) -> (Box<Message>, String, Option<Spill>, To) {
        (
            j.message,
            j.hostname,
            j.spill,
            To::Shard {
                shard: j.shard,
                slot: j.slot,
                serial: j.serial,
            },
        )
    }

    fn take(&mut self, w: Work, batch: &mut Batch) {
        match w {
            Work::Change(id, change) => self.store.change(&id, change),
            Work::Batch(items) => {
                for w in items {
                    self.take(w, batch);
                }
            }
            Work::Say(lines) => {
                self.say.extend(lines);
                if !self.store.pending() {
                    self.speak();
                }
            }
            Work::Store {
                message,
                hostname,
                reply,
            } => batch.push((message, hostname, None, To::Direct(reply))),
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.store.flush() {
            tracing::error!(target: "send", "cannot sync delivery-state changes: {e}");
        }
        self.speak();
    }

    fn speak(&mut self) {
        for line in self.say.drain(..) {
            line.emit();
        }
    }

    fn store_batch(&mut self, batch: Batch) {
        let mut batch = batch;
        let mut incoming: Vec<Incoming<'_>> = batch
            .iter_mut()
            .map(|(message, hostname, spill, _)| Incoming {
                message,
                hostname,
                trace: crate::smtp::received::header,
                spill: spill.take(),
            })
            .collect();
        let results = self.store.store(&mut incoming);
        drop(incoming);
        self.speak();
        let mut queued = Vec::new();
        let mut woken = Vec::new();
        for ((message, _, _, to), result) in batch.iter().zip(results) {
            let env = &message.envelope;
            let result = match result {
                Ok(stored) => {
                    tracing::info!(
                        target: "receive",
                        queue_id = %stored.id,
                        client_address = env.peer.as_ref().map(|p| tracing::field::display(p.ip)),
                        client_port = env.peer.as_ref().map(|p| p.port),
                        client_name = env.peer.as_ref().and_then(|p| p.name.as_deref()),
                        from = %env.from,
                        size = message.data.len(),
                        nrcpt = env.recipients.len(),
                        smtputf8 = env.flags.smtputf8,
                        "{}: client={}, from=<{}>, size={}, nrcpt={}{}{}{} (queue active)",
                        stored.id, ClientText(env.peer.as_ref()), env.from, message.data.len(), env.recipients.len(),
                        // RFC 6531 §3.4, RFC 3461 §4.3, §4.4.
                        if env.flags.smtputf8 { ", smtputf8" } else { "" },
                        env.dsn,
                        match env.flags.tls {
                            // RFC 8689: what the sender asked of TLS.
                            crate::model::TlsRequest::Default => "",
                            crate::model::TlsRequest::Required => ", requiretls",
                            crate::model::TlsRequest::NotRequired => ", tls_required=no",
                        }
                    );
                    // Delivery hears of the batch once it is durable.
                    if let Some(entry) = stored.entry {
                        queued.push(entry);
                    }
                    Ok(stored.id)
                }
                Err(e) => {
                    tracing::error!(
                        target: "receive",
                        "NOQUEUE: cannot store message from {}: {e}",
                        ClientText(env.peer.as_ref())
                    );
                    Err(crate::spool::store_failure(&e))
                }
            };
            match to {
                To::Shard {
                    shard,
                    slot,
                    serial,
                } => {
                    let Some(reply) = self.replies.get(*shard) else {
                        continue;
                    };
                    let sent = reply.done.send(Completion::Stored {
                        slot: *slot,
                        serial: *serial,
                        result,
                    });
                    if sent.is_ok() && !woken.contains(shard) {
                        woken.push(*shard);
                    }
                }
                To::Direct(tx) => {
                    let _ = tx.send(result);
                }
            }
        }
        // One wake-up per shard for the whole batch.
        for shard in woken {
            if let Some(reply) = self.replies.get(shard) {
                let _ = reply.waker.wake();
            }
        }
        if let (Some(tx), false) = (self.stored, queued.is_empty()) {
            let _ = tx.send(crate::delivery::Event::Queued(queued));
        }
    }
}
