//! OPS-8: two gateways behind HAProxy (Debian package), one fed the PROXY
//! protocol v1, the other v2. A client bound to 127.0.0.9 matches its IP
//! profile through HAProxy; a PROXY header from an untrusted address is
//! refused.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Gateway;

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway(name: &str) -> Gateway {
    let dir = common::temp_dir(name);
    let port = common::free_port();
    let config = common::config(port, 1, "").replace("[server]\n", "[server]\nproxy_protocol_from = [\"127.0.0.1\"]\n")
        + "\n[[profile]]\nname = \"nine\"\nhosts = [\"127.0.0.9\"]\n[profile.server]\nmandatory_tls = true\n";
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    Gateway::start_in(dir, port)
}

#[test]
fn client_address_through_haproxy_v1_and_v2() {
    let a = gateway("proxy-a");
    let b = gateway("proxy-b");
    let front = common::free_port();
    let dir = common::temp_dir("haproxy");
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend smtp\n  bind 127.0.0.1:{front}\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  server a 127.0.0.1:{} send-proxy\n  server b 127.0.0.1:{} send-proxy-v2\n",
            a.port(),
            b.port()
        ),
    )
    .unwrap();
    let _h = Haproxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (tests/run.sh installs it)"),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], front));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    // From 127.0.0.9: the profile applies on both gateways.
    for _ in 0..4 {
        let mut c = common::connect_from("127.0.0.9", addr);
        assert_eq!(
            c.cmd("MAIL FROM:<a@x.test>"),
            "530 5.7.0 Must issue a STARTTLS command first\r\n"
        );
        c.cmd("QUIT");
    }
    // From 127.0.0.8: no profile.
    let mut c = common::connect_from("127.0.0.8", addr);
    assert_eq!(c.cmd("MAIL FROM:<a@x.test>"), "250 2.1.0 Sender ok\r\n");
    c.cmd("QUIT");
    for gw in [&a, &b] {
        gw.wait_for_log("connect from [127.0.0.9]", Duration::from_secs(10));
        assert!(gw.log().contains("via proxy [127.0.0.1]"), "{}", gw.log());
    }

    // A PROXY header straight from an address not trusted to send one.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 5], 0)).into())
        .unwrap();
    sock.connect(&a.addr.into()).unwrap();
    let stream: std::net::TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = common::Client::new(stream);
    c.send(b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 25\r\n");
    let mut replies = String::new();
    loop {
        let r = c.try_reply().unwrap_or_default();
        if r.is_empty() {
            break;
        }
        replies.push_str(&r);
    }
    assert!(replies.contains("554 "), "refused: {replies:?}");
    a.wait_for_log(
        "which is not in server.proxy_protocol_from",
        Duration::from_secs(10),
    );
}
