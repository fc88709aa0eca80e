//! SMTP TLS Reporting (RFC 8460), sans-IO: what one delivery session to an
//! MX host came to ([`Session`], the result types of §4.3), the day's
//! aggregate per policy domain ([`Day`], kept as a JSON file in the spool
//! directory so it survives restarts), the `_smtp._tls` record (§3), the
//! report itself (§4, JSON) and its delivery forms (§5: gzip'ed, as a
//! `multipart/report; report-type=tlsrpt` message or an HTTPS POST body).
//! The scheduler records and sends; nothing here does I/O but the day
//! files' load and save.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

/// RFC 8460 §4.3: why a session failed, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    /// §4.3.1 negotiation failures.
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    /// §4.3.2 policy failures: DANE.
    TlsaInvalid,
    DnssecInvalid,
    DaneRequired,
    /// MTA-STS.
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

impl ResultType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// §4.4 `policy-type`, and what the report says of the policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Policy {
    /// DANE: the host's TLSA records (`usage selector matching hex`).
    Tlsa { records: Vec<String> },
    /// MTA-STS: the policy's lines and `mx` patterns.
    Sts { lines: Vec<String>, mx: Vec<String> },
    /// Neither applied.
    NoPolicyFound,
}

/// One session to one MX host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub mx_host: String,
    pub ip: std::net::IpAddr,
    pub policy: Policy,
    /// `Err((result type, additional information))`.
    pub result: Result<(), (ResultType, String)>,
}

/// The TLSA records as §4.4's `policy-string` lists them.
pub fn tlsa_strings(records: &[crate::model::Tlsa]) -> Vec<String> {
    records
        .iter()
        .map(|t| {
            let hex: String = t.data.iter().map(|b| format!("{b:02x}")).collect();
            format!("{} {} {} {hex}", t.usage, t.selector, t.matching)
        })
        .collect()
}

/// The MTA-STS policy as §4.4's `policy-string` lists it (its lines).
pub fn sts_strings(p: &crate::sts::Policy) -> (Vec<String>, Vec<String>) {
    let mode = match p.mode {
        crate::sts::Mode::Enforce => "enforce",
        crate::sts::Mode::Testing => "testing",
        crate::sts::Mode::None => "none",
    };
    let mut lines = vec!["version: STSv1".to_string(), format!("mode: {mode}")];
    lines.extend(p.mx.iter().map(|m| format!("mx: {m}")));
    lines.push(format!("max_age: {}", p.max_age));
    (lines, p.mx.clone())
}

/// Where the days are kept: `SPOOL/tls-rpt/YYYY-MM-DD.json`.
pub fn dir(spool: &Path) -> PathBuf {
    spool.join("tls-rpt")
}

/// One policy's counts in a day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub successful: u64,
    /// (result type, receiving MX host, receiving IP, additional
    /// information) → sessions.
    pub failures: Vec<(ResultType, String, String, String, u64)>,
}

impl Counts {
    pub fn failed(&self) -> u64 {
        self.failures.iter().map(|f| f.4).sum()
    }
}

/// What one policy domain's report covers: per (policy, MX host for DANE).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainDay {
    pub policies: Vec<(Policy, Option<String>, Counts)>,
    /// The report went out (or, with `only_failures`, was not due).
    pub sent: bool,
}

/// One UTC day's sessions, by policy domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub domains: BTreeMap<String, DomainDay>,
}

/// The UTC day of a Unix time, `YYYY-MM-DD`.
pub fn day_of(t: u64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(i64::try_from(t).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // A calendar date always formats.
    d.date()
        .format(&time::format_description::well_known::Iso8601::DATE)
        .unwrap_or_default()
}

/// The Unix time at which `day` (`YYYY-MM-DD`) starts; `None` for text
/// that is not a day.
pub fn day_start(day: &str) -> Option<u64> {
    let mut parts = day.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    u64::try_from(date.midnight().assume_utc().unix_timestamp()).ok()
}

impl Day {
    /// Adds another node's sessions of the same day (a fleet's figures):
    /// counts of the same policy and failure add up; `sent` stays this
    /// day's own.
    pub fn merge(&mut self, other: &Day) {
        for (domain, theirs) in &other.domains {
            let ours = self.domains.entry(domain.clone()).or_default();
            for (policy, mx, counts) in &theirs.policies {
                let i = match ours
                    .policies
                    .iter()
                    .position(|(p, m, _)| p == policy && m == mx)
                {
                    Some(i) => i,
                    None => {
                        ours.policies
                            .push((policy.clone(), mx.clone(), Counts::default()));
                        ours.policies.len() - 1
                    }
                };
                let into = &mut ours.policies[i].2;
                into.successful += counts.successful;
                for f in &counts.failures {
                    match into
                        .failures
                        .iter_mut()
                        .find(|g| g.0 == f.0 && g.1 == f.1 && g.2 == f.2 && g.3 == f.3)
                    {
                        Some(g) => g.4 += f.4,
                        None => into.failures.push(f.clone()),
                    }
                }
            }
        }
    }

    pub fn new(day: &str) -> Day {
        Day {
            day: day.to_string(),
            domains: BTreeMap::new(),
        }
    }

    /// Records a session to an MX host of `recipient_domain`. The policy
    /// domain is the recipient's for MTA-STS and no policy, the MX host's
    /// for DANE (RFC 8460 §1.3: the TLSA base domain).
    pub fn record(&mut self, recipient_domain: &str, s: &Session) {
        let (domain, mx) = match &s.policy {
            Policy::Tlsa { .. } => (s.mx_host.to_ascii_lowercase(), Some(s.mx_host.clone())),
            Policy::Sts { .. } | Policy::NoPolicyFound => {
                (recipient_domain.to_ascii_lowercase(), None)
            }
        };
        let entry = self.domains.entry(domain).or_default();
        let i = match entry
            .policies
            .iter()
            .position(|(p, m, _)| *p == s.policy && *m == mx)
        {
            Some(i) => i,
            None => {
                entry
                    .policies
                    .push((s.policy.clone(), mx, Counts::default()));
                entry.policies.len() - 1
            }
        };
        let counts = &mut entry.policies[i].2;
        match &s.result {
            Ok(()) => counts.successful += 1,
            Err((rt, info)) => {
                let ip = s.ip.to_string();
                match counts
                    .failures
                    .iter_mut()
                    .find(|f| f.0 == *rt && f.1 == s.mx_host && f.2 == ip && f.3 == *info)
                {
                    Some(f) => f.4 += 1,
                    None => counts
                        .failures
                        .push((*rt, s.mx_host.clone(), ip, info.clone(), 1)),
                }
            }
        }
    }

    /// Whether `domain`'s report is due: sessions recorded, not sent, and
    /// a failure among them unless every day is reported.
    pub fn due(&self, domain: &str, only_failures: bool) -> bool {
        self.domains.get(domain).is_some_and(|d| {
            !d.sent && (!only_failures || d.policies.iter().any(|(_, _, c)| c.failed() > 0))
        })
    }

    pub fn path(dir: &Path, day: &str) -> PathBuf {
        dir.join(format!("{day}.json"))
    }

    /// The day's file, or an empty day.
    pub fn load(dir: &Path, day: &str) -> Day {
        std::fs::read(Day::path(dir, day))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| Day::new(day))
    }

    /// Writes the day's file (a new file renamed over the old one).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{}.json.new", self.day));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_data()?;
        std::fs::rename(&tmp, Day::path(dir, &self.day))
    }

    /// Every day file in `dir`, by day.
    pub fn days(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let day = name.strip_suffix(".json")?;
                        day_start(day).map(|_| day.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// `[tls_rpt]` as compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub send: bool,
    pub only_failures: bool,
    /// Lower-case policy domains.
    pub suppress: Vec<String>,
    pub submitter: Submitter,
    pub from: String,
    /// Seconds.
    pub spread: u64,
}

impl Settings {
    /// The defaults for a host (docs/configuration.md, `[tls_rpt]`).
    pub fn for_host(hostname: &str) -> Settings {
        Settings {
            send: true,
            only_failures: true,
            suppress: Vec::new(),
            submitter: Submitter {
                organization: hostname.to_string(),
                contact: format!("postmaster@{hostname}"),
                hostname: hostname.to_string(),
            },
            from: format!("noreply-tlsrpt@{hostname}"),
            spread: 4 * 3600,
        }
    }

    /// Whether `domain`'s report for `day` goes: sending on, not
    /// suppressed, due.
    pub fn wants(&self, day: &Day, domain: &str) -> bool {
        self.send
            && !self.suppress.iter().any(|s| s == domain)
            && day.due(domain, self.only_failures)
    }
}

/// Who reports: `[tls_rpt] organization` and `contact`, and the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    pub organization: String,
    pub contact: String,
    /// The gateway's host name (`TLS-Report-Submitter`).
    pub hostname: String,
}

/// The report id: the same for a domain and day however often it is
/// built (`sealgate report tls` shows what was sent).
pub fn report_id(day: &str, domain: &str, hostname: &str) -> String {
    format!("{day}T00:00:00Z_{domain}@{hostname}")
}

/// RFC 8460 §4: `domain`'s report for the day.
pub fn report(day: &Day, domain: &str, by: &Submitter) -> Option<serde_json::Value> {
    let d = day.domains.get(domain)?;
    let start = day_start(&day.day)?;
    let policies: Vec<serde_json::Value> = d
        .policies
        .iter()
        .map(|(policy, mx, counts)| {
            let mut p = match policy {
                Policy::Tlsa { records } => json!({
                    "policy-type": "tlsa",
                    "policy-string": records,
                    "policy-domain": domain,
                }),
                Policy::Sts { lines, mx } => json!({
                    "policy-type": "sts",
                    "policy-string": lines,
                    "policy-domain": domain,
                    "mx-host": mx,
                }),
                Policy::NoPolicyFound => json!({
                    "policy-type": "no-policy-found",
                    "policy-domain": domain,
                }),
            };
            if let (Some(mx), Some(obj)) = (mx, p.as_object_mut()) {
                obj.insert("mx-host".into(), json!([mx]));
            }
            let failures: Vec<serde_json::Value> = counts
                .failures
                .iter()
                .map(|(rt, host, ip, info, n)| {
                    json!({
                        "result-type": rt.as_str(),
                        "receiving-mx-hostname": host,
                        "receiving-ip": ip,
                        "failed-session-count": n,
                        "additional-information": info,
                    })
                })
                .collect();
            let mut v = json!({
                "policy": p,
                "summary": {
                    "total-successful-session-count": counts.successful,
                    "total-failure-session-count": counts.failed(),
                },
            });
            if let (false, Some(obj)) = (failures.is_empty(), v.as_object_mut()) {
                obj.insert("failure-details".into(), json!(failures));
            }
            v
        })
        .collect();
    Some(json!({
        "organization-name": by.organization,
        "date-range": {
            "start-datetime": crate::model::rfc3339(start as i64),
            "end-datetime": crate::model::rfc3339(start as i64 + 86_399),
        },
        "contact-info": by.contact,
        "report-id": report_id(&day.day, domain, &by.hostname),
        "policies": policies,
    }))
}

/// The report gzip'ed (§5.1: `application/tlsrpt+gzip`).
pub fn gzip(report: &serde_json::Value) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(report.to_string().as_bytes());
    z.finish().unwrap_or_default()
}

/// §5.1 file name: `submitter!policy-domain!begin!end!unique.json.gz`.
pub fn file_name(day: &str, domain: &str, hostname: &str) -> String {
    let start = day_start(day).unwrap_or(0);
    format!("{hostname}!{domain}!{start}!{}!001.json.gz", start + 86_399)
}

/// A `_smtp._tls` TXT record (§3): its `rua` URIs, `mailto:` and
/// `https:` ones; `None` when it is not a TLSRPTv1 record.
pub fn record_rua(txt: &str) -> Option<Vec<String>> {
    let mut fields = txt.split(';').map(str::trim);
    if fields.next()? != "v=TLSRPTv1" {
        return None;
    }
    let rua = fields.find_map(|f| f.strip_prefix("rua="))?;
    let uris: Vec<String> = rua
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| u.starts_with("mailto:") || u.starts_with("https:"))
        .collect();
    (!uris.is_empty()).then_some(uris)
}

/// The address of a `mailto:` URI (without `?…`), percent-escapes
/// undone for `%2C`, `%3B` and `%40`.
pub fn mailto_address(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mailto:")?;
    let addr = rest.split('?').next()?;
    let addr = addr
        .replace("%2C", ",")
        .replace("%2c", ",")
        .replace("%3B", ";")
        .replace("%3b", ";")
        .replace("%40", "@");
    addr.contains('@').then_some(addr)
}

/// §5.3: the report as a message: `multipart/report;
/// report-type="tlsrpt"`, a short text part, the gzip'ed JSON as an
/// attachment; `TLS-Required: No` (RFC 8689 §5) so that a broken TLS set-up
/// does not stop the report about it.
pub fn message(
    day: &str,
    domain: &str,
    to: &str,
    from: &str,
    by: &Submitter,
    gz: &[u8],
    now: u64,
) -> Vec<u8> {
    use mail_builder::headers::content_type::ContentType;
    use mail_builder::headers::raw::Raw;
    use mail_builder::mime::{BodyPart, MimePart};
    let id = report_id(day, domain, &by.hostname);
    let host = &by.hostname;
    let date =
        crate::model::rfc5322_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now));
    let parts = vec![
        MimePart::new(
            ContentType::new("text/plain").attribute("charset", "us-ascii"),
            BodyPart::Text(
                format!(
                    "This is an aggregate TLS report (RFC 8460) from {host} for {domain}, {day}.\r\n"
                )
                .into(),
            ),
        ),
        // §5.3: the gzip'ed JSON, base64 by the builder.
        MimePart::new(
            ContentType::new("application/tlsrpt+gzip"),
            BodyPart::Binary(gz.into()),
        )
        .attachment(file_name(day, domain, host)),
    ];
    mail_builder::MessageBuilder::new()
        .header("From", Raw::new(from))
        .header("To", Raw::new(to))
        .header("Date", Raw::new(date))
        // §5.3's subject, word for word.
        .header(
            "Subject",
            Raw::new(format!(
                "Report Domain: {domain} Submitter: {host} Report-ID: <{id}>"
            )),
        )
        .message_id(format!("{id}.{now}"))
        .header("TLS-Report-Domain", Raw::new(domain))
        .header("TLS-Report-Submitter", Raw::new(host.as_str()))
        .header("TLS-Required", Raw::new("No"))
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .body(MimePart::new(
            ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
            BodyPart::Multipart(parts),
        ))
        .write_to_vec()
        // Writing to a Vec does not fail.
        .unwrap_or_default()
}

/// When, after its day ends, a domain's report goes: spread over `spread`
/// seconds by the domain's name (so that reports do not all leave at
/// midnight).
pub fn send_at(day: &str, domain: &str, spread: u64) -> u64 {
    let end = day_start(day).unwrap_or(0) + 86_400;
    // FNV-1a: stable across runs and builds.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in domain.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    end + if spread == 0 { 0 } else { h % spread }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_records() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_start("2026-12-01"), Some(1_796_083_200));
        assert_eq!(day_of(1_796_083_200 + 86_399), "2026-12-01");
        assert_eq!(day_start("2026-13-01"), None);
        assert_eq!(
            record_rua("v=TLSRPTv1; rua=mailto:a@b.test,https://r.test/x, ftp://no"),
            Some(vec!["mailto:a@b.test".into(), "https://r.test/x".into()])
        );
        assert_eq!(record_rua("v=spf1 -all"), None);
        assert_eq!(
            mailto_address("mailto:tls%40b.test?subject=x"),
            Some("tls@b.test".into())
        );
        let at = send_at("2026-12-01", "b.test", 4 * 3600);
        assert!((1_796_169_600..1_796_169_600 + 4 * 3600).contains(&at));
    }

    /// A fleet's day: the same policy and failure add up, others join.
    #[test]
    fn days_of_several_nodes_merge() {
        let s = |ip: &str, result| Session {
            mx_host: "mx.b.test".into(),
            ip: ip.parse().unwrap(),
            policy: Policy::NoPolicyFound,
            result,
        };
        let fail = || Err((ResultType::StarttlsNotSupported, "no".to_string()));
        let mut a = Day::new("2026-12-01");
        a.record("b.test", &s("192.0.2.1", Ok(())));
        a.record("b.test", &s("192.0.2.1", fail()));
        let mut b = Day::new("2026-12-01");
        b.record("b.test", &s("192.0.2.1", Ok(())));
        b.record("b.test", &s("192.0.2.1", fail()));
        b.record("b.test", &s("192.0.2.2", fail()));
        b.record("c.test", &s("192.0.2.3", Ok(())));
        let mut fleet = Day::new("2026-12-01");
        fleet.merge(&a);
        fleet.merge(&b);
        let counts = &fleet.domains["b.test"].policies[0].2;
        assert_eq!(counts.successful, 2);
        assert_eq!(counts.failed(), 3);
        assert_eq!(counts.failures.len(), 2);
        assert_eq!(fleet.domains["c.test"].policies[0].2.successful, 1);
    }

    #[test]
    fn sessions_aggregate_by_policy_and_failure() {
        let mut day = Day::new("2026-12-01");
        let s = |policy: Policy, result| Session {
            mx_host: "mx.b.test".into(),
            ip: "192.0.2.1".parse().unwrap(),
            policy,
            result,
        };
        let sts = Policy::Sts {
            lines: vec!["version: STSv1".into()],
            mx: vec!["mx.b.test".into()],
        };
        let mismatch = || Err((ResultType::CertificateHostMismatch, "names".to_string()));
        day.record("B.test", &s(sts.clone(), Ok(())));
        day.record("b.test", &s(sts.clone(), mismatch()));
        day.record("b.test", &s(sts.clone(), mismatch()));
        day.record(
            "b.test",
            &s(
                Policy::Tlsa {
                    records: vec!["3 1 1 ab".into()],
                },
                Ok(()),
            ),
        );
        assert!(day.due("b.test", true));
        assert!(day.due("mx.b.test", false) && !day.due("mx.b.test", true));
        let by = Submitter {
            organization: "Org".into(),
            contact: "postmaster@gw.test".into(),
            hostname: "gw.test".into(),
        };
        let r = report(&day, "b.test", &by).unwrap();
        assert_eq!(
            r["policies"][0]["summary"]["total-successful-session-count"],
            1
        );
        assert_eq!(
            r["policies"][0]["summary"]["total-failure-session-count"],
            2
        );
        assert_eq!(
            r["policies"][0]["failure-details"][0]["result-type"],
            "certificate-host-mismatch"
        );
        assert_eq!(r["date-range"]["end-datetime"], "2026-12-01T23:59:59Z");
        let t = report(&day, "mx.b.test", &by).unwrap();
        assert_eq!(t["policies"][0]["policy"]["policy-type"], "tlsa");
        assert_eq!(t["policies"][0]["policy"]["mx-host"][0], "mx.b.test");
        assert!(t["policies"][0].get("failure-details").is_none());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip(&r)[..]), &mut back)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&back).unwrap(),
            r
        );
    }
}
