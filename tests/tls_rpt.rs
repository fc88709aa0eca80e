//! TLS reports (RFC 8460) end to end: MTA-STS policies from a loopback
//! HTTPS server, dnsmasq for the MX, `_mta-sts` and `_smtp._tls` records,
//! Postfix as every MX host (its certificate names `mx.good.test` and
//! `mx.reports.test`, not `mx.bad.test`), a loopback HTTPS server taking
//! the POSTed reports (the same tests/peers/policy_server.py).
//!
//! A verified delivery to `good.test`, a certificate mismatch to
//! `bad.test` and a policy announced but not served by `fetchfail.test`
//! (`sts-policy-fetch-error`) are recorded; `sealgate report tls` shows them;
//! `--send` sends `bad.test`'s report (the only one with a failure) by
//! mail — through the gateway's own queue and Postfix to the final
//! receiver — and by POST; both carry the same report, valid against
//! tests/schemas/tlsrpt.json; the report mail's own delivery is never
//! recorded.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::Ca;
use common::postfix::Postfix;
use common::Gateway;

fn gunzip(b: &[u8]) -> serde_json::Value {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    serde_json::from_slice(&out).unwrap()
}

fn report_tls(dir: &Path, args: &[&str]) -> String {
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["report", "tls", "-c"])
            .arg(dir.join("sealgate.toml"))
            .args(args),
        None,
        Duration::from_secs(60),
    );
    assert!(status.success(), "{out}{err}");
    out
}

fn schema_valid(dir: &Path, report: &serde_json::Value) {
    let f = dir.join("report.json");
    std::fs::write(&f, report.to_string()).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/tlsrpt.json");
    let (status, out, err) = common::run_tool(
        Command::new("python3")
            .args([
                "-c",
                "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1]))); print('valid')",
            ])
            .arg(schema)
            .arg(&f),
        None,
        Duration::from_secs(60),
    );
    assert!(status.success() && out.contains("valid"), "{out}{err}");
}

const DOMAINS: [&str; 4] = ["good.test", "bad.test", "reports.test", "fetchfail.test"];

#[test]
fn tls_reports_are_recorded_mailed_and_posted() {
    let dir = common::temp_dir("tls-rpt");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let (leaf, key) = ca.leaf(
        &dir.join("pki"),
        "postfix",
        &["mx.good.test", "mx.reports.test"],
    );
    let sink = common::receiver::start("127.0.0.1", &dir.join("final"), &[]);
    let pf = Postfix::tls_relay(&dir, &DOMAINS, sink.port, &key, &leaf);
    common::sts::policy(&dir, "good.test", "enforce", "mx.good.test");
    common::sts::policy(&dir, "bad.test", "enforce", "mx.bad.test");
    // fetchfail.test announces a policy the server does not have (404).
    let _policies = common::sts::start(
        "127.0.0.6",
        &dir,
        &ca,
        &["good.test", "bad.test", "fetchfail.test"],
    );
    // The report endpoint: the same HTTPS peer, another address and name.
    let report_dir = dir.join("reports");
    std::fs::create_dir_all(&report_dir).unwrap();
    let posted = common::sts::serve("127.0.0.7", &report_dir, &ca, &["tlsrpt.reports.test"]);
    // A TXT string with a comma: dnsmasq reads quotes in its file only.
    let rua =
        "\"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://tlsrpt.reports.test/v1/report\"";
    let conf = dir.join("dnsmasq.conf");
    std::fs::write(
        &conf,
        format!("txt-record=_smtp._tls.bad.test,{rua}\ntxt-record=_smtp._tls.good.test,{rua}\n"),
    )
    .unwrap();
    let mut records = vec![
        "--host-record=tlsrpt.reports.test,127.0.0.7".to_string(),
        format!("--conf-file={}", conf.display()),
    ];
    for d in DOMAINS {
        records.push(format!("--mx-host={d},mx.{d},10"));
        records.push(format!("--host-record=mx.{d},127.0.0.1"));
    }
    for d in ["good.test", "bad.test", "fetchfail.test"] {
        records.push(format!("--host-record=mta-sts.{d},127.0.0.6"));
        records.push(format!("--txt-record=_mta-sts.{d},v=STSv1; id=1;"));
    }
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dns = common::dnsmasq::start(&records);

    let gw_dir = dir.join("gw");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let ports = (common::free_port(), common::free_port());
    let tail = format!(
        "\n[dns]\nservers = [\"127.0.0.1:{}\"]\n\n[tls_rpt]\norganization = \"Test Org\"\ncontact = \"tls-reports@mx.test\"\n",
        dns.port
    );
    let config = common::mx_relay_config(ports, &DOMAINS, &ca.cert_path, pf.port, &tail);
    std::fs::write(gw_dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(gw_dir.clone(), ports.0);

    common::send_mail(&gw, "sender@client.test", &["user@good.test"], "good");
    common::send_mail(&gw, "sender@client.test", &["user@bad.test"], "bad");
    common::send_mail(
        &gw,
        "sender@client.test",
        &["user@fetchfail.test"],
        "fetchfail",
    );
    // No policy could be had: delivered as without one, reported.
    let fetchfail = gw.wait_for_line("to=<user@fetchfail.test>", Duration::from_secs(60));
    assert!(
        fetchfail.contains("status=sent"),
        "{fetchfail}\n{}",
        gw.log()
    );
    let good = gw.wait_for_line("to=<user@good.test>", Duration::from_secs(60));
    assert!(good.contains("status=sent"), "{good}\n{}", gw.log());
    common::assert_deferred_tls(
        &gw.wait_for_line("to=<user@bad.test>", Duration::from_secs(60)),
        "MTA-STS: the certificate of mx.bad.test is Trusted",
    );

    // What today's reports would be, from the running gateway's data.
    let shown = report_tls(&gw_dir, &[]);
    assert!(
        shown.contains("bad.test (")
            && shown.contains("): due")
            && shown.contains("policy sts: 0 successful, 1 failed")
            && shown.contains("certificate-host-mismatch mx.bad.test[127.0.0.1]: 1")
            && shown.contains("policy sts: 1 successful, 0 failed")
            && shown.contains("sts-policy-fetch-error mx.fetchfail.test[127.0.0.1]: 1"),
        "{shown}"
    );
    let json: serde_json::Value = serde_json::from_str(&report_tls(&gw_dir, &["--json"])).unwrap();
    let would = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policies"][0]["policy"]["policy-domain"] == "bad.test")
        .cloned()
        .expect("a report for bad.test");
    schema_valid(&dir, &would);
    assert_eq!(would["organization-name"], "Test Org");
    assert_eq!(would["contact-info"], "tls-reports@mx.test");
    assert_eq!(
        would["policies"][0]["policy"]["policy-string"][1],
        "mode: enforce"
    );

    // Sent now: only bad.test's (only_failures).
    let sent = report_tls(&gw_dir, &["--send"]);
    assert!(
        sent.contains("sending the report for bad.test") && !sent.contains("good.test"),
        "{sent}"
    );
    let (content_type, body) = posted.first_post(Duration::from_secs(60), || gw.log());
    assert_eq!(content_type, "application/tlsrpt+gzip");
    let by_post = gunzip(&body);
    assert_eq!(by_post, would, "the POSTed report is the one shown");

    // By mail: through the queue (TLS-Required: No) and Postfix.
    let to_reports = gw.wait_for_line("to=<tlsrpt@reports.test>", Duration::from_secs(60));
    assert!(
        to_reports.contains("status=sent"),
        "{to_reports}\n{}",
        gw.log()
    );
    let got = sink.wait_for_messages(3, Duration::from_secs(60), || pf.log());
    let mail = got
        .iter()
        .find(|m| m.contains("TLS-Report-Domain: bad.test"))
        .unwrap_or_else(|| panic!("no report mail: {got:?}"));
    // Read back by an independent MIME parser (RFC 8460 §5.3).
    use mail_parser::MimeHeaders;
    let parsed = mail_parser::MessageParser::default()
        .parse(mail.as_bytes())
        .expect("the report mail parses");
    let ct = parsed.content_type().expect("a content type");
    assert_eq!(
        (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
        ("multipart", Some("report"), Some("tlsrpt")),
        "{mail}"
    );
    let header = |name: &str| {
        parsed
            .header_raw(name)
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("TLS-Report-Domain"), "bad.test", "{mail}");
    assert_eq!(header("TLS-Report-Submitter"), "mx.test", "{mail}");
    assert_eq!(header("TLS-Required"), "No", "{mail}");
    assert!(
        parsed.subject().is_some_and(
            |s| s.starts_with("Report Domain: bad.test Submitter: mx.test Report-ID: <")
        ),
        "{mail}"
    );
    let attachment = parsed
        .attachments()
        .find(|a| {
            a.content_type()
                .is_some_and(|c| c.ctype() == "application" && c.subtype() == Some("tlsrpt+gzip"))
        })
        .unwrap_or_else(|| panic!("no tlsrpt+gzip attachment: {mail}"));
    let gz = attachment.contents().to_vec();
    assert_eq!(gunzip(&gz), would, "the mailed report is the one shown");

    // No report about a report: its delivery to reports.test is not
    // recorded; bad.test's is marked sent.
    let after = report_tls(&gw_dir, &[]);
    assert!(!after.contains("reports.test ("), "{after}");
    assert!(
        after.contains("bad.test (") && after.contains("): sent"),
        "{after}"
    );
    gw.wait_for_log("TLS report for bad.test (", Duration::from_secs(10));
}
