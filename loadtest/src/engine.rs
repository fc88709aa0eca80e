//! The event-driven load engine: one thread, one `mio::Poll`, many
//! sessions, each a [`Script`] glued to a non-blocking socket and a rustls
//! client. Cheap enough per session that one core of generator can drive a
//! server on the other.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use crate::reply;
use crate::script::{Mark, Params, Script, Step};
use crate::stats::{Phase, Stats};

/// When a run stops starting new sessions.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    Sessions(u64),
    Elapsed(Duration),
}

pub struct Options {
    pub target: SocketAddr,
    pub params: Arc<Params>,
    pub concurrency: usize,
    pub until: Until,
    /// Open loop: sessions started per second; `None` = closed loop.
    pub rate: Option<f64>,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// A session that takes longer fails with `timeout`.
    pub session_timeout: Duration,
    pub progress: bool,
    /// Where to record each end-of-data reply that accepted a message, one
    /// line each, as it arrives (crash tests match them against what the
    /// downstream received).
    pub accepted_log: Option<std::sync::Mutex<std::fs::File>>,
}

struct Conn {
    sock: TcpStream,
    tls: Option<ClientConnection>,
    script: Script,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    connected: bool,
    /// Session start: the scheduled start in open loop (no coordinated
    /// omission), the connect call in closed loop.
    start: Instant,
    connect_at: Instant,
    starttls_at: Option<Instant>,
    data_at: Option<Instant>,
    held: bool,
    interest: Interest,
}

enum Fate {
    Open,
    Done,
    Failed(String, String),
}

/// Runs the load; `at_hold` is called once every started session is held
/// (hold mode), before they are closed.
pub fn run(
    opts: &Options,
    stop: &AtomicBool,
    at_hold: &mut dyn FnMut(&Stats),
) -> io::Result<(Stats, Duration)> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut active = 0usize;
    let mut stats = Stats::default();
    let mut started = 0u64;
    let t0 = Instant::now();
    let interval = opts
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-6)));
    let mut next_start = t0;
    let mut last_progress = t0;
    let mut last_timeout_scan = t0;
    let mut chunk = vec![0u8; 16 * 1024];
    let can_start = |started: u64, now: Instant| match opts.until {
        Until::Sessions(n) => started < n,
        Until::Elapsed(d) => now.duration_since(t0) < d,
    };
    // Closed loop only: while connections are refused, new sessions wait
    // (10 ms, doubling to 1 s) instead of spinning on connect().
    let mut backoff = Backoff::default();
    loop {
        let now = Instant::now();
        let more = !stop.load(Ordering::Relaxed) && can_start(started, now);
        // Start sessions.
        if more {
            match interval {
                None => {
                    while active < opts.concurrency
                        && can_start(started, now)
                        && !backoff.blocks(now)
                    {
                        start(&mut poll, &mut conns, &mut free, opts, now, &mut stats);
                        started += 1;
                        active += 1;
                    }
                }
                Some(iv) => {
                    while next_start <= now && can_start(started, now) {
                        if active < opts.concurrency {
                            start(
                                &mut poll, &mut conns, &mut free, opts, next_start, &mut stats,
                            );
                            active += 1;
                        } else {
                            stats.error(
                                "concurrency limit reached (open loop)",
                                "raise --concurrency or lower --rate",
                            );
                        }
                        started += 1;
                        next_start += iv;
                    }
                }
            }
        }
        let more = !stop.load(Ordering::Relaxed) && can_start(started, Instant::now());
        if !more && active == 0 {
            break;
        }
        if !more && active > 0 && stats.held as usize == active {
            at_hold(&stats);
            break;
        }
        let wait = if more && interval.is_some() {
            next_start
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        } else {
            backoff
                .left(Instant::now())
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100))
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let idx = ev.token().0;
            let Some(conn) = conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let fate = drive(conn, &mut stats, &mut chunk, opts);
            if interval.is_none() {
                backoff.observe(&fate, conn.connected, Instant::now());
            }
            settle(
                &mut poll,
                &mut conns,
                &mut free,
                idx,
                fate,
                &mut stats,
                &mut active,
            );
        }
        let now = Instant::now();
        if now.duration_since(last_timeout_scan) >= Duration::from_millis(100) {
            last_timeout_scan = now;
            for idx in 0..conns.len() {
                let late = conns[idx]
                    .as_ref()
                    .is_some_and(|c| !c.held && now.duration_since(c.start) > opts.session_timeout);
                if late {
                    let fate = Fate::Failed(
                        "timeout".into(),
                        format!("no end of session after {:?}", opts.session_timeout),
                    );
                    settle(
                        &mut poll,
                        &mut conns,
                        &mut free,
                        idx,
                        fate,
                        &mut stats,
                        &mut active,
                    );
                }
            }
        }
        if opts.progress && now.duration_since(last_progress) >= Duration::from_secs(1) {
            last_progress = now;
            let secs = now.duration_since(t0).as_secs_f64();
            eprint!(
                "\r[{secs:5.1}s] sessions {} ({:.0}/s) messages {} failed {} active {} held {}   ",
                stats.sessions_ok,
                stats.sessions_ok as f64 / secs,
                stats.messages,
                stats.sessions_failed,
                active,
                stats.held
            );
        }
    }
    if opts.progress {
        eprintln!();
    }
    Ok((stats, t0.elapsed()))
}

fn start(
    poll: &mut Poll,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
    opts: &Options,
    start: Instant,
    stats: &mut Stats,
) {
    let mut sock = match TcpStream::connect(opts.target) {
        Ok(s) => s,
        Err(e) => {
            stats.error("connect", &e.to_string());
            return;
        }
    };
    let idx = free.pop().unwrap_or_else(|| {
        conns.push(None);
        conns.len() - 1
    });
    let interest = Interest::READABLE | Interest::WRITABLE;
    if let Err(e) = poll.registry().register(&mut sock, Token(idx), interest) {
        stats.error("register", &e.to_string());
        free.push(idx);
        return;
    }
    let _ = sock.set_nodelay(true);
    conns[idx] = Some(Conn {
        sock,
        tls: None,
        script: Script::new(opts.params.clone()),
        rbuf: Vec::new(),
        wbuf: Vec::new(),
        connected: false,
        start,
        connect_at: Instant::now(),
        starttls_at: None,
        data_at: None,
        held: false,
        interest,
    });
}

#[allow(clippy::too_many_arguments)]
/// Pauses session starts while the target refuses connections.
#[derive(Default)]
struct Backoff {
    until: Option<Instant>,
    step: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MOST: Duration = Duration::from_secs(1);

    fn observe(&mut self, fate: &Fate, connected: bool, now: Instant) {
        match fate {
            Fate::Failed(kind, _) if kind == "connect" => {
                self.step = (self.step * 2).clamp(Self::FIRST, Self::MOST);
                self.until = Some(now + self.step);
            }
            _ if connected => {
                self.step = Duration::ZERO;
                self.until = None;
            }
            _ => {}
        }
    }

    fn blocks(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| now < t)
    }

    fn left(&self, now: Instant) -> Option<Duration> {
        self.until.map(|t| t.saturating_duration_since(now))
    }
}

fn settle(
    poll: &mut Poll,
    conns: &mut [Option<Conn>],
    free: &mut Vec<usize>,
    idx: usize,
    fate: Fate,
    stats: &mut Stats,
    active: &mut usize,
) {
    let finished = match fate {
        Fate::Open => false,
        Fate::Done => {
            stats.sessions_ok += 1;
            true
        }
        Fate::Failed(kind, example) => {
            stats.error(&kind, &example);
            true
        }
    };
    let Some(conn) = conns[idx].as_mut() else {
        return;
    };
    if finished {
        if conn.held {
            stats.held -= 1;
        }
        let _ = poll.registry().deregister(&mut conn.sock);
        conns[idx] = None;
        free.push(idx);
        *active -= 1;
        return;
    }
    let pending = !conn.wbuf.is_empty() || conn.tls.as_ref().is_some_and(|t| t.wants_write());
    let want = if pending || !conn.connected {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    if want != conn.interest
        && poll
            .registry()
            .reregister(&mut conn.sock, Token(idx), want)
            .is_ok()
    {
        conn.interest = want;
    }
}

fn drive(conn: &mut Conn, stats: &mut Stats, chunk: &mut [u8], opts: &Options) -> Fate {
    if !conn.connected {
        match conn.sock.take_error() {
            Ok(Some(e)) | Err(e) => return Fate::Failed("connect".into(), e.to_string()),
            Ok(None) => {}
        }
        match conn.sock.peer_addr() {
            Ok(_) => conn.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Fate::Open,
            Err(e) => return Fate::Failed("connect".into(), e.to_string()),
        }
    }
    // Read everything available.
    loop {
        let got = match conn.tls.as_mut() {
            None => match conn.sock.read(chunk) {
                Ok(0) => {
                    return Fate::Failed(
                        "server closed the connection".into(),
                        script_context(conn),
                    )
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&chunk[..n]);
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                Err(e) => return Fate::Failed("read".into(), e.to_string()),
            },
            Some(tls) => match tls.read_tls(&mut conn.sock) {
                Ok(0) => {
                    return Fate::Failed(
                        "server closed the connection".into(),
                        "EOF inside TLS".into(),
                    )
                }
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        let _ = tls.write_tls(&mut conn.sock);
                        return Fate::Failed("tls".into(), e.to_string());
                    }
                    loop {
                        match tls.reader().read(chunk) {
                            Ok(0) => break,
                            Ok(n) => conn.rbuf.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Fate::Failed("tls".into(), e.to_string()),
                        }
                    }
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                Err(e) => return Fate::Failed("read".into(), e.to_string()),
            },
        };
        // Handshake completion.
        if let (Some(tls), Some(at)) = (conn.tls.as_ref(), conn.starttls_at) {
            if !tls.is_handshaking() {
                conn.starttls_at = None;
                stats.record(Phase::Handshake, at.elapsed());
                let steps = conn.script.tls_established();
                if let Some(fate) = apply(conn, steps, stats, opts) {
                    return fate;
                }
            }
        }
        // Replies.
        loop {
            match reply::parse(&conn.rbuf) {
                Ok(None) => break,
                Ok(Some((r, used))) => {
                    conn.rbuf.drain(..used);
                    let steps = conn.script.reply(&r);
                    if let Some(log) = &opts.accepted_log {
                        if steps.contains(&Step::Mark(Mark::MessageAccepted)) {
                            record_accepted(log, &r);
                        }
                    }
                    if let Some(fate) = apply(conn, steps, stats, opts) {
                        return fate;
                    }
                }
                Err(e) => return Fate::Failed("malformed reply".into(), format!("{e:?}")),
            }
        }
        if !got {
            break;
        }
    }
    match flush(conn) {
        Ok(()) => Fate::Open,
        Err(e) => Fate::Failed("write".into(), e.to_string()),
    }
}

fn script_context(conn: &Conn) -> String {
    format!("after {:?} in session", conn.start.elapsed())
}

fn record_accepted(log: &std::sync::Mutex<std::fs::File>, reply: &reply::Reply) {
    let line = format!("{} {}\n", reply.code, reply.text);
    if let Ok(mut f) = log.lock() {
        // One write per line: a reader never sees half of one, and a
        // loader killed later has already recorded what it was told.
        let _ = f.write_all(line.as_bytes());
    }
}

/// Acts on the script's steps; `Some(fate)` ends the session.
fn apply(conn: &mut Conn, steps: Vec<Step>, stats: &mut Stats, opts: &Options) -> Option<Fate> {
    for step in steps {
        match step {
            Step::Send(bytes) => match conn.tls.as_mut() {
                Some(tls) => {
                    let _ = tls.writer().write_all(&bytes);
                }
                None => conn.wbuf.extend_from_slice(&bytes),
            },
            Step::Mark(Mark::Banner) => stats.record(Phase::Banner, conn.connect_at.elapsed()),
            Step::Mark(Mark::StartTlsSent) => conn.starttls_at = Some(Instant::now()),
            Step::Mark(Mark::DataSent) => conn.data_at = Some(Instant::now()),
            Step::Mark(Mark::MessageAccepted) => {
                stats.messages += 1;
                if let Some(at) = conn.data_at.take() {
                    stats.record(Phase::Data, at.elapsed());
                }
            }
            Step::StartTls => {
                // RFC 3207 §4.2 seen from the client: nothing may follow
                // the 220 in the clear.
                if !conn.rbuf.is_empty() {
                    return Some(Fate::Failed(
                        "cleartext after 220 to STARTTLS".into(),
                        String::from_utf8_lossy(&conn.rbuf).into_owned(),
                    ));
                }
                let Some((config, name)) = opts.tls.as_ref() else {
                    return Some(Fate::Failed("tls".into(), "no TLS configuration".into()));
                };
                match ClientConnection::new(config.clone(), name.clone()) {
                    Ok(mut c) => {
                        // The whole message is handed over at once (the
                        // default 64 KiB limit cut larger ones short);
                        // flush sends it as the socket takes it.
                        c.set_buffer_limit(None);
                        conn.tls = Some(c)
                    }
                    Err(e) => return Some(Fate::Failed("tls".into(), e.to_string())),
                }
                if conn.starttls_at.is_none() {
                    conn.starttls_at = Some(Instant::now());
                }
            }
            Step::Hold => {
                conn.held = true;
                stats.held += 1;
            }
            Step::Done => {
                stats.record(Phase::Session, conn.start.elapsed());
                return Some(Fate::Done);
            }
            Step::Fail(kind, example) => return Some(Fate::Failed(kind, example)),
        }
    }
    None
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    while !conn.wbuf.is_empty() {
        match conn.sock.write(&conn.wbuf) {
            Ok(n) => {
                conn.wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(tls) = conn.tls.as_mut() {
        while tls.wants_write() {
            match tls.write_tls(&mut conn.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_back_off_and_a_connection_resets() {
        let now = Instant::now();
        let refused = Fate::Failed("connect".into(), "refused".into());
        let mut b = Backoff::default();
        assert!(!b.blocks(now));
        b.observe(&refused, false, now);
        assert_eq!(b.left(now), Some(Duration::from_millis(10)));
        for _ in 0..10 {
            b.observe(&refused, false, now);
        }
        assert_eq!(b.left(now), Some(Duration::from_secs(1)), "capped");
        assert!(b.blocks(now) && !b.blocks(now + Duration::from_secs(1)));
        // Other failures say nothing about reachability.
        b.observe(&Fate::Failed("read".into(), "reset".into()), false, now);
        assert!(b.blocks(now));
        // A session that got connected clears it.
        b.observe(&Fate::Done, true, now);
        assert!(!b.blocks(now) && b.left(now).is_none());
    }
}
