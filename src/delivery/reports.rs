//! TLS reports (RFC 8460) as the scheduler keeps and sends them: each MX
//! session of today recorded in [`Day`] (saved to `SPOOL/tls-rpt` every
//! few seconds and at stop, so a restart keeps the day), and after each
//! UTC day, spread over `[tls_rpt] spread`, each due domain's report —
//! its `_smtp._tls` record looked up, then mailed through the queue and
//! POSTed, as its `rua` says.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::tlsrpt::{self, Day, Policy, Session};

/// How often today's sessions are written out.
const SAVE_EVERY: u64 = 5;
/// How often past days are looked over for reports due.
const CHECK_EVERY: u64 = 60;
/// Days kept for `sealgate report tls` after they end.
const KEEP_DAYS: u64 = 31;

pub struct Reports {
    dir: Option<PathBuf>,
    today: Day,
    dirty: bool,
    saved_at: u64,
    checked_at: u64,
    /// (day, domain) whose report is being sent.
    in_flight: HashSet<(String, String)>,
    /// The MTA-STS cache: the text of a policy for the report.
    sts: Option<Arc<crate::dns::StsCache>>,
}

impl Reports {
    pub fn new(dir: Option<PathBuf>, sts: Option<Arc<crate::dns::StsCache>>, now: u64) -> Reports {
        let day = tlsrpt::day_of(now);
        let today = match &dir {
            Some(d) => Day::load(d, &day),
            None => Day::new(&day),
        };
        Reports {
            dir,
            today,
            dirty: false,
            saved_at: now,
            checked_at: 0,
            in_flight: HashSet::new(),
            sts,
        }
    }

    /// Records the sessions of one attempt to `domain`'s MX hosts.
    pub fn record(&mut self, domain: &str, sessions: Vec<Session>, now: u64) {
        if sessions.is_empty() {
            return;
        }
        self.roll(now);
        for mut s in sessions {
            match &mut s.policy {
                Policy::Sts { lines, mx } => {
                    if let Some(c) = self.sts.as_ref().and_then(|c| c.get(domain)) {
                        (*lines, *mx) = tlsrpt::sts_strings(&c.policy);
                    }
                }
                // RFC 8460 §4.3.2: a policy announced (the TXT record)
                // that could not be fetched is an MTA-STS failure.
                Policy::NoPolicyFound => {
                    if let Some(e) = self.sts.as_ref().and_then(|c| c.fetch_failure(domain)) {
                        s.policy = Policy::Sts {
                            lines: Vec::new(),
                            mx: Vec::new(),
                        };
                        s.result = Err((e.tls_report_result(), e.to_string()));
                    }
                }
                Policy::Tlsa { .. } => {}
            }
            self.today.record(domain, &s);
        }
        self.dirty = true;
    }

    /// A new UTC day: the last one is written and a new one started.
    fn roll(&mut self, now: u64) {
        let day = tlsrpt::day_of(now);
        if day != self.today.day {
            self.save(now);
            self.today = Day::new(&day);
        }
    }

    fn save(&mut self, now: u64) {
        self.saved_at = now;
        if !self.dirty {
            return;
        }
        if let Some(dir) = &self.dir {
            if let Err(e) = self.today.save(dir) {
                tracing::error!(target: "send", "cannot write the TLS report data in {}: {e}", dir.display());
                return;
            }
        }
        self.dirty = false;
    }

    /// Writes today's sessions now (at stop, before `sealgate report`).
    pub fn flush(&mut self, now: u64) {
        self.dirty = true;
        self.save(now);
    }

    /// The day, from memory for today.
    pub fn day(&self, day: &str) -> Day {
        if day == self.today.day {
            return self.today.clone();
        }
        match &self.dir {
            Some(dir) => Day::load(dir, day),
            None => Day::new(day),
        }
    }

    /// Periodic work: write today out; the (day, domain) reports now due.
    pub fn tick(&mut self, now: u64, settings: &tlsrpt::Settings) -> Vec<(String, String)> {
        self.roll(now);
        if now >= self.saved_at + SAVE_EVERY {
            self.save(now);
        }
        if now < self.checked_at + CHECK_EVERY || !settings.send {
            return Vec::new();
        }
        self.checked_at = now;
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut due = Vec::new();
        for day in Day::days(dir) {
            if day >= self.today.day {
                continue;
            }
            if tlsrpt::day_start(&day).is_some_and(|t| t + (KEEP_DAYS + 1) * 86_400 < now) {
                let _ = std::fs::remove_file(Day::path(dir, &day));
                continue;
            }
            let d = Day::load(dir, &day);
            for domain in d.domains.keys() {
                let key = (day.clone(), domain.clone());
                if settings.wants(&d, domain)
                    && now >= tlsrpt::send_at(&day, domain, settings.spread)
                    && !self.in_flight.contains(&key)
                {
                    due.push(key);
                }
            }
        }
        for k in &due {
            self.in_flight.insert(k.clone());
        }
        due
    }

    /// `sealgate report tls --send`: the domains of `day` whose report
    /// would go (suppression and `only_failures` apply; the spread and an
    /// earlier sending do not).
    pub fn send_now(
        &mut self,
        day: &str,
        domain: Option<&str>,
        settings: &tlsrpt::Settings,
    ) -> Vec<(String, String)> {
        let mut d = self.day(day);
        for dd in d.domains.values_mut() {
            dd.sent = false;
        }
        let mut out = Vec::new();
        for name in d.domains.keys() {
            if domain.is_some_and(|x| x != name) {
                continue;
            }
            let s = tlsrpt::Settings {
                send: true,
                ..settings.clone()
            };
            if s.wants(&d, name) {
                self.in_flight.insert((day.to_string(), name.clone()));
                out.push((day.to_string(), name.clone()));
            }
        }
        // A domain named that this node has no sessions for: in a fleet,
        // the other nodes' figures may make a report (without any, none
        // is built).
        if let Some(name) = domain.filter(|n| !d.domains.contains_key(*n)) {
            self.in_flight.insert((day.to_string(), name.to_string()));
            out.push((day.to_string(), name.to_string()));
        }
        out
    }

    /// The lookup failed: due again at the next look over.
    pub fn retry(&mut self, day: &str, domain: &str) {
        self.in_flight
            .remove(&(day.to_string(), domain.to_string()));
    }

    /// The report of (day, domain) went (or was given up): not again.
    pub fn done(&mut self, day: &str, domain: &str, now: u64) {
        self.in_flight
            .remove(&(day.to_string(), domain.to_string()));
        if day == self.today.day {
            if let Some(d) = self.today.domains.get_mut(domain) {
                d.sent = true;
            }
            self.flush(now);
            return;
        }
        let Some(dir) = &self.dir else { return };
        let mut d = Day::load(dir, day);
        if let Some(dd) = d.domains.get_mut(domain) {
            dd.sent = true;
        }
        if let Err(e) = d.save(dir) {
            tracing::error!(target: "send", "cannot write the TLS report data in {}: {e}", dir.display());
        }
    }
}
