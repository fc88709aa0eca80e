//! Three gateways as one fleet through a real `redis-server`: the TLS
//! reports are the fleet's (a node that relayed nothing shows every
//! node's counts), `report tls --send` run on two nodes at once sends one
//! report, with the fleet's figures; the store killed and restarted
//! mid-run loses nothing and counts nothing twice, nor does a node killed
//! and restarted. Each node's figures are its spool's day files, written
//! here before the node starts (the recording of sessions is
//! tests/tls_rpt.rs's).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::Ca;
use common::Gateway;

const LIMIT: Duration = Duration::from_secs(60);

/// redis-server on loopback without persistence, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (tests/run.sh installs it)");
        let deadline = Instant::now() + LIMIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A day file with `ok` successful and `failed` failed sessions to
/// `bad.test` (STARTTLS not offered by one MX address).
fn day_file(dir: &Path, day: &str, ok: u64, failed: u64) {
    let mut d = sealgate::tlsrpt::Day::new(day);
    let s = |result| sealgate::tlsrpt::Session {
        mx_host: "mx.bad.test".into(),
        ip: "192.0.2.25".parse().unwrap(),
        policy: sealgate::tlsrpt::Policy::NoPolicyFound,
        result,
    };
    for _ in 0..ok {
        d.record("bad.test", &s(Ok(())));
    }
    for _ in 0..failed {
        d.record(
            "bad.test",
            &s(Err((
                sealgate::tlsrpt::ResultType::StarttlsNotSupported,
                "no STARTTLS".into(),
            ))),
        );
    }
    d.save(&sealgate::tlsrpt::dir(&dir.join("spool"))).unwrap();
}

fn node_config(port: u16, node: &str, redis: u16, dns: u16, ca: &Path) -> String {
    common::config(port, 1, "")
        .replace("hostname = \"mx.test\"", &format!("hostname = \"{node}.test\""))
        .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{}\"", port + 1),
    ).replace(
        "generate_self_signed = true",
        &format!(
            "generate_self_signed = true\nca_files = [\"{}\"]\nsystem_roots = false",
            ca.display()
        ),
    ) + &format!(
        "\n[dns]\nservers = [\"127.0.0.1:{dns}\"]\n\n[tls_rpt]\nsend = false\norganization = \"Fleet Org\"\n\n[fleet]\nredis = \"redis://127.0.0.1:{redis}/0\"\nnode = \"{node}\"\n"
    )
}

fn report(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["report", "tls", "-c"])
            .arg(dir.join("sealgate.toml"))
            .args(args),
        None,
        LIMIT,
    );
    (status.success(), out, err)
}

/// (successful, failed) of bad.test in `report tls --json` on `dir`.
fn counts(dir: &Path, day: &str) -> (u64, u64) {
    let (ok, out, err) = report(dir, &["--day", day, "--json"]);
    assert!(ok, "{out}{err}");
    let reports: serde_json::Value = serde_json::from_str(&out).unwrap();
    reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policies"][0]["policy"]["policy-domain"] == "bad.test")
        .map_or((0, 0), |r| {
            let summary = &r["policies"][0]["summary"];
            (
                summary["total-successful-session-count"].as_u64().unwrap(),
                summary["total-failure-session-count"].as_u64().unwrap(),
            )
        })
}

/// Waits until `dir`'s fleet view of `day` is `want`.
fn wait_counts(dir: &Path, day: &str, want: (u64, u64)) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = counts(dir, day);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{day}: {got:?}, not {want:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn gunzip(b: &[u8]) -> serde_json::Value {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn a_fleet_reports_once_with_every_nodes_counts_through_outages() {
    let dir = common::temp_dir("fleet");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let report_dir = dir.join("reports");
    std::fs::create_dir_all(&report_dir).unwrap();
    let _posted = common::sts::serve("127.0.0.8", &report_dir, &ca, &["tlsrpt.reports.test"]);
    let dns = common::dnsmasq::start(&[
        "--host-record=tlsrpt.reports.test,127.0.0.8",
        "--txt-record=_smtp._tls.bad.test,v=TLSRPTv1; rua=https://tlsrpt.reports.test/v1/report",
    ]);
    let redis_port = common::free_port();
    let redis = Redis::start(redis_port);

    let (y1, y2) = ("2026-11-30", "2026-11-29");
    let mut nodes: Vec<(PathBuf, u16, Option<Gateway>)> = Vec::new();
    for (name, figures) in [("mx1", Some((1, 1))), ("mx2", Some((0, 2))), ("mx3", None)] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        if let Some((ok, failed)) = figures {
            day_file(&d, y1, ok, failed);
        }
        let port = two_ports();
        std::fs::write(
            d.join("sealgate.toml"),
            node_config(port, name, redis.port, dns.port, &ca.cert_path),
        )
        .unwrap();
        let gw = Gateway::start_in(d.clone(), port);
        gw.wait_for_log("fleet: the store at redis://127.0.0.1", LIMIT);
        nodes.push((d, port, Some(gw)));
    }
    // mx3 relayed nothing and shows the fleet's figures.
    wait_counts(&nodes[2].0, y1, (1, 3));
    let (ok, out, err) = report(&nodes[2].0, &["--day", y1]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("the fleet's figures, from 3 node(s)"), "{out}");

    // --send on two nodes at once: one report, with the fleet's figures.
    let senders: Vec<_> = [nodes[0].0.clone(), nodes[1].0.clone()]
        .into_iter()
        .map(|d| std::thread::spawn(move || report(&d, &["--day", "2026-11-30", "--send"])))
        .collect();
    for s in senders {
        let (ok, out, err) = s.join().unwrap();
        assert!(ok, "{out}{err}");
    }
    let posted = report_dir.join("policies/posted");
    let deadline = Instant::now() + LIMIT;
    let claimed = |n: &(PathBuf, u16, Option<Gateway>)| {
        n.2.as_ref().map_or(0, |g| {
            g.count("TLS report for bad.test (2026-11-30): posted")
                + g.count(
                    "TLS report for bad.test (2026-11-30): another node of the fleet sends it",
                )
        })
    };
    while claimed(&nodes[0]) + claimed(&nodes[1]) < 2 {
        assert!(Instant::now() < deadline, "both nodes decided");
        std::thread::sleep(Duration::from_millis(100));
    }
    let bodies: Vec<_> = std::fs::read_dir(&posted)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".body"))
        .collect();
    assert_eq!(bodies.len(), 1, "one report for the fleet");
    let sent = gunzip(&std::fs::read(bodies[0].path()).unwrap());
    let summary = &sent["policies"][0]["summary"];
    assert_eq!(summary["total-failure-session-count"], 3, "{sent}");
    assert_eq!(summary["total-successful-session-count"], 1, "{sent}");
    let id = sent["report-id"].as_str().unwrap().to_string();
    assert!(
        id == "2026-11-30T00:00:00Z_bad.test@mx1.test"
            || id == "2026-11-30T00:00:00Z_bad.test@mx2.test",
        "{id}"
    );

    // The sender's turn passes (its lease and mark gone, as when it dies
    // before sending): mx3 builds the report again, under the same id.
    let (status, out, err) = common::run_tool(
        Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "DEL"])
            .arg("sealgate:tlsrpt-lease:2026-11-30:bad.test")
            .arg("sealgate:tlsrpt-sent:2026-11-30:bad.test"),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    let (ok, out, err) = report(
        &nodes[2].0,
        &["--day", y1, "--domain", "bad.test", "--send"],
    );
    assert!(ok, "{out}{err}");
    let second = posted.join("2.body");
    let deadline = Instant::now() + LIMIT;
    while !second.exists() {
        assert!(Instant::now() < deadline, "mx3 did not send");
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = gunzip(&std::fs::read(&second).unwrap());
    assert_eq!(
        again["report-id"],
        id.as_str(),
        "the same report id from another node"
    );
    assert_eq!(again["policies"], sent["policies"]);

    // The store killed; a node's figures change meanwhile; the store back
    // (empty: no persistence): everything arrives, once.
    drop(redis);
    nodes[0]
        .2
        .as_ref()
        .unwrap()
        .wait_for_log("is unreachable", LIMIT);
    day_file(&nodes[0].0, y2, 5, 0);
    let redis = Redis::start(redis_port);
    wait_counts(&nodes[2].0, y2, (5, 0));
    wait_counts(&nodes[2].0, y1, (1, 3));
    let log = nodes[0].2.as_ref().unwrap().log();
    assert_eq!(
        log.matches("is unreachable").count(),
        1,
        "one warning per outage:\n{log}"
    );

    // A node killed and started again: its figures are not counted twice.
    let (d, port, gw) = nodes.remove(0);
    let d2 = gw.unwrap().kill();
    assert_eq!(d2, d);
    let gw = Gateway::start_in(d.clone(), port);
    gw.wait_for_log("fleet: wrote this node's TLS-report figures of", LIMIT);
    wait_counts(&nodes[1].0, y1, (1, 3));
    wait_counts(&nodes[1].0, y2, (5, 0));
    gw.stop();
    for (_, _, gw) in nodes {
        if let Some(g) = gw {
            g.stop();
        }
    }
    drop(redis);
}

/// The admin port `node_config` gave a node on `port`.
fn admin(port: u16) -> u16 {
    port + 1
}

/// A free port whose successor is free too (the node and its metrics).
fn two_ports() -> u16 {
    loop {
        let p = common::free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// An MTA-STS policy fetched by one node is cached in the store and
/// used by the others: one fetch for the fleet.
#[test]
fn one_node_fetches_an_mta_sts_policy_for_the_fleet() {
    let dir = common::temp_dir("fleet-sts");
    let ca = Ca::new(&dir.join("pki"), "ca");
    common::sts::policy(&dir, "good.test", "enforce", "mx.good.test");
    let _policies = common::sts::start("127.0.0.9", &dir, &ca, &["good.test"]);
    let dns = common::dnsmasq::start(&[
        "--host-record=mta-sts.good.test,127.0.0.9",
        "--txt-record=_mta-sts.good.test,v=STSv1; id=1;",
    ]);
    let redis = Redis::start(common::free_port());
    let mut nodes = Vec::new();
    for name in ["mx1", "mx2"] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let port = two_ports();
        std::fs::write(
            d.join("sealgate.toml"),
            node_config(port, name, redis.port, dns.port, &ca.cert_path)
                + "\n[[route]]\ndomain = \"good.test\"\nvia = \"mx\"\n",
        )
        .unwrap();
        let gw = Gateway::start_in(d.clone(), port);
        gw.wait_for_log("fleet: the store at redis://127.0.0.1", LIMIT);
        nodes.push((d, port, gw));
    }
    let policy = |d: &Path, action: &str| {
        let (status, out, err) = common::run_tool(
            Command::new(common::BIN)
                .args(["policy", action, "good.test", "-c"])
                .arg(d.join("sealgate.toml")),
            None,
            LIMIT,
        );
        assert!(status.success(), "{out}{err}");
        out
    };
    let fetched = |port: u16| {
        common::value(
            &common::scrape(admin(port)),
            "sealgate_mta_sts_fetches_total{result=\"ok\"}",
        )
    };
    // mx1 fetches the policy.
    let shown = policy(&nodes[0].0, "refresh");
    assert!(shown.contains("MTA-STS: policy id 1 fetched"), "{shown}");
    assert_eq!(
        fetched(nodes[0].1),
        1,
        "{shown}\n{}",
        common::scrape(admin(nodes[0].1))
            .lines()
            .filter(|l| l.contains("mta_sts"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // mx2 has it from the store and fetches nothing.
    nodes[1].2.wait_for_log(
        "fleet: the MTA-STS policy of good.test comes from the store",
        LIMIT,
    );
    let shown = policy(&nodes[1].0, "show");
    assert!(shown.contains("MTA-STS: policy id 1 fetched"), "{shown}");
    assert_eq!(fetched(nodes[1].1), 0, "one fetch for the fleet");
    for (_, _, gw) in nodes {
        gw.stop();
    }
    drop(redis);
}

fn partners(d: &Path) -> String {
    let (status, out, err) = common::run_tool(
        Command::new(common::BIN)
            .args(["partners", "-c"])
            .arg(d.join("sealgate.toml")),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    out
}

/// Waits until `sealgate partners` on `d` says all of `needles`.
fn wait_partners(d: &Path, needles: &[&str]) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = partners(d);
        if needles.iter().all(|n| out.contains(n)) {
            return out;
        }
        assert!(Instant::now() < deadline, "{needles:?} not in:\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Partner posture across the fleet: mx1 delivers to partner.test over
/// verified TLS; mx2, whose route reaches a server without STARTTLS, then
/// delivers in the clear, which is a downgrade for the fleet (mx2 knew
/// mx1's delivery); both nodes show the partner with the node of its last
/// delivery and the downgrade with the node that saw it; a restarted
/// node still knows.
#[test]
fn partner_postures_and_downgrades_are_the_fleets() {
    let dir = common::temp_dir("fleet-posture");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let (leaf, key) = ca.leaf(&dir.join("pki"), "postfix", &["mx.partner.test"]);
    let sink = common::receiver::start("127.0.0.1", &dir.join("final"), &[]);
    let plain = common::receiver::start("127.0.0.1", &dir.join("plain"), &[]);
    std::fs::create_dir_all(dir.join("pf")).unwrap();
    let pf = common::postfix::Postfix::tls_relay(
        &dir.join("pf"),
        &["partner.test"],
        sink.port,
        &key,
        &leaf,
    );
    let dns = common::dnsmasq::start(&[
        "--mx-host=partner.test,mx.partner.test,10",
        "--host-record=mx.partner.test,127.0.0.1",
    ]);
    let redis = Redis::start(common::free_port());
    let fleet = |node: &str| {
        format!(
            "\n[dns]\nservers = [\"127.0.0.1:{}\"]\n\n[fleet]\nredis = \"redis://127.0.0.1:{}/0\"\nnode = \"{node}\"\n",
            dns.port, redis.port
        )
    };
    let (d1, d2) = (dir.join("mx1"), dir.join("mx2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let ports1 = (common::free_port(), common::free_port());
    std::fs::write(
        d1.join("sealgate.toml"),
        common::mx_relay_config(
            ports1,
            &["partner.test"],
            &ca.cert_path,
            pf.port,
            &fleet("mx1"),
        ),
    )
    .unwrap();
    let port2 = common::free_port();
    std::fs::write(
        d2.join("sealgate.toml"),
        common::config(port2, 1, "").replace(
            "accept_domains = [\"example.com\"]",
            "accept_domains = [\"partner.test\"]",
        ) + &fleet("mx2")
            + &format!(
                "\n[[route]]\ndomain = \"partner.test\"\nvia = \"[127.0.0.1]:{}\"\n",
                plain.port
            ),
    )
    .unwrap();
    let mx1 = Gateway::start_in(d1.clone(), ports1.0);
    let mx2 = Gateway::start_in(d2.clone(), port2);

    common::send_mail(&mx1, "sender@client.test", &["one@partner.test"], "first");
    let first = mx1.wait_for_line("to=<one@partner.test>", LIMIT);
    assert!(first.contains("status=sent"), "{first}\n{}", mx1.log());
    // mx2 knows mx1's delivery before it delivers itself.
    wait_partners(&d2, &["partner.test", "verified", "by mx1"]);

    common::send_mail(&mx2, "sender@client.test", &["two@partner.test"], "second");
    let second = mx2.wait_for_line("to=<two@partner.test>", LIMIT);
    assert!(second.contains("status=sent"), "{second}\n{}", mx2.log());
    let warn = mx2.wait_for_line("downgrade: partner.test", LIMIT);
    assert!(warn.contains("TLS verified -> none"), "{warn}");
    // Both nodes show the fleet: the last delivery mx2's, its downgrade.
    for d in [&d1, &d2] {
        wait_partners(
            d,
            &[
                "by mx2",
                "downgrade ",
                "partner.test verified -> none",
                "node=mx2",
                "nodes up: mx1, mx2",
            ],
        );
    }
    // A restarted node finds the fleet's postures again.
    let d2 = mx2.kill();
    let mx2 = Gateway::start_in(d2.clone(), port2);
    wait_partners(&d2, &["partner.test", "by mx2", "node=mx2"]);
    mx1.stop();
    mx2.stop();
    drop(redis);
}
