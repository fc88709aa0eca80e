//! A second gateway must not share what the first one owns: an address
//! another process listens on (SO_REUSEPORT would split the traffic
//! between them) or the spool directory (both would deliver the same
//! journals). Either conflict is named and the second one exits 1.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_tool, Gateway};

const LIMIT: Duration = Duration::from_secs(20);

fn second(dir: &std::path::Path, config: &str) -> (Option<i32>, String) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("sealgate.toml"), config).unwrap();
    let (status, out, err) = run_tool(
        Command::new(common::BIN)
            .args(["run", "-c"])
            .arg(dir.join("sealgate.toml")),
        None,
        LIMIT,
    );
    (status.code(), format!("{out}{err}"))
}

#[test]
fn a_second_gateway_on_the_same_address_or_spool_refuses_to_start() {
    let gw = Gateway::start("conflict-a", 1, "");
    let port = gw.addr.port();

    // The same address, its own spool: refused, naming the address.
    let b = gw.dir.join("b");
    let (code, out) = second(&b, &common::config(port, 1, ""));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: another process is already listening there"
        )),
        "{out}"
    );

    // Its own address, the same spool: refused, naming the spool and
    // the gateway that holds it.
    let c = gw.dir.join("c");
    let other = common::free_port();
    let config = common::config(other, 1, "").replace(
        "spool_dir = \"spool\"",
        &format!("spool_dir = \"{}\"", gw.dir.join("spool").display()),
    );
    let (code, out) = second(&c, &config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "spool directory {} is in use by another sealgate (pid {})",
            gw.dir.join("spool").display(),
            gw.pid()
        )),
        "{out}"
    );

    // The first one is untouched: it still answers.
    let mut client = common::connect(gw.addr);
    assert!(client.reply().starts_with("220 "));
    gw.stop();
}
