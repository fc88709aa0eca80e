//! `sealgate queue …`, `policy` and `report tls` as the scheduler sees
//! them: the commands, their typed answers and errors (carried over the
//! control socket, `crate::control`), and how the command line prints
//! each answer ([`Answer::render`]).
use serde::{Deserialize, Serialize};

use super::Scheduler;
use crate::model::{MailFlags, MessageDsn};
use crate::spool::RcptState;

/// The commands delivery answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admin {
    /// `sealgate queue list`.
    List,
    /// `sealgate queue show ID`.
    Show(String),
    /// `sealgate queue flush|delete|hold|release`: the queue's own.
    Change(QueueChange),
    /// `sealgate policy show|refresh|forget DOMAIN`.
    Policy(PolicyAction, String),
    /// `sealgate report tls`: write today's sessions out (before the
    /// command reads the day's file).
    ReportFlush,
    /// `sealgate report tls --send`: send the day's reports now (one
    /// domain's, when given).
    ReportSend { day: String, domain: Option<String> },
}

/// What an administrator changes in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueChange {
    /// Every pending recipient due now.
    Flush,
    Delete(String),
    Hold(String),
    Release(String),
}

/// What `sealgate policy` does with a domain's outbound policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAction {
    /// What applies and why: the route's profile, DANE, MTA-STS.
    Show,
    /// Fetch the MTA-STS policy again now, then show.
    Refresh,
    /// Drop the cached MTA-STS policy.
    Forget,
}

/// One queued message as `sealgate queue list` and `show` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    pub from: String,
    /// Unix seconds.
    pub arrived: u64,
    pub size: u64,
    pub flags: MailFlags,
    pub dsn: MessageDsn,
    pub hold: bool,
    pub rcpts: Vec<RcptState>,
}

impl MessageView {
    fn of(v: &super::queue::View<'_>) -> MessageView {
        MessageView {
            id: v.id.to_string(),
            from: v.from.to_string(),
            arrived: v.arrived,
            size: v.size,
            flags: v.flags,
            dsn: v.dsn.clone(),
            hold: v.hold,
            rcpts: v.rcpts.to_vec(),
        }
    }
}

/// Each command's answer, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    List(Vec<MessageView>),
    Show {
        message: MessageView,
        /// The message's header section, as stored.
        headers: String,
    },
    Flushed {
        scheduled: usize,
        held: usize,
    },
    Deleted(String),
    Held(String),
    Released(String),
    /// `sealgate policy`'s report: the route, the modes, what DNS and the
    /// MTA-STS cache say, and what an attempt would demand of each host.
    Policy(String),
    ReportFlushed,
    /// The reports sent now: (day, policy domain).
    ReportSending {
        day: String,
        due: Vec<(String, String)>,
    },
}

impl Answer {
    /// As the command prints it; `json` for `queue list --json`. `now`
    /// (Unix seconds) for "next … (in 9m)".
    pub fn render(&self, now: u64, json: bool) -> String {
        use std::fmt::Write as _;
        match self {
            Answer::List(views) if json => list_json(views),
            Answer::List(views) => {
                // In the style of `postqueue -p`: the id (`!` when held),
                // size, arrival and sender, then each recipient with its
                // state, when it is tried next and why the last try failed.
                let mut out = String::new();
                let _ = writeln!(
                    out,
                    "{:<21} {:>9} {:<20}  sender / recipients",
                    "-queue id-", "-size-", "-arrival (UTC)-"
                );
                for m in views {
                    let _ = writeln!(
                        out,
                        "{:<21} {:>9} {:<20}  <{}>",
                        format!("{}{}", m.id, if m.hold { "!" } else { "" }),
                        m.size,
                        crate::model::rfc3339(m.arrived as i64),
                        m.from
                    );
                    for r in &m.rcpts {
                        let _ = writeln!(out, "{:>54}{}", "", rcpt_line(r, m.hold, now));
                    }
                }
                let _ = writeln!(out, "-- {} message(s) in queue", views.len());
                out
            }
            Answer::Show { message: m, headers } => {
                let mut out = format!(
                    "id {}{}\narrived {} ({})\nfrom <{}>\n",
                    m.id,
                    if m.hold { " (held)" } else { "" },
                    crate::model::rfc3339(m.arrived as i64),
                    ago(now, m.arrived),
                    m.from
                );
                for r in &m.rcpts {
                    let _ = writeln!(out, "rcpt <{}>{}", r.rcpt, r.dsn);
                }
                let _ = writeln!(
                    out,
                    "body {}\nsmtputf8 {}\ntls {}\nret {}\nenvid {}\nsize {}\nhold {}\n",
                    if m.flags.body_8bit { "8BITMIME" } else { "7BIT" },
                    if m.flags.smtputf8 { "yes" } else { "no" },
                    m.flags.tls.as_str(),
                    m.dsn.ret.map_or("-", crate::model::Ret::as_str),
                    m.dsn
                        .envid
                        .as_deref()
                        .map_or("-".into(), crate::model::xtext_encode),
                    m.size,
                    u8::from(m.hold)
                );
                out.push_str(headers);
                out.push_str("\n\n");
                for r in &m.rcpts {
                    let _ = writeln!(out, "{}", rcpt_line(r, m.hold, now));
                }
                out
            }
            Answer::Flushed { scheduled, held: 0 } => {
                format!("{scheduled} message(s) scheduled for delivery now\n")
            }
            Answer::Flushed { scheduled, held } => format!(
                "{scheduled} message(s) scheduled for delivery now; {held} held (sealgate queue release ID)\n"
            ),
            Answer::Deleted(id) => format!("{id}: deleted\n"),
            Answer::Held(id) => format!("{id}: on hold\n"),
            Answer::Released(id) => format!("{id}: released\n"),
            Answer::Policy(text) => text.clone(),
            Answer::ReportFlushed => String::new(),
            Answer::ReportSending { day, due } if due.is_empty() => format!(
                "{day}: no report to send (none recorded, suppressed, or no failure with only_failures)\n"
            ),
            Answer::ReportSending { due, .. } => due
                .iter()
                .map(|(d, name)| format!("{d}: sending the report for {name}\n"))
                .collect(),
        }
    }
}

/// `queue list --json`: Unix times and their RFC 3339 text, each
/// recipient's state.
fn list_json(views: &[MessageView]) -> String {
    let list: Vec<serde_json::Value> = views
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "arrived": m.arrived,
                "arrived_time": crate::model::rfc3339(m.arrived as i64),
                "size": m.size,
                "from": m.from,
                "hold": m.hold,
                "smtputf8": m.flags.smtputf8,
                "ret": m.dsn.ret.map(crate::model::Ret::as_str),
                "envid": m.dsn.envid,
                "recipients": m.rcpts.iter().map(|r| serde_json::json!({
                    "rcpt": r.rcpt,
                    "notify": r.dsn.notify.value(),
                    "orcpt": r.dsn.orcpt.as_ref().map(crate::model::orcpt_encode),
                    "status": r.status.as_str(),
                    "attempts": r.attempts,
                    "next_due": r.next_due,
                    "next_due_time": crate::model::rfc3339(r.next_due as i64),
                    "last": crate::spool::last_text(&r.last),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    // Values built above always serialise.
    serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
}

/// Why a command to delivery failed; the wording is what the command
/// prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminError {
    #[error("{0}: no such message in the queue")]
    NoSuchMessage(String),
    #[error("{0}: a delivery attempt is running; try again")]
    Busy(String),
    #[error("{id}: cannot read it from the spool: {why}")]
    Unreadable { id: String, why: String },
    #[error("delivery is not running")]
    NotRunning,
    /// `sealgate policy`: what was found, with a lookup that failed.
    #[error("{0}")]
    Lookup(String),
    #[error("no answer from delivery")]
    NoAnswer,
}

impl Scheduler {
    /// `sealgate policy …`: the route decides first; what DANE and
    /// MTA-STS say comes from the resolver thread, which answers.
    pub(super) fn policy(
        &mut self,
        action: PolicyAction,
        domain: &str,
        reply: crossbeam_channel::Sender<Result<Answer, AdminError>>,
    ) {
        let snapshot = (self.snapshot)();
        let route = snapshot.routes.for_domain(domain);
        let profile = route
            .profile
            .and_then(|i| snapshot.profiles.list.get(i))
            .map(|p| p.name.clone());
        let mut head = format!("{domain}: route via {}", route.via);
        match &profile {
            Some(name) => head.push_str(&format!(
                "; profile \"{name}\" decides TLS (DANE and MTA-STS are not consulted)\n"
            )),
            None => head.push_str("; no profile of its own\n"),
        }
        let sources = route.sources(snapshot.dane, snapshot.mta_sts);
        let dane = sources.dane;
        let sts = sources.mta_sts.map(|enforcement| crate::dns::StsLookup {
            roots: snapshot.outbound.web_roots.clone(),
            enforcement,
        });
        head.push_str(&format!(
            "modes: [outbound] dane = \"{}\", mta_sts = \"{}\"\n",
            snapshot.dane.as_str(),
            snapshot.mta_sts.as_str()
        ));
        let query = match action {
            PolicyAction::Show => crate::dns::PolicyQuery::Show,
            PolicyAction::Refresh => crate::dns::PolicyQuery::Refresh,
            PolicyAction::Forget => crate::dns::PolicyQuery::Forget,
        };
        // What the attempt would ask of each host now: the same decision
        // delivery makes (a route profile, DANE, MTA-STS).
        let policy = super::attempt::Policy::for_route(
            &snapshot.profiles,
            route.profile,
            snapshot.dane,
            crate::model::TlsRequest::Default,
        );
        match &self.resolver {
            Some(resolver) => {
                let live = resolver.clone();
                let (via, domain_owned, port) = (route.via.clone(), domain.to_string(), route.port);
                let (dane_why, sts_why) = route.not_consulted(snapshot.dane, snapshot.mta_sts);
                let why_not = crate::dns::NotConsulted {
                    dane: dane_why,
                    mta_sts: sts_why,
                };
                let answer = |text: String, failed: bool| {
                    if failed {
                        Err(AdminError::Lookup(text))
                    } else {
                        Ok(Answer::Policy(text))
                    }
                };
                resolver.policy(
                    domain,
                    query,
                    dane,
                    sts.clone(),
                    why_not,
                    move |found| match action {
                        PolicyAction::Forget => {
                            let _ = reply.send(answer(head + &found.text, found.failed));
                        }
                        PolicyAction::Show | PolicyAction::Refresh => super::attempt::live_demands(
                            &live,
                            &via,
                            &domain_owned,
                            port,
                            dane,
                            sts,
                            policy,
                            move |verdicts| {
                                let _ = reply
                                    .send(answer(head + &found.text + &verdicts, found.failed));
                            },
                        ),
                    },
                )
            }
            None => {
                let _ = reply.send(Err(AdminError::Lookup(head + "no resolver running\n")));
            }
        }
    }

    /// `sealgate queue list`: every message, from the queue's views.
    pub(super) fn list(&self) -> Answer {
        Answer::List(self.queue.views().iter().map(MessageView::of).collect())
    }

    /// `sealgate queue show ID`: the message's view and its header
    /// section, read from its journal.
    pub(super) fn show(&mut self, id: &str) -> Result<Answer, AdminError> {
        let (journal, message) = self
            .queue
            .view(id)
            .map(|v| (v.journal, MessageView::of(&v)))
            .ok_or_else(|| AdminError::NoSuchMessage(id.to_string()))?;
        let data = self
            .spool
            .reader
            .read(journal, id)
            .map_err(|e| AdminError::Unreadable {
                id: id.to_string(),
                why: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&data);
        let headers = text.split("\r\n\r\n").next().unwrap_or("").to_string();
        Ok(Answer::Show { message, headers })
    }
}

/// One recipient as `queue list` and `queue show` print it:
/// `<user@example.com> pending, 2 attempt(s), next 2026-12-02T05:10:00Z (in 9m): last reason`.
fn rcpt_line(r: &crate::spool::RcptState, held: bool, now: u64) -> String {
    use crate::spool::RcptStatus;
    let state = match r.status {
        RcptStatus::Pending if held => "pending, held".to_string(),
        RcptStatus::Pending if r.next_due <= now => "pending, due now".to_string(),
        RcptStatus::Pending => format!(
            "pending, next {} (in {})",
            crate::model::rfc3339(r.next_due as i64),
            span(r.next_due - now)
        ),
        RcptStatus::Delivered => "delivered".to_string(),
        RcptStatus::Failed => "failed (bounced to the sender)".to_string(),
    };
    let last = crate::spool::last_text(&r.last);
    format!(
        "<{}> {state}, {} attempt(s){}",
        r.rcpt,
        r.attempts,
        if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        }
    )
}

/// How long ago `t` was, as `3m ago`.
fn ago(now: u64, t: u64) -> String {
    format!("{} ago", span(now.saturating_sub(t)))
}

/// Seconds as the largest two units: `45s`, `9m`, `2h 5m`, `3d 4h`.
fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}
