//! Bad configuration and bad certificates (issue 7): a table of broken
//! files, each of which `sealgate check` rejects with a precise message
//! (file, line, key) and exit 1, and which a running gateway refuses on
//! SIGHUP with the same message while it goes on serving under the old
//! configuration. Nothing here may panic the gateway.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::Ca;
use common::Gateway;

/// One broken variant of a good configuration: what is changed, and what
/// the error must say (`{file}` stands for the configuration's path).
struct Case {
    name: &'static str,
    /// (text to find, replacement) in the good configuration, or text to
    /// append.
    edit: Edit,
    expect: &'static [&'static str],
}

enum Edit {
    Replace(&'static str, &'static str),
    Append(&'static str),
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "TOML syntax",
            edit: Edit::Replace("shards = 1", "shards = = 1"),
            expect: &["{file}:4: extra `=`"],
        },
        Case {
            name: "unknown key",
            edit: Edit::Replace("[limits]\n", "[limits]\nconections = 5\n"),
            expect: &["limits.conections: unknown field `conections`"],
        },
        Case {
            name: "wrong type",
            edit: Edit::Replace("shards = 1", "shards = \"one\""),
            expect: &["{file}:4: server.shards: "],
        },
        Case {
            name: "bad unit",
            edit: Edit::Replace(
                "[limits]\n",
                "[limits]\ncommand_timeout = \"5 fortnights\"\n",
            ),
            expect: &["limits.command_timeout: "],
        },
        Case {
            name: "duplicate profile name",
            edit: Edit::Append(
                "[[profile]]\nname = \"twin\"\nhosts = [\"192.0.2.1\"]\n\
                 [[profile]]\nname = \"twin\"\nhosts = [\"192.0.2.2\"]\n",
            ),
            expect: &["profile[1].name: duplicate profile name \"twin\""],
        },
        Case {
            name: "route naming a missing profile",
            edit: Edit::Append(
                "[[route]]\ndomain = \"partner.example\"\nvia = \"mx\"\nprofile = \"nobody\"\n",
            ),
            expect: &["route[1].profile: no profile named \"nobody\""],
        },
        Case {
            name: "missing certificate file",
            edit: Edit::Replace("CERT", "PKI/missing.crt"),
            expect: &["missing.crt: file not found"],
        },
        Case {
            name: "unreadable certificate (a directory)",
            edit: Edit::Replace("CERT", "PKI"),
            expect: &["pki: cannot read: Is a directory"],
        },
        Case {
            name: "not PEM",
            edit: Edit::Replace("CERT", "PKI/junk.crt"),
            expect: &["junk.crt: no CERTIFICATE block found"],
        },
        Case {
            name: "key does not match the certificate",
            edit: Edit::Replace("KEY", "PKI/other.key"),
            expect: &["the private key does not match the certificate"],
        },
        Case {
            name: "ACME and its DANE table",
            edit: Edit::Append(
                "[acme]\ndirectory = \"http://acme.example/dir\"\ndomains = [\"*.example.org\"]\n\
                 contact = [\"postmaster@example.org\"]\nhttp_listen = \"port 80\"\n\
                 [acme.dane]\nupdate_server = \"ns.example.org\"\nzone = \"example.net.\"\n\
                 tsig_name = \"k\"\ntsig_secret = \"c2VjcmV0\"\ntsig_secret_file = \"k.key\"\n",
            ),
            expect: &[
                "acme.directory: \"http://acme.example/dir\" is not an https:// URL",
                "acme.domains: \"*.example.org\" is not a host name a certificate can carry",
                "acme.contact: \"postmaster@example.org\" is not a mailto: URL",
                "acme.http_listen: \"port 80\" is not an address:port",
                "acme.dane.update_server: \"ns.example.org\" is not an IP address",
                "acme.dane.tsig_secret_file: give tsig_secret or tsig_secret_file, not both",
                "acme.dane: needs [dns] dnssec",
            ],
        },
        Case {
            name: "expired certificate",
            edit: Edit::Replace("CERT\", key = \"KEY", "PKI/old.crt\", key = \"PKI/old.key"),
            expect: &["old.crt: expired on"],
        },
    ]
}

fn good_config(port: u16) -> String {
    common::config(port, 1, "")
        .replace(
            "certificates = [ { cert = \"tls/server.crt\", key = \"tls/server.key\" } ]\ngenerate_self_signed = true",
            "certificates = [ { cert = \"CERT\", key = \"KEY\" } ]\nsystem_roots = false",
        )
}

fn materialise(text: &str, pki: &Path) -> String {
    text.replace("CERT", &pki.join("good.crt").display().to_string())
        .replace("KEY", &pki.join("good.key").display().to_string())
        .replace("PKI", &pki.display().to_string())
}

fn broken(case: &Case, port: u16, pki: &Path) -> String {
    let good = good_config(port);
    let text = match case.edit {
        Edit::Replace(from, to) => {
            assert!(good.contains(from), "{}: {from:?} not in config", case.name);
            good.replacen(from, to, 1)
        }
        Edit::Append(more) => format!("{good}\n{more}"),
    };
    materialise(&text, pki)
}

fn make_pki(dir: &Path) -> std::path::PathBuf {
    let pki = dir.join("pki");
    let ca = Ca::new(&pki, "ca");
    ca.leaf(&pki, "good", &["mx.test"]);
    ca.leaf(&pki, "other", &["x.test"]);
    std::fs::write(pki.join("junk.crt"), "this is not PEM\n").unwrap();
    common::pki::expired(&pki, "old");
    pki
}

#[test]
fn check_names_every_broken_file_precisely() {
    let dir = common::temp_dir("bad-config-check");
    let pki = make_pki(&dir);
    let file = dir.join("sealgate.toml");
    std::fs::write(&file, materialise(&good_config(2525), &pki)).unwrap();
    let check = || common::check_config(&file);
    let (code, out) = check();
    assert_eq!(code, Some(0), "the good configuration: {out}");
    for case in cases() {
        std::fs::write(&file, broken(&case, 2525, &pki)).unwrap();
        let (code, out) = check();
        assert_eq!(code, Some(1), "{}: {out}", case.name);
        assert!(!out.contains("panicked"), "{}: {out}", case.name);
        for want in case.expect {
            let want = want.replace("{file}", &file.display().to_string());
            assert!(
                out.contains(&want),
                "{}: wanted {want:?} in:\n{out}",
                case.name
            );
        }
    }
}

#[test]
fn reload_refuses_every_broken_file_and_keeps_serving() {
    let dir = common::temp_dir("bad-config-reload");
    let pki = make_pki(&dir);
    let port = common::free_port();
    let file = dir.join("sealgate.toml");
    std::fs::write(&file, materialise(&good_config(port), &pki)).unwrap();
    let gw = Gateway::start_in(dir.clone(), port);
    let pid = std::fs::read_to_string(dir.join("spool/sealgate.pid")).unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    for (n, case) in cases().iter().enumerate() {
        std::fs::write(&file, broken(case, port, &pki)).unwrap();
        // SAFETY: kill(2) with the pid the gateway this test started wrote.
        unsafe {
            libc::kill(pid, libc::SIGHUP);
        }
        gw.wait_for_count("reload failed", n + 1, Duration::from_secs(20));
        let log = gw.log();
        for want in case.expect {
            let want = want.replace("{file}", &file.display().to_string());
            assert!(
                log.contains(&want),
                "{}: wanted {want:?} in:\n{log}",
                case.name
            );
        }
        // The old configuration still serves.
        let mut c = common::connect(gw.addr);
        assert!(c.reply().starts_with("220 mx.test"), "{}", case.name);
        assert!(c.cmd("EHLO c.test").contains("STARTTLS"), "{}", case.name);
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    }
    // And a good file is taken again.
    std::fs::write(&file, materialise(&good_config(port), &pki)).unwrap();
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    gw.wait_for_log("configuration reloaded", Duration::from_secs(20));
    let log = gw.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// `sealgate check` lists file problems with the rest: a missing
/// certificate on the line of the entry that names it, next to a policy
/// error (an open relay, pointed at its `relay` key, the profile named by
/// its name) and a key that does not match its certificate.
#[test]
fn check_reports_file_problems_with_the_other_errors_and_their_lines() {
    let dir = common::temp_dir("bad-config-all");
    let pki = make_pki(&dir);
    let file = dir.join("sealgate.toml");
    let text = materialise(&good_config(2525), &pki)
        .replace(
            &format!("{{ cert = \"{}\"", pki.join("good.crt").display()),
            &format!(
                "{{ cert = \"{}\", key = \"{}\" }},\n  {{ cert = \"{}\"",
                pki.join("missing.crt").display(),
                pki.join("good.key").display(),
                pki.join("good.crt").display()
            ),
        )
        .replace(
            &format!("key = \"{}\" }} ]", pki.join("good.key").display()),
            &format!("key = \"{}\" }} ]", pki.join("other.key").display()),
        )
        + "\n[[profile]]\nname = \"everyone\"\nhosts = [\"*\"]\nrelay = true\n";
    std::fs::write(&file, &text).unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let (code, out) = common::check_config(&file);
    assert_eq!(code, Some(1), "{out}");
    let f = file.display();
    for want in [
        format!("{f}:{}: tls.certificates[0]: {}: file not found", line_of("missing.crt"), pki.join("missing.crt").display()),
        format!("{f}:{}: tls.certificates[1]: ", line_of("other.key")),
        "the private key does not match the certificate".to_string(),
        format!("{f}:{}: profile \"everyone\".relay: relay = true for hosts = [\"*\"] would make an open relay", line_of("relay = true")),
        "3 error(s) found".to_string(),
    ] {
        assert!(out.contains(&want), "wanted {want:?} in:\n{out}\n{text}");
    }
}

/// `check` warns of a file that would refuse every recipient.
#[test]
fn check_warns_when_no_domain_is_accepted() {
    let dir = common::temp_dir("check-accept");
    let file = dir.join("sealgate.toml");
    std::fs::write(
        &file,
        common::config(common::free_port(), 1, "")
            .replace("accept_domains = [\"example.com\"]\n", ""),
    )
    .unwrap();
    let (code, out) = common::check_config(&file);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: server.accept_domains is empty: every recipient is refused"),
        "{out}"
    );
}
