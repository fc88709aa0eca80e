//! The partners' TLS posture as one view: the read-only status page on
//! the admin listener (`/`, plain server-rendered HTML, and
//! `/status.json`) and `sealgate partners` (the same table in the
//! terminal). One [`Status`], read from the running gateway, three
//! renderings.

use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::delivery::posture::{Downgrade, Partner};
use crate::state::Shared;

/// How many of the busiest destination domains are shown besides the
/// configured partners.
pub const BUSIEST: usize = 20;

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub hostname: String,
    /// Unix seconds.
    pub generated: u64,
    pub partners: Vec<Row>,
    pub queue: Queue,
    /// The gateway's own certificates.
    pub certificates: Vec<Certificate>,
    /// Newest first.
    pub downgrades: Vec<Downgrade>,
    /// The certificate ACME keeps (`[acme]`), and its keys' records.
    #[serde(default)]
    pub acme: Option<crate::acme::View>,
    /// `[fleet]`: the store and the nodes up.
    #[serde(default)]
    pub fleet: Option<Fleet>,
}

/// The fleet as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    pub store_up: bool,
    pub nodes: Vec<crate::fleet::NodeView>,
}

/// One partner: a domain with a route profile of its own, or one of the
/// busiest destination domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub domain: String,
    /// The route's profile, for a configured partner.
    pub profile: Option<String>,
    /// What delivery has seen of it since the start; none yet: never
    /// delivered to.
    pub seen: Option<Partner>,
    /// In a fleet: the node whose delivery `seen` is.
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub messages: u64,
    pub oldest_age_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub file: String,
    pub subject: String,
    /// Unix seconds.
    pub not_after: i64,
    pub days_left: i64,
}

/// Reads the running gateway's state.
pub fn read(shared: &Shared, certificates: &[PathBuf]) -> Status {
    let now = crate::model::unix_now();
    let snapshot = shared.snapshot.load();
    let mut partners: Vec<Row> = Vec::new();
    let (busiest, downgrades, mut seen) = match shared.delivery.postures.lock() {
        Ok(p) => {
            let seen: Vec<Partner> = snapshot
                .routes
                .exact()
                .filter_map(|r| p.get(&r.domain).cloned())
                .collect();
            (p.busiest(BUSIEST), p.recent(), seen)
        }
        Err(_) => (Vec::new(), Vec::new(), Vec::new()),
    };
    for route in snapshot.routes.exact() {
        let Some(profile) = route.profile.and_then(|i| snapshot.profiles.list.get(i)) else {
            continue;
        };
        let found = seen.iter().position(|p| p.domain == route.domain);
        partners.push(Row {
            domain: route.domain.clone(),
            profile: Some(profile.name.clone()),
            seen: found.map(|i| seen.swap_remove(i)),
            node: None,
        });
    }
    for p in busiest {
        if partners.iter().any(|r| r.domain == p.domain) {
            continue;
        }
        partners.push(Row {
            domain: p.domain.clone(),
            profile: None,
            seen: Some(p),
            node: None,
        });
    }
    let mut downgrades = downgrades;
    if let Some(fleet) = shared.fleet.get() {
        fleet_view(fleet, &mut partners, &mut downgrades);
    }
    let oldest = shared.delivery.queue_oldest_arrival.load(Ordering::Relaxed);
    Status {
        hostname: snapshot.hostname.clone(),
        generated: now,
        partners,
        queue: Queue {
            messages: shared.delivery.queue_messages.load(Ordering::Relaxed),
            oldest_age_seconds: if oldest == 0 {
                0
            } else {
                now.saturating_sub(oldest)
            },
        },
        certificates: crate::tls::days_left(certificates)
            .into_iter()
            .map(|(file, days_left, subject, not_after)| Certificate {
                file: file.display().to_string(),
                subject,
                not_after,
                days_left,
            })
            .collect(),
        downgrades,
        fleet: shared.fleet.get().map(|f| Fleet {
            store_up: f.up.load(Ordering::Relaxed),
            nodes: f.nodes.lock().map(|n| n.clone()).unwrap_or_default(),
        }),
        acme: snapshot
            .acme
            .as_ref()
            .and_then(|a| crate::acme::View::read(a, i64::try_from(now).unwrap_or(i64::MAX)).ok()),
    }
}

/// In a fleet: each partner's newest delivery by any node, with the
/// node's name; domains only other nodes delivered to join the busiest;
/// every node's downgrades, newest first.
fn fleet_view(
    fleet: &crate::fleet::Stats,
    partners: &mut Vec<Row>,
    downgrades: &mut Vec<Downgrade>,
) {
    let exports = fleet.postures.lock().map(|p| p.clone()).unwrap_or_default();
    let mut newest: std::collections::BTreeMap<String, (String, Partner, u64)> =
        std::collections::BTreeMap::new();
    let mut all_downgrades = Vec::new();
    for (node, text) in &exports {
        let Ok(export) = serde_json::from_str::<crate::delivery::posture::Export>(text) else {
            continue;
        };
        for p in export.partners {
            let entry = newest
                .entry(p.domain.clone())
                .or_insert_with(|| (node.clone(), p.clone(), 0));
            entry.2 += p.deliveries;
            if p.last.is_some() && p.last_at >= entry.1.last_at {
                entry.0 = node.clone();
                let total = entry.2;
                entry.1 = p;
                entry.1.deliveries = total;
            } else {
                entry.1.deliveries = entry.2;
            }
        }
        for mut d in export.downgrades {
            d.node = Some(node.clone());
            all_downgrades.push(d);
        }
    }
    for row in partners.iter_mut() {
        if let Some((node, p, _)) = newest.remove(&row.domain) {
            row.seen = Some(p);
            row.node = Some(node);
        }
    }
    let mut rest: Vec<(String, Partner)> = newest.into_values().map(|(n, p, _)| (n, p)).collect();
    rest.sort_by(|a, b| {
        b.1.deliveries
            .cmp(&a.1.deliveries)
            .then(a.1.domain.cmp(&b.1.domain))
    });
    for (node, p) in rest
        .into_iter()
        .take(BUSIEST.saturating_sub(partners.len()))
    {
        partners.push(Row {
            domain: p.domain.clone(),
            profile: None,
            seen: Some(p),
            node: Some(node),
        });
    }
    if !exports.is_empty() {
        all_downgrades.sort_by_key(|d| std::cmp::Reverse(d.at));
        all_downgrades.truncate(BUSIEST);
        *downgrades = all_downgrades;
    }
}

/// A Unix time as the page shows it (RFC 3339, UTC).
fn when(t: i64) -> String {
    crate::model::rfc3339(t)
}

/// The cells of a partner's row, as both tables show them: domain,
/// profile, TLS level, version and cipher, certificate expiry, policy
/// sources, last delivery, last failure.
fn cells(r: &Row) -> [String; 8] {
    let dash = || "-".to_string();
    let last = r.seen.as_ref().and_then(|p| p.last.as_ref());
    [
        r.domain.clone(),
        r.profile.clone().unwrap_or_else(dash),
        last.map_or_else(|| "never delivered".into(), |o| o.level.label().to_string()),
        last.and_then(|o| {
            o.version
                .as_ref()
                .map(|v| format!("{v} {}", o.cipher.as_deref().unwrap_or("")))
        })
        .unwrap_or_else(dash),
        last.and_then(|o| o.cert_expires).map_or_else(dash, when),
        last.map(|o| o.sources.join(", "))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(dash),
        r.seen
            .as_ref()
            .filter(|p| p.last.is_some())
            .map_or_else(dash, |p| {
                let by = r
                    .node
                    .as_ref()
                    .map(|n| format!(" by {n}"))
                    .unwrap_or_default();
                format!(
                    "{}{by} ({} session(s))",
                    when(p.last_at as i64),
                    p.deliveries
                )
            }),
        r.seen
            .as_ref()
            .and_then(|p| p.last_failure.as_ref())
            .map_or_else(dash, |f| format!("{}: {}", when(f.at as i64), f.detail)),
    ]
}

/// Why the partner table is empty, as the page and `partners` say it.
const NO_PARTNERS: &str = "no partner yet: no route has a profile of its own, and nothing has been delivered since the start";

const HEADINGS: [&str; 8] = [
    "domain",
    "profile",
    "TLS",
    "version, cipher",
    "certificate expires",
    "policies",
    "last delivery",
    "last failure",
];

impl Status {
    /// The page: plain HTML and a little CSS, no script; every value
    /// escaped by the template (maud).
    pub fn html(&self) -> String {
        const STYLE: &str = "body{font-family:sans-serif;margin:1.5em}\
             table{border-collapse:collapse;margin-bottom:1.5em}\
             th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}\
             th{background:#eee}.tls-none,.tls-untrusted{color:#b00}\
             .tls-dane,.tls-mta-sts,.tls-verified{color:#070}";
        let level = |r: &Row| {
            r.seen
                .as_ref()
                .and_then(|p| p.last.as_ref())
                .map_or("never", |o| o.level.label())
        };
        maud::html! {
            (maud::DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { "sealgate status: " (self.hostname) }
                    style { (maud::PreEscaped(STYLE)) }
                }
                body {
                    h1 { "sealgate on " (self.hostname) }
                    p {
                        "Generated " (when(self.generated as i64)) ". "
                        a href="/status.json" { "JSON" } " · " a href="/metrics" { "metrics" }
                    }
                    h2 { "Partners" }
                    table id="partners" {
                        tr { @for t in HEADINGS { th { (t) } } }
                        @for r in &self.partners {
                            tr data-domain=(r.domain) class={ "tls-" (level(r)) } {
                                @for c in cells(r) { td { (c) } }
                            }
                        }
                    }
                    @if self.partners.is_empty() {
                        p id="no-partners" { (NO_PARTNERS) }
                    }
                    h2 { "Queue" }
                    p id="queue" {
                        (self.queue.messages) " message(s); the oldest queued "
                        (self.queue.oldest_age_seconds) " s ago."
                    }
                    h2 { "Recent downgrades" }
                    table id="downgrades" {
                        tr { th { "when" } th { "domain" } th { "from" } th { "to" } th { "relay" } }
                        @for d in &self.downgrades {
                            tr {
                                td { (when(d.at as i64)) } td { (d.domain) }
                                td { (d.from.label()) } td { (d.to.label()) } td { (d.relay) }
                            }
                        }
                    }
                    @if let Some(f) = &self.fleet {
                        h2 { "Fleet" }
                        p id="fleet" {
                            @if f.store_up { "The store answers. " } @else { "The store is unreachable: figures are kept here and written when it is back. " }
                            "Nodes up: "
                            @for (i, n) in f.nodes.iter().enumerate() {
                                @if i > 0 { ", " }
                                (n.node) " (" (n.hostname) ")"
                            }
                        }
                    }
                    @if let Some(a) = &self.acme {
                        h2 { "ACME" }
                        table id="acme" {
                            tr { th { "names" } td { (a.domains.join(", ")) } }
                            @if let Some(c) = &a.certificate {
                                tr { th { "issuer" } td { (c.issuer) } }
                                tr { th { "expires" } td { (when(c.not_after)) } }
                            }
                            @if let Some(due) = a.renewal_due {
                                tr { th { "renewal due" } td { (when(due)) } }
                            }
                            tr { th { "next" } td { (a.next) } }
                            tr {
                                th { "last failure" }
                                td { (a.last_error.as_deref().unwrap_or("none")) }
                            }
                            @if let Some(d) = &a.dane {
                                tr { th { "key roll" } td { (d.roll) ": " (d.roll_detail) } }
                                @for r in &d.records {
                                    tr {
                                        th { "TLSA " (r.role) }
                                        td {
                                            (r.owner) " 3 1 1 " (r.key)
                                            @if r.validated_since > 0 {
                                                " (validated since " (when(r.validated_since)) ")"
                                            } @else {
                                                " (not seen validated)"
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    h2 { "Our certificates" }
                    table id="certificates" {
                        tr { th { "file" } th { "subject" } th { "expires" } th { "days left" } }
                        @for c in &self.certificates {
                            tr {
                                td { (c.file) } td { (c.subject) } td { (when(c.not_after)) }
                                td { (c.days_left) }
                            }
                        }
                    }
                }
            }
        }
        .into_string()
    }

    /// `sealgate partners`: the partner table, then the downgrades.
    pub fn text(&self) -> String {
        let rows: Vec<[String; 8]> = self.partners.iter().map(cells).collect();
        let mut widths = HEADINGS.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[&str]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", padded.join("  ").trim_end());
        };
        line(&mut out, &HEADINGS);
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            line(&mut out, &cells);
        }
        if self.partners.is_empty() {
            let _ = writeln!(out, "({NO_PARTNERS})");
        }
        let _ = writeln!(
            out,
            "\nqueue: {} message(s), oldest {} s",
            self.queue.messages, self.queue.oldest_age_seconds
        );
        if let Some(f) = &self.fleet {
            let nodes: Vec<&str> = f.nodes.iter().map(|n| n.node.as_str()).collect();
            let _ = writeln!(
                out,
                "fleet: store {}; nodes up: {}",
                if f.store_up { "up" } else { "unreachable" },
                nodes.join(", ")
            );
        }
        for d in &self.downgrades {
            let by = d
                .node
                .as_ref()
                .map(|n| format!(", node={n}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "downgrade {}: {} {} -> {} (relay={}{by})",
                when(d.at as i64),
                d.domain,
                d.from.label(),
                d.to.label(),
                d.relay
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::posture::{Observed, Postures};
    use crate::delivery::TlsLevel;

    fn status() -> Status {
        let mut p = Postures::new(10);
        let seen = |level| Observed {
            level,
            version: Some("TLSv1.3".into()),
            cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
            cert_expires: Some(1_800_000_000),
            relay: "mx.b.test[127.0.0.1]:25".into(),
            sources: vec!["mta-sts".into()],
        };
        p.delivered("b.test", seen(TlsLevel::Verified), 1_700_000_000);
        let d = p.delivered("b.test", seen(TlsLevel::None), 1_700_000_100);
        Status {
            hostname: "mx.<test>".into(),
            generated: 1_700_000_200,
            partners: vec![Row {
                domain: "b.test".into(),
                profile: None,
                seen: p.get("b.test").cloned(),
                node: None,
            }],
            queue: Queue {
                messages: 2,
                oldest_age_seconds: 30,
            },
            certificates: Vec::new(),
            acme: None,
            fleet: None,
            downgrades: d.into_iter().collect(),
        }
    }

    #[test]
    fn html_escapes_and_shows_the_level() {
        let h = status().html();
        assert!(h.contains("sealgate on mx.&lt;test&gt;"));
        assert!(h.contains("<tr data-domain=\"b.test\" class=\"tls-none\"><td>b.test</td>"));
        assert!(!h.contains("<script"));
    }

    /// An empty partner table says why, on the page as in `partners`.
    #[test]
    fn an_empty_partner_table_says_why() {
        let mut s = status();
        assert!(!s.html().contains("no-partners"));
        s.partners.clear();
        assert!(s
            .html()
            .contains(&format!("<p id=\"no-partners\">{NO_PARTNERS}</p>")));
        assert!(s.text().contains(NO_PARTNERS));
    }

    #[test]
    fn json_round_trips_and_text_has_the_row() {
        let s = status();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        let t = s.text();
        assert!(t.starts_with("domain"), "{t}");
        assert!(t.contains("b.test"), "{t}");
        assert!(
            t.contains("downgrade 2023-11-14T22:15:00Z: b.test verified -> none"),
            "{t}"
        );
    }
}
