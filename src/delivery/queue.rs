//! The delivery queue, sans-IO (as `smtp/` is): it takes events with the
//! current time (a message queued, a route resolved, an attempt finished,
//! a bounce stored, an administrator's command) and yields [`Effect`]s
//! (resolve, dispatch to a shard, record a state change, say a log line,
//! build a bounce, count). It never touches a socket, a disk or a clock;
//! the scheduler thread around it ([`super::Scheduler`]) performs the
//! effects. The tests below drive it through retries, expiry, limits,
//! hold and bounces in microseconds.

use crate::model::{EnhancedStatus, StatusClass};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{AdminError, Answer, AttemptResult, QueueChange, TlsLevel};
use crate::dns::{Found, LookupError};
use crate::logs::{Notice, QueueLine};
use crate::model::MailFlags;
use crate::model::{Outcome, Verdict};
use crate::policy::route::{Route, Via};
use crate::snapshot::QueueSettings;
use crate::snapshot::Snapshot;
use crate::spool::{Change, Entry, LastReply, RcptState, RcptStatus};

/// What the queue asks its driver to do, in order.
pub enum Effect {
    /// Look up the hosts for `name` (its MX hosts when `mx`), then call
    /// [`Queue::resolved`].
    Resolve {
        attempt: u64,
        name: String,
        mx: bool,
        /// Look up DANE (TLSA at this port) too: DANE is on and the route
        /// has no profile of its own.
        dane: Option<u16>,
        /// Look up MTA-STS too, applied this way (likewise).
        sts: Option<crate::policy::Enforcement>,
    },
    /// Run the attempt on a shard.
    Dispatch(Dispatch),
    /// Record a state change in the message's journal.
    Record {
        journal: usize,
        id: String,
        change: Change,
    },
    /// Log lines (`send`), once the records before them are durable.
    Say {
        journal: usize,
        lines: Vec<QueueLine>,
    },
    /// Build a delivery status notification to the sender and queue it,
    /// then call [`Queue::bounced`].
    Bounce(Bounce),
    /// A recipient's outcome, by the TLS of its attempt, for the metrics.
    Count { outcome: Counted, tls: TlsLevel },
    /// What an attempt to these recipient domains saw: the server's
    /// posture when it delivered, else why it did not (the status page,
    /// downgrade alerts).
    Posture {
        domains: Vec<String>,
        outcome: Result<super::posture::Observed, String>,
        /// The sessions for the TLS reports: MX delivery only, never of a
        /// TLS report itself (RFC 8460 §5.3.1).
        sessions: Vec<crate::tlsrpt::Session>,
    },
}

/// Delivery outcomes as counted (`sealgate_deliveries_total{outcome}`)
/// and logged (`status=`): one word each.
pub use crate::logs::Status as Counted;

/// One attempt: connect to the targets in order, deliver the messages on
/// one connection.
pub struct Dispatch {
    pub attempt: u64,
    /// What the messages asked of TLS (all the same, see `run_due`).
    pub request: crate::model::TlsRequest,
    pub targets: Vec<Found>,
    pub port: u16,
    /// The outbound profile of the route, in `snapshot`.
    pub profile: Option<usize>,
    pub snapshot: Arc<Snapshot>,
    pub messages: Vec<Planned>,
}

/// A message in an attempt, with the recipients it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub id: String,
    pub journal: usize,
    pub from: String,
    pub recipients: Vec<crate::model::Recipient>,
    pub flags: MailFlags,
    pub dsn: crate::model::MessageDsn,
}

/// A delivery status notification to build (RFC 3464).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    pub id: String,
    pub journal: usize,
    pub from: String,
    pub arrived: u64,
    pub flags: MailFlags,
    /// RET and ENVID.
    pub dsn: crate::model::MessageDsn,
    /// The recipients to report, each with its last reply (`dsn=…
    /// detail`) and what became of it.
    pub entries: Vec<(RcptState, super::dsn::Action)>,
    /// The relay that took the relayed ones.
    pub relay: Option<String>,
    /// Unix seconds: delayed recipients are retried until then.
    pub retry_until: u64,
    /// The message is done once this is queued (every recipient final);
    /// otherwise it is a notice (delay, relay) and delivery goes on.
    pub finishes: bool,
}

struct Message {
    journal: usize,
    from: String,
    arrived: u64,
    size: u64,
    flags: MailFlags,
    dsn: crate::model::MessageDsn,
    hold: bool,
    rcpts: Vec<RcptState>,
    /// Recipients in an attempt now: never in two at once.
    busy: Vec<bool>,
    in_flight: usize,
    /// Its bounce is being built: the message is done once it is queued.
    bouncing: bool,
}

impl Message {
    /// A notification to the sender about `entries` of message `id`.
    fn notification(
        &self,
        id: &str,
        entries: Vec<(RcptState, super::dsn::Action)>,
        relay: Option<String>,
        lifetime: Duration,
        finishes: bool,
    ) -> Bounce {
        Bounce {
            id: id.to_string(),
            journal: self.journal,
            from: self.from.clone(),
            arrived: self.arrived,
            flags: self.flags,
            dsn: self.dsn.clone(),
            entries,
            relay,
            retry_until: self.arrived + lifetime.as_secs(),
            finishes,
        }
    }
}

/// What attempts are grouped by and `destination_concurrency` counts:
/// where they go and what their messages ask of TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Destination {
    target: Target,
    /// A connection carries messages that ask the same of TLS (RFC
    /// 8689): REQUIRETLS ones never share one with others.
    tls: crate::model::TlsRequest,
    /// TLS reports travel alone: their sessions are not reported.
    tls_report: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// The recipient domain's MX hosts, at the route's port.
    Mx { domain: String, port: u16 },
    /// A fixed host of the route.
    Host { host: String, port: u16 },
}

struct Attempt {
    /// (queue id, recipient indexes) per message.
    parts: Vec<(String, Vec<usize>)>,
    key: Destination,
    port: u16,
    profile: Option<usize>,
    snapshot: Arc<Snapshot>,
    /// By MX (the recipient's own servers, whose policies are reported).
    mx: bool,
}

/// The queue: every message not yet done, with each recipient's state.
pub struct Queue {
    settings: QueueSettings,
    messages: HashMap<String, Message>,
    due: BinaryHeap<Reverse<(u64, String)>>,
    attempts: HashMap<u64, Attempt>,
    next_attempt: u64,
    in_flight_per_key: HashMap<Destination, usize>,
    /// How many queued messages arrived at each second (the oldest for
    /// the metrics, without a scan of the queue).
    arrivals: std::collections::BTreeMap<u64, usize>,
    effects: Vec<Effect>,
}

/// A view of one queued message (for `sealgate queue`).
pub struct View<'a> {
    pub id: &'a str,
    pub journal: usize,
    pub from: &'a str,
    pub arrived: u64,
    pub size: u64,
    pub flags: MailFlags,
    pub dsn: &'a crate::model::MessageDsn,
    pub hold: bool,
    pub rcpts: &'a [RcptState],
}

impl Queue {
    /// Takes a reload's `[queue]`: what happens from now on follows it
    /// (see [`QueueSettings`]).
    pub fn configure(&mut self, settings: &QueueSettings) {
        if self.settings != *settings {
            self.settings = settings.clone();
        }
    }

    pub fn new(settings: QueueSettings) -> Queue {
        Queue {
            settings,
            messages: HashMap::new(),
            due: BinaryHeap::new(),
            attempts: HashMap::new(),
            next_attempt: 0,
            in_flight_per_key: HashMap::new(),
            arrivals: std::collections::BTreeMap::new(),
            effects: Vec::new(),
        }
    }

    /// What the driver must do now, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Arrival of the oldest message (Unix seconds).
    pub fn oldest_arrival(&self) -> Option<u64> {
        self.arrivals.keys().next().copied()
    }

    /// Takes a message out of the queue.
    fn forget(&mut self, id: &str) -> Option<Message> {
        let m = self.messages.remove(id)?;
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.arrivals.entry(m.arrived)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        Some(m)
    }

    /// When the next recipient falls due.
    pub fn next_due(&self) -> Option<u64> {
        self.due.peek().map(|Reverse((t, _))| *t)
    }

    pub fn view(&self, id: &str) -> Option<View<'_>> {
        self.messages.get_key_value(id).map(|(id, m)| View {
            id,
            journal: m.journal,
            from: &m.from,
            arrived: m.arrived,
            size: m.size,
            flags: m.flags,
            dsn: &m.dsn,
            hold: m.hold,
            rcpts: &m.rcpts,
        })
    }

    /// Every queued message, by id.
    pub fn views(&self) -> Vec<View<'_>> {
        let mut ids: Vec<&String> = self.messages.keys().collect();
        ids.sort();
        ids.into_iter().filter_map(|id| self.view(id)).collect()
    }

    /// A message is durable in the spool: deliver it.
    pub fn queued(&mut self, e: Entry) {
        let id = e.id;
        let due = e
            .rcpts
            .iter()
            .filter(|r| r.status == RcptStatus::Pending)
            .map(|r| r.next_due)
            .min();
        let count = e.rcpts.len();
        // (An id queued again replaces its entry.)
        self.forget(&id);
        *self.arrivals.entry(e.meta.arrived).or_default() += 1;
        self.messages.insert(
            id.clone(),
            Message {
                journal: e.journal,
                from: e.meta.from,
                arrived: e.meta.arrived,
                size: e.size,
                flags: e.meta.flags,
                dsn: e.meta.dsn,
                hold: e.hold,
                rcpts: e.rcpts,
                busy: vec![false; count],
                in_flight: 0,
                bouncing: false,
            },
        );
        match due {
            Some(t) => self.due.push(Reverse((t, id))),
            None => self.finish_message(&id, Vec::new(), Vec::new(), None),
        }
    }

    /// Groups every due recipient by destination and starts attempts:
    /// at most `messages_per_connection` messages each, at most
    /// `per_destination` attempts in flight per destination.
    pub fn run_due(&mut self, now: u64, snapshot: &Arc<Snapshot>) {
        // destination key → (route, name to resolve, parts)
        type Group = (Route, String, Vec<(String, Vec<usize>)>);
        let mut groups: Vec<(Destination, Group)> = Vec::new();
        while let Some(Reverse((t, _))) = self.due.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, id))) = self.due.pop() else {
                break;
            };
            let Some(m) = self.messages.get(&id) else {
                continue;
            };
            if m.hold || m.bouncing {
                continue;
            }
            let mut by_key: Vec<(Destination, Route, String, Vec<usize>)> = Vec::new();
            for (i, r) in m.rcpts.iter().enumerate() {
                if r.status != RcptStatus::Pending || r.next_due > now || m.busy[i] {
                    continue;
                }
                let domain = domain_of(&r.rcpt);
                let route = snapshot.routes.for_domain(&domain);
                let (target, name) = match &route.via {
                    Via::Mx => (
                        Target::Mx {
                            domain: domain.clone(),
                            port: route.port,
                        },
                        domain.clone(),
                    ),
                    Via::Host { host, port } => (
                        Target::Host {
                            host: host.clone(),
                            port: *port,
                        },
                        host.clone(),
                    ),
                };
                let key = Destination {
                    target,
                    tls: m.flags.tls,
                    tls_report: m.flags.tls_report,
                };
                match by_key.iter_mut().find(|(k, ..)| *k == key) {
                    Some(entry) => entry.3.push(i),
                    None => by_key.push((key, route, name, vec![i])),
                }
            }
            for (key, route, name, idxs) in by_key {
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, g)) => g.2.push((id.clone(), idxs)),
                    None => groups.push((key, (route, name, vec![(id.clone(), idxs)]))),
                }
            }
        }
        for (key, (route, name, parts)) in groups {
            for chunk in parts.chunks(self.settings.messages_per_connection.max(1)) {
                let busy = self.in_flight_per_key.get(&key).copied().unwrap_or(0);
                if busy >= self.settings.per_destination {
                    // destination_concurrency: try these again shortly.
                    for (id, _) in chunk {
                        self.due.push(Reverse((now + 1, id.clone())));
                    }
                    continue;
                }
                self.start_attempt(&key, &route, &name, chunk.to_vec(), snapshot.clone(), now);
            }
        }
    }

    fn start_attempt(
        &mut self,
        key: &Destination,
        route: &Route,
        name: &str,
        parts: Vec<(String, Vec<usize>)>,
        snapshot: Arc<Snapshot>,
        now: u64,
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
        *self.in_flight_per_key.entry(key.clone()).or_default() += 1;
        let (port, host_literal) = match &route.via {
            Via::Mx => (route.port, None),
            Via::Host { host, port } => (*port, Some(host.clone())),
        };
        self.attempts.insert(
            attempt,
            Attempt {
                parts,
                key: key.clone(),
                port,
                profile: route.profile,
                snapshot,
                mx: matches!(route.via, Via::Mx),
            },
        );
        // An address literal needs no lookup (RFC 5321 §4.1.3).
        if let Some(ip) = host_literal
            .as_deref()
            .and_then(crate::policy::route::literal_ip)
        {
            self.resolved(
                attempt,
                Ok(vec![Found::literal(host_literal.unwrap_or_default(), ip)]),
                now,
            );
            return;
        }
        // An explicit route profile wins over the recipient's DNS.
        let snapshot = &self.attempts[&attempt].snapshot;
        let sources = route.sources(snapshot.dane, snapshot.mta_sts);
        self.effects.push(Effect::Resolve {
            attempt,
            name: name.to_string(),
            mx: matches!(route.via, Via::Mx),
            dane: sources.dane,
            sts: sources.mta_sts,
        });
    }

    /// The resolver answered for an attempt.
    pub fn resolved(&mut self, attempt: u64, targets: Result<Vec<Found>, LookupError>, now: u64) {
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
                        status: EnhancedStatus::new(StatusClass::Permanent, 1, 10),
                        detail: "the recipient domain accepts no mail (null MX, RFC 7505)".into(),
                        next_hop_dsn: false,
                    },
                    LookupError::NotFound(why) => Outcome {
                        verdict: Verdict::Permanent,
                        status: EnhancedStatus::new(StatusClass::Permanent, 1, 2),
                        detail: format!("host or domain name not found: {why}"),
                        next_hop_dsn: false,
                    },
                    LookupError::Temporary(why) => Outcome {
                        verdict: Verdict::Temporary,
                        status: EnhancedStatus::new(StatusClass::PersistentTransient, 4, 3),
                        detail: format!("DNS lookup failed: {why}"),
                        next_hop_dsn: false,
                    },
                    LookupError::Policy(why) => Outcome {
                        verdict: Verdict::Temporary,
                        status: EnhancedStatus::new(StatusClass::PersistentTransient, 7, 5),
                        detail: why.clone(),
                        next_hop_dsn: false,
                    },
                };
                let outcomes = a
                    .parts
                    .iter()
                    .map(|(_, idxs)| vec![outcome.clone(); idxs.len()])
                    .collect();
                self.finished(
                    AttemptResult {
                        attempt,
                        outcomes,
                        relay: None,
                        tls_level: TlsLevel::None,
                        would_refuse: Vec::new(),
                        set_aside: false,
                        observed: None,
                        sessions: Vec::new(),
                    },
                    now,
                );
                return;
            }
        };
        let messages: Vec<Planned> = a
            .parts
            .iter()
            .filter_map(|(id, idxs)| {
                let m = self.messages.get(id)?;
                Some(Planned {
                    id: id.clone(),
                    journal: m.journal,
                    from: m.from.clone(),
                    recipients: idxs
                        .iter()
                        .map(|i| crate::model::Recipient {
                            address: m.rcpts[*i].rcpt.clone(),
                            dsn: m.rcpts[*i].dsn.clone(),
                        })
                        .collect(),
                    flags: m.flags,
                    dsn: m.dsn.clone(),
                })
            })
            .collect();
        let request = messages
            .first()
            .map_or(crate::model::TlsRequest::Default, |m| m.flags.tls);
        self.effects.push(Effect::Dispatch(Dispatch {
            attempt,
            request,
            targets,
            port: a.port,
            profile: a.profile,
            snapshot: a.snapshot.clone(),
            messages,
        }));
    }

    /// The driver could not read a message of a dispatched attempt: it
    /// leaves the attempt (which goes on without it) and is deferred.
    pub fn unreadable(&mut self, attempt: u64, id: &str, now: u64) {
        let Some(a) = self.attempts.get_mut(&attempt) else {
            return;
        };
        let Some(pos) = a.parts.iter().position(|(i, _)| i == id) else {
            return;
        };
        let (id, idxs) = a.parts.remove(pos);
        let outcome = Outcome {
            verdict: Verdict::Temporary,
            status: EnhancedStatus::new(StatusClass::PersistentTransient, 3, 0),
            detail: "the queued message could not be read from the spool".into(),
            next_hop_dsn: false,
        };
        let outcomes = vec![outcome; idxs.len()];
        self.settle(&id, &idxs, &outcomes, None, TlsLevel::None, now);
    }

    /// A shard finished an attempt (or it ended before connecting).
    pub fn finished(&mut self, result: AttemptResult, now: u64) {
        let Some(a) = self.attempts.remove(&result.attempt) else {
            return;
        };
        if let Some(n) = self.in_flight_per_key.get_mut(&a.key) {
            *n = n.saturating_sub(1);
        }
        let mut domains: Vec<String> = Vec::new();
        let mut report_mail = false;
        for (id, idxs) in &a.parts {
            let Some(m) = self.messages.get(id) else {
                continue;
            };
            report_mail |= m.flags.tls_report;
            for i in idxs {
                let d = domain_of(&m.rcpts[*i].rcpt);
                if !domains.contains(&d) {
                    domains.push(d);
                }
            }
        }
        let outcome = match &result.observed {
            Some(o) => Ok(o.clone()),
            None => Err(result
                .outcomes
                .iter()
                .flatten()
                .next()
                .map(|o| format!("{} {}", o.status, o.detail))
                .unwrap_or_else(|| "no attempt made".into())),
        };
        if !domains.is_empty() {
            let sessions = if a.mx && !report_mail {
                result.sessions.clone()
            } else {
                Vec::new()
            };
            self.effects.push(Effect::Posture {
                domains,
                outcome,
                sessions,
            });
        }
        let relay = result.relay.as_deref();
        let tls = result.tls_level;
        for ((id, idxs), outcomes) in a.parts.iter().zip(result.outcomes.iter()) {
            self.settle(id, idxs, outcomes, relay, tls, now);
        }
    }

    /// Records the outcomes of one message's recipients in one attempt.
    fn settle(
        &mut self,
        id: &str,
        idxs: &[usize],
        outcomes: &[Outcome],
        relay: Option<&str>,
        tls: TlsLevel,
        now: u64,
    ) {
        let Some(m) = self.messages.get_mut(id) else {
            return;
        };
        m.in_flight = m.in_flight.saturating_sub(1);
        for i in idxs {
            m.busy[*i] = false;
        }
        let delay = now.saturating_sub(m.arrived);
        let mut lines = Vec::with_capacity(idxs.len());
        // Notices due now (RFC 3461 §5.2.2.1 relayed, §4.1 DELAY).
        let mut notices: Vec<(RcptState, super::dsn::Action)> = Vec::new();
        for (i, o) in idxs.iter().zip(outcomes) {
            let r = &mut m.rcpts[*i];
            r.attempts += 1;
            r.last = Some(LastReply {
                status: o.status,
                detail: o.detail.clone(),
            });
            let status = match o.verdict {
                Verdict::Delivered => {
                    r.status = RcptStatus::Delivered;
                    // The next hop did not take the request: it will not
                    // report success, so the gateway says "relayed".
                    if r.dsn.notify.success() && !o.next_hop_dsn {
                        notices.push((r.clone(), super::dsn::Action::Relayed));
                    }
                    Counted::Sent
                }
                Verdict::Permanent => {
                    r.status = RcptStatus::Failed;
                    Counted::Bounced
                }
                Verdict::Temporary => {
                    let expired = Duration::from_secs(now.saturating_sub(m.arrived))
                        >= self.settings.lifetime;
                    if expired {
                        // RFC 5321 §4.5.4.1: give up after the lifetime.
                        r.status = RcptStatus::Failed;
                        r.last = Some(LastReply {
                            status: EnhancedStatus::new(StatusClass::PersistentTransient, 4, 7),
                            detail: format!("delivery time expired; last error: {}", o.detail),
                        });
                        Counted::Expired
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
                        // NOTIFY=DELAY: one notice once the recipient has
                        // waited `delay_notice` (RFC 3461 §4.1).
                        if r.dsn.notify.delay()
                            && !r.delay_notified
                            && !self.settings.delay_notice.is_zero()
                            && Duration::from_secs(delay) >= self.settings.delay_notice
                        {
                            r.delay_notified = true;
                            notices.push((r.clone(), super::dsn::Action::Delayed));
                        }
                        Counted::Deferred
                    }
                }
            };
            self.effects.push(Effect::Count {
                outcome: status,
                tls,
            });
            lines.push(QueueLine::Recipient {
                id: id.to_string(),
                to: r.rcpt.clone(),
                dsn_params: r.dsn.to_string(),
                relay: relay.map(str::to_string),
                delay,
                dsn: o.status,
                status,
                reply: crate::model::sanitize_line(&o.detail),
            });
            self.effects.push(Effect::Record {
                journal: m.journal,
                id: id.to_string(),
                change: Change::Recipient {
                    index: *i as u32,
                    state: Box::new(r.clone()),
                },
            });
        }
        let next = m
            .rcpts
            .iter()
            .filter(|r| r.status == RcptStatus::Pending)
            .map(|r| r.next_due)
            .min();
        let relay = relay.map(str::to_string);
        match next {
            Some(t) => {
                self.effects.push(Effect::Say {
                    journal: m.journal,
                    lines,
                });
                self.due.push(Reverse((t, id.to_string())));
                if !notices.is_empty() && !m.from.is_empty() {
                    let b = m.notification(id, notices, relay, self.settings.lifetime, false);
                    self.effects.push(Effect::Bounce(b));
                }
            }
            None => self.finish_message(id, lines, notices, relay),
        }
    }

    /// Every recipient is final: one notification for the failed ones
    /// whose NOTIFY asks for it (never for a bounce) and the notices of
    /// the last attempt, then the message is done.
    fn finish_message(
        &mut self,
        id: &str,
        mut lines: Vec<QueueLine>,
        mut entries: Vec<(RcptState, super::dsn::Action)>,
        relay: Option<String>,
    ) {
        let Some(m) = self.messages.get_mut(id) else {
            return;
        };
        if m.in_flight > 0 {
            // Final once the other attempt is back; this one's notices
            // (delay, relay) go now.
            if !entries.is_empty() && !m.from.is_empty() {
                let b = m.notification(id, entries, relay, self.settings.lifetime, false);
                self.effects.push(Effect::Bounce(b));
            }
            return;
        }
        let failed = m.rcpts.iter().filter(|r| r.status == RcptStatus::Failed);
        let (reported, silenced): (Vec<&RcptState>, Vec<&RcptState>) =
            failed.partition(|r| r.dsn.notify.failure());
        // RFC 3461 §4.1: NOTIFY=NEVER (or a list without FAILURE).
        for r in silenced {
            lines.push(QueueLine::NotNotified {
                id: id.to_string(),
                to: r.rcpt.clone(),
                notify: r.dsn.notify.value().unwrap_or_default(),
            });
        }
        entries.extend(
            reported
                .into_iter()
                .map(|r| (r.clone(), super::dsn::Action::Failed)),
        );
        if !entries.is_empty() {
            if m.from.is_empty() {
                // RFC 5321 §4.5.5 / §6.1: never a bounce for a bounce.
                lines.push(QueueLine::NullSender { id: id.to_string() });
            } else {
                m.bouncing = true;
                self.effects.push(Effect::Say {
                    journal: m.journal,
                    lines,
                });
                let b = m.notification(id, entries, relay, self.settings.lifetime, true);
                self.effects.push(Effect::Bounce(b));
                return;
            }
        }
        self.done(id, lines);
    }

    fn done(&mut self, id: &str, mut lines: Vec<QueueLine>) {
        let Some(m) = self.forget(id) else {
            return;
        };
        lines.push(QueueLine::Removed { id: id.to_string() });
        self.effects.push(Effect::Record {
            journal: m.journal,
            id: id.to_string(),
            change: Change::Done,
        });
        self.effects.push(Effect::Say {
            journal: m.journal,
            lines,
        });
    }

    /// The notification `b` was queued (its queue id) or could not be.
    pub fn bounced(&mut self, b: &Bounce, result: Result<String, super::BounceError>) {
        let id = b.id.as_str();
        let Some(m) = self.messages.get(id) else {
            return;
        };
        let journal = m.journal;
        let notice = notification_name(&b.entries);
        let notified = |dsn_id: String| QueueLine::Notified {
            id: id.to_string(),
            notice,
            dsn_id,
        };
        match result {
            Ok(dsn) if b.finishes => {
                let line = notified(dsn);
                self.done(id, vec![line]);
            }
            Ok(dsn) => self.effects.push(Effect::Say {
                journal,
                lines: vec![notified(dsn)],
            }),
            // A notice that cannot be queued is not worth the message's
            // delivery: said, and delivery goes on.
            Err(e) if !b.finishes => self.effects.push(Effect::Say {
                journal,
                lines: vec![QueueLine::NoticeFailed {
                    id: id.to_string(),
                    notice,
                    error: e.to_string(),
                }],
            }),
            Err(e) => {
                // Kept in the journal (its recipients' states recorded):
                // the bounce is tried again at the next start.
                self.forget(id);
                self.effects.push(Effect::Say {
                    journal,
                    lines: vec![QueueLine::NotificationKept {
                        id: id.to_string(),
                        error: e.to_string(),
                    }],
                });
            }
        }
    }

    /// `sealgate queue flush`: every pending recipient due now.
    pub fn flush(&mut self, now: u64) {
        for m in self.messages.values_mut() {
            for r in &mut m.rcpts {
                if r.status == RcptStatus::Pending {
                    r.next_due = now;
                }
            }
        }
        let ids: Vec<String> = self.messages.keys().cloned().collect();
        for id in ids {
            self.due.push(Reverse((now, id)));
        }
    }

    /// `sealgate queue delete|hold|release|flush` (list and show are
    /// views, formatted by the driver).
    pub fn admin(&mut self, cmd: &QueueChange, now: u64) -> Result<Answer, AdminError> {
        let missing = |id: &str| AdminError::NoSuchMessage(id.to_string());
        match cmd {
            QueueChange::Flush => {
                self.flush(now);
                // Held messages and those with nothing pending are not
                // scheduled, so they are not counted as such.
                let pending =
                    |m: &&Message| m.rcpts.iter().any(|r| r.status == RcptStatus::Pending);
                let held = self
                    .messages
                    .values()
                    .filter(|m| m.hold)
                    .filter(pending)
                    .count();
                let scheduled = self
                    .messages
                    .values()
                    .filter(|m| !m.hold)
                    .filter(pending)
                    .count();
                Ok(Answer::Flushed { scheduled, held })
            }
            QueueChange::Delete(id) => {
                let m = self.messages.get(id).ok_or_else(|| missing(id))?;
                if m.in_flight > 0 || m.bouncing {
                    return Err(AdminError::Busy(id.clone()));
                }
                let journal = m.journal;
                self.forget(id);
                self.effects.push(Effect::Record {
                    journal,
                    id: id.clone(),
                    change: Change::Done,
                });
                self.effects.push(Effect::Say {
                    journal,
                    lines: vec![QueueLine::RemovedByAdministrator { id: id.clone() }],
                });
                Ok(Answer::Deleted(id.clone()))
            }
            QueueChange::Hold(id) => {
                let m = self.messages.get_mut(id).ok_or_else(|| missing(id))?;
                m.hold = true;
                let journal = m.journal;
                self.effects.push(Effect::Record {
                    journal,
                    id: id.clone(),
                    change: Change::Hold,
                });
                self.effects.push(Effect::Say {
                    journal,
                    lines: vec![QueueLine::Held { id: id.clone() }],
                });
                Ok(Answer::Held(id.clone()))
            }
            QueueChange::Release(id) => {
                let m = self.messages.get_mut(id).ok_or_else(|| missing(id))?;
                m.hold = false;
                for r in &mut m.rcpts {
                    if r.status == RcptStatus::Pending {
                        r.next_due = now;
                    }
                }
                let journal = m.journal;
                self.effects.push(Effect::Record {
                    journal,
                    id: id.clone(),
                    change: Change::Release,
                });
                self.effects.push(Effect::Say {
                    journal,
                    lines: vec![QueueLine::Released { id: id.clone() }],
                });
                self.due.push(Reverse((now, id.clone())));
                Ok(Answer::Released(id.clone()))
            }
        }
    }
}

/// How a log line names a notification: by the gravest action in it.
fn notification_name(entries: &[(RcptState, super::dsn::Action)]) -> Notice {
    use super::dsn::Action;
    let has = |a: Action| entries.iter().any(|(_, x)| *x == a);
    if has(Action::Failed) {
        Notice::NonDelivery
    } else if has(Action::Delayed) {
        Notice::Delay
    } else {
        Notice::Relay
    }
}

/// A recipient's domain in its canonical form (A-labels, lower case):
/// routes, lookups and postures are by it.
fn domain_of(rcpt: &str) -> String {
    crate::model::canonical_domain(rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or(""))
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
