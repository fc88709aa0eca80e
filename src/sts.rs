//! MTA-STS (RFC 8461), sans-IO: the `_mta-sts` TXT record, the policy
//! file, MX patterns, and the cache of policies with its rules (when to
//! fetch, when a policy is still good). The lookups and the HTTPS fetch are
//! the resolver thread's (`dns`); the decision per MX host is here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest `max_age` honoured (RFC 8461 §3.2: 31557600, a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// The largest policy file read (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_POLICY_SIZE: usize = 64 * 1024;
/// How long "no policy" is remembered (an absent TXT record).
pub const NEGATIVE_TTL: u64 = 300;

/// `mode` of a policy (RFC 8461 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// MX hosts outside the patterns are not used; TLS with a valid
    /// certificate naming the MX host is required.
    Enforce,
    /// Checked and reported, never refused.
    Testing,
    /// No policy (a domain withdrawing one).
    None,
}

impl Mode {
    /// As the policy file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy (RFC 8461 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// `mx` patterns: a host name, or `*.` and a domain (one label).
    pub mx: Vec<String>,
    /// Seconds, capped at [`MAX_AGE_LIMIT`].
    pub max_age: u64,
}

/// Why a policy file or TXT record is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy does not start with version: STSv1")]
    Version,
    #[error("the policy has no mode (or an unknown one: {0:?})")]
    Mode(String),
    #[error("the policy has no valid max_age")]
    MaxAge,
    #[error("mode {0:?} needs at least one mx pattern")]
    NoMx(String),
    #[error("the TXT record is not v=STSv1 with an id")]
    Record,
}

/// The `_mta-sts` TXT record's id (RFC 8461 §3.1): `v=STSv1; id=…;`.
/// Several records, or one without `v=STSv1` first: none.
pub fn record_id(txt: &[String]) -> Result<String, PolicyError> {
    let records: Vec<&String> = txt.iter().filter(|t| t.starts_with("v=STSv1")).collect();
    let [record] = records.as_slice() else {
        return Err(PolicyError::Record);
    };
    let mut fields = record.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next() != Some("v=STSv1") {
        return Err(PolicyError::Record);
    }
    for f in fields {
        if let Some(id) = f.strip_prefix("id=") {
            // 1 to 32 letters and digits.
            if !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Ok(id.to_string());
            }
            return Err(PolicyError::Record);
        }
    }
    Err(PolicyError::Record)
}

/// Parses a policy file: `key: value` lines ending in CRLF or LF, the
/// first `version: STSv1`; unknown keys ignored (RFC 8461 §3.2).
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let first = lines.next().and_then(|l| l.split_once(':'));
    if !matches!(first, Some((k, v)) if k.trim() == "version" && v.trim() == "STSv1") {
        return Err(PolicyError::Version);
    }
    let (mut mode, mut max_age, mut mx) = (None, None, Vec::new());
    for line in lines {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(PolicyError::Mode(other.to_string())),
                })
            }
            "max_age" => {
                max_age = value
                    .parse::<u64>()
                    .ok()
                    .filter(|_| value.len() <= 10)
                    .map(|a| a.min(MAX_AGE_LIMIT))
            }
            "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
            _ => {}
        }
    }
    let mode = mode.ok_or_else(|| PolicyError::Mode(String::new()))?;
    let max_age = max_age.ok_or(PolicyError::MaxAge)?;
    if mx.is_empty() && mode != Mode::None {
        let name = match mode {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        };
        return Err(PolicyError::NoMx(name.into()));
    }
    Ok(Policy { mode, mx, max_age })
}

/// Whether MX host `host` matches one of `patterns` (RFC 8461 §4.1): a
/// pattern `*.example.com` matches exactly one more label.
pub fn mx_matches(patterns: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    patterns.iter().any(|p| match p.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => *p == host,
    })
}

/// A domain's cached policy (RFC 8461 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The TXT record's id it was fetched under.
    pub id: String,
    pub policy: Policy,
    /// Unix seconds.
    pub fetched: u64,
}

impl Cached {
    pub fn expires(&self) -> u64 {
        self.fetched.saturating_add(self.policy.max_age)
    }
}

/// What to do for a domain, given its TXT answer and the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Use this policy (cached, still valid, same id).
    Use(Cached),
    /// Fetch the policy file (no valid cached one, or a new id); on
    /// failure, `fallback` (an unexpired cached policy) applies.
    Fetch {
        id: String,
        fallback: Option<Cached>,
    },
    /// No policy applies.
    Nothing,
}

/// The cache: per domain, the last policy fetched, plus domains known to
/// have none for a while. Persisted by the resolver thread as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    pub policies: BTreeMap<String, Cached>,
    /// Domain → Unix second until which "no TXT record" is remembered.
    #[serde(default)]
    pub absent: BTreeMap<String, u64>,
}

impl Cache {
    /// RFC 8461 §5.1: a TXT record whose id differs from the cached
    /// policy's means a new policy; no TXT record keeps an unexpired cached
    /// policy (the record may have been stripped by an attacker).
    pub fn next(&self, domain: &str, txt: Option<Result<String, PolicyError>>, now: u64) -> Next {
        let cached = self
            .policies
            .get(domain)
            .filter(|c| c.expires() > now)
            .cloned();
        match (txt, cached) {
            (Some(Ok(id)), Some(c)) if c.id == id => Next::Use(c),
            (Some(Ok(id)), fallback) => Next::Fetch { id, fallback },
            (None | Some(Err(_)), Some(c)) => Next::Use(c),
            (None | Some(Err(_)), None) => Next::Nothing,
        }
    }

    /// A policy was fetched.
    pub fn store(&mut self, domain: &str, cached: Cached) {
        self.absent.remove(domain);
        self.policies.insert(domain.to_string(), cached);
    }

    /// Forgets expired entries; returns whether anything went.
    pub fn expire(&mut self, now: u64) -> bool {
        let before = self.policies.len() + self.absent.len();
        self.policies.retain(|_, c| c.expires() > now);
        self.absent.retain(|_, until| *until > now);
        before != self.policies.len() + self.absent.len()
    }

    /// Domains whose policy should be fetched again in the background
    /// (RFC 8461 §5.1: before it expires): past half its `max_age`, or
    /// within a day of expiry.
    pub fn due_for_refresh(&self, now: u64) -> Vec<String> {
        self.policies
            .iter()
            .filter(|(_, c)| {
                let within = (c.policy.max_age / 2).min(86_400);
                c.expires() <= now.saturating_add(within)
            })
            .map(|(d, _)| d.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_files_parse_per_rfc_8461() {
        let p = parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n")
            .unwrap();
        assert_eq!(
            p,
            Policy {
                mode: Mode::Enforce,
                mx: vec!["mail.example.com".into(), "*.example.net".into()],
                max_age: 86400
            }
        );
        // LF endings, unknown keys, max_age capped.
        let p =
            parse("version: STSv1\nmode: testing\nmx: a.example\nfuture: x\nmax_age: 99999999\n")
                .unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Testing, MAX_AGE_LIMIT));
        assert_eq!(
            parse("mode: enforce\nversion: STSv1\n"),
            Err(PolicyError::Version)
        );
        assert_eq!(
            parse("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n"),
            Err(PolicyError::Mode("strict".into()))
        );
        assert_eq!(
            parse("version: STSv1\nmode: enforce\nmx: a\n"),
            Err(PolicyError::MaxAge)
        );
        assert_eq!(
            parse("version: STSv1\nmode: enforce\nmax_age: 5\n"),
            Err(PolicyError::NoMx("enforce".into()))
        );
        assert!(parse("version: STSv1\nmode: none\nmax_age: 5\n").is_ok());
    }

    #[test]
    fn txt_records_and_mx_patterns() {
        assert_eq!(
            record_id(&["v=STSv1; id=20261201T1;".into()]),
            Ok("20261201T1".into())
        );
        assert_eq!(
            record_id(&["v=STSv1;id=abc".into(), "other".into()]),
            Ok("abc".into())
        );
        assert_eq!(
            record_id(&["v=STSv1; id=a".into(), "v=STSv1; id=b".into()]),
            Err(PolicyError::Record)
        );
        assert_eq!(
            record_id(&["v=STSv1; id=bad-id".into()]),
            Err(PolicyError::Record)
        );
        assert_eq!(
            record_id(&["id=1; v=STSv1".into()]),
            Err(PolicyError::Record)
        );
        let pats = vec!["mx1.example.com".to_string(), "*.example.net".to_string()];
        assert!(mx_matches(&pats, "MX1.example.com."));
        assert!(mx_matches(&pats, "a.example.net"));
        assert!(!mx_matches(&pats, "a.b.example.net"), "one label only");
        assert!(!mx_matches(&pats, "example.net"));
        assert!(!mx_matches(&pats, "mx2.example.com"));
    }

    #[test]
    fn the_cache_keeps_a_policy_until_it_expires_or_the_id_changes() {
        let cached = Cached {
            id: "1".into(),
            policy: Policy {
                mode: Mode::Enforce,
                mx: vec!["mx.example".into()],
                max_age: 100,
            },
            fetched: 1000,
        };
        let mut cache = Cache::default();
        assert_eq!(
            cache.next("d", Some(Ok("1".into())), 1000),
            Next::Fetch {
                id: "1".into(),
                fallback: None
            }
        );
        assert_eq!(cache.next("d", None, 1000), Next::Nothing);
        cache.store("d", cached.clone());
        assert_eq!(
            cache.next("d", Some(Ok("1".into())), 1050),
            Next::Use(cached.clone())
        );
        // A stripped TXT record does not remove an unexpired policy.
        assert_eq!(cache.next("d", None, 1050), Next::Use(cached.clone()));
        assert_eq!(
            cache.next("d", Some(Ok("2".into())), 1050),
            Next::Fetch {
                id: "2".into(),
                fallback: Some(cached.clone())
            }
        );
        assert!(
            cache.due_for_refresh(1049).is_empty(),
            "not before half its max_age"
        );
        assert_eq!(cache.due_for_refresh(1050), vec!["d".to_string()]);
        assert_eq!(
            cache.next("d", Some(Ok("1".into())), 1100),
            Next::Fetch {
                id: "1".into(),
                fallback: None
            }
        );
        assert!(cache.expire(1100));
        assert!(cache.policies.is_empty());
        let text = serde_json::to_string(&cache).unwrap();
        assert_eq!(serde_json::from_str::<Cache>(&text).unwrap(), cache);
    }
}
