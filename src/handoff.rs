//! Hand-offs between the gateway's own threads (spool writers, delivery)
//! that cost a system call only when the receiving thread sleeps.
//!
//! A blocking `recv` on a crossbeam channel spins and yields
//! (`sched_yield`) a few times before it parks; on a busy host with few
//! cores that spinning is paid on every message, several times per
//! message. Here a receiving thread looks at its channels without
//! blocking, and when they are empty it sleeps on its [`Bell`] (one
//! `park`, one futex wait). A send rings the bell, which unparks (one
//! futex wake) only a thread that has said it sleeps; to a thread that is
//! awake, a send is a few atomic operations. The shards are woken the
//! same way through their `mio::Waker`, by whoever hands them work.
//!
//! A receiver may also go [`Receiver::quiet`]: it has work of its own to
//! do before a deadline and will look at the channel by then, so sends
//! ring nothing (the spool writers' delivery-state records ride the next
//! batch of messages or wait at most their linger time).

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

pub use crossbeam_channel::{SendError, TryRecvError};

/// What one thread sleeps on when it has nothing to do.
#[derive(Debug, Default)]
pub struct Bell {
    thread: OnceLock<Thread>,
    asleep: AtomicBool,
    /// Unparks made, for the tests to see.
    #[cfg(test)]
    rang: AtomicUsize,
}

impl Bell {
    pub fn new() -> Arc<Bell> {
        Arc::new(Bell::default())
    }

    /// On the bell's thread (always the same one): sleeps until the bell
    /// rings or `timeout` passes, unless `ready` finds work. `ready` is
    /// asked after the thread has said it sleeps, so a send that its
    /// check missed rings the bell; a ring that comes before the park
    /// makes the park return at once. The caller looks again either way
    /// (a sleep may end early).
    pub fn sleep(&self, timeout: Duration, ready: impl FnOnce() -> bool) {
        self.thread.get_or_init(std::thread::current);
        self.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !ready() {
            std::thread::park_timeout(timeout);
        }
        self.asleep.store(false, Ordering::SeqCst);
    }

    /// Wakes the bell's thread if it sleeps (or is about to); says
    /// whether it did. Call after the work is where the thread looks.
    pub fn ring(&self) -> bool {
        fence(Ordering::SeqCst);
        if !self.asleep.load(Ordering::SeqCst) {
            return false;
        }
        match self.thread.get() {
            Some(t) => {
                t.unpark();
                #[cfg(test)]
                self.rang.fetch_add(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}

/// A channel whose sends ring the receivers' bells: one bell for a
/// thread's own channel; several for a channel that several threads
/// take from (the first one asleep is woken; the others find the work
/// when they next look).
pub fn channel<T>(bells: Vec<Arc<Bell>>) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        bells: bells.into(),
        quiet: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
    });
    (
        Sender {
            tx: Some(tx),
            shared: shared.clone(),
        },
        Receiver { rx, shared },
    )
}

/// What the ends of one channel share.
struct Shared {
    bells: Box<[Arc<Bell>]>,
    /// Sends ring nothing (see [`Receiver::quiet`]).
    quiet: AtomicBool,
    /// Senders alive: when none is, the receivers are woken to see it.
    senders: AtomicUsize,
}

pub struct Sender<T> {
    /// `None` only while dropping.
    tx: Option<crossbeam_channel::Sender<T>>,
    shared: Arc<Shared>,
}

impl<T> Sender<T> {
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        match &self.tx {
            Some(tx) => tx.send(value)?,
            None => return Err(SendError(value)),
        }
        fence(Ordering::SeqCst);
        if !self.shared.quiet.load(Ordering::SeqCst) {
            for bell in self.shared.bells.iter() {
                if bell.ring() {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        Sender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    /// The last sender gone is news too (the receivers stop): every
    /// receiver is woken to see it.
    fn drop(&mut self) {
        drop(self.tx.take());
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            for bell in self.shared.bells.iter() {
                bell.ring();
            }
        }
    }
}

pub struct Receiver<T> {
    rx: crossbeam_channel::Receiver<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            rx: self.rx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> Receiver<T> {
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// Something to take, or every sender gone: what a thread checks
    /// before it sleeps ([`Bell::sleep`]'s `ready`).
    pub fn has_news(&self) -> bool {
        !self.rx.is_empty() || self.shared.senders.load(Ordering::SeqCst) == 0
    }

    /// The bell of a channel with one receiving thread.
    pub fn bell(&self) -> Option<Arc<Bell>> {
        match &*self.shared.bells {
            [one] => Some(one.clone()),
            _ => None,
        }
    }

    /// Sends stop ringing: the receiving thread will look by itself
    /// before a deadline of its own.
    pub fn quiet(&self) {
        self.shared.quiet.store(true, Ordering::SeqCst);
    }

    /// Sends ring again. Look at the channel once more after this before
    /// sleeping (a send during the quiet time rang nothing).
    pub fn listen(&self) {
        self.shared.quiet.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    pub fn is_quiet(&self) -> bool {
        self.shared.quiet.load(Ordering::SeqCst)
    }

    /// Waits for the next value the ordinary way (spinning first); for
    /// the last values at shutdown. `None`: every sender is gone.
    pub fn recv_blocking(&self) -> Option<T> {
        self.rx.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A send to a sleeping thread wakes it long before its timeout.
    #[test]
    fn a_send_wakes_the_sleeper() {
        let bell = Bell::new();
        let (tx, rx) = channel::<u32>(vec![bell.clone()]);
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            let mut got = Vec::new();
            while got.len() < 100 {
                match rx.try_recv() {
                    Ok(v) => got.push(v),
                    Err(TryRecvError::Empty) => {
                        bell.sleep(Duration::from_secs(30), || rx.has_news())
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            (got, start.elapsed())
        });
        for i in 0..100 {
            tx.send(i).expect("receiver alive");
            if i % 7 == 0 {
                std::thread::yield_now();
            }
        }
        let (got, took) = t.join().expect("receiver thread");
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        // 100 lost wake-ups would take 50 minutes; one would take 30 s.
        assert!(
            took < Duration::from_secs(30),
            "a wake-up was lost: {took:?}"
        );
    }

    /// The last sender's drop wakes the receiver, which sees the end.
    #[test]
    fn dropping_the_senders_wakes_the_receiver() {
        let bell = Bell::new();
        let (tx, rx) = channel::<u32>(vec![bell.clone()]);
        let t = std::thread::spawn(move || loop {
            match rx.try_recv() {
                Ok(_) => {}
                Err(TryRecvError::Empty) => bell.sleep(Duration::from_secs(30), || rx.has_news()),
                Err(TryRecvError::Disconnected) => return,
            }
        });
        drop(tx);
        t.join().expect("receiver ends");
    }

    /// While quiet, a send rings nothing; `listen` and a last look find
    /// it.
    #[test]
    fn quiet_sends_ring_nothing() {
        let bell = Bell::new();
        let (tx, rx) = channel::<u32>(vec![bell.clone()]);
        // This thread is the bell's, and says it sleeps.
        bell.thread.get_or_init(std::thread::current);
        bell.asleep.store(true, Ordering::SeqCst);
        rx.quiet();
        tx.send(1).expect("receiver alive");
        assert_eq!(bell.rang.load(Ordering::SeqCst), 0, "a quiet send rang");
        rx.listen();
        assert_eq!(rx.try_recv(), Ok(1), "a look after listen finds it");
        tx.send(2).expect("receiver alive");
        assert_eq!(bell.rang.load(Ordering::SeqCst), 1, "a send rings again");
        // A thread that is awake is not rung.
        bell.asleep.store(false, Ordering::SeqCst);
        tx.send(3).expect("receiver alive");
        assert_eq!(
            bell.rang.load(Ordering::SeqCst),
            1,
            "an awake thread was rung"
        );
    }
}
