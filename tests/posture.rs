//! The partners' TLS posture, downgrade alerts and the status page,
//! against a Postfix receiver (the MX of `partner.test` by dnsmasq, its
//! certificate from the test CA naming the MX host) and headless Chromium
//! loading the page:
//!
//! - delivered over verified TLS → the page's table shows the partner,
//!   `verified`; a screenshot is kept under the test output directory;
//! - the receiver restarted on the same port without STARTTLS → the next
//!   delivery is in the clear: one `WARN … downgrade` line, the counter
//!   `sealgate_tls_downgrades_total{from="verified",to="none"}`, the page
//!   and `sealgate partners` show it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pki::Ca;
use common::postfix::Postfix;
use common::Gateway;

/// Loads `url` in headless Chromium: the DOM it rendered, and a
/// screenshot written to `png`.
fn chromium(url: &str, profile: &Path, png: &Path) -> String {
    let base = |c: &mut Command| {
        c.arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--window-size=1400,900");
    };
    let mut dump = Command::new("chromium-headless-shell");
    base(&mut dump);
    dump.arg("--dump-dom").arg(url);
    let (status, dom, err) = common::run_tool(&mut dump, None, Duration::from_secs(60));
    assert!(status.success(), "chromium --dump-dom failed: {err}");
    let mut shot = Command::new("chromium-headless-shell");
    base(&mut shot);
    shot.arg(format!("--screenshot={}", png.display())).arg(url);
    let (status, _, err) = common::run_tool(&mut shot, None, Duration::from_secs(60));
    assert!(status.success(), "chromium --screenshot failed: {err}");
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "no screenshot at {}: {err}", png.display());
    println!("status page screenshot: {}", png.display());
    dom
}

/// The partner's row as Chromium rendered it.
fn row(dom: &str, domain: &str) -> String {
    let start = dom
        .find(&format!("<tr data-domain=\"{domain}\""))
        .unwrap_or_else(|| panic!("no row for {domain}: {dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    dom[start..end].to_string()
}

fn partners(dir: &Path) -> String {
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["partners", "-c"])
            .arg(dir.join("sealgate.toml")),
        None,
        Duration::from_secs(60),
    );
    assert!(status.success(), "{out}{err}");
    out
}

#[test]
fn a_downgrade_is_logged_counted_and_shown_on_the_status_page() {
    let dir = common::temp_dir("posture");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let (leaf, key) = ca.leaf(&dir.join("pki"), "postfix", &["mx.partner.test"]);
    let sink = common::receiver::start("127.0.0.1", &dir.join("final"), &[]);
    std::fs::create_dir_all(dir.join("pf1")).unwrap();
    let pf = Postfix::tls_relay(&dir.join("pf1"), &["partner.test"], sink.port, &key, &leaf);
    let port = pf.port;
    let dns = common::dnsmasq::start(&[
        "--mx-host=partner.test,mx.partner.test,10",
        "--host-record=mx.partner.test,127.0.0.1",
    ]);
    let gw_dir = dir.join("gw");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let ports = (common::free_port(), common::free_port());
    let tail = format!(
        "\n[dns]\nservers = [\"127.0.0.1:{}\"]\n\n\
         [[profile]]\nname = \"strict\"\nclient.mandatory_tls = true\nclient.verify = true\n\n\
         [[route]]\ndomain = \"strict.test\"\nvia = \"[127.0.0.1]:1\"\nprofile = \"strict\"\n",
        dns.port
    );
    let config = common::mx_relay_config(ports, &["partner.test"], &ca.cert_path, port, &tail);
    std::fs::write(gw_dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(gw_dir.clone(), ports.0);
    let url = format!("http://127.0.0.1:{}/", ports.1);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));

    common::send_mail(&gw, "sender@client.test", &["one@partner.test"], "first");
    let first = gw.wait_for_line("to=<one@partner.test>", Duration::from_secs(60));
    assert!(first.contains("status=sent"), "{first}\n{}", gw.log());
    let dom = chromium(&url, &dir.join("chrome"), &out.join("posture-verified.png"));
    let partner = row(&dom, "partner.test");
    assert!(
        partner.contains("class=\"tls-verified\"")
            && partner.contains("<td>verified</td>")
            && partner.contains("TLSv1."),
        "{partner}"
    );
    // A configured partner, never delivered to, is listed with its profile.
    let strict = row(&dom, "strict.test");
    assert!(
        strict.contains("<td>strict</td>") && strict.contains("never delivered"),
        "{strict}"
    );
    assert!(dom.contains("sealgate on mx.test"), "{dom}");

    // The receiver comes back on the same port without STARTTLS.
    drop(pf);
    std::fs::create_dir_all(dir.join("pf2")).unwrap();
    let pf = Postfix::start_at(
        &dir.join("pf2"),
        &format!(
            "relay_domains = partner.test\nrelayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = none\nsmtpd_tls_security_level = none\n",
            sink.port
        ),
        port,
    );
    common::send_mail(&gw, "sender@client.test", &["two@partner.test"], "second");
    let second = gw.wait_for_line("to=<two@partner.test>", Duration::from_secs(60));
    assert!(second.contains("status=sent"), "{second}\n{}", gw.log());
    let warn = gw.wait_for_line("downgrade: partner.test", Duration::from_secs(10));
    assert!(
        warn.contains("WARN") && warn.contains("TLS verified -> none"),
        "{warn}"
    );
    assert_eq!(gw.count("downgrade: "), 1, "{}", gw.log());
    let metrics = common::scrape(ports.1);
    assert_eq!(
        common::value(
            &metrics,
            "sealgate_tls_downgrades_total{from=\"verified\",to=\"none\"}"
        ),
        1,
        "{metrics}"
    );
    let dom = chromium(
        &url,
        &dir.join("chrome"),
        &out.join("posture-downgraded.png"),
    );
    let partner = row(&dom, "partner.test");
    assert!(
        partner.contains("class=\"tls-none\"") && partner.contains("<td>none</td>"),
        "{partner}"
    );
    let downgrades = &dom[dom.find("id=\"downgrades\"").expect("the downgrade table")..];
    assert!(
        downgrades.contains("<td>partner.test</td><td>verified</td><td>none</td>"),
        "{downgrades}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&http_get(ports.1, "/status.json")).expect("JSON");
    assert_eq!(json["downgrades"][0]["domain"], "partner.test");
    assert_eq!(json["downgrades"][0]["from"], "verified");
    assert_eq!(json["downgrades"][0]["to"], "none");

    let table = partners(&gw_dir);
    let line = table
        .lines()
        .find(|l| l.starts_with("partner.test"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains(" none "), "{table}");
    assert!(table.contains("partner.test verified -> none"), "{table}");
    sink.wait_for_messages(2, Duration::from_secs(60), || pf.log());
}

/// A plain HTTP/1.1 GET on loopback: the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Content-Type: application/json"), "{text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
