//! `sealgate queue …` as the scheduler sees it: the commands, their
//! errors, and the list and show views formatted from the queue's.
use super::Scheduler;

/// `sealgate queue …` commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    List {
        json: bool,
    },
    Show(String),
    Flush,
    Delete(String),
    Hold(String),
    Release(String),
    /// `sealgate policy show|refresh|forget DOMAIN`.
    Policy(PolicyAction, String),
    /// `sealgate report tls`: write today's sessions out (before the
    /// command reads the day's file).
    ReportFlush,
    /// `sealgate report tls --send`: send the day's reports now (one
    /// domain's, when given).
    ReportSend {
        day: String,
        domain: Option<String>,
    },
}

/// What `sealgate policy` does with a domain's outbound policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    /// What applies and why: the route's profile, DANE, MTA-STS.
    Show,
    /// Fetch the MTA-STS policy again now, then show.
    Refresh,
    /// Drop the cached MTA-STS policy.
    Forget,
}

/// Why a `sealgate queue` command failed; the wording is what the command
/// prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("{0}: no such message in the queue")]
    NoSuchMessage(String),
    #[error("{0}: a delivery attempt is running; try again")]
    Busy(String),
    #[error("{0} needs a queue id")]
    NeedsId(String),
    #[error("unknown queue command {0:?}: list [--json] | show ID | flush | delete ID | hold ID | release ID")]
    Unknown(String),
    #[error("{id}: cannot read it from the spool: {why}")]
    Unreadable { id: String, why: String },
    #[error("delivery is not running")]
    NotRunning,
    #[error("no answer from delivery")]
    NoAnswer,
    #[error("cannot format the list: {0}")]
    Format(String),
}

impl std::str::FromStr for Admin {
    type Err = AdminError;
    fn from_str(line: &str) -> Result<Admin, AdminError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let id = |w: &[&str]| {
            w.get(1)
                .map(|s| s.to_string())
                .ok_or_else(|| AdminError::NeedsId(w[0].to_string()))
        };
        match words.first().copied() {
            Some("list") => Ok(Admin::List {
                json: words.get(1) == Some(&"--json"),
            }),
            Some("show") => Ok(Admin::Show(id(&words)?)),
            Some("flush") => Ok(Admin::Flush),
            Some("delete") => Ok(Admin::Delete(id(&words)?)),
            Some("hold") => Ok(Admin::Hold(id(&words)?)),
            Some("release") => Ok(Admin::Release(id(&words)?)),
            Some("policy") => {
                let action = match words.get(1).copied() {
                    Some("show") => PolicyAction::Show,
                    Some("refresh") => PolicyAction::Refresh,
                    Some("forget") => PolicyAction::Forget,
                    _ => return Err(AdminError::Unknown(line.to_string())),
                };
                let domain = words
                    .get(2)
                    .map(|d| crate::model::canonical_domain(d))
                    .ok_or_else(|| AdminError::NeedsId(format!("policy {}", words[1])))?;
                Ok(Admin::Policy(action, domain))
            }
            Some("report") => match (words.get(1).copied(), words.get(2).copied()) {
                (Some("flush"), _) => Ok(Admin::ReportFlush),
                (Some("send"), Some(day)) if crate::tlsrpt::day_start(day).is_some() => {
                    Ok(Admin::ReportSend {
                        day: day.to_string(),
                        domain: words.get(3).map(|d| crate::model::canonical_domain(d)),
                    })
                }
                _ => Err(AdminError::Unknown(line.to_string())),
            },
            _ => Err(AdminError::Unknown(line.to_string())),
        }
    }
}

impl Scheduler {
    /// `sealgate policy …`: the route decides first; what DANE and
    /// MTA-STS say comes from the resolver thread, which answers.
    pub(super) fn policy(
        &mut self,
        action: PolicyAction,
        domain: &str,
        reply: crossbeam_channel::Sender<Result<String, AdminError>>,
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
                resolver.policy(domain, query, dane, sts.clone(), move |text| match action {
                    PolicyAction::Forget => {
                        let _ = reply.send(Ok(head + &text));
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
                            let _ = reply.send(Ok(head + &text + &verdicts));
                        },
                    ),
                })
            }
            None => {
                let _ = reply.send(Ok(head + "no resolver running\n"));
            }
        }
    }

    /// `sealgate queue …`: list and show are formatted here from the
    /// queue's views; the rest are the queue's.
    pub(super) fn admin(&mut self, cmd: Admin, now: u64) -> Result<String, AdminError> {
        use std::fmt::Write as _;
        match cmd {
            Admin::List { json } => {
                let views = self.queue.views();
                if json {
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
                                    "status": format!("{:?}", r.status).to_lowercase(),
                                    "attempts": r.attempts,
                                    "next_due": r.next_due,
                                    "next_due_time": crate::model::rfc3339(r.next_due as i64),
                                    "last": crate::spool::last_text(&r.last),
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    return serde_json::to_string_pretty(&list)
                        .map_err(|e| AdminError::Format(e.to_string()));
                }
                // In the style of `postqueue -p`: the id (`!` when held),
                // size, arrival and sender, then each recipient with its
                // state, when it is tried next and why the last try failed.
                let mut out = String::new();
                let _ = writeln!(
                    out,
                    "{:<21} {:>9} {:<20}  sender / recipients",
                    "-queue id-", "-size-", "-arrival (UTC)-"
                );
                for m in &views {
                    let _ = writeln!(
                        out,
                        "{:<21} {:>9} {:<20}  <{}>",
                        format!("{}{}", m.id, if m.hold { "!" } else { "" }),
                        m.size,
                        crate::model::rfc3339(m.arrived as i64),
                        m.from
                    );
                    for r in m.rcpts {
                        let _ = writeln!(out, "{:>54}{}", "", rcpt_line(r, m.hold, now));
                    }
                }
                let _ = writeln!(out, "-- {} message(s) in queue", views.len());
                Ok(out)
            }
            Admin::Show(id) => {
                let (journal, mut out) = {
                    let m = self
                        .queue
                        .view(&id)
                        .ok_or_else(|| AdminError::NoSuchMessage(id.clone()))?;
                    let mut out = format!(
                        "id {id}{}\narrived {} ({})\nfrom <{}>\n",
                        if m.hold { " (held)" } else { "" },
                        crate::model::rfc3339(m.arrived as i64),
                        ago(now, m.arrived),
                        m.from
                    );
                    for r in m.rcpts {
                        let _ = writeln!(out, "rcpt <{}>{}", r.rcpt, r.dsn);
                    }
                    let _ = writeln!(
                        out,
                        "body {}\nsmtputf8 {}\ntls {}\nret {}\nenvid {}\nsize {}\nhold {}\n",
                        if m.flags.body_8bit {
                            "8BITMIME"
                        } else {
                            "7BIT"
                        },
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
                    (m.journal, out)
                };
                let data =
                    self.spool
                        .reader
                        .read(journal, &id)
                        .map_err(|e| AdminError::Unreadable {
                            id: id.clone(),
                            why: e.to_string(),
                        })?;
                let text = String::from_utf8_lossy(&data);
                out.push_str(text.split("\r\n\r\n").next().unwrap_or(""));
                out.push_str("\n\n");
                if let Some(m) = self.queue.view(&id) {
                    for r in m.rcpts {
                        let _ = writeln!(out, "{}", rcpt_line(r, m.hold, now));
                    }
                }
                Ok(out)
            }
            other => self.queue.admin(&other, now),
        }
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
