//! A fleet of gateways sharing one Redis store (`[fleet]`; docs/
//! operations.md, "Several nodes"): each node says it is up (a heartbeat
//! key that expires), writes its own TLS-report days, and the fleet's
//! reports are built from every node's days; one node per day and domain
//! sends (a lease in the store), once (a sent mark).
//!
//! Relaying never waits on the store: all store traffic runs on this
//! module's thread. A node's days are its spool's files
//! (`SPOOL/tls-rpt/DAY.json`), and the store holds each node's whole day
//! under the node's name, written again whenever the file changed: a day
//! counted while the store was away arrives when it is back, and a day
//! written twice (a restart, an outage) replaces itself instead of adding
//! up — every session is counted exactly once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Commands as _;
use serde::{Deserialize, Serialize};

use crate::tlsrpt::Day;

/// `[fleet]`, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `redis://` or `rediss://`, with the password of `password_file`.
    pub url: String,
    pub node: String,
}

/// The URL's password stays out of printed settings.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &redacted(&self.url))
            .field("node", &self.node)
            .finish()
    }
}

/// The URL without its password.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:…{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Keys in the store.
const PREFIX: &str = "sealgate";
/// A node is up while its heartbeat key lives.
const HEARTBEAT_TTL: u64 = 15;
/// How often the thread looks: heartbeat, days, requests.
const TURN: Duration = Duration::from_secs(2);
/// A report's lease: long enough to look up its `rua` and send it.
const LEASE_TTL: u64 = 600;
/// Days and sent marks are kept this long (the reports of a month).
const KEEP: u64 = 40 * 86_400;
/// How long one store command may take.
const TIMEOUT: Duration = Duration::from_secs(2);

fn day_key(day: &str) -> String {
    format!("{PREFIX}:tlsrpt:{day}")
}

fn lease_key(day: &str, domain: &str) -> String {
    format!("{PREFIX}:tlsrpt-lease:{day}:{domain}")
}

/// The submitter host of a report, set by its first claimant: the report
/// id is built from it, so it stays the same whichever node builds it.
fn by_key(day: &str, domain: &str) -> String {
    format!("{PREFIX}:tlsrpt-by:{day}:{domain}")
}

fn sent_key(day: &str, domain: &str) -> String {
    format!("{PREFIX}:tlsrpt-sent:{day}:{domain}")
}

fn posture_key(node: &str) -> String {
    format!("{PREFIX}:posture:{node}")
}

fn sts_key(domain: &str) -> String {
    format!("{PREFIX}:sts:{domain}")
}

fn node_key(node: &str) -> String {
    format!("{PREFIX}:node:{node}")
}

/// What a node says of itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub hostname: String,
    /// Unix time of its last heartbeat.
    pub seen: u64,
}

/// The fleet as this node sees it, for the metrics and the status page.
#[derive(Debug, Default)]
pub struct Stats {
    pub up: AtomicBool,
    /// Days written to the store.
    pub days_written: AtomicU64,
    pub nodes: Mutex<Vec<NodeView>>,
    /// Every node's postures as the store holds them: (node, its export
    /// as JSON), this node's included.
    pub postures: Mutex<Vec<(String, String)>>,
}

/// How the fleet thread reaches this node's TLS postures (delivery's),
/// without knowing their type: an export as JSON, and another node's
/// export taken in.
pub struct PostureLink {
    pub export: Box<dyn Fn() -> String + Send>,
    pub adopt: Box<dyn Fn(&str) + Send>,
    /// This node's own export from before a restart: its postures and
    /// its downgrade history come back.
    pub restore: Box<dyn Fn(&str) + Send>,
}

/// The answer to a claim on a report.
#[derive(Debug)]
pub enum Claim {
    /// This node sends it: the fleet's day, and the submitter host the
    /// report is made under (the first claimant's, for a stable id).
    Mine(Day, String),
    /// Another node has it, or it went.
    Taken,
    /// The store is away: try later.
    Unavailable(String),
}

enum Request {
    Claim {
        day: String,
        domain: String,
        reply: Box<dyn FnOnce(Claim) + Send>,
    },
    Sent {
        day: String,
        domain: String,
    },
}

/// Asks the fleet thread.
#[derive(Clone)]
pub struct Handle {
    tx: crossbeam_channel::Sender<Request>,
}

impl Handle {
    /// Claims `domain`'s report of `day`; `reply` is called on the fleet
    /// thread.
    pub fn claim(&self, day: &str, domain: &str, reply: impl FnOnce(Claim) + Send + 'static) {
        let req = Request::Claim {
            day: day.to_string(),
            domain: domain.to_string(),
            reply: Box::new(reply),
        };
        if let Err(e) = self.tx.send(req) {
            if let Request::Claim { reply, .. } = e.0 {
                reply(Claim::Unavailable("the fleet thread has stopped".into()));
            }
        }
    }

    /// The report went: no node sends it again.
    pub fn sent(&self, day: &str, domain: &str) {
        let _ = self.tx.send(Request::Sent {
            day: day.to_string(),
            domain: domain.to_string(),
        });
    }
}

/// Starts the fleet thread: `days` is the node's TLS-report directory,
/// `sts` its MTA-STS cache (shared with the fleet both ways).
pub fn start(
    settings: Settings,
    hostname: String,
    days: PathBuf,
    sts: Option<Arc<crate::dns::StsCache>>,
    postures: PostureLink,
    stats: Arc<Stats>,
) -> std::io::Result<Handle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || {
            let mut node = Node {
                settings,
                hostname,
                days,
                stats,
                sts,
                postures,
                posture_written: None,
                conn: None,
                written: HashMap::new(),
                sts_written: HashMap::new(),
            };
            loop {
                node.turn();
                match rx.recv_timeout(TURN) {
                    Ok(req) => node.serve(req),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
                while let Ok(req) = rx.try_recv() {
                    node.serve(req);
                }
            }
        })?;
    Ok(Handle { tx })
}

/// Connects with the command timeouts set.
pub fn connect(url: &str) -> Result<redis::Connection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let conn = client
        .get_connection_with_timeout(TIMEOUT)
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The fleet's `day`: every node's sessions merged (this node's from
/// `own`, fresher than the store's copy), and the domains whose report
/// went.
pub fn fleet_day(
    conn: &mut redis::Connection,
    day: &str,
    own: (&str, &Day),
) -> Result<(Day, usize, Vec<String>), String> {
    let nodes: HashMap<String, String> = conn.hgetall(day_key(day)).map_err(|e| e.to_string())?;
    let mut merged = own.1.clone();
    for d in merged.domains.values_mut() {
        d.sent = false;
    }
    let mut count = 1;
    for (node, text) in &nodes {
        if node == own.0 {
            continue;
        }
        if let Ok(d) = serde_json::from_str::<Day>(text) {
            merged.merge(&d);
            count += 1;
        }
    }
    let mut sent = Vec::new();
    for domain in merged.domains.keys() {
        let done: bool = conn
            .exists(sent_key(day, domain))
            .map_err(|e| e.to_string())?;
        if done {
            sent.push(domain.clone());
        }
    }
    Ok((merged, count, sent))
}

struct Node {
    settings: Settings,
    hostname: String,
    days: PathBuf,
    stats: Arc<Stats>,
    sts: Option<Arc<crate::dns::StsCache>>,
    postures: PostureLink,
    /// The export last written (JSON).
    posture_written: Option<String>,
    conn: Option<redis::Connection>,
    /// Each day file as it was when last written to the store (its
    /// modification time and length): a file that has not changed since is
    /// not read again.
    written: HashMap<String, (std::time::SystemTime, u64)>,
    /// Each domain's MTA-STS policy last written or read: when it was
    /// fetched.
    sts_written: HashMap<String, u64>,
}

impl Node {
    /// The connection, made again after a failure; the first failure of
    /// an outage is said once, and its end.
    fn conn(&mut self) -> Option<&mut redis::Connection> {
        if self.conn.is_none() {
            match connect(&self.settings.url) {
                Ok(c) => {
                    self.conn = Some(c);
                    // The store may have lost what it had (a restart
                    // without persistence): every day is written again;
                    // a day replaces itself, so nothing counts twice.
                    self.written.clear();
                    self.sts_written.clear();
                    self.posture_written = None;
                    if !self.stats.up.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "fleet: the store at {} is reachable; node {}",
                            redacted(&self.settings.url),
                            self.settings.node
                        );
                    }
                }
                Err(e) => self.down(&e),
            }
        }
        self.conn.as_mut()
    }

    fn down(&mut self, why: &str) {
        self.conn = None;
        if self.stats.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "fleet: the store at {} is unreachable: {why}; relaying goes on, this node's figures are kept here and written when it is back",
                redacted(&self.settings.url)
            );
        }
    }

    /// Heartbeat, the node list, and the day files that changed.
    fn turn(&mut self) {
        let now = crate::model::unix_now();
        let me = NodeView {
            node: self.settings.node.clone(),
            hostname: self.hostname.clone(),
            seen: now,
        };
        let files = self.changed_days();
        let Some(conn) = self.conn() else { return };
        let result: redis::RedisResult<Vec<NodeView>> = (|| {
            let _: () = conn.set_ex(
                node_key(&me.node),
                serde_json::to_string(&me).unwrap_or_default(),
                HEARTBEAT_TTL,
            )?;
            let keys: Vec<String> = conn.keys(format!("{PREFIX}:node:*"))?;
            let mut nodes = Vec::new();
            for k in keys {
                let text: Option<String> = conn.get(&k)?;
                if let Some(n) = text.and_then(|t| serde_json::from_str::<NodeView>(&t).ok()) {
                    nodes.push(n);
                }
            }
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            Ok(nodes)
        })();
        let nodes = match result {
            Ok(n) => n,
            Err(e) => return self.down(&e.to_string()),
        };
        if let Ok(mut n) = self.stats.nodes.lock() {
            *n = nodes;
        }
        let (count, fresh) = (files.len(), self.written.is_empty());
        for (day, stamp, text) in files {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let key = day_key(&day);
            let written: redis::RedisResult<()> = redis::pipe()
                .atomic()
                .hset(&key, &self.settings.node, &text)
                .ignore()
                .expire(&key, KEEP as i64)
                .ignore()
                .query(conn);
            match written {
                Ok(()) => {
                    self.stats.days_written.fetch_add(1, Ordering::Relaxed);
                    self.written.insert(day, stamp);
                }
                Err(e) => return self.down(&e.to_string()),
            }
        }
        self.share_sts(now);
        self.share_postures();
        // Said after a start or an outage: the node's figures are in.
        if fresh && count > 0 {
            tracing::info!(
                "fleet: wrote this node's TLS-report figures of {count} day(s) to the store"
            );
        }
    }

    /// TLS postures both ways: this node's export is written when it
    /// changed (kept 30 days, so that a restarted node finds its own); every
    /// node's is read, taken in, and kept for the status page.
    fn share_postures(&mut self) {
        let node = self.settings.node.clone();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        // After a start (or an outage): this node's own earlier export
        // first, so that nothing it knew is written over.
        if self.posture_written.is_none() {
            if let Ok(Some(before)) = conn.get::<_, Option<String>>(posture_key(&node)) {
                (self.postures.restore)(&before);
            }
        }
        let mine = (self.postures.export)();
        if self.posture_written.as_ref() != Some(&mine) {
            let written: redis::RedisResult<()> =
                conn.set_ex(posture_key(&node), &mine, 30 * 86_400);
            if let Err(e) = written {
                return self.down(&e.to_string());
            }
            self.posture_written = Some(mine);
        }
        let keys: redis::RedisResult<Vec<String>> = conn.keys(format!("{PREFIX}:posture:*"));
        let keys = match keys {
            Ok(k) => k,
            Err(e) => return self.down(&e.to_string()),
        };
        let mut all = Vec::new();
        for key in keys {
            let Some(other) = key.strip_prefix(&format!("{PREFIX}:posture:")) else {
                continue;
            };
            let Ok(Some(text)) = conn.get::<_, Option<String>>(&key) else {
                continue;
            };
            if other != node {
                (self.postures.adopt)(&text);
            }
            all.push((other.to_string(), text));
        }
        all.sort();
        if let Ok(mut p) = self.stats.postures.lock() {
            *p = all;
        }
    }

    /// MTA-STS policies both ways: one this node fetched goes to the store
    /// (expiring with its `max_age`); one another node fetched comes into
    /// this node's cache, so that the fleet fetches each policy once.
    fn share_sts(&mut self, now: u64) {
        let Some(cache) = self.sts.clone() else {
            return;
        };
        let local = cache.snapshot();
        for (domain, cached) in &local.policies {
            if self.sts_written.get(domain) == Some(&cached.fetched) {
                continue;
            }
            let left = cached.expires().saturating_sub(now);
            if left == 0 {
                continue;
            }
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let text = serde_json::to_string(cached).unwrap_or_default();
            // Only over an older copy: a newer policy from another node
            // stays.
            let theirs: redis::RedisResult<Option<String>> = conn.get(sts_key(domain));
            let newer_there = match &theirs {
                Ok(Some(t)) => serde_json::from_str::<crate::sts::Cached>(t)
                    .is_ok_and(|c| c.fetched >= cached.fetched),
                Ok(None) => false,
                Err(_) => false,
            };
            if let Err(e) = theirs {
                return self.down(&e.to_string());
            }
            if !newer_there {
                let written: redis::RedisResult<()> = conn.set_ex(sts_key(domain), text, left);
                if let Err(e) = written {
                    return self.down(&e.to_string());
                }
            }
            self.sts_written.insert(domain.clone(), cached.fetched);
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let keys: redis::RedisResult<Vec<String>> = conn.keys(format!("{PREFIX}:sts:*"));
        let keys = match keys {
            Ok(k) => k,
            Err(e) => return self.down(&e.to_string()),
        };
        for key in keys {
            let Some(domain) = key.strip_prefix(&format!("{PREFIX}:sts:")) else {
                continue;
            };
            let text: redis::RedisResult<Option<String>> = conn.get(&key);
            let Ok(Some(text)) = text else { continue };
            let Ok(cached) = serde_json::from_str::<crate::sts::Cached>(&text) else {
                continue;
            };
            if self.sts_written.get(domain) == Some(&cached.fetched) {
                continue;
            }
            let fetched = cached.fetched;
            if cache.adopt(domain, cached) {
                tracing::info!(
                    "fleet: the MTA-STS policy of {domain} comes from the store (fetched by another node)"
                );
            }
            self.sts_written.insert(domain.to_string(), fetched);
        }
    }

    /// The day files changed since they were last written (by their
    /// modification time and length), with their text.
    fn changed_days(&self) -> Vec<(String, (std::time::SystemTime, u64), String)> {
        let mut out = Vec::new();
        for day in Day::days(&self.days) {
            let path = Day::path(&self.days, &day);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let stamp = (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len());
            if self.written.get(&day) == Some(&stamp) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            out.push((day, stamp, text));
        }
        out
    }

    fn serve(&mut self, req: Request) {
        match req {
            Request::Claim { day, domain, reply } => {
                // The node's own latest figures first.
                self.turn();
                let node = self.settings.node.clone();
                let hostname = self.hostname.clone();
                let Some(conn) = self.conn() else {
                    return reply(Claim::Unavailable("the fleet store is unreachable".into()));
                };
                let claimed: redis::RedisResult<Option<(Day, String)>> = (|| {
                    if conn.exists::<_, bool>(sent_key(&day, &domain))? {
                        return Ok(None);
                    }
                    let took: Option<String> = redis::cmd("SET")
                        .arg(lease_key(&day, &domain))
                        .arg(&node)
                        .arg("NX")
                        .arg("EX")
                        .arg(LEASE_TTL)
                        .query(conn)?;
                    let holder: Option<String> = conn.get(lease_key(&day, &domain))?;
                    if took.is_none() && holder.as_deref() != Some(node.as_str()) {
                        return Ok(None);
                    }
                    let nodes: HashMap<String, String> = conn.hgetall(day_key(&day))?;
                    let mut merged = Day::new(&day);
                    for text in nodes.values() {
                        if let Ok(d) = serde_json::from_str::<Day>(text) {
                            merged.merge(&d);
                        }
                    }
                    let _: Option<String> = redis::cmd("SET")
                        .arg(by_key(&day, &domain))
                        .arg(&hostname)
                        .arg("NX")
                        .arg("EX")
                        .arg(KEEP)
                        .query(conn)?;
                    let by: Option<String> = conn.get(by_key(&day, &domain))?;
                    Ok(Some((merged, by.unwrap_or(hostname))))
                })();
                match claimed {
                    Ok(Some((d, by))) => reply(Claim::Mine(d, by)),
                    Ok(None) => reply(Claim::Taken),
                    Err(e) => {
                        let why = e.to_string();
                        self.down(&why);
                        reply(Claim::Unavailable(why));
                    }
                }
            }
            Request::Sent { day, domain } => {
                let node = self.settings.node.clone();
                let Some(conn) = self.conn() else { return };
                let marked: redis::RedisResult<()> =
                    conn.set_ex(sent_key(&day, &domain), node, KEEP);
                if let Err(e) = marked {
                    self.down(&e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_print() {
        assert_eq!(
            redacted("redis://user:secret@10.0.0.5:6379/0"),
            "redis://user:…@10.0.0.5:6379/0"
        );
        assert_eq!(
            redacted("redis://10.0.0.5:6379/0"),
            "redis://10.0.0.5:6379/0"
        );
        let s = Settings {
            url: "rediss://:pw@h:1/0".into(),
            node: "mx1".into(),
        };
        assert!(!format!("{s:?}").contains("pw"));
    }
}
