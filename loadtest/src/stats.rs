//! Measurements of a run: latency histograms per phase, counts, errors by
//! kind with their first example, and the report (text or JSON).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The phases a session is timed in (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// TCP connect started → banner received.
    Banner,
    /// STARTTLS sent → handshake complete.
    Handshake,
    /// DATA sent → 250 for the message.
    Data,
    /// Session start (scheduled start in open loop) → 221 received.
    Session,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Banner, Phase::Handshake, Phase::Data, Phase::Session];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Banner => "connect→banner",
            Phase::Handshake => "STARTTLS→handshake",
            Phase::Data => "DATA→250",
            Phase::Session => "session",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Phase::Banner => "banner",
            Phase::Handshake => "handshake",
            Phase::Data => "data",
            Phase::Session => "session",
        }
    }
}

pub struct Stats {
    hist: BTreeMap<Phase, Histogram<u64>>,
    pub sessions_ok: u64,
    pub sessions_failed: u64,
    pub messages: u64,
    pub held: u64,
    errors: BTreeMap<String, (u64, String)>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hist: Phase::ALL
                .iter()
                .map(|p| {
                    (
                        *p,
                        Histogram::new_with_bounds(1, 120_000_000, 3)
                            .expect("valid histogram bounds"),
                    )
                })
                .collect(),
            sessions_ok: 0,
            sessions_failed: 0,
            messages: 0,
            held: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// Percentiles of one phase, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Stats {
    pub fn record(&mut self, phase: Phase, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 120_000_000);
        if let Some(h) = self.hist.get_mut(&phase) {
            h.saturating_record(us);
        }
    }

    pub fn error(&mut self, kind: &str, example: &str) {
        self.sessions_failed += 1;
        let e = self
            .errors
            .entry(kind.to_string())
            .or_insert_with(|| (0, example.to_string()));
        e.0 += 1;
    }

    pub fn errors(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }

    pub fn percentiles(&self, phase: Phase) -> Percentiles {
        let h = &self.hist[&phase];
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    pub fn report(&self, elapsed: Duration, cpu: Option<CpuReport>) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            elapsed_s: secs,
            sessions: self.sessions_ok,
            sessions_failed: self.sessions_failed,
            held: self.held,
            messages: self.messages,
            sessions_per_s: self.sessions_ok as f64 / secs,
            messages_per_s: self.messages as f64 / secs,
            phases: Phase::ALL
                .iter()
                .filter(|p| !self.hist[p].is_empty())
                .map(|p| (p.key().to_string(), self.percentiles(*p)))
                .collect(),
            errors: self
                .errors
                .iter()
                .map(|(k, (n, ex))| ErrorReport {
                    kind: k.clone(),
                    count: *n,
                    first: ex.clone(),
                })
                .collect(),
            server_cpu: cpu,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    pub kind: String,
    pub count: u64,
    pub first: String,
}

/// CPU the server (and the generator) spent during the run.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub server_cpu_s: f64,
    /// Server CPU per completed session, microseconds.
    pub server_us_per_session: f64,
    /// Of which in user space and in the kernel.
    pub server_user_us_per_session: f64,
    pub server_system_us_per_session: f64,
    pub generator_cpu_s: f64,
    /// Resident memory of the server's process tree at the end, KiB.
    pub server_rss_kib: u64,
    /// RSS growth over the run per held session, KiB (hold mode).
    pub rss_kib_per_held_session: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub elapsed_s: f64,
    pub sessions: u64,
    pub sessions_failed: u64,
    pub held: u64,
    pub messages: u64,
    pub sessions_per_s: f64,
    pub messages_per_s: f64,
    pub phases: BTreeMap<String, Percentiles>,
    pub errors: Vec<ErrorReport>,
    pub server_cpu: Option<CpuReport>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} sessions ({:.1}/s), {} messages ({:.1}/s), {} failed, {} held, in {:.2} s",
            self.sessions,
            self.sessions_per_s,
            self.messages,
            self.messages_per_s,
            self.sessions_failed,
            self.held,
            self.elapsed_s
        )?;
        writeln!(
            f,
            "{:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (µs)", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for phase in Phase::ALL {
            if let Some(p) = self.phases.get(phase.key()) {
                writeln!(
                    f,
                    "{:<20} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    phase.name(),
                    p.count,
                    p.p50,
                    p.p90,
                    p.p99,
                    p.p999,
                    p.max
                )?;
            }
        }
        if let Some(c) = &self.server_cpu {
            writeln!(
                f,
                "server CPU {:.3} s = {:.1} µs/session ({:.1} user + {:.1} system); generator CPU {:.3} s; server RSS {} KiB",
                c.server_cpu_s,
                c.server_us_per_session,
                c.server_user_us_per_session,
                c.server_system_us_per_session,
                c.generator_cpu_s,
                c.server_rss_kib
            )?;
            if let Some(per) = c.rss_kib_per_held_session {
                writeln!(f, "server RSS growth per held session: {per:.1} KiB")?;
            }
        }
        for e in &self.errors {
            writeln!(f, "error {} ×{} (first: {})", e.kind, e.count, e.first)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut s = Stats::default();
        // 1..=1000 µs, once each: p50 ≈ 500, p90 ≈ 900, p99 ≈ 990.
        for us in 1..=1000u64 {
            s.record(Phase::Session, Duration::from_micros(us));
        }
        let p = s.percentiles(Phase::Session);
        assert_eq!(p.count, 1000);
        // hdrhistogram with 3 significant figures: within 0.1 %.
        assert!((499..=501).contains(&p.p50), "{p:?}");
        assert!((899..=901).contains(&p.p90), "{p:?}");
        assert!((989..=991).contains(&p.p99), "{p:?}");
        assert!((998..=1000).contains(&p.p999), "{p:?}");
        assert!((999..=1001).contains(&p.max), "{p:?}");
        assert!((p.mean - 500.5).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn errors_keep_count_and_first_example() {
        let mut s = Stats::default();
        s.error("554 after RCPT", "554 5.7.1 first");
        s.error("554 after RCPT", "554 5.7.1 second");
        s.error("connect", "refused");
        let r = s.report(Duration::from_secs(1), None);
        assert_eq!(r.sessions_failed, 3);
        assert_eq!(r.errors.len(), 2);
        let e = r
            .errors
            .iter()
            .find(|e| e.kind == "554 after RCPT")
            .unwrap();
        assert_eq!((e.count, e.first.as_str()), (2, "554 5.7.1 first"));
    }
}
