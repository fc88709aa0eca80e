//! Outbound delivery (OUT-1, OUT-4): the scheduler.
//!
//! The queue itself is sans-IO ([`queue::Queue`]): events in, effects out.
//! One thread, the [`Scheduler`], owns it and performs its effects: every
//! message in the spool, with the state of each recipient (recorded in the
//! message's journal, so a restart resumes where delivery stood). When recipients fall due it groups them by
//! destination, resolves the route (MX or fixed host) through the resolver
//! thread, and hands one job per destination — several messages on one
//! connection — to a shard, which runs the SMTP client on its event loop.
//! The shard reports per-recipient outcomes back; the scheduler records
//! them, retries temporary failures on the `[queue] retry` schedule until
//! `lifetime`, and bounces permanent failures (RFC 3464) to the sender.

mod admin;
pub mod attempt;
pub mod dsn;
pub mod posture;
pub mod queue;
mod reports;

pub use admin::{Admin, AdminError, Answer, MessageView, PolicyAction, QueueChange};

use crate::model::{EnhancedStatus, StatusClass};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::handoff;
use strum::EnumCount;

use crate::model::unix_now;

use crate::dns::{LookupError, Resolver};
use crate::model::{Outcome, Outgoing, Timeouts};
use crate::snapshot::Snapshot;
use crate::spool::{self, Change, Entry, Work};
use queue::{Effect, Queue};

/// Work and news for the scheduler.
pub enum Event {
    /// Messages were stored (a writer's batch): deliver them.
    Queued(Vec<Entry>),
    /// The resolver answered for an attempt.
    Resolved {
        attempt: u64,
        targets: Result<Vec<crate::dns::Found>, LookupError>,
    },
    /// A shard finished an attempt.
    Finished(AttemptResult),
    /// Try everything now (`sealgate queue flush`).
    Flush,
    /// The gateway is stopping.
    Stop,
    /// A queue administration command (OPS-5) and where to answer.
    Admin(Admin, crossbeam_channel::Sender<Result<Answer, AdminError>>),
    /// The fleet's answer to this node's claim on a report.
    ReportClaimed {
        day: String,
        domain: String,
        claim: crate::fleet::Claim,
    },
    /// A policy domain's `_smtp._tls` record, for its report of `day`.
    ReportRua {
        day: String,
        domain: String,
        rua: Result<Vec<String>, String>,
    },
}

/// One host to try, in order.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
    /// What the recipient's DNS says of authenticating this host.
    pub dane: crate::model::Dane,
    /// What the recipient domain's MTA-STS policy says of it.
    pub sts: crate::model::Sts,
}

impl Target {
    /// A host the lookup found, at the delivery `port`.
    pub fn new(f: crate::dns::Found, port: u16) -> Target {
        Target {
            host: f.host,
            addr: SocketAddr::new(f.ip, port),
            dane: f.dane,
            sts: f.sts,
        }
    }
}

/// A delivery attempt for a shard: connect to the targets in order and
/// deliver the messages on one connection.
pub struct Job {
    pub attempt: u64,
    pub targets: Vec<Target>,
    /// What the destination asks of every host (the one outbound
    /// decision, [`attempt::Attempt`], applies it).
    pub policy: attempt::Policy,
    pub config: Arc<rustls::ClientConfig>,
    pub roots: Arc<rustls::RootCertStore>,
    pub helo: String,
    pub timeouts: Timeouts,
    pub messages: Vec<Outgoing>,
    /// Queue ids, for log lines.
    pub ids: Vec<String>,
    pub reply: handoff::Sender<Event>,
}

/// What an attempt achieved: per message, per recipient.
pub struct AttemptResult {
    pub attempt: u64,
    pub outcomes: Vec<Vec<Outcome>>,
    /// `host[ip]:port` of the server that answered last, if any.
    pub relay: Option<String>,
    /// The TLS of that connection (for the metrics).
    pub tls_level: TlsLevel,
    /// Checks that failed in report-only mode (delivered anyway).
    pub would_refuse: Vec<WouldRefuse>,
    /// `TLS-Required: No` set a recipient's DANE or MTA-STS policy aside.
    pub set_aside: bool,
    /// What the server was like, when the session delivered a recipient.
    pub observed: Option<posture::Observed>,
    /// Each session to a host and how its TLS went (RFC 8460).
    pub sessions: Vec<crate::tlsrpt::Session>,
}

/// A check that would have refused a delivery had it been enforced:
/// `sealgate_policy_would_refuse_total{source, reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::EnumCount)]
pub enum WouldRefuse {
    /// The host's DANE lookup failed (bogus, SERVFAIL): no connection.
    DaneLookup,
    /// DANE requires TLS; the host did not do it.
    DaneNoTls,
    /// The certificate matches none of the host's TLSA records.
    DaneCertificate,
    /// An MX host outside the MTA-STS policy's patterns was used.
    StsMx,
    /// The certificate does not verify or name the MX host.
    StsCertificate,
    /// An MTA-STS policy applies; the session was in the clear.
    StsNoTls,
    /// The route profile's certificate rules (verify, names, pins).
    ProfileCertificate,
    /// The route profile's `mandatory_tls`; the session was in the clear.
    ProfileNoTls,
}

impl WouldRefuse {
    /// `(source, reason)` labels.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            WouldRefuse::DaneLookup => ("dane", "lookup_failed"),
            WouldRefuse::DaneNoTls => ("dane", "no_tls"),
            WouldRefuse::DaneCertificate => ("dane", "certificate"),
            WouldRefuse::StsMx => ("mta-sts", "mx"),
            WouldRefuse::StsCertificate => ("mta-sts", "certificate"),
            WouldRefuse::StsNoTls => ("mta-sts", "no_tls"),
            WouldRefuse::ProfileCertificate => ("profile.client", "certificate"),
            WouldRefuse::ProfileNoTls => ("profile.client", "no_tls"),
        }
    }

    /// Its index in the would-refuse counters (declaration order).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How an attempt's connection was protected, as the metrics label it
/// (`sealgate_deliveries_total{tls=…}`; Postfix's words for the first
/// three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::EnumIter, strum::EnumCount, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum TlsLevel {
    /// TLS; the certificate matches the host's DNSSEC-signed TLSA records
    /// (RFC 7672).
    Dane,
    /// TLS under an enforced MTA-STS policy (RFC 8461): a certificate
    /// that chains to a trusted root and names the MX host.
    MtaSts,
    /// TLS; the certificate chains to a trusted root and names the host.
    Verified,
    /// TLS; a trusted chain, but not the host's name.
    Trusted,
    /// TLS without a trusted chain.
    Untrusted,
    /// No TLS.
    None,
}

impl TlsLevel {
    /// The `tls` label of the delivery metrics (`dane`, `mta-sts`, …).
    pub fn label(self) -> &'static str {
        self.into()
    }

    /// Its index in [`Gauges::deliveries`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<crate::tls::outbound::Trust> for TlsLevel {
    fn from(t: crate::tls::outbound::Trust) -> TlsLevel {
        match t {
            crate::tls::outbound::Trust::Verified => TlsLevel::Verified,
            crate::tls::outbound::Trust::Trusted => TlsLevel::Trusted,
            crate::tls::outbound::Trust::Untrusted => TlsLevel::Untrusted,
        }
    }
}

/// Where the scheduler hands jobs: one per shard.
pub type ShardDoor = Box<dyn Fn(Job) + Send>;

/// What delivery does with the spool: read messages, record their
/// state in their journal (through its writer), store bounces.
pub struct SpoolAccess {
    reader: spool::Reader,
    /// Per journal, its writer's channel.
    work: Vec<handoff::Sender<Work>>,
    /// Per journal, what this turn has for its writer.
    pending: Vec<Vec<Work>>,
}

impl SpoolAccess {
    /// `work[n]` is journal `n`'s writer.
    pub fn new(reader: spool::Reader, work: Vec<handoff::Sender<Work>>) -> SpoolAccess {
        SpoolAccess {
            reader,
            pending: work.iter().map(|_| Vec::new()).collect(),
            work,
        }
    }

    /// Queues a state change for the journal's writer (sent with the
    /// others of this turn by [`SpoolAccess::send`]).
    fn record(&mut self, journal: usize, id: &str, change: Change) {
        self.queue_work(journal, Work::Change(id.to_string(), change));
    }

    /// Logs `lines` once the changes recorded before are written.
    fn say(&mut self, journal: usize, lines: Vec<crate::logs::QueueLine>) {
        if !lines.is_empty() {
            self.queue_work(journal, Work::Say(lines));
        }
    }

    fn queue_work(&mut self, journal: usize, work: Work) {
        match self.pending.get_mut(journal) {
            Some(p) => p.push(work),
            None => tracing::error!(target: "send", "no spool writer for journal {journal}"),
        }
    }

    /// Hands each writer what this turn queued for it, in one message (one
    /// wake-up of the writer, not one per change).
    fn send(&mut self) {
        for (journal, items) in self.pending.iter_mut().enumerate() {
            if items.is_empty() {
                continue;
            }
            let batch = Work::Batch(std::mem::take(items));
            if let Some(Err(e)) = self.work.get(journal).map(|tx| tx.send(batch)) {
                tracing::error!(target: "send", "the spool writer of journal {journal} is gone: state changes not recorded");
                if let Work::Batch(items) = e.into_inner() {
                    for item in items {
                        if let Work::Say(lines) = item {
                            for line in lines {
                                line.emit();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Stores a message delivery made (a bounce) and waits until it is
    /// durable.
    fn store(
        &mut self,
        message: crate::model::Message,
        hostname: &str,
    ) -> Result<String, BounceError> {
        // What this turn recorded goes first.
        self.send();
        let (reply, answer) = crossbeam_channel::bounded(1);
        let tx = self.work.first().ok_or(BounceError::NoWriter)?;
        tx.send(Work::Store {
            message: Box::new(message),
            hostname: hostname.to_string(),
            reply,
        })
        .map_err(|_| BounceError::WriterGone)?;
        match answer.recv() {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(f)) => Err(BounceError::Store(f)),
            Err(_) => Err(BounceError::WriterGone),
        }
    }
}

/// Why a delivery status notification could not be queued (the message
/// is kept and the bounce tried again at the next start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BounceError {
    #[error("no spool writer")]
    NoWriter,
    #[error("the spool writer is gone")]
    WriterGone,
    #[error("cannot store: {0:?}")]
    Store(crate::model::StoreFailure),
}

/// What the metrics endpoint reads of delivery.
#[derive(Debug, Default)]
pub struct Gauges {
    pub queue_messages: AtomicU64,
    /// Unix seconds of the oldest queued message's arrival (0: none).
    pub queue_oldest_arrival: AtomicU64,
    /// Per-recipient outcomes (sent, deferred, bounced, expired) by the
    /// TLS of the attempt (verified, trusted, untrusted, none).
    pub deliveries: [[AtomicU64; TlsLevel::COUNT]; queue::Counted::COUNT],
    /// Checks that failed in report-only mode, by [`WouldRefuse::index`].
    pub would_refuse: [AtomicU64; WouldRefuse::COUNT],
    /// Messages whose attempt set a recipient policy aside for their
    /// `TLS-Required: No` header (RFC 8689 §5).
    pub tls_required_no: AtomicU64,
    /// Each destination domain's TLS posture and the downgrades (written
    /// by the scheduler once per attempt, read by the status page).
    pub postures: std::sync::Mutex<posture::Postures>,
}

/// The current configuration snapshot (swapped on reload).
/// Most events handled before the queue's effects are performed.
const MAX_EVENTS_PER_TURN: usize = 256;

pub type SnapshotSource = Box<dyn Fn() -> Arc<Snapshot> + Send>;

/// The thread around the [`Queue`]: feeds it events with the time and
/// performs what it asks.
pub struct Scheduler {
    rx: handoff::Receiver<Event>,
    tx: handoff::Sender<Event>,
    snapshot: SnapshotSource,
    gauges: Arc<Gauges>,
    shards: Vec<ShardDoor>,
    next_shard: usize,
    resolver: Option<Resolver>,
    spool: SpoolAccess,
    queue: Queue,
    reports: reports::Reports,
    /// `[fleet]`: reports are claimed from the store, built from every
    /// node's figures.
    fleet: Option<crate::fleet::Handle>,
    /// The fleet's days of the reports this node claimed, with the
    /// submitter host each is made under.
    claimed: std::collections::HashMap<(String, String), (crate::tlsrpt::Day, String)>,
}

impl Scheduler {
    /// In a fleet: reports go through the store's claims.
    pub fn with_fleet(mut self, fleet: Option<crate::fleet::Handle>) -> Scheduler {
        self.fleet = fleet;
        self
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rx: handoff::Receiver<Event>,
        tx: handoff::Sender<Event>,
        snapshot: SnapshotSource,
        gauges: Arc<Gauges>,
        shards: Vec<ShardDoor>,
        resolver: Option<Resolver>,
        spool: SpoolAccess,
        reports_dir: Option<std::path::PathBuf>,
        recovered: Vec<Entry>,
    ) -> Scheduler {
        let settings = snapshot().queue.clone();
        let reports = reports::Reports::new(
            reports_dir,
            resolver.as_ref().map(|r| r.sts.clone()),
            unix_now(),
        );
        let mut s = Scheduler {
            reports,
            rx,
            tx,
            snapshot,
            gauges,
            shards,
            next_shard: 0,
            resolver,
            spool,
            queue: Queue::new(settings),
            fleet: None,
            claimed: std::collections::HashMap::new(),
        };
        for e in recovered {
            s.queue.queued(e);
        }
        s.perform();
        s
    }

    /// Publishes the queue gauges for the metrics endpoint.
    fn publish(&self) {
        self.gauges
            .queue_messages
            .store(self.queue.len() as u64, Ordering::Relaxed);
        self.gauges
            .queue_oldest_arrival
            .store(self.queue.oldest_arrival().unwrap_or(0), Ordering::Relaxed);
    }

    /// Runs until every sender of events is gone.
    pub fn run(mut self) {
        let bell = self.rx.bell().unwrap_or_default();
        loop {
            let snapshot = (self.snapshot)();
            // `[queue]` as the last reload left it.
            self.queue.configure(&snapshot.queue);
            self.queue.run_due(unix_now(), &snapshot);
            self.perform();
            for (day, domain) in self.reports.tick(unix_now(), &snapshot.tls_rpt) {
                self.report_lookup(day, domain);
            }
            self.publish();
            let wait = self
                .queue
                .next_due()
                .map(|t| Duration::from_secs(t.saturating_sub(unix_now())))
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            // Every event that waited is handled before the queue's
            // effects are performed (one hand-off to each shard and writer
            // per turn); the thread sleeps only when none waits.
            let mut handled = 0;
            while handled < MAX_EVENTS_PER_TURN {
                match self.rx.try_recv() {
                    Ok(Event::Stop) => {
                        self.reports.flush(unix_now());
                        return;
                    }
                    Ok(ev) => {
                        self.handle(ev);
                        handled += 1;
                    }
                    Err(handoff::TryRecvError::Empty) => break,
                    Err(handoff::TryRecvError::Disconnected) => return,
                }
            }
            if handled == 0 {
                bell.sleep(wait, || self.rx.has_news());
            }
            self.perform();
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = unix_now();
        match ev {
            Event::Queued(entries) => {
                for entry in entries {
                    self.queue.queued(entry);
                }
            }
            Event::Resolved { attempt, targets } => self.queue.resolved(attempt, targets, now),
            Event::Finished(result) => {
                for w in &result.would_refuse {
                    self.gauges.would_refuse[w.index()].fetch_add(1, Ordering::Relaxed);
                }
                if result.set_aside {
                    self.gauges
                        .tls_required_no
                        .fetch_add(result.outcomes.len() as u64, Ordering::Relaxed);
                }
                self.queue.finished(result, now)
            }
            Event::Stop => {}
            Event::ReportRua { day, domain, rua } => self.report_send(&day, &domain, rua),
            Event::ReportClaimed { day, domain, claim } => match claim {
                crate::fleet::Claim::Mine(figures, by) => {
                    self.claimed
                        .insert((day.clone(), domain.clone()), (figures, by));
                    self.report_lookup(day, domain);
                }
                crate::fleet::Claim::Taken => {
                    tracing::info!(target: "send", "TLS report for {domain} ({day}): another node of the fleet sends it");
                    self.reports.done(&day, &domain, unix_now());
                }
                crate::fleet::Claim::Unavailable(why) => {
                    tracing::warn!(target: "send", "TLS report for {domain} ({day}): {why}; trying again later");
                    self.reports.retry(&day, &domain);
                }
            },
            Event::Admin(cmd, reply) => {
                let answer = match cmd {
                    Admin::Policy(action, domain) => {
                        // Answered once the resolver thread has.
                        self.policy(action, &domain, reply);
                        return;
                    }
                    Admin::ReportFlush => {
                        self.reports.flush(now);
                        Ok(Answer::ReportFlushed)
                    }
                    Admin::ReportSend { day, domain } => {
                        self.reports.flush(now);
                        let settings = (self.snapshot)().tls_rpt.clone();
                        let due = self.reports.send_now(&day, domain.as_deref(), &settings);
                        for (d, name) in &due {
                            self.report_lookup(d.clone(), name.clone());
                        }
                        Ok(Answer::ReportSending { day, due })
                    }
                    Admin::List => Ok(self.list()),
                    Admin::Show(id) => self.show(&id),
                    Admin::Change(change) => {
                        let answer = self.queue.admin(&change, now);
                        self.perform();
                        answer
                    }
                };
                let _ = reply.send(answer);
            }
            Event::Flush => self.queue.flush(now),
        }
    }

    /// Does what the queue asked, until it asks nothing more.
    fn perform(&mut self) {
        loop {
            let effects = self.queue.take_effects();
            if effects.is_empty() {
                self.spool.send();
                return;
            }
            for effect in effects {
                self.effect(effect);
            }
        }
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Resolve {
                attempt,
                name,
                mx,
                dane,
                sts,
            } => match &self.resolver {
                Some(resolver) => {
                    let tx = self.tx.clone();
                    let sts = sts.map(|enforcement| crate::dns::StsLookup {
                        roots: (self.snapshot)().outbound.web_roots.clone(),
                        enforcement,
                    });
                    resolver.targets(&name, mx, dane, sts, move |targets| {
                        let _ = tx.send(Event::Resolved { attempt, targets });
                    });
                }
                None => self.queue.resolved(
                    attempt,
                    Err(LookupError::Temporary("no resolver".into())),
                    unix_now(),
                ),
            },
            Effect::Dispatch(d) => self.dispatch(d),
            Effect::Record {
                journal,
                id,
                change,
            } => self.spool.record(journal, &id, change),
            Effect::Say { journal, lines } => self.spool.say(journal, lines),
            Effect::Bounce(b) => {
                let result = self.bounce(&b);
                self.queue.bounced(&b, result);
            }
            Effect::Count { outcome, tls } => {
                self.gauges.deliveries[outcome as usize][tls.index()]
                    .fetch_add(1, Ordering::Relaxed);
            }
            Effect::Posture {
                domains,
                outcome,
                sessions,
            } => {
                self.posture(&domains, outcome);
                if let Some(d) = domains.first() {
                    self.reports.record(d, sessions, unix_now());
                }
            }
        }
    }

    /// Looks up where `domain`'s report for `day` goes; in a fleet, after
    /// this node has claimed it.
    fn report_lookup(&mut self, day: String, domain: String) {
        if let Some(fleet) = &self.fleet {
            if !self.claimed.contains_key(&(day.clone(), domain.clone())) {
                let tx = self.tx.clone();
                let (d, n) = (day.clone(), domain.clone());
                fleet.claim(&day, &domain, move |claim| {
                    let _ = tx.send(Event::ReportClaimed {
                        day: d,
                        domain: n,
                        claim,
                    });
                });
                return;
            }
        }
        match &self.resolver {
            Some(resolver) => {
                let tx = self.tx.clone();
                resolver.report_rua(&domain.clone(), move |rua| {
                    let _ = tx.send(Event::ReportRua { day, domain, rua });
                });
            }
            None => self.reports.done(&day, &domain, unix_now()),
        }
    }

    /// Sends `domain`'s report for `day` to each of its `rua` URIs: by
    /// mail through the queue, by HTTPS POST (RFC 8460 §5).
    fn report_send(&mut self, day: &str, domain: &str, rua: Result<Vec<String>, String>) {
        let now = unix_now();
        let uris = match rua {
            Ok(uris) if uris.is_empty() => {
                tracing::info!(target: "send", "TLS report for {domain} ({day}): no _smtp._tls record; none sent");
                return self.reports.done(day, domain, now);
            }
            Ok(uris) => uris,
            Err(why) => {
                // Tried again at the next look over.
                tracing::warn!(target: "send", "TLS report for {domain} ({day}): {why}; trying again later");
                return self.reports.retry(day, domain);
            }
        };
        let snapshot = (self.snapshot)();
        let mut settings = snapshot.tls_rpt.clone();
        // In a fleet, the fleet's figures, under the submitter host the
        // report was first claimed under (the same report id from any node).
        let figures = match self.claimed.remove(&(day.to_string(), domain.to_string())) {
            Some((figures, by)) => {
                settings.submitter.hostname = by;
                figures
            }
            None => self.reports.day(day),
        };
        let settings = &settings;
        let Some(report) = crate::tlsrpt::report(&figures, domain, &settings.submitter) else {
            return self.reports.done(day, domain, now);
        };
        if let Some(fleet) = &self.fleet {
            fleet.sent(day, domain);
        }
        let gz = crate::tlsrpt::gzip(&report);
        for uri in uris {
            if uri.starts_with("https:") {
                let Some(resolver) = &self.resolver else {
                    continue;
                };
                let (d, name, u) = (day.to_string(), domain.to_string(), uri.clone());
                resolver.post_report(&uri, gz.clone(), snapshot.outbound.web_roots.clone(), move |r| match r {
                    Ok(status) if (200..300).contains(&status) => {
                        tracing::info!(target: "send", "TLS report for {name} ({d}): posted to {u}: HTTP {status}")
                    }
                    Ok(status) => {
                        tracing::warn!(target: "send", "TLS report for {name} ({d}): {u} answered HTTP {status}")
                    }
                    Err(why) => tracing::warn!(target: "send", "TLS report for {name} ({d}): POST failed: {why}"),
                });
                continue;
            }
            let Some(to) = crate::tlsrpt::mailto_address(&uri) else {
                tracing::warn!(target: "send", "TLS report for {domain} ({day}): cannot use {uri:?}");
                continue;
            };
            let data = crate::tlsrpt::message(
                day,
                domain,
                &to,
                &settings.from,
                &settings.submitter,
                &gz,
                now,
            );
            let message = crate::model::Message {
                envelope: crate::model::Envelope {
                    // From <>: a report that cannot be delivered bounces
                    // to nobody (no loop).
                    from: String::new(),
                    recipients: vec![crate::model::Recipient::plain(to.clone())],
                    helo: snapshot.hostname.clone(),
                    esmtp: true,
                    flags: crate::model::MailFlags {
                        body_8bit: false,
                        tls: crate::model::TlsRequest::NotRequired,
                        tls_report: true,
                        smtputf8: false,
                    },
                    dsn: crate::model::MessageDsn::default(),
                    peer: None,
                    tls: None,
                },
                data,
            };
            match self.spool.store(message, &snapshot.hostname) {
                Ok(id) => {
                    tracing::info!(target: "send", "TLS report for {domain} ({day}): queued as {id} to <{to}>")
                }
                Err(e) => {
                    tracing::error!(target: "send", "TLS report for {domain} ({day}): cannot queue it: {e}")
                }
            }
        }
        self.reports.done(day, domain, now);
    }

    /// Records what an attempt saw of its domains' servers; a change for
    /// the worse is a downgrade: logged at WARN and counted.
    fn posture(&self, domains: &[String], outcome: Result<posture::Observed, String>) {
        let now = unix_now();
        let Ok(mut postures) = self.gauges.postures.lock() else {
            return;
        };
        for domain in domains {
            match &outcome {
                Ok(seen) => {
                    if let Some(d) = postures.delivered(domain, seen.clone(), now) {
                        tracing::warn!(
                            target: "send",
                            "downgrade: {domain}: TLS {} -> {} (relay={})",
                            d.from.label(),
                            d.to.label(),
                            d.relay
                        );
                    }
                }
                Err(why) => postures.failed(domain, why, now),
            }
        }
    }

    /// Reads the messages and hands the attempt to a shard.
    fn dispatch(&mut self, d: queue::Dispatch) {
        let snapshot = d.snapshot;
        let request = match d.request {
            crate::model::TlsRequest::NotRequired if !snapshot.honour_tls_required_no => {
                crate::model::TlsRequest::Default
            }
            r => r,
        };
        let mut messages = Vec::with_capacity(d.messages.len());
        let mut ids = Vec::with_capacity(d.messages.len());
        for m in d.messages {
            match self.spool.reader.read(m.journal, &m.id) {
                Ok(data) => {
                    messages.push(Outgoing {
                        from: m.from,
                        recipients: m.recipients,
                        data: Arc::from(data),
                        flags: m.flags,
                        dsn: m.dsn,
                    });
                    ids.push(m.id);
                }
                Err(e) => {
                    tracing::error!(target: "send", "{}: cannot read queued message: {e}", m.id);
                    // Deferred, never sent empty: the attempt goes on
                    // without it.
                    self.queue.unreadable(d.attempt, &m.id, unix_now());
                }
            }
        }
        if messages.is_empty() {
            self.queue.finished(
                AttemptResult {
                    attempt: d.attempt,
                    outcomes: Vec::new(),
                    relay: None,
                    tls_level: TlsLevel::None,
                    would_refuse: Vec::new(),
                    set_aside: false,
                    observed: None,
                    sessions: Vec::new(),
                },
                unix_now(),
            );
            return;
        }
        let job = Job {
            attempt: d.attempt,
            targets: d
                .targets
                .into_iter()
                .map(|f| Target::new(f, d.port))
                .collect(),
            policy: attempt::Policy::for_route(
                &snapshot.profiles,
                d.profile,
                snapshot.dane,
                request,
            ),
            config: snapshot.outbound.config(d.profile),
            roots: snapshot.outbound.roots.clone(),
            helo: snapshot.hostname.clone(),
            timeouts: snapshot.queue.timeouts(),
            messages,
            ids,
            reply: self.tx.clone(),
        };
        let door = &self.shards[self.next_shard % self.shards.len().max(1)];
        self.next_shard += 1;
        door(job);
    }

    /// Builds the delivery status notification (RFC 3464) and queues it.
    fn bounce(&mut self, b: &queue::Bounce) -> Result<String, BounceError> {
        let original = self.spool.reader.read(b.journal, &b.id).unwrap_or_default();
        let hostname = (self.snapshot)().hostname.clone();
        // A failed recipient was tried at least once; one that was not
        // says so rather than inventing a status.
        let untried = crate::spool::LastReply {
            status: EnhancedStatus::new(StatusClass::Permanent, 0, 0),
            detail: "no attempt recorded".into(),
        };
        let entries: Vec<dsn::Entry<'_>> = b
            .entries
            .iter()
            .map(|(r, action)| {
                let last = r.last.as_ref().unwrap_or(&untried);
                dsn::Entry {
                    rcpt: &r.rcpt,
                    orcpt: r.dsn.orcpt.as_ref(),
                    action: *action,
                    status: last.status,
                    diagnostic: &last.detail,
                    remote: match action {
                        dsn::Action::Relayed => b.relay.as_deref(),
                        dsn::Action::Failed | dsn::Action::Delayed => None,
                    },
                }
            })
            .collect();
        let arrived = UNIX_EPOCH + Duration::from_secs(b.arrived);
        let report = dsn::Report {
            hostname: &hostname,
            queue_id: &b.id,
            sender: &b.from,
            arrived,
            dsn: &b.dsn,
            retry_until: UNIX_EPOCH + Duration::from_secs(b.retry_until),
            entries: &entries,
            original: &original,
            now: SystemTime::now(),
        };
        // RFC 6533 §3: a report with UTF-8 addresses travels as SMTPUTF8;
        // the original's 8-bit octets come back in it as they were.
        let flags = crate::model::MailFlags {
            smtputf8: report.international(),
            body_8bit: b.flags.body_8bit || b.flags.smtputf8,
            ..crate::model::MailFlags::default()
        };
        let body = dsn::build(&report);
        let envelope = crate::model::Envelope {
            from: String::new(),
            recipients: vec![crate::model::Recipient::plain(b.from.clone())],
            helo: hostname.clone(),
            esmtp: true,
            flags,
            dsn: crate::model::MessageDsn::default(),
            // Made here: no client.
            peer: None,
            tls: None,
        };
        let message = crate::model::Message {
            envelope,
            data: body,
        };
        self.spool.store(message, &hostname)
    }
}
