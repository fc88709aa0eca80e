//! OPS-4: `/metrics` in Prometheus text format, checked by `promtool check
//! metrics`, with counters that agree with what the clients did.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{Client, Gateway};

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
    body.to_string()
}

fn value(body: &str, series: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(series))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn promtool(body: &str) {
    let (status, out, err) = common::run_tool(
        Command::new("promtool").args(["check", "metrics"]),
        Some(body.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(status.success(), "promtool: {out}{err}\n{body}");
}

#[test]
fn metrics_agree_with_the_clients() {
    let dir = common::temp_dir("metrics");
    let port = common::free_port();
    let admin = common::free_port();
    let config = common::config(port, 2, "").replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{admin}\""))
        + "\n[[profile]]\nname = \"seven\"\nhosts = [\"127.0.0.7\"]\n[profile.server]\nmandatory_tls = true\n";
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);

    // Load in the background while scraping.
    let addr = gw.addr;
    let tls_dir = dir.clone();
    let load = std::thread::spawn(move || {
        for i in 0..20 {
            let mut c = common::connect(addr);
            c.reply();
            c.cmd("EHLO load.test");
            if i % 2 == 0 {
                assert!(c.cmd("STARTTLS").starts_with("220"));
                let conn = rustls::ClientConnection::new(
                    common::tls_client_config(&tls_dir),
                    "mx.test".try_into().unwrap(),
                )
                .unwrap();
                let mut t = Client::new(rustls::StreamOwned::new(conn, c.stream));
                t.cmd("EHLO load.test");
                t.cmd("MAIL FROM:<l@load.test>");
                t.cmd("RCPT TO:<u@example.com>");
                t.cmd("DATA");
                assert!(t.cmd("Subject: m\r\n\r\nx\r\n.").starts_with("250"));
                t.cmd("QUIT");
            } else {
                c.cmd("MAIL FROM:<l@load.test>");
                c.cmd("RCPT TO:<u@example.com>");
                c.cmd("DATA");
                assert!(c.cmd("Subject: m\r\n\r\nx\r\n.").starts_with("250"));
                c.cmd("QUIT");
            }
        }
    });
    promtool(&scrape(admin));
    load.join().unwrap();
    // One relay refusal, one mandatory-TLS refusal.
    let mut c = common::connect(gw.addr);
    c.reply();
    c.cmd("EHLO x.test");
    c.cmd("MAIL FROM:<a@x.test>");
    assert!(c.cmd("RCPT TO:<b@elsewhere.test>").starts_with("554"));
    c.cmd("QUIT");
    let mut seven = common::connect_from("127.0.0.7", gw.addr);
    assert!(seven.cmd("MAIL FROM:<a@x.test>").starts_with("530"));
    seven.cmd("QUIT");
    // Deliveries to the closed route are deferred.
    gw.wait_for_count("status=deferred", 20, Duration::from_secs(60));
    gw.wait_for_count("disconnect from", 22, Duration::from_secs(20));

    let body = scrape(admin);
    promtool(&body);
    assert_eq!(
        value(&body, "sealgate_messages_accepted_total{"),
        20,
        "{body}"
    );
    assert_eq!(
        value(&body, "sealgate_connections_accepted_total{"),
        22,
        "{body}"
    );
    assert_eq!(value(&body, "sealgate_connections_active{"), 0, "{body}");
    assert_eq!(
        value(&body, "sealgate_starttls_total{shard=\"0\",result=\"ok\"}")
            + value(&body, "sealgate_starttls_total{shard=\"1\",result=\"ok\"}"),
        10,
        "{body}"
    );
    assert!(body.contains("sealgate_refused_total{shard="), "{body}");
    let refused = |reason: &str| -> u64 {
        body.lines()
            .filter(|l| {
                l.starts_with("sealgate_refused_total{")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        (refused("policy"), refused("mandatory_tls")),
        (1, 1),
        "{body}"
    );
    assert_eq!(value(&body, "sealgate_queue_messages "), 20, "{body}");
    assert_eq!(
        value(
            &body,
            "sealgate_deliveries_total{outcome=\"deferred\",tls=\"none\"}"
        ),
        20,
        "{body}"
    );
    assert!(
        body.contains("sealgate_certificate_expiry_remaining_seconds{file="),
        "{body}"
    );
}
