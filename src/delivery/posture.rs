//! The TLS posture of each destination domain, sans-IO: what the last
//! delivery to it negotiated (authentication level, version, cipher, the
//! certificate's end, the policies that applied), its last failure, and
//! the changes for the worse — downgrades, which the scheduler logs as
//! `WARN downgrade` and counts (`sealgate_tls_downgrades_total{from,to}`).
//! Bounded: the least recently used domains go first.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use strum::{EnumCount, IntoEnumIterator};

use serde::{Deserialize, Serialize};

use super::TlsLevel;

/// How many destination domains are remembered.
pub const DOMAINS: usize = 1000;
/// How many recent downgrades are kept for the status page.
pub const RECENT: usize = 50;

/// What one delivery (a session that delivered at least one recipient)
/// saw of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub level: TlsLevel,
    /// `TLSv1.3`, `TLSv1.2`; none in the clear.
    pub version: Option<String>,
    pub cipher: Option<String>,
    /// The server certificate's notAfter (Unix seconds).
    pub cert_expires: Option<i64>,
    /// `host[address]:port`.
    pub relay: String,
    /// The policy sources that applied: `dane`, `mta-sts`, `profile NAME`.
    pub sources: Vec<String>,
}

/// One destination domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    pub domain: String,
    /// The last delivery's posture, and when (Unix seconds).
    pub last: Option<Observed>,
    pub last_at: u64,
    /// The last attempt that delivered nothing, and why.
    pub last_failure: Option<Failure>,
    /// Sessions that delivered, since the gateway started.
    pub deliveries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub at: u64,
    pub detail: String,
}

/// A change for the worse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downgrade {
    pub at: u64,
    pub domain: String,
    pub from: TlsLevel,
    pub to: TlsLevel,
    pub relay: String,
    /// In a fleet: the node that saw it (none: this one).
    #[serde(default)]
    pub node: Option<String>,
}

/// What a node of a fleet shares of its postures (`fleet`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub partners: Vec<Partner>,
    pub downgrades: Vec<Downgrade>,
}

/// Every remembered domain and the recent downgrades.
#[derive(Debug)]
pub struct Postures {
    partners: lru::LruCache<String, Partner>,
    recent: VecDeque<Downgrade>,
    /// Downgrades by (from, to) [`TlsLevel::index`].
    counts: [[u64; TlsLevel::COUNT]; TlsLevel::COUNT],
}

impl Default for Postures {
    fn default() -> Postures {
        Postures::new(DOMAINS)
    }
}

impl TlsLevel {
    /// Higher is better: DANE and MTA-STS authenticate by the recipient's
    /// own policy, `verified` by the CA store and the name, `trusted` by
    /// the CA store alone, `untrusted` encrypts only, `none` not even that.
    pub fn rank(self) -> u8 {
        match self {
            TlsLevel::Dane => 5,
            TlsLevel::MtaSts => 4,
            TlsLevel::Verified => 3,
            TlsLevel::Trusted => 2,
            TlsLevel::Untrusted => 1,
            TlsLevel::None => 0,
        }
    }
}

impl Postures {
    pub fn new(capacity: usize) -> Postures {
        Postures {
            partners: lru::LruCache::new(
                NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
            recent: VecDeque::new(),
            counts: Default::default(),
        }
    }

    fn partner(&mut self, domain: &str) -> &mut Partner {
        if !self.partners.contains(domain) {
            self.partners.put(
                domain.to_string(),
                Partner {
                    domain: domain.to_string(),
                    last: None,
                    last_at: 0,
                    last_failure: None,
                    deliveries: 0,
                },
            );
        }
        // Present: just put, or already there (and now the most recent).
        self.partners
            .get_mut(domain)
            .expect("the partner was just made present")
    }

    /// A delivery to `domain` saw `seen`; a downgrade from the last one is
    /// returned (and kept and counted).
    pub fn delivered(&mut self, domain: &str, seen: Observed, now: u64) -> Option<Downgrade> {
        let p = self.partner(domain);
        let before = p.last.as_ref().map(|o| o.level);
        let relay = seen.relay.clone();
        let to = seen.level;
        p.last = Some(seen);
        p.last_at = now;
        p.deliveries += 1;
        let from = before.filter(|b| b.rank() > to.rank())?;
        let d = Downgrade {
            at: now,
            domain: domain.to_string(),
            from,
            to,
            relay,
            node: None,
        };
        self.counts[from.index()][to.index()] += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(d.clone());
        Some(d)
    }

    /// This node's postures and downgrades, for the fleet's store.
    pub fn export(&self) -> Export {
        Export {
            partners: self.partners.iter().map(|(_, p)| p.clone()).collect(),
            downgrades: self.recent.iter().cloned().collect(),
        }
    }

    /// Another node's (or this node's, before a restart) last delivery to
    /// a domain: when it is newer than what this node knows, it is the
    /// posture the next delivery here is compared with, so that a
    /// downgrade one node sees after another's delivery is a downgrade
    /// for the fleet.
    pub fn adopt(&mut self, p: &Partner) {
        let Some(last) = &p.last else { return };
        let newer = self
            .partners
            .peek(&p.domain)
            .is_none_or(|mine| mine.last_at < p.last_at);
        if newer {
            let mine = self.partner(&p.domain);
            mine.last = Some(last.clone());
            mine.last_at = p.last_at;
        }
    }

    /// This node's own export from before a restart: each partner's last
    /// delivery, and the downgrades not already kept (oldest first, still
    /// bounded).
    pub fn restore(&mut self, before: &Export) {
        for p in &before.partners {
            self.adopt(p);
        }
        for d in &before.downgrades {
            if !self.recent.contains(d) {
                if self.recent.len() == RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(d.clone());
            }
        }
        let mut sorted: Vec<Downgrade> = self.recent.drain(..).collect();
        sorted.sort_by_key(|d| d.at);
        self.recent = sorted.into();
    }

    /// An attempt to `domain` delivered nothing.
    pub fn failed(&mut self, domain: &str, detail: &str, now: u64) {
        self.partner(domain).last_failure = Some(Failure {
            at: now,
            detail: detail.to_string(),
        });
    }

    pub fn get(&self, domain: &str) -> Option<&Partner> {
        self.partners.peek(domain)
    }

    /// The `n` domains delivered to most, most first (then by name).
    pub fn busiest(&self, n: usize) -> Vec<Partner> {
        let mut all: Vec<&Partner> = self.partners.iter().map(|(_, p)| p).collect();
        all.sort_by(|a, b| {
            b.deliveries
                .cmp(&a.deliveries)
                .then(a.domain.cmp(&b.domain))
        });
        all.into_iter().take(n).cloned().collect()
    }

    /// The recent downgrades, newest first.
    pub fn recent(&self) -> Vec<Downgrade> {
        self.recent.iter().rev().cloned().collect()
    }

    /// Downgrades so far: (from, to, count) for every pair seen.
    pub fn counts(&self) -> Vec<(TlsLevel, TlsLevel, u64)> {
        let mut out = Vec::new();
        for from in TlsLevel::iter() {
            for to in TlsLevel::iter() {
                let n = self.counts[from.index()][to.index()];
                if n > 0 {
                    out.push((from, to, n));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(level: TlsLevel) -> Observed {
        Observed {
            level,
            version: None,
            cipher: None,
            cert_expires: None,
            relay: "mx[192.0.2.1]:25".into(),
            sources: Vec::new(),
        }
    }

    #[test]
    fn a_change_for_the_worse_is_a_downgrade_and_better_is_not() {
        let mut p = Postures::new(10);
        assert_eq!(p.delivered("a.test", seen(TlsLevel::Verified), 1), None);
        assert_eq!(p.delivered("a.test", seen(TlsLevel::Dane), 2), None);
        let d = p.delivered("a.test", seen(TlsLevel::None), 3).unwrap();
        assert_eq!((d.from, d.to, d.at), (TlsLevel::Dane, TlsLevel::None, 3));
        // Compared with the last delivery, not the best: none → none is not.
        assert_eq!(p.delivered("a.test", seen(TlsLevel::None), 4), None);
        assert_eq!(p.counts(), vec![(TlsLevel::Dane, TlsLevel::None, 1)]);
        assert_eq!(p.recent().len(), 1);
        assert_eq!(p.get("a.test").unwrap().deliveries, 4);
    }

    #[test]
    fn bounded_least_recently_used_first() {
        let mut p = Postures::new(2);
        p.delivered("a.test", seen(TlsLevel::Verified), 1);
        p.delivered("b.test", seen(TlsLevel::Verified), 2);
        p.failed("a.test", "connection refused", 3);
        p.delivered("c.test", seen(TlsLevel::Verified), 4);
        assert!(p.get("b.test").is_none(), "b was the least recently used");
        assert_eq!(
            p.get("a.test")
                .unwrap()
                .last_failure
                .as_ref()
                .unwrap()
                .detail,
            "connection refused"
        );
        assert_eq!(p.busiest(5).len(), 2);
    }
}
