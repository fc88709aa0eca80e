//! A day's worth of delivery sessions, on a fake clock, through the TLS
//! reporting code (RFC 8460): verified sessions, certificate mismatches
//! under MTA-STS, a server without STARTTLS, DANE failures (a certificate
//! matching no TLSA record, a bogus lookup). The reports validate against
//! the RFC 8460 schema written down in tests/schemas/tlsrpt.json (Python's
//! jsonschema, a validator nobody here wrote) and their counts are the
//! sessions'; the day survives a save and load; a session a second past
//! midnight belongs to the next day.

mod common;

use std::process::Command;
use std::time::Duration;

use sealgate::smtp::client::{Failure, TlsFailure};
use sealgate::tlsrpt::{self, Day, Policy, Session, Submitter};

const SCHEMA_CHECK: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
for path in sys.argv[2:]:
    jsonschema.validate(json.load(open(path)), schema, format_checker=jsonschema.FormatChecker())
print("valid")
"#;

fn session(policy: &Policy, mx: &str, f: Option<Failure>) -> Session {
    Session {
        mx_host: mx.into(),
        ip: "192.0.2.25".parse().unwrap(),
        policy: policy.clone(),
        result: match f {
            None => Ok(()),
            Some(f) => {
                Err(sealgate::delivery::attempt::tls_report_result(&f, false)
                    .expect("a TLS failure"))
            }
        },
    }
}

#[test]
fn a_days_sessions_make_reports_that_follow_rfc_8460() {
    let dir = common::temp_dir("tlsrpt-report");
    let start = tlsrpt::day_start("2026-11-30").unwrap();
    let sts = Policy::Sts {
        lines: vec![
            "version: STSv1".into(),
            "mode: enforce".into(),
            "mx: mx.sts.test".into(),
            "max_age: 86400".into(),
        ],
        mx: vec!["mx.sts.test".into()],
    };
    let tlsa = Policy::Tlsa {
        records: vec!["3 1 1 0123456789abcdef".into()],
    };
    let mut days: std::collections::BTreeMap<String, Day> = Default::default();
    let mut at = |t: u64, recipient: &str, s: Session| {
        let day = tlsrpt::day_of(t);
        days.entry(day.clone())
            .or_insert_with(|| Day::new(&day))
            .record(recipient, &s);
    };
    // Every ten minutes from midnight: 144 sessions.
    for i in 0..144u64 {
        let t = start + i * 600;
        let s = match i % 6 {
            0 | 1 => session(&sts, "mx.sts.test", None),
            2 => session(
                &sts,
                "mx.sts.test",
                Some(Failure::Tls(TlsFailure::Sts {
                    host: "mx.sts.test".into(),
                    trust: "Trusted",
                })),
            ),
            3 => session(
                &Policy::NoPolicyFound,
                "mx.plain.test",
                Some(Failure::TlsNotOffered),
            ),
            4 => session(
                &tlsa,
                "mx.dane.test",
                Some(Failure::Tls(TlsFailure::Dane(
                    sealgate::tls::dane::DaneRefusal::NoMatch,
                ))),
            ),
            _ => session(
                &tlsa,
                "mx.dane.test",
                Some(Failure::Dane(sealgate::model::DaneFailure::ServFail {
                    name: "_25._tcp.mx.dane.test".into(),
                })),
            ),
        };
        let recipient = match i % 6 {
            0..=2 => "sts.test",
            3 => "plain.test",
            _ => "dane.test",
        };
        at(t, recipient, s);
    }
    // A second past midnight: the next day.
    at(
        start + 86_400,
        "sts.test",
        session(&sts, "mx.sts.test", None),
    );
    assert_eq!(days.len(), 2);
    let day = &days["2026-11-30"];
    assert_eq!(
        days["2026-12-01"].domains["sts.test"].policies[0]
            .2
            .successful,
        1
    );

    // Durable: written and read back the same.
    let store = dir.join("tls-rpt");
    day.save(&store).unwrap();
    let day = Day::load(&store, "2026-11-30");
    assert_eq!(&day, &days["2026-11-30"]);
    assert_eq!(Day::days(&store), vec!["2026-11-30".to_string()]);

    let by = Submitter {
        organization: "Example Org".into(),
        contact: "postmaster@gw.test".into(),
        hostname: "gw.test".into(),
    };
    // DANE reports go to the MX host (the TLSA base domain), the others
    // to the recipient domain.
    assert_eq!(
        day.domains.keys().cloned().collect::<Vec<_>>(),
        vec!["mx.dane.test", "plain.test", "sts.test"]
    );
    let mut files = Vec::new();
    let mut reports = std::collections::BTreeMap::new();
    for domain in day.domains.keys() {
        let r = tlsrpt::report(&day, domain, &by).unwrap();
        let f = dir.join(format!("{domain}.json"));
        std::fs::write(&f, r.to_string()).unwrap();
        files.push(f);
        reports.insert(domain.clone(), r);
    }
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/tlsrpt.json");
    let (status, out, err) = common::run_tool(
        Command::new("python3")
            .args(["-c", SCHEMA_CHECK])
            .arg(&schema)
            .args(&files),
        None,
        Duration::from_secs(60),
    );
    assert!(status.success() && out.contains("valid"), "{out}{err}");

    let summary = |d: &str, i: usize| {
        let s = &reports[d]["policies"][i]["summary"];
        (
            s["total-successful-session-count"].as_u64().unwrap(),
            s["total-failure-session-count"].as_u64().unwrap(),
        )
    };
    // 144 sessions, six kinds, 24 each.
    assert_eq!(summary("sts.test", 0), (48, 24));
    assert_eq!(summary("plain.test", 0), (0, 24));
    assert_eq!(summary("mx.dane.test", 0), (0, 48));
    let details = |d: &str| -> Vec<(String, u64)> {
        reports[d]["policies"][0]["failure-details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["result-type"].as_str().unwrap().to_string(),
                    f["failed-session-count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        details("sts.test"),
        vec![("certificate-host-mismatch".into(), 24)]
    );
    assert_eq!(
        details("plain.test"),
        vec![("starttls-not-supported".into(), 24)]
    );
    assert_eq!(
        details("mx.dane.test"),
        vec![("tlsa-invalid".into(), 24), ("dnssec-invalid".into(), 24)]
    );
    let sts_report = &reports["sts.test"];
    assert_eq!(sts_report["policies"][0]["policy"]["policy-type"], "sts");
    assert_eq!(
        sts_report["policies"][0]["policy"]["mx-host"][0],
        "mx.sts.test"
    );
    assert_eq!(
        sts_report["date-range"]["start-datetime"],
        "2026-11-30T00:00:00Z"
    );
    assert_eq!(
        sts_report["date-range"]["end-datetime"],
        "2026-11-30T23:59:59Z"
    );
    assert_eq!(sts_report["organization-name"], "Example Org");
}
