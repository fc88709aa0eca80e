//! CERT-4: `sealgate probe` against Postfix on loopback: a valid
//! certificate, a certificate for another name, and STARTTLS off; with
//! `--profile`, accept or refuse with the reason.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::Ca;
use common::postfix::Postfix;

fn probe(cfg: &Path, target: &str, profile: Option<&str>) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(common::BIN);
    cmd.args(["probe", "-c"]).arg(cfg).arg(target).arg("--json");
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    let (status, out, err) = common::run_tool(&mut cmd, None, Duration::from_secs(60));
    let code = status.code().unwrap_or(-1);
    assert!(code == 0 || code == 2, "{out}{err}");
    (
        code,
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}")),
    )
}

fn config(dir: &Path, ca: &Ca) -> std::path::PathBuf {
    let cfg = dir.join("probe.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:2525\"]\nhostname = \"prober.test\"\n[tls]\nsystem_roots = false\nca_files = [\"{}\"]\n\n\
             [[profile]]\nname = \"strict\"\n[profile.client]\nmandatory_tls = true\nverify = true\nmatch_names = [\"mx.partner.test\"]\n",
            ca.cert_path.display()
        ),
    )
    .unwrap();
    cfg
}

fn postfix_with(dir: &Path, ca: &Ca, names: Option<&[&str]>) -> Postfix {
    let tls = match names {
        Some(names) => {
            let (crt, key) = ca.leaf(&dir.join("pki"), "server", names);
            format!(
                "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {}, {}\n",
                key.display(),
                crt.display()
            )
        }
        None => "smtpd_tls_security_level = none\n".into(),
    };
    Postfix::start(dir, &tls)
}

#[test]
fn probe_valid_wrong_name_and_no_starttls() {
    // A valid certificate for the name the profile wants.
    let dir = common::temp_dir("probe-ok");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let pf = postfix_with(&dir, &ca, Some(&["mx.partner.test"]));
    let cfg = config(&dir, &ca);
    let target = format!("[127.0.0.1]:{}", pf.port);
    let (code, r) = probe(&cfg, &target, Some("strict"));
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["starttls_offered"], true);
    assert_eq!(r["tls_version"], "TLSv1.3");
    assert!(r["cipher"].as_str().unwrap().starts_with("TLS13_"));
    assert_eq!(r["trust"], "Verified");
    assert_eq!(r["would_deliver"], true);
    assert_eq!(r["reason"], "profile \"strict\" would accept this server");
    assert_eq!(
        r["chain"]["certificates"][0]["sans"][0],
        "DNS:mx.partner.test"
    );
    assert!(r["banner"]
        .as_str()
        .unwrap()
        .starts_with("220 postfix.test ESMTP"));
    drop(pf);

    // A certificate for another name: the profile refuses, with the reason.
    let dir = common::temp_dir("probe-name");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let pf = postfix_with(&dir, &ca, Some(&["other.test"]));
    let cfg = config(&dir, &ca);
    let target = format!("[127.0.0.1]:{}", pf.port);
    let (code, r) = probe(&cfg, &target, Some("strict"));
    assert_eq!(code, 2, "{r}");
    assert_eq!(r["trust"], "Trusted", "chain verifies, name does not");
    assert_eq!(r["would_deliver"], false);
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("do not match mx.partner.test"),
        "{r}"
    );
    // Without a profile: opportunistic delivery would use TLS anyway.
    let (code, r) = probe(&cfg, &target, None);
    assert_eq!(
        (code, r["would_deliver"].clone()),
        (0, serde_json::json!(true))
    );
    drop(pf);

    // STARTTLS off.
    let dir = common::temp_dir("probe-clear");
    let ca = Ca::new(&dir.join("pki"), "ca");
    let pf = postfix_with(&dir, &ca, None);
    let cfg = config(&dir, &ca);
    let target = format!("[127.0.0.1]:{}", pf.port);
    let (code, r) = probe(&cfg, &target, Some("strict"));
    assert_eq!(code, 2);
    assert_eq!(r["starttls_offered"], false);
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with("TLS is required, but was not offered by host 127.0.0.1"),
        "{r}"
    );
    let (code, r) = probe(&cfg, &target, None);
    assert_eq!(code, 0);
    assert!(r["reason"].as_str().unwrap().contains("in the clear"));
}
