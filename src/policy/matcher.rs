//! Client matchers and the profile index (IN-4).
//!
//! A profile lists `hosts` (full IP, IPv4 prefix with `*`, CIDR, exact host
//! name, `*.example.com`, or `*` for everyone) and `sender_domains` (exact,
//! or `.example.com` for every subdomain). All of them are compiled into one
//! [`ProfileIndex`] of hash maps, so a lookup costs a handful of hash probes
//! whatever the number of profiles, and takes no lock.
//!
//! Precedence, most specific first (docs/policy.md):
//! 1. exact IP address;
//! 2. the longest matching prefix (a `*` prefix is a CIDR: `192.0.2.*` =
//!    `192.0.2.0/24`);
//! 3. exact host name (the client's forward-confirmed reverse DNS name);
//! 4. wildcard host name, the longest suffix first;
//! 5. exact sender domain (MAIL FROM), then the longest `.suffix`;
//! 6. the `*` profile.
//!
//! A matcher may appear in only one profile (configuration error otherwise),
//! so every level has at most one winner.

use std::collections::HashMap;
use std::net::IpAddr;

/// One entry of a profile's `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatcher {
    Ip(IpAddr),
    /// An address prefix: written as CIDR or as an IPv4 `*` prefix.
    Net {
        addr: IpAddr,
        len: u8,
    },
    Name(String),
    /// `*.example.com`: the suffix `example.com`; matches any name below it.
    Wildcard(String),
    /// `*`: every client.
    Any,
}

/// One entry of a profile's `sender_domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderMatcher {
    Exact(String),
    /// `.example.com`: any subdomain of `example.com`, not itself.
    Below(String),
}

/// An entry of `hosts` or `sender_domains` that is not a matcher (the
/// entry as written, and what is wrong with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("{0:?}: not an address/length (CIDR)")]
    Cidr(String),
    #[error("{entry:?}: prefix length must be 0..={max}")]
    PrefixLength { entry: String, max: u8 },
    #[error("{0:?}: a `*` prefix is written like 192.0.2.* or 10.*")]
    StarPrefix(String),
    #[error("{0:?}: not a valid wildcard host name")]
    Wildcard(String),
    #[error(
        "{0:?}: not an IP address, prefix (192.0.2.*), CIDR (192.0.2.0/24), host name or *.domain"
    )]
    Host(String),
    #[error("{0:?}: not a domain (or .domain for its subdomains)")]
    SenderDomain(String),
}

impl std::str::FromStr for HostMatcher {
    type Err = MatcherError;
    fn from_str(s: &str) -> Result<Self, MatcherError> {
        let s = s.trim();
        if s == "*" {
            return Ok(HostMatcher::Any);
        }
        if let Some((addr, len)) = s.split_once('/') {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| MatcherError::Cidr(s.to_string()))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len: u8 = len.parse().ok().filter(|l| *l <= max).ok_or_else(|| {
                MatcherError::PrefixLength {
                    entry: s.to_string(),
                    max,
                }
            })?;
            return Ok(HostMatcher::Net {
                addr: mask(addr, len),
                len,
            });
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            // IPv4 prefix: `192.0.2.*`, `10.1.*`, `10.*`.
            let octets: Vec<&str> = prefix.split('.').collect();
            if octets.len() <= 3 && octets.iter().all(|o| o.parse::<u8>().is_ok()) {
                let mut bytes = [0u8; 4];
                for (i, o) in octets.iter().enumerate() {
                    bytes[i] = o.parse().unwrap_or(0);
                }
                return Ok(HostMatcher::Net {
                    addr: IpAddr::from(bytes),
                    len: 8 * octets.len() as u8,
                });
            }
            return Err(MatcherError::StarPrefix(s.to_string()));
        }
        if let Some(suffix) = s.strip_prefix("*.") {
            if crate::model::valid_domain(suffix) {
                return Ok(HostMatcher::Wildcard(crate::policy::canonical_domain(
                    suffix,
                )));
            }
            return Err(MatcherError::Wildcard(s.to_string()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(HostMatcher::Ip(canonical(ip)));
        }
        if crate::model::valid_domain(s) && s.contains(|c: char| c.is_ascii_alphabetic()) {
            return Ok(HostMatcher::Name(crate::policy::canonical_domain(s)));
        }
        Err(MatcherError::Host(s.to_string()))
    }
}

impl std::str::FromStr for SenderMatcher {
    type Err = MatcherError;
    fn from_str(s: &str) -> Result<Self, MatcherError> {
        let s = s.trim();
        let (below, domain) = match s.strip_prefix('.') {
            Some(d) => (true, d),
            None => (false, s),
        };
        if !crate::model::valid_mail_domain(domain) {
            return Err(MatcherError::SenderDomain(s.to_string()));
        }
        let d = crate::policy::canonical_domain(domain);
        Ok(if below {
            SenderMatcher::Below(d)
        } else {
            SenderMatcher::Exact(d)
        })
    }
}

impl std::fmt::Display for HostMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatcher::Ip(ip) => write!(f, "{ip}"),
            HostMatcher::Net { addr, len } => write!(f, "{addr}/{len}"),
            HostMatcher::Name(n) => f.write_str(n),
            HostMatcher::Wildcard(s) => write!(f, "*.{s}"),
            HostMatcher::Any => f.write_str("*"),
        }
    }
}

impl std::fmt::Display for SenderMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SenderMatcher::Exact(d) => f.write_str(d),
            SenderMatcher::Below(d) => write!(f, ".{d}"),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, as a dual-stack listener
/// reports IPv4 clients) are matched as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let keep = if len == 0 {
        0
    } else {
        u128::MAX << (width - len as u32)
    };
    let keep = if width == 32 {
        keep & 0xFFFF_FFFF
    } else {
        keep
    };
    let b = bits(ip) & keep;
    match ip {
        IpAddr::V4(_) => IpAddr::from((b as u32).to_be_bytes()),
        IpAddr::V6(_) => IpAddr::from(b.to_be_bytes()),
    }
}

/// Why a profile matched, for logs and `sealgate explain`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum MatchedBy {
    Ip(String),
    Prefix(String),
    Host(String),
    WildcardHost(String),
    Sender(String),
    SenderBelow(String),
    Default,
}

impl MatchedBy {
    /// Matched on who the client is (address or name), rather than on
    /// what it claims at MAIL FROM.
    pub fn by_client(&self) -> bool {
        matches!(
            self,
            MatchedBy::Ip(_)
                | MatchedBy::Prefix(_)
                | MatchedBy::Host(_)
                | MatchedBy::WildcardHost(_)
        )
    }
}

impl std::fmt::Display for MatchedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatchedBy::Ip(v) => write!(f, "exact IP {v}"),
            MatchedBy::Prefix(v) => write!(f, "prefix {v}"),
            MatchedBy::Host(v) => write!(f, "host name {v}"),
            MatchedBy::WildcardHost(v) => write!(f, "wildcard host {v}"),
            MatchedBy::Sender(v) => write!(f, "sender domain {v}"),
            MatchedBy::SenderBelow(v) => write!(f, "sender subdomain of {v}"),
            MatchedBy::Default => write!(f, "the * default"),
        }
    }
}

/// Who is asking: what is known of the client at this point of the session.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// Forward-confirmed reverse DNS name, when known.
    pub name: Option<&'a str>,
    /// The MAIL FROM domain, once given.
    pub sender_domain: Option<&'a str>,
}

/// Every matcher of every profile, compiled.
#[derive(Debug, Default, Clone)]
pub struct ProfileIndex {
    ips: HashMap<IpAddr, usize>,
    /// (is IPv6, prefix length, masked address → profile), longest first.
    nets: Vec<(bool, u8, HashMap<u128, usize>)>,
    names: HashMap<String, usize>,
    wildcards: HashMap<String, usize>,
    senders: HashMap<String, usize>,
    senders_below: HashMap<String, usize>,
    any: Option<usize>,
}

impl ProfileIndex {
    /// Adds profile `idx`'s matchers; returns an error naming a matcher
    /// another profile already has.
    pub fn add_host(&mut self, idx: usize, m: &HostMatcher) -> Result<(), usize> {
        let slot = match m {
            HostMatcher::Ip(ip) => self.ips.entry(*ip),
            HostMatcher::Net { addr, len } => {
                let v6 = addr.is_ipv6();
                let pos = match self
                    .nets
                    .iter()
                    .position(|(a, l, _)| *a == v6 && *l == *len)
                {
                    Some(p) => p,
                    None => {
                        self.nets.push((v6, *len, HashMap::new()));
                        self.nets.sort_by_key(|n| std::cmp::Reverse(n.1));
                        self.nets
                            .iter()
                            .position(|(a, l, _)| *a == v6 && *l == *len)
                            .unwrap_or(0)
                    }
                };
                return insert_unique(self.nets[pos].2.entry(bits(*addr)), idx);
            }
            HostMatcher::Name(n) => return insert_unique(self.names.entry(n.clone()), idx),
            HostMatcher::Wildcard(s) => return insert_unique(self.wildcards.entry(s.clone()), idx),
            HostMatcher::Any => {
                return match self.any {
                    Some(other) => Err(other),
                    None => {
                        self.any = Some(idx);
                        Ok(())
                    }
                }
            }
        };
        insert_unique(slot, idx)
    }

    pub fn add_sender(&mut self, idx: usize, m: &SenderMatcher) -> Result<(), usize> {
        match m {
            SenderMatcher::Exact(d) => insert_unique(self.senders.entry(d.clone()), idx),
            SenderMatcher::Below(d) => insert_unique(self.senders_below.entry(d.clone()), idx),
        }
    }

    /// Whether any profile matches on host names (only then is the client's
    /// name looked up).
    pub fn needs_names(&self) -> bool {
        !self.names.is_empty() || !self.wildcards.is_empty()
    }

    /// The winning profile, or `None` when no profile (not even `*`)
    /// matches.
    pub fn select(&self, c: &Client<'_>) -> Option<(usize, MatchedBy)> {
        let mut first = None;
        self.visit(c, &mut |idx, by| {
            first = Some((idx, by));
            false
        });
        first
    }

    /// Every matching profile, most specific first: the first wins, the
    /// rest lost (for `sealgate explain`).
    pub fn candidates(&self, c: &Client<'_>) -> Vec<(usize, MatchedBy)> {
        let mut all = Vec::new();
        self.visit(c, &mut |idx, by| {
            all.push((idx, by));
            true
        });
        all
    }

    /// Walks the levels in precedence order, calling `found` for each
    /// match until it returns false. One walk serves `select` and
    /// `candidates`, so the gateway and `explain` cannot disagree.
    fn visit(&self, c: &Client<'_>, found: &mut dyn FnMut(usize, MatchedBy) -> bool) {
        let ip = canonical(c.ip);
        if let Some(&i) = self.ips.get(&ip) {
            if !found(i, MatchedBy::Ip(ip.to_string())) {
                return;
            }
        }
        for (v6, len, map) in &self.nets {
            if *v6 != ip.is_ipv6() {
                continue;
            }
            let net = mask(ip, *len);
            if let Some(&i) = map.get(&bits(net)) {
                if !found(i, MatchedBy::Prefix(format!("{net}/{len}"))) {
                    return;
                }
            }
        }
        if let Some(name) = c.name {
            let name = crate::policy::canonical_domain(name);
            if let Some(&i) = self.names.get(&name) {
                if !found(i, MatchedBy::Host(name.clone())) {
                    return;
                }
            }
            for suffix in suffixes(&name) {
                if let Some(&i) = self.wildcards.get(suffix) {
                    if !found(i, MatchedBy::WildcardHost(format!("*.{suffix}"))) {
                        return;
                    }
                }
            }
        }
        if let Some(domain) = c.sender_domain {
            let domain = crate::policy::canonical_domain(domain);
            if let Some(&i) = self.senders.get(&domain) {
                if !found(i, MatchedBy::Sender(domain.clone())) {
                    return;
                }
            }
            for suffix in suffixes(&domain) {
                if let Some(&i) = self.senders_below.get(suffix) {
                    if !found(i, MatchedBy::SenderBelow(format!(".{suffix}"))) {
                        return;
                    }
                }
            }
        }
        if let Some(i) = self.any {
            found(i, MatchedBy::Default);
        }
    }
}

fn insert_unique<K>(
    entry: std::collections::hash_map::Entry<'_, K, usize>,
    idx: usize,
) -> Result<(), usize> {
    match entry {
        std::collections::hash_map::Entry::Occupied(o) => Err(*o.get()),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(idx);
            Ok(())
        }
    }
}

/// The proper suffixes of a name, longest first: `a.b.example.com` →
/// `b.example.com`, `example.com`, `com`.
fn suffixes(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(i, _)| &name[i + 1..])
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
