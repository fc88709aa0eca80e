//! Per-core shards (PERF-1): each shard is a thread pinned to a core with
//! its own `SO_REUSEPORT` listener per address and its own `mio::Poll`.
//! The kernel spreads incoming connections over the shards' listeners; a
//! connection lives and dies on the shard that accepted it, so nothing on
//! the session path takes a lock. The only shared state is the policy
//! snapshot (`ArcSwap`, loaded once per accepted connection), counters
//! that each shard alone writes, and the connection admission counts
//! (one atomic and a striped per-address map, touched at accept and
//! close; see `limits`).

mod conn;
mod outbound;
mod stage;
mod timers;
mod tls;
pub mod writers;

use crate::state::admission as limits;
use crate::state::{HandshakeFailure, ShardStats, Shared};
use slab::Slab;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use conn::{Conn, Outcome};
use crossbeam_channel::{Receiver, Sender};
use timers::Timers;
use writers::Job;
pub use writers::Writers;

/// Work finished off the shard, for one of its connections (`slot`,
/// checked against `serial` since slots are reused).
pub(crate) enum Completion {
    /// A spool writer stored the message: the queue id, or failure.
    Stored {
        slot: usize,
        serial: u64,
        result: Result<String, crate::model::StoreFailure>,
    },
    /// The resolver found the client's confirmed name (or none).
    Named {
        slot: usize,
        serial: u64,
        name: Option<String>,
    },
}

/// Asks the resolver for a client's name on a connection's behalf.
#[derive(Clone, Copy)]
pub(crate) struct Namer<'a> {
    resolver: Option<&'a crate::dns::Resolver>,
    named: &'a Sender<Completion>,
    waker: &'a Arc<Waker>,
}

impl Namer<'_> {
    /// Asks for a client's confirmed name; the answer arrives as
    /// `Completion::Named` for (slot, serial).
    fn request_name(&self, ip: std::net::IpAddr, slot: usize, serial: u64) {
        let (tx, waker) = (self.named.clone(), self.waker.clone());
        let reply = move |name| {
            if tx.send(Completion::Named { slot, serial, name }).is_ok() {
                let _ = waker.wake();
            }
        };
        match self.resolver {
            Some(r) => r.client_name(ip, reply),
            None => reply(None),
        }
    }
}

/// What a connection needs from its shard while it is driven.
pub(crate) struct ShardIo<'a> {
    shard: usize,
    stats: &'a ShardStats,
    /// For a name lookup a connection asks for itself (after PROXY).
    namer: Namer<'a>,
    registry: &'a mio::Registry,
    scratch: &'a mut [u8],
    writers: &'a crate::handoff::Sender<Job>,
    /// Per-address counting for a client known only after PROXY.
    admission: &'a limits::Admission,
}

const WAKER: Token = Token(0);
const FIRST_LISTENER: usize = 1;
/// Outbound connections use tokens from here up.
const FIRST_OUTBOUND: usize = 1 << 30;

/// The running shards.
pub struct Shards {
    handles: Vec<JoinHandle<()>>,
    wakers: Vec<Arc<Waker>>,
    /// Where the delivery scheduler hands each shard its jobs.
    jobs: Vec<Sender<crate::delivery::Job>>,
    writers: Writers,
    shared: Arc<Shared>,
}

impl Shards {
    /// Binds every listener first, so that an address in use fails the
    /// start, then starts the spool writers (one thread per store) and
    /// one thread per shard.
    pub fn start(
        listen: &[SocketAddr],
        steer_by_cpu: bool,
        stores: Vec<writers::WriterStore>,
        resolver: Option<crate::dns::Resolver>,
        stored: Option<crate::handoff::Sender<crate::delivery::Event>>,
        shared: Arc<Shared>,
    ) -> io::Result<Shards> {
        let count = shared.stats.len();
        // SO_REUSEPORT would let a second gateway (same user) join the
        // group and take half the connections: refuse an address that
        // something already listens on.
        for addr in listen {
            probe_free(*addr)?;
        }
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        // Shard `id` runs pinned to this core (and, with steer_by_cpu, its
        // listeners say so).
        let core_of = |id: usize| cores.get(id % cores.len().max(1)).copied();
        let mut prepared = Vec::with_capacity(count);
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let mut listeners = Vec::with_capacity(listen.len());
            let core = core_of(prepared.len())
                .map(|c| c.id)
                .filter(|_| steer_by_cpu);
            for (i, addr) in listen.iter().enumerate() {
                let mut l = bind_reuseport(*addr, core).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?;
                poll.registry()
                    .register(&mut l, Token(FIRST_LISTENER + i), Interest::READABLE)?;
                listeners.push(l);
            }
            let (done_tx, done_rx) = crossbeam_channel::unbounded();
            replies.push(writers::Reply {
                done: done_tx.clone(),
                waker: waker.clone(),
            });
            prepared.push((poll, waker, listeners, (done_tx, done_rx)));
        }
        let writers = Writers::start(stores, replies, stored)?;
        let mut job_senders = Vec::with_capacity(count);
        let mut handles = Vec::with_capacity(count);
        let mut wakers = Vec::with_capacity(count);
        for (id, (poll, waker, listeners, done)) in prepared.into_iter().enumerate() {
            wakers.push(waker.clone());
            let shared = shared.clone();
            let jobs = writers.sender();
            let (job_tx, job_rx) = crossbeam_channel::unbounded();
            job_senders.push(job_tx);
            let resolver = resolver.clone();
            let shard_waker = waker.clone();
            let core = core_of(id);
            let handle = std::thread::Builder::new()
                .name(format!("shard-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let mut shard = Shard::new(
                        id,
                        poll,
                        listeners,
                        jobs,
                        done,
                        resolver,
                        shard_waker,
                        shared,
                    );
                    shard.deliveries = job_rx;
                    if let Err(e) = shard.run() {
                        tracing::error!(target: "receive", "shard {id} stopped: {e}");
                    }
                })?;
            handles.push(handle);
        }
        Ok(Shards {
            handles,
            wakers,
            jobs: job_senders,
            writers,
            shared,
        })
    }

    /// One door per shard for the delivery scheduler: a job sent through
    /// it wakes that shard, which runs the attempt on its event loop.
    pub fn doors(&self) -> Vec<crate::delivery::ShardDoor> {
        self.jobs
            .iter()
            .zip(&self.wakers)
            .map(|(tx, waker)| {
                let (tx, waker) = (tx.clone(), waker.clone());
                Box::new(move |job: crate::delivery::Job| {
                    if tx.send(job).is_ok() {
                        let _ = waker.wake();
                    }
                }) as crate::delivery::ShardDoor
            })
            .collect()
    }

    /// Asks every shard to stop and waits for them, then lets the spool
    /// writers finish what they were given.
    pub fn stop(self) {
        self.stop_serving().stop();
    }

    /// Asks every shard to stop and waits for them; the spool writers go
    /// on (delivery may still record state changes) until the caller
    /// stops them.
    pub fn stop_serving(self) -> Writers {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for h in self.handles {
            let _ = h.join();
        }
        self.writers
    }
}

/// Fails, naming the address, when another socket is bound to `addr`:
/// binding without `SO_REUSEPORT` (but with `SO_REUSEADDR`, so that old
/// connections in TIME_WAIT do not count) succeeds only on a free port.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: another process is already listening there (a second gateway? sealgate does not share an address with one)"),
        )),
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))),
    }
}

/// A listening socket with `SO_REUSEPORT`, so every shard binds the same
/// address and the kernel balances connections between them.
///
/// `TCP_NODELAY` is set here once: accepted sockets inherit it (replies
/// are small and each one is awaited, so Nagle must not hold them), which
/// saves a `setsockopt` per connection. With `server.steer_by_cpu`,
/// `SO_INCOMING_CPU` names the core the shard is pinned to: since Linux
/// 6.2 the reuseport group then hands a connection to the listener of the
/// CPU that received it (docs/performance.md says what it changed here).
fn bind_reuseport(addr: SocketAddr, core: Option<usize>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(cpu) = core {
        // Best effort: older kernels ignore it or lack it.
        let _ = socket.set_cpu_affinity(cpu);
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

struct Shard {
    id: usize,
    poll: Poll,
    /// `None` once closed for draining (indices stay, tokens derive from them).
    listeners: Vec<Option<TcpListener>>,
    /// Connection slots (tokens are their keys).
    conns: Slab<Conn>,
    timers: Timers,
    /// To the spool writers, and back.
    jobs: crate::handoff::Sender<Job>,
    done: Receiver<Completion>,
    /// To ask for client names: the resolver, and where answers go.
    resolver: Option<crate::dns::Resolver>,
    named: Sender<Completion>,
    waker: Arc<Waker>,
    /// Tells connections in a reused slot apart.
    serial: u64,
    shared: Arc<Shared>,
    /// Read buffer shared by all connections of the shard.
    scratch: Vec<u8>,
    /// When the stop began, and how long sessions may take to finish.
    draining_since: Option<Instant>,
    drain_bound: Duration,
    /// Delivery attempts handed to this shard, and those running.
    deliveries: Receiver<crate::delivery::Job>,
    outbound: Vec<Option<outbound::OutConn>>,
    /// The snapshot the idle outbound connections were made under (its
    /// address): another one closes them.
    snapshot_seen: usize,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: usize,
        poll: Poll,
        listeners: Vec<TcpListener>,
        jobs: crate::handoff::Sender<Job>,
        (named, done): (Sender<Completion>, Receiver<Completion>),
        resolver: Option<crate::dns::Resolver>,
        waker: Arc<Waker>,
        shared: Arc<Shared>,
    ) -> Shard {
        let drain_bound = shared.snapshot.load().limits.shutdown_timeout;
        Shard {
            id,
            poll,
            listeners: listeners.into_iter().map(Some).collect(),
            conns: Slab::new(),
            draining_since: None,
            drain_bound,
            timers: Timers::default(),
            jobs,
            done,
            resolver,
            named,
            waker,
            serial: 0,
            shared,
            scratch: vec![0; conn::READ_CHUNK],
            deliveries: crossbeam_channel::never(),
            outbound: Vec::new(),
            snapshot_seen: 0,
        }
    }

    fn first_conn_token(&self) -> usize {
        FIRST_LISTENER + self.listeners.len()
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self
                .timers
                .next()
                .map(|t| t.saturating_duration_since(Instant::now()));
            // Wake at least once a second: a lost wakeup must not hang a stop.
            let timeout = Some(
                timeout
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1)),
            );
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.shared.stopping.load(Ordering::Relaxed) {
                let now = Instant::now();
                let started = match self.draining_since {
                    Some(t) => t,
                    None => {
                        self.draining_since = Some(now);
                        // `[limits] shutdown_timeout` as the last reload left it.
                        self.drain_bound = self.shared.snapshot.load().limits.shutdown_timeout;
                        self.start_draining();
                        now
                    }
                };
                if self.conns.is_empty() || now.duration_since(started) >= self.drain_bound {
                    self.shutdown();
                    return Ok(());
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                let token = event.token().0;
                if token == WAKER.0 {
                    self.completions(now);
                    self.start_deliveries(now);
                    continue;
                }
                if token >= FIRST_OUTBOUND {
                    if let Some(Some(c)) = self.outbound.get_mut(token - FIRST_OUTBOUND) {
                        c.ready(self.poll.registry(), now);
                    }
                    continue;
                }
                if token < self.first_conn_token() {
                    self.accept(token - FIRST_LISTENER, now);
                } else {
                    let idx = token - self.first_conn_token();
                    self.drive(idx, now);
                }
            }
            self.fire_timers(Instant::now());
            self.tend_deliveries(Instant::now());
        }
    }

    fn start_deliveries(&mut self, now: Instant) {
        let cache = self.shared.snapshot.load().connection_cache;
        while let Ok(job) = self.deliveries.try_recv() {
            // An idle connection to the attempt's first host, if the
            // attempt's own decision accepts it.
            let idle = self.outbound.iter_mut().flatten().find_map(|c| {
                if !c.idle_for(&job) {
                    return None;
                }
                let decision = c.accepts(&job)?;
                Some((c, decision))
            });
            if let Some((c, decision)) = idle {
                c.reuse(job, decision, self.poll.registry(), now);
                continue;
            }
            let idx = self
                .outbound
                .iter()
                .position(Option::is_none)
                .unwrap_or_else(|| {
                    self.outbound.push(None);
                    self.outbound.len() - 1
                });
            let c = outbound::OutConn::start(
                job,
                self.poll.registry(),
                Token(FIRST_OUTBOUND + idx),
                !cache.idle.is_zero(),
                (self.shared.clone(), self.id),
                now,
            );
            self.outbound[idx] = Some(c);
        }
    }

    /// Outbound timeouts, clearing finished attempts, and the idle
    /// connections: closed (with QUIT) past `connection_idle`, past
    /// `messages_per_connection`, beyond `idle_connections`, and all of
    /// them when a reload brings another configuration.
    fn tend_deliveries(&mut self, now: Instant) {
        let snapshot = self.shared.snapshot.load();
        let generation = Arc::as_ptr(&*snapshot) as usize;
        let reloaded = std::mem::replace(&mut self.snapshot_seen, generation) != generation;
        let cache = snapshot.connection_cache;
        let mut idle = 0;
        for slot in &mut self.outbound {
            let Some(c) = slot else { continue };
            if c.deadline().is_some_and(|d| d <= now) {
                c.timeout(self.poll.registry(), now);
            }
            if let Some(since) = c.idle_since() {
                idle += 1;
                if reloaded
                    || now.duration_since(since) >= cache.idle
                    || c.carried() >= snapshot.queue.messages_per_connection
                    || idle > cache.per_shard
                {
                    c.quit_and_close(self.poll.registry(), now);
                    *slot = None;
                }
                continue;
            }
            if c.is_finished() {
                c.close(self.poll.registry());
                *slot = None;
            }
        }
    }

    /// Closes every idle outbound connection with QUIT (the gateway
    /// stops).
    fn close_idle(&mut self, now: Instant) {
        for slot in &mut self.outbound {
            if let Some(c) = slot {
                if c.idle_since().is_some() {
                    c.quit_and_close(self.poll.registry(), now);
                    *slot = None;
                }
            }
        }
    }

    /// Accepts until the listener would block (mio is edge-triggered).
    fn accept(&mut self, listener: usize, now: Instant) {
        loop {
            let Some(l) = self.listeners.get(listener).and_then(Option::as_ref) else {
                return;
            };
            let (stream, peer) = match l.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again on the next event.
                    tracing::warn!(target: "receive", "accept failed: {e}");
                    return;
                }
            };
            let stats = &self.shared.stats[self.id];
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let snapshot = self.shared.snapshot.load_full();
            let admission = &self.shared.admission;
            if !admission.admit_total(snapshot.limits.connections) {
                stats.refused_total_limit.fetch_add(1, Ordering::Relaxed);
                conn::refuse_busy(stream, peer, limits::Refusal::Total);
                continue;
            }
            // OPS-8: from a trusted balancer, a PROXY header comes first;
            // the client's address (and its count) is known only then.
            let expect_proxy = snapshot.proxy_trusted(peer.ip());
            let counted_ip = if expect_proxy {
                None
            } else if admission.admit_ip(peer.ip(), snapshot.limits.connections_per_ip) {
                Some(peer.ip())
            } else {
                admission.release_total();
                stats.refused_per_ip_limit.fetch_add(1, Ordering::Relaxed);
                conn::refuse_busy(stream, peer, limits::Refusal::PerIp);
                continue;
            };
            let idx = self.conns.vacant_key();
            let token = Token(self.first_conn_token() + idx);
            self.serial += 1;
            // IN-4: the client's name is looked up only when some profile
            // matches host names; the banner waits for it, as in Postfix.
            let lookup = snapshot
                .profiles
                .index
                .needs_names()
                .then_some(())
                .and(self.resolver.as_ref());
            // With PROXY, the name lookup (if any) waits for the address
            // the header carries.
            let accepted = Conn::accept(
                stream,
                peer,
                snapshot,
                self.poll.registry(),
                token,
                idx,
                self.serial,
                lookup.is_some() || expect_proxy,
                expect_proxy,
                counted_ip,
                self.shared.spill.get().cloned(),
                now,
            );
            if let (Some(resolver), Ok(_), false) = (lookup, &accepted, expect_proxy) {
                let (tx, waker, serial) = (self.named.clone(), self.waker.clone(), self.serial);
                resolver.client_name(peer.ip(), move |name| {
                    if tx
                        .send(Completion::Named {
                            slot: idx,
                            serial,
                            name,
                        })
                        .is_ok()
                    {
                        let _ = waker.wake();
                    }
                });
            }
            match accepted {
                Ok(c) => {
                    tracing::info!(
                        target: "receive",
                        client_address = %peer.ip(),
                        client_port = peer.port(),
                        shard = self.id,
                        "connect from [{}]:{} shard={}", peer.ip(), peer.port(), self.id
                    );
                    stats.active.fetch_add(1, Ordering::Relaxed);
                    let key = self.conns.insert(c);
                    debug_assert_eq!(key, idx);
                    self.act_on(idx, None, |conn, io| conn.begin(now, io));
                }
                Err(e) => {
                    admission.release(counted_ip);
                    tracing::warn!(target: "receive", "cannot set up connection from {peer}: {e}")
                }
            }
        }
    }

    /// Handles readiness (or a first look) for one connection.
    fn drive(&mut self, idx: usize, now: Instant) {
        // None: a spurious event for a closed slot.
        self.act_on(idx, None, |conn, io| conn.ready(now, io));
    }

    /// Work finished off the shard: stored messages, looked-up names.
    fn completions(&mut self, now: Instant) {
        while let Ok(done) = self.done.try_recv() {
            let (slot, serial) = match &done {
                Completion::Stored { slot, serial, .. }
                | Completion::Named { slot, serial, .. } => (*slot, *serial),
            };
            // If the client left meanwhile, there is nothing to do; a
            // stored message is queued all the same.
            self.act_on(slot, Some(serial), |conn, io| match done {
                Completion::Stored { result, .. } => conn.stored(result, now, io),
                Completion::Named { name, .. } => conn.named(name, now, io),
            });
        }
    }

    /// Runs `act` on the connection in slot `idx` (when given, only if it
    /// is still the connection numbered `serial`) with what it needs from
    /// the shard, then applies the outcome.
    fn act_on(
        &mut self,
        idx: usize,
        serial: Option<u64>,
        act: impl FnOnce(&mut Conn, &mut ShardIo<'_>) -> Outcome,
    ) {
        let Some(conn) = self
            .conns
            .get_mut(idx)
            .filter(|c| serial.is_none_or(|s| c.serial() == s))
        else {
            return;
        };
        let mut io = ShardIo {
            shard: self.id,
            stats: &self.shared.stats[self.id],
            namer: Namer {
                resolver: self.resolver.as_ref(),
                named: &self.named,
                waker: &self.waker,
            },
            registry: self.poll.registry(),
            scratch: &mut self.scratch,
            writers: &self.jobs,
            admission: &self.shared.admission,
        };
        let outcome = act(conn, &mut io);
        self.after(idx, outcome);
    }

    fn after(&mut self, idx: usize, outcome: Outcome) {
        match outcome {
            Outcome::Open { deadline } => {
                if let (Some(conn), Some(d)) = (self.conns.get_mut(idx), deadline) {
                    if conn.timer_armed.is_none_or(|armed| d < armed) {
                        conn.timer_armed = Some(d);
                        self.timers.push(d, idx);
                    }
                }
            }
            Outcome::Closed => {
                if let Some(conn) = self.conns.try_remove(idx) {
                    self.shared.admission.release(conn.counted_ip);
                    conn.close();
                }
                let stats = &self.shared.stats[self.id];
                stats.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(idx) = self.timers.pop_due(now) {
            self.act_on(idx, None, |conn, io| {
                conn.timer_armed = None;
                conn.check_deadline(now, io.registry, io.stats)
            });
        }
    }

    /// OPS-7: stop accepting (close the listeners, so a balancer or the
    /// client's next MX sees a refusal at once) and drain every session.
    fn start_draining(&mut self) {
        let registry = self.poll.registry();
        for l in &mut self.listeners {
            if let Some(mut l) = l.take() {
                let _ = registry.deregister(&mut l);
            }
        }
        let occupied: Vec<usize> = self.conns.iter().map(|(idx, _)| idx).collect();
        for idx in occupied {
            if let Some(conn) = self.conns.get_mut(idx) {
                let outcome = conn.drain(self.poll.registry());
                self.after(idx, outcome);
            }
        }
        tracing::info!(target: "receive", "shard {}: draining {} session(s)", self.id, self.conns.len());
    }

    fn shutdown(&mut self) {
        self.close_idle(Instant::now());
        for mut conn in self.conns.drain() {
            conn.shutdown();
            self.shared.admission.release(conn.counted_ip);
            conn.close();
        }
        let stats = &self.shared.stats[self.id];
        stats.active.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections inherit TCP_NODELAY from the listener (it is no longer
    /// set per connection), and a second bind of a taken address fails,
    /// naming it, even though the listener itself uses SO_REUSEPORT.
    #[test]
    fn accepted_sockets_have_nodelay_and_a_taken_address_is_refused() {
        let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is inherited");
        let e = probe_free(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(
            e.to_string().contains(&format!("cannot listen on {addr}")),
            "{e}"
        );
    }
}
