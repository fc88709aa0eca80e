//! The Debian package (packaging/build-deb.sh): built around the binary
//! under test, installed with dpkg on this machine, its default
//! configuration checked by the installed `sealgate check`, the installed
//! binary started once (on loopback, with a copy of that configuration),
//! the unit verified by `systemd-analyze verify`, then purged: nothing of
//! it stays.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::run_tool;

const LIMIT: Duration = Duration::from_secs(120);

/// Runs a command as root (directly when the tests are root, else through
/// `sudo -n`, as tests/run.sh installs packages).
fn as_root(args: &[&str]) -> (bool, String) {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = if root {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").args(args);
        c
    };
    let (status, out, err) = run_tool(&mut c, None, LIMIT);
    (status.success(), format!("{out}{err}"))
}

/// Purges the package when the test ends, whatever happened.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = as_root(&["dpkg", "--purge", "sealgate"]);
    }
}

#[test]
fn the_package_installs_checks_starts_and_purges_cleanly() {
    let dir = common::temp_dir("deb");
    let (status, out, err) = run_tool(
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build-deb.sh"))
            .args(["--binary", common::BIN, "--out"])
            .arg(&dir),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    let deb = out.trim().lines().last().unwrap().to_string();
    let (status, contents, err) = run_tool(
        Command::new("dpkg-deb").args(["--contents", &deb]),
        None,
        LIMIT,
    );
    assert!(status.success(), "{err}");
    for path in [
        "./usr/bin/sealgate",
        "./etc/sealgate/sealgate.toml",
        "./lib/systemd/system/sealgate.service",
        "./usr/share/man/man1/sealgate.1.gz",
        "./usr/share/man/man1/sealgate-reload.1.gz",
        "./usr/share/bash-completion/completions/sealgate",
        "./usr/share/doc/sealgate/operations.md",
    ] {
        assert!(contents.contains(path), "{path} in:\n{contents}");
    }

    let (ok, out) = as_root(&["dpkg", "-i", &deb]);
    let _installed = Installed;
    assert!(ok, "dpkg -i: {out}");
    let (ok, passwd) = as_root(&["getent", "passwd", "sealgate"]);
    assert!(ok && passwd.starts_with("sealgate:"), "{passwd}");
    let (ok, stat) = as_root(&["stat", "-c", "%U %a", "/var/spool/sealgate"]);
    assert!(ok && stat.trim() == "sealgate 750", "{stat}");

    // The installed binary checks the installed configuration.
    let (status, out, err) = run_tool(
        Command::new("/usr/bin/sealgate").args(["check", "-c", "/etc/sealgate/sealgate.toml"]),
        None,
        LIMIT,
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("configuration OK"), "{out}");

    // Started once: that configuration, on a loopback port with its
    // spool and certificate in the test's directory.
    let port = common::free_port();
    let text = std::fs::read_to_string("/etc/sealgate/sealgate.toml").unwrap();
    let text = text
        .replace(
            "listen = [\"0.0.0.0:25\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace(
            "/var/spool/sealgate",
            &dir.join("spool").display().to_string(),
        )
        .replace("/etc/sealgate/tls", &dir.join("tls").display().to_string())
        .replace("listen = \"127.0.0.1:9025\"", "listen = \"127.0.0.1:0\"");
    std::fs::write(dir.join("sealgate.toml"), text).unwrap();
    let gw = common::Gateway::start_with(dir.clone(), port, Command::new("/usr/bin/sealgate"));
    let mut c = common::connect(gw.addr);
    assert!(c.reply().starts_with("220 "));
    c.cmd("QUIT");
    let log = gw.stop();
    assert!(log.contains("sealgate stopped"), "{log}");

    // The unit as installed.
    let (status, out, err) = run_tool(
        Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/sealgate.service"]),
        None,
        LIMIT,
    );
    assert!(status.success(), "systemd-analyze verify: {out}{err}");

    // Stripped: no debug information in the installed binary.
    let size = std::fs::metadata("/usr/bin/sealgate").unwrap().len();
    assert!(
        size < 40 << 20,
        "/usr/bin/sealgate is {size} octets: not stripped?"
    );

    // Purged: nothing left, and nothing said about crontabs.
    let (ok, out) = as_root(&["dpkg", "--purge", "sealgate"]);
    assert!(ok, "{out}");
    assert!(!out.contains("crontab"), "{out}");
    for gone in [
        "/usr/bin/sealgate",
        "/etc/sealgate",
        "/var/spool/sealgate",
        "/lib/systemd/system/sealgate.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is still there");
    }
    let (ok, _) = as_root(&["getent", "passwd", "sealgate"]);
    assert!(!ok, "the sealgate user is gone");
}
