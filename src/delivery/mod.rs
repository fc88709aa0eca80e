//! Outbound delivery (OUT-1, OUT-4): the scheduler.
//!
//! One thread owns the queue: every message in the spool, with the state of
//! each recipient (recorded in the message's journal, so a restart resumes
//! where delivery stood). When recipients fall due it groups them by
//! destination, resolves the route (MX or fixed host) through the resolver
//! thread, and hands one job per destination — several messages on one
//! connection — to a shard, which runs the SMTP client on its event loop.
//! The shard reports per-recipient outcomes back; the scheduler records
//! them, retries temporary failures on the `[queue] retry` schedule until
//! `lifetime`, and bounces permanent failures (RFC 3464) to the sender.

pub mod dsn;

use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use crate::dns::{LookupError, Resolver};
use crate::policy::route::Via;
use crate::policy::{ClientRules, Snapshot};
use crate::smtp::client::{Outcome, Outgoing, Timeouts, TlsMode, Verdict};
use crate::spool::{self, Change, Entry, RcptState, RcptStatus, Work};

/// Work and news for the scheduler.
pub enum Event {
    /// A message was stored: deliver it.
    Queued(Entry),
    /// The resolver answered for an attempt.
    Resolved {
        attempt: u64,
        targets: Result<Vec<(String, IpAddr)>, LookupError>,
    },
    /// A shard finished an attempt.
    Finished(AttemptResult),
    /// Try everything now (`sealgate queue flush`).
    Flush,
    /// The gateway is stopping.
    Stop,
    /// A queue administration command (OPS-5) and where to answer.
    Admin(Admin, Sender<Result<String, String>>),
}

/// `sealgate queue …` commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    List { json: bool },
    Show(String),
    Flush,
    Delete(String),
    Hold(String),
    Release(String),
}

impl std::str::FromStr for Admin {
    type Err = String;
    fn from_str(line: &str) -> Result<Admin, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let id = |w: &[&str]| {
            w.get(1)
                .map(|s| s.to_string())
                .ok_or_else(|| format!("{} needs a queue id", w[0]))
        };
        match words.first().copied() {
            Some("list") => Ok(Admin::List { json: words.get(1) == Some(&"--json") }),
            Some("show") => Ok(Admin::Show(id(&words)?)),
            Some("flush") => Ok(Admin::Flush),
            Some("delete") => Ok(Admin::Delete(id(&words)?)),
            Some("hold") => Ok(Admin::Hold(id(&words)?)),
            Some("release") => Ok(Admin::Release(id(&words)?)),
            _ => Err(format!("unknown queue command {line:?}: list [--json] | show ID | flush | delete ID | hold ID | release ID")),
        }
    }
}

/// One host to try, in order.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
}

/// A delivery attempt for a shard: connect to the targets in order and
/// deliver the messages on one connection.
pub struct Job {
    pub attempt: u64,
    pub targets: Vec<Target>,
    pub tls: TlsMode,
    pub config: Arc<rustls::ClientConfig>,
    pub rules: Option<ClientRules>,
    pub roots: Arc<rustls::RootCertStore>,
    pub helo: String,
    pub timeouts: Timeouts,
    pub messages: Vec<Outgoing>,
    /// Queue ids, for log lines.
    pub ids: Vec<String>,
    pub reply: Sender<Event>,
}

/// What an attempt achieved: per message, per recipient.
pub struct AttemptResult {
    pub attempt: u64,
    pub outcomes: Vec<Vec<Outcome>>,
    /// `host[ip]:port` of the server that answered last, if any.
    pub relay: Option<String>,
    /// The TLS of that connection: 0 verified, 1 trusted, 2 untrusted,
    /// 3 none (for the metrics).
    pub tls_level: usize,
}

/// Outcome indexes of `Shared::deliveries`.
const SENT: usize = 0;
const DEFERRED: usize = 1;
const BOUNCED: usize = 2;
const EXPIRED: usize = 3;

/// Where the scheduler hands jobs: one per shard.
pub type ShardDoor = Box<dyn Fn(Job) + Send>;

#[derive(Debug, Clone)]
pub struct Settings {
    pub retry: Vec<Duration>,
    pub lifetime: Duration,
    /// Attempts in flight per destination (host or MX domain).
    pub per_destination: usize,
    /// Messages per connection.
    pub messages_per_connection: usize,
    pub timeouts: Timeouts,
}

struct Message {
    journal: usize,
    from: String,
    arrived: u64,
    size: u64,
    body_8bit: bool,
    hold: bool,
    rcpts: Vec<RcptState>,
    /// Attempts running for this message, and which recipients they carry:
    /// a recipient is never in two attempts at once.
    in_flight: usize,
    busy: Vec<bool>,
}

/// Due work for one destination: the route, the name to resolve, and
/// (queue id, recipient indexes) per message.
type Group = (
    crate::policy::route::Route,
    String,
    Vec<(String, Vec<usize>)>,
);

struct Attempt {
    /// (queue id, recipient indexes) per message in the job.
    parts: Vec<(String, Vec<usize>)>,
    key: String,
    port: u16,
    profile: Option<usize>,
    snapshot: Arc<Snapshot>,
}

pub struct Scheduler {
    rx: Receiver<Event>,
    tx: Sender<Event>,
    shared: Arc<crate::shard::Shared>,
    shards: Vec<ShardDoor>,
    next_shard: usize,
    resolver: Option<Resolver>,
    spool: SpoolAccess,
    settings: Settings,
    messages: HashMap<String, Message>,
    due: BinaryHeap<std::cmp::Reverse<(u64, String)>>,
    attempts: HashMap<u64, Attempt>,
    next_attempt: u64,
    in_flight_per_key: HashMap<String, usize>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What delivery does with the spool: read messages, record their
/// state in their journal (through its writer), store bounces.
pub struct SpoolAccess {
    pub reader: spool::Reader,
    /// Per journal, its writer's channel.
    pub work: Vec<Sender<Work>>,
}

impl SpoolAccess {
    fn record(&self, journal: usize, id: &str, change: Change) {
        if let Some(tx) = self.work.get(journal) {
            if tx.send(Work::Change(id.to_string(), change)).is_err() {
                tracing::error!(target: "send", "{id}: the spool writer is gone: state change not recorded");
            }
        }
    }

    /// Logs `lines` once the changes recorded before are written.
    fn say(&self, journal: usize, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        match self.work.get(journal) {
            Some(tx) => {
                if let Err(e) = tx.send(Work::Say(lines)) {
                    if let Work::Say(lines) = e.into_inner() {
                        for line in lines {
                            tracing::info!(target: "send", "{line}");
                        }
                    }
                }
            }
            None => {
                for line in lines {
                    tracing::info!(target: "send", "{line}");
                }
            }
        }
    }

    /// Stores a message delivery made (a bounce) and waits until it is
    /// durable.
    fn store(
        &self,
        message: crate::smtp::server::Message,
        hostname: &str,
    ) -> Result<String, String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let tx = self.work.first().ok_or("no spool writer")?;
        tx.send(Work::Store {
            message: Box::new(message),
            hostname: hostname.to_string(),
            reply,
        })
        .map_err(|_| "the spool writer is gone".to_string())?;
        match answer.recv() {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(f)) => Err(format!("cannot store: {f:?}")),
            Err(_) => Err("the spool writer is gone".into()),
        }
    }
}

impl Scheduler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rx: Receiver<Event>,
        tx: Sender<Event>,
        shared: Arc<crate::shard::Shared>,
        shards: Vec<ShardDoor>,
        resolver: Option<Resolver>,
        spool: SpoolAccess,
        settings: Settings,
        recovered: Vec<Entry>,
    ) -> Scheduler {
        let mut s = Scheduler {
            rx,
            tx,
            shared,
            shards,
            next_shard: 0,
            resolver,
            spool,
            settings,
            messages: HashMap::new(),
            due: BinaryHeap::new(),
            attempts: HashMap::new(),
            next_attempt: 0,
            in_flight_per_key: HashMap::new(),
        };
        for e in recovered {
            s.load(e);
        }
        s
    }

    /// Publishes the queue gauges for the metrics endpoint.
    fn publish(&self) {
        use std::sync::atomic::Ordering;
        self.shared
            .queue_messages
            .store(self.messages.len() as u64, Ordering::Relaxed);
        let oldest = self.messages.values().map(|m| m.arrived).min().unwrap_or(0);
        self.shared
            .queue_oldest_arrival
            .store(oldest, Ordering::Relaxed);
    }

    /// Runs until every sender of events is gone.
    pub fn run(mut self) {
        loop {
            self.run_due();
            self.publish();
            let wait = self
                .due
                .peek()
                .map(|std::cmp::Reverse((t, _))| Duration::from_secs(t.saturating_sub(now_secs())))
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            match self.rx.recv_timeout(wait) {
                Ok(Event::Stop) => return,
                Ok(ev) => self.handle(ev),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Queued(entry) => self.load(entry),
            Event::Resolved { attempt, targets } => self.resolved(attempt, targets),
            Event::Finished(result) => self.finished(result),
            Event::Stop => {}
            Event::Admin(cmd, reply) => {
                let answer = self.admin(cmd);
                let _ = reply.send(answer);
            }
            Event::Flush => {
                let now = now_secs();
                for m in self.messages.values_mut() {
                    for r in &mut m.rcpts {
                        if r.status == RcptStatus::Pending {
                            r.next_due = now;
                        }
                    }
                }
                let ids: Vec<String> = self.messages.keys().cloned().collect();
                for id in ids {
                    self.due.push(std::cmp::Reverse((now, id)));
                }
            }
        }
    }

    fn load(&mut self, e: Entry) {
        let id = e.id;
        let due = e
            .rcpts
            .iter()
            .filter(|r| r.status == RcptStatus::Pending)
            .map(|r| r.next_due)
            .min();
        let count = e.rcpts.len();
        self.messages.insert(
            id.clone(),
            Message {
                journal: e.journal,
                from: e.meta.from,
                arrived: e.meta.arrived,
                size: e.size,
                body_8bit: e.meta.body_8bit,
                hold: e.hold,
                rcpts: e.rcpts,
                in_flight: 0,
                busy: vec![false; count],
            },
        );
        match due {
            Some(t) => self.due.push(std::cmp::Reverse((t, id))),
            None => self.finish_message(&id, Vec::new()),
        }
    }

    /// Groups every due recipient by destination and starts attempts.
    fn run_due(&mut self) {
        let now = now_secs();
        let snapshot = self.shared.snapshot.load_full();
        // destination key → (route, parts)
        let mut groups: HashMap<String, Group> = HashMap::new();
        while let Some(std::cmp::Reverse((t, _))) = self.due.peek() {
            if *t > now {
                break;
            }
            let Some(std::cmp::Reverse((_, id))) = self.due.pop() else {
                break;
            };
            let Some(m) = self.messages.get(&id) else {
                continue;
            };
            if m.hold {
                continue;
            }
            let mut by_key: HashMap<String, (crate::policy::route::Route, String, Vec<usize>)> =
                HashMap::new();
            for (i, r) in m.rcpts.iter().enumerate() {
                if r.status != RcptStatus::Pending || r.next_due > now || m.busy[i] {
                    continue;
                }
                let domain = r
                    .rcpt
                    .rsplit_once('@')
                    .map(|(_, d)| d)
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let route = snapshot.routes.for_domain(&domain);
                let (key, name) = match &route.via {
                    Via::Mx => (format!("mx:{domain}:{}", route.port), domain.clone()),
                    Via::Host { host, port } => (format!("host:{host}:{port}"), host.clone()),
                };
                by_key
                    .entry(key)
                    .or_insert_with(|| (route, name, Vec::new()))
                    .2
                    .push(i);
            }
            for (key, (route, name, idxs)) in by_key {
                let g = groups
                    .entry(key)
                    .or_insert_with(|| (route, name, Vec::new()));
                g.2.push((id.clone(), idxs));
            }
        }
        for (key, (route, name, parts)) in groups {
            for chunk in parts.chunks(self.settings.messages_per_connection.max(1)) {
                let busy = self.in_flight_per_key.get(&key).copied().unwrap_or(0);
                if busy >= self.settings.per_destination {
                    // Per-destination limit: try these again shortly.
                    for (id, _) in chunk {
                        self.due.push(std::cmp::Reverse((now + 1, id.clone())));
                    }
                    continue;
                }
                self.start_attempt(&key, &route, &name, chunk.to_vec(), snapshot.clone());
            }
        }
    }

    fn start_attempt(
        &mut self,
        key: &str,
        route: &crate::policy::route::Route,
        name: &str,
        parts: Vec<(String, Vec<usize>)>,
        snapshot: Arc<Snapshot>,
    ) {
        self.next_attempt += 1;
        let attempt = self.next_attempt;
        for (id, idxs) in &parts {
            if let Some(m) = self.messages.get_mut(id) {
                m.in_flight += 1;
                for i in idxs {
                    m.busy[*i] = true;
                }
            }
        }
        *self.in_flight_per_key.entry(key.to_string()).or_default() += 1;
        let (port, host_literal) = match &route.via {
            Via::Mx => (route.port, None),
            Via::Host { host, port } => (*port, Some(host.clone())),
        };
        self.attempts.insert(
            attempt,
            Attempt {
                parts,
                key: key.to_string(),
                port,
                profile: route.profile,
                snapshot,
            },
        );
        // An address literal needs no lookup (RFC 5321 §4.1.3).
        if let Some(ip) = host_literal
            .as_deref()
            .and_then(|h| {
                h.strip_prefix('[')?
                    .strip_suffix(']')
                    .map(|s| s.trim_start_matches("IPv6:").to_string())
            })
            .and_then(|s| s.parse::<IpAddr>().ok())
        {
            self.resolved(attempt, Ok(vec![(host_literal.unwrap_or_default(), ip)]));
            return;
        }
        let Some(resolver) = &self.resolver else {
            self.resolved(attempt, Err(LookupError::Temporary("no resolver".into())));
            return;
        };
        let tx = self.tx.clone();
        let mx = matches!(route.via, Via::Mx);
        resolver.targets(name, mx, move |targets| {
            let _ = tx.send(Event::Resolved { attempt, targets });
        });
    }

    fn resolved(&mut self, attempt: u64, targets: Result<Vec<(String, IpAddr)>, LookupError>) {
        let Some(a) = self.attempts.get(&attempt) else {
            return;
        };
        let targets = match targets {
            Ok(t) => t,
            Err(e) => {
                let outcome = match &e {
                    // RFC 7505 §4.2: 556 5.1.10 for a null MX.
                    LookupError::NullMx => Outcome {
                        verdict: Verdict::Permanent,
                        status: "5.1.10".into(),
                        detail: "the recipient domain accepts no mail (null MX, RFC 7505)".into(),
                    },
                    LookupError::NotFound(why) => Outcome {
                        verdict: Verdict::Permanent,
                        status: "5.1.2".into(),
                        detail: format!("host or domain name not found: {why}"),
                    },
                    LookupError::Temporary(why) => Outcome {
                        verdict: Verdict::Temporary,
                        status: "4.4.3".into(),
                        detail: format!("DNS lookup failed: {why}"),
                    },
                };
                let outcomes = a
                    .parts
                    .iter()
                    .map(|(_, idxs)| vec![outcome.clone(); idxs.len()])
                    .collect();
                self.finished(AttemptResult {
                    attempt,
                    outcomes,
                    relay: None,
                    tls_level: 3,
                });
                return;
            }
        };
        let snapshot = a.snapshot.clone();
        let rules = a
            .profile
            .and_then(|i| snapshot.profiles.list.get(i))
            .map(|p| p.client.clone());
        let tls = if rules.as_ref().is_some_and(|r| r.mandatory_tls) {
            TlsMode::Mandatory
        } else {
            TlsMode::Opportunistic
        };
        let mut messages = Vec::new();
        let mut ids = Vec::new();
        let mut unreadable = Vec::new();
        for (id, idxs) in &a.parts {
            let Some(m) = self.messages.get(id) else {
                continue;
            };
            let data = match self.spool.reader.read(m.journal, id) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(target: "send", "{id}: cannot read queued message: {e}");
                    unreadable.push(id.clone());
                    continue;
                }
            };
            messages.push(Outgoing {
                from: m.from.clone(),
                recipients: idxs.iter().map(|i| m.rcpts[*i].rcpt.clone()).collect(),
                data: Arc::from(data),
                body_8bit: m.body_8bit,
            });
            ids.push(id.clone());
        }
        if !unreadable.is_empty() {
            // Deferred, not sent empty: the attempt goes on without them.
            let mut failed = Vec::new();
            if let Some(a) = self.attempts.get_mut(&attempt) {
                a.parts.retain(|(id, idxs)| {
                    let bad = unreadable.contains(id);
                    if bad {
                        failed.push((id.clone(), idxs.clone()));
                    }
                    !bad
                });
            }
            self.next_attempt += 1;
            let side = self.next_attempt;
            let key = self
                .attempts
                .get(&attempt)
                .map(|a| a.key.clone())
                .unwrap_or_default();
            *self.in_flight_per_key.entry(key.clone()).or_default() += 1;
            let outcome = Outcome {
                verdict: Verdict::Temporary,
                status: "4.3.0".into(),
                detail: "the queued message could not be read from the spool".into(),
            };
            let outcomes = failed
                .iter()
                .map(|(_, i)| vec![outcome.clone(); i.len()])
                .collect();
            self.attempts.insert(
                side,
                Attempt {
                    parts: failed,
                    key,
                    port: 0,
                    profile: None,
                    snapshot: snapshot.clone(),
                },
            );
            self.finished(AttemptResult {
                attempt: side,
                outcomes,
                relay: None,
                tls_level: 3,
            });
            if messages.is_empty() {
                self.finished(AttemptResult {
                    attempt,
                    outcomes: Vec::new(),
                    relay: None,
                    tls_level: 3,
                });
                return;
            }
        }
        let Some(a) = self.attempts.get(&attempt) else {
            return;
        };
        let job = Job {
            attempt,
            targets: targets
                .into_iter()
                .map(|(host, ip)| Target {
                    host,
                    addr: SocketAddr::new(ip, a.port),
                })
                .collect(),
            tls,
            config: snapshot.outbound.config(a.profile),
            rules,
            roots: snapshot.outbound.roots.clone(),
            helo: snapshot.hostname.clone(),
            timeouts: self.settings.timeouts,
            messages,
            ids,
            reply: self.tx.clone(),
        };
        let door = &self.shards[self.next_shard % self.shards.len().max(1)];
        self.next_shard += 1;
        door(job);
    }

    fn finished(&mut self, result: AttemptResult) {
        let Some(a) = self.attempts.remove(&result.attempt) else {
            return;
        };
        if let Some(n) = self.in_flight_per_key.get_mut(&a.key) {
            *n = n.saturating_sub(1);
        }
        let now = now_secs();
        let relay = result.relay.as_deref().unwrap_or("none");
        let tls = result.tls_level.min(3);
        for ((id, idxs), outcomes) in a.parts.iter().zip(result.outcomes.iter()) {
            let Some(m) = self.messages.get_mut(id) else {
                continue;
            };
            m.in_flight = m.in_flight.saturating_sub(1);
            for i in idxs {
                m.busy[*i] = false;
            }
            let delay = now.saturating_sub(m.arrived);
            let mut lines = Vec::with_capacity(idxs.len());
            for (i, o) in idxs.iter().zip(outcomes) {
                let r = &mut m.rcpts[*i];
                r.attempts += 1;
                r.last = format!("dsn={} {}", o.status, o.detail);
                let status = match o.verdict {
                    Verdict::Delivered => {
                        r.status = RcptStatus::Delivered;
                        self.shared.deliveries[SENT][tls]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        "sent"
                    }
                    Verdict::Permanent => {
                        r.status = RcptStatus::Failed;
                        self.shared.deliveries[BOUNCED][tls]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        "bounced"
                    }
                    Verdict::Temporary => {
                        let expired = Duration::from_secs(now.saturating_sub(m.arrived))
                            >= self.settings.lifetime;
                        if expired {
                            r.status = RcptStatus::Failed;
                            r.last = format!(
                                "dsn=4.4.7 delivery time expired; last error: {}",
                                o.detail
                            );
                            self.shared.deliveries[EXPIRED][tls]
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            "expired"
                        } else {
                            let step = (r.attempts as usize)
                                .saturating_sub(1)
                                .min(self.settings.retry.len().saturating_sub(1));
                            let wait = self
                                .settings
                                .retry
                                .get(step)
                                .copied()
                                .unwrap_or(Duration::from_secs(300));
                            r.next_due = now + wait.as_secs().max(1);
                            self.shared.deliveries[DEFERRED][tls]
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            "deferred"
                        }
                    }
                };
                lines.push(format!(
                    "{id}: to=<{}>, relay={relay}, delay={delay}, dsn={}, status={status} ({})",
                    r.rcpt,
                    o.status,
                    crate::smtp::received::sanitize_line(&o.detail)
                ));
                let change = Change::Recipient {
                    index: *i as u32,
                    state: r.clone(),
                };
                self.spool.record(m.journal, id, change);
            }
            // The outcome is recorded in the journal (synced with the next
            // batch: a crash before may deliver a recipient again, never
            // lose one); a message with every recipient final is done once
            // its bounce is queued.
            let next = m
                .rcpts
                .iter()
                .filter(|r| r.status == RcptStatus::Pending)
                .map(|r| r.next_due)
                .min();
            match next {
                Some(t) => {
                    self.spool.say(m.journal, lines);
                    self.due.push(std::cmp::Reverse((t, id.clone())));
                }
                None => {
                    let id = id.clone();
                    self.finish_message(&id, lines);
                }
            }
        }
    }

    fn admin(&mut self, cmd: Admin) -> Result<String, String> {
        use std::fmt::Write as _;
        match cmd {
            Admin::List { json } => {
                let mut ids: Vec<&String> = self.messages.keys().collect();
                ids.sort();
                if json {
                    let list: Vec<serde_json::Value> = ids
                        .iter()
                        .map(|id| {
                            let m = &self.messages[*id];
                            serde_json::json!({
                                "id": id,
                                "arrived": m.arrived,
                                "size": m.size,
                                "from": m.from,
                                "hold": m.hold,
                                "recipients": m.rcpts.iter().map(|r| serde_json::json!({
                                    "rcpt": r.rcpt,
                                    "status": format!("{:?}", r.status).to_lowercase(),
                                    "attempts": r.attempts,
                                    "next_due": r.next_due,
                                    "last": r.last,
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    return serde_json::to_string_pretty(&list).map_err(|e| e.to_string());
                }
                let mut out = String::new();
                for id in ids {
                    let m = &self.messages[id];
                    let _ = writeln!(
                        out,
                        "{id}{} {} {} <{}>",
                        if m.hold { "!" } else { "" },
                        m.size,
                        crate::smtp::received::rfc5322_date(
                            UNIX_EPOCH + Duration::from_secs(m.arrived)
                        ),
                        m.from
                    );
                    for r in &m.rcpts {
                        let _ = writeln!(
                            out,
                            "    {} {:?} attempts={} {}",
                            r.rcpt, r.status, r.attempts, r.last
                        );
                    }
                }
                let _ = writeln!(out, "-- {} message(s) in queue", self.messages.len());
                Ok(out)
            }
            Admin::Show(id) => {
                let m = self
                    .messages
                    .get(&id)
                    .ok_or_else(|| format!("{id}: no such message in the queue"))?;
                let data = self
                    .spool
                    .reader
                    .read(m.journal, &id)
                    .map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&data);
                let mut out = format!("id {id}\narrived {}\nfrom <{}>\n", m.arrived, m.from);
                for r in &m.rcpts {
                    let _ = writeln!(out, "rcpt <{}>", r.rcpt);
                }
                let _ = writeln!(
                    out,
                    "body {}\nsize {}\nhold {}\n",
                    if m.body_8bit { "8BITMIME" } else { "7BIT" },
                    m.size,
                    u8::from(m.hold)
                );
                out.push_str(text.split("\r\n\r\n").next().unwrap_or(""));
                out.push_str("\n\n");
                for r in &m.rcpts {
                    let _ = writeln!(
                        out,
                        "{} {:?} attempts={} next_due={} {}",
                        r.rcpt, r.status, r.attempts, r.next_due, r.last
                    );
                }
                Ok(out)
            }
            Admin::Flush => {
                self.handle(Event::Flush);
                Ok(format!(
                    "{} message(s) scheduled for delivery now",
                    self.messages.len()
                ))
            }
            Admin::Delete(id) => {
                let m = self
                    .messages
                    .get(&id)
                    .ok_or_else(|| format!("{id}: no such message in the queue"))?;
                if m.in_flight > 0 {
                    return Err(format!("{id}: a delivery attempt is running; try again"));
                }
                self.spool.record(m.journal, &id, Change::Done);
                self.messages.remove(&id);
                tracing::info!(target: "send", "{id}: removed by the administrator");
                Ok(format!("{id}: deleted"))
            }
            Admin::Hold(id) | Admin::Release(id) if !self.messages.contains_key(&id) => {
                Err(format!("{id}: no such message in the queue"))
            }
            Admin::Hold(id) => {
                let m = self.messages.get_mut(&id).ok_or("gone")?;
                m.hold = true;
                self.spool.record(m.journal, &id, Change::Hold);
                tracing::info!(target: "send", "{id}: placed on hold");
                Ok(format!("{id}: on hold"))
            }
            Admin::Release(id) => {
                let m = self.messages.get_mut(&id).ok_or("gone")?;
                m.hold = false;
                let now = now_secs();
                for r in &mut m.rcpts {
                    if r.status == RcptStatus::Pending {
                        r.next_due = now;
                    }
                }
                self.spool.record(m.journal, &id, Change::Release);
                self.due.push(std::cmp::Reverse((now, id.clone())));
                tracing::info!(target: "send", "{id}: released from hold");
                Ok(format!("{id}: released"))
            }
        }
    }

    /// Every recipient is final: bounce the failed ones, then the message
    /// is done.
    fn finish_message(&mut self, id: &str, lines: Vec<String>) {
        let Some(m) = self.messages.remove(id) else {
            return;
        };
        let failed: Vec<&RcptState> = m
            .rcpts
            .iter()
            .filter(|r| r.status == RcptStatus::Failed)
            .collect();
        if !failed.is_empty() {
            if m.from.is_empty() {
                // RFC 5321 §4.5.5 / §6.1: never a bounce for a bounce.
                tracing::info!(target: "send", "{id}: undeliverable message with null sender: no notification");
            } else if let Err(e) = self.bounce(id, &m, &failed) {
                tracing::error!(target: "send", "{id}: cannot queue the delivery status notification: {e}; message kept");
                self.spool.say(m.journal, lines);
                // Kept (its recipients' states are recorded): the bounce
                // is tried again at the next start.
                return;
            }
        }
        self.spool.record(m.journal, id, Change::Done);
        let mut lines = lines;
        lines.push(format!("{id}: removed"));
        self.spool.say(m.journal, lines);
    }

    fn bounce(&mut self, id: &str, m: &Message, failed: &[&RcptState]) -> Result<(), String> {
        let original = self.spool.reader.read(m.journal, id).unwrap_or_default();
        let hostname = self.shared.snapshot.load().hostname.clone();
        let parts: Vec<(String, String)> = failed
            .iter()
            .map(|r| {
                let rest = r.last.strip_prefix("dsn=").unwrap_or(&r.last);
                let (status, detail) = rest.split_once(' ').unwrap_or((rest, ""));
                (status.to_string(), detail.to_string())
            })
            .collect();
        let list: Vec<dsn::Failed<'_>> = failed
            .iter()
            .zip(&parts)
            .map(|(r, (status, detail))| dsn::Failed {
                rcpt: &r.rcpt,
                status,
                diagnostic: detail,
                remote: None,
            })
            .collect();
        let now = SystemTime::now();
        let body = dsn::build(
            &hostname,
            id,
            &m.from,
            UNIX_EPOCH + Duration::from_secs(m.arrived),
            &list,
            &original,
            now,
        );
        let envelope = crate::smtp::server::Envelope {
            from: String::new(),
            recipients: vec![m.from.clone()],
            helo: hostname.clone(),
            esmtp: true,
            body_8bit: false,
            peer: crate::smtp::server::Peer {
                ip: IpAddr::from([127, 0, 0, 1]),
                port: 0,
                name: Some(hostname.clone()),
            },
            tls: None,
        };
        let message = crate::smtp::server::Message {
            envelope,
            data: body,
        };
        let dsn_id = self.spool.store(message, &hostname)?;
        tracing::info!(target: "send", "{id}: sender non-delivery notification: {dsn_id}");
        Ok(())
    }
}
