//! Man pages and shell completions come from the command line's own
//! definitions (`sealgate generate-docs`, what a package installs): a page
//! per command that man's formatter reads, and completion scripts that
//! bash loads and that offer the subcommands.

mod common;

use std::process::Command;
use std::time::Duration;

use common::run_tool;

#[test]
fn man_pages_and_completions_are_generated_from_the_command_line() {
    let dir = common::temp_dir("generated-docs");
    let (status, out, err) = run_tool(
        Command::new(common::BIN)
            .args(["generate-docs", "--out"])
            .arg(&dir),
        None,
        Duration::from_secs(30),
    );
    assert!(status.success(), "{out}{err}");
    let page = std::fs::read_to_string(dir.join("man/sealgate.1")).unwrap();
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH sealgate 1"),
        "{page}"
    );
    assert!(page.contains("reload"), "{page}");
    // Where things are, and where to read on.
    assert!(
        page.contains(".SH FILES")
            && page.contains("sealgate.ctl")
            && page.contains(".SH SEE ALSO"),
        "{page}"
    );
    for sub in ["run", "check", "reload", "queue", "cert", "partners"] {
        let p = dir.join(format!("man/sealgate-{sub}.1"));
        assert!(p.exists(), "{}", p.display());
    }
    // man renders them.
    let (status, out, err) = run_tool(
        Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(dir.join("man/sealgate-reload.1"))
            .env("MANWIDTH", "80"),
        None,
        Duration::from_secs(30),
    );
    assert!(
        status.success() && out.contains("sealgate-reload"),
        "{out}{err}"
    );
    assert!(out.contains("wait for"), "{out}");
    // `cert key --type` lists what it makes.
    let key = std::fs::read_to_string(dir.join("man/sealgate-cert-key.1")).unwrap();
    assert!(
        key.contains("ecdsa\\-p384") || key.contains("ecdsa-p384"),
        "{key}"
    );
    let run = std::fs::read_to_string(dir.join("man/sealgate-run.1")).unwrap();
    assert!(run.contains("Configuration file"), "{run}");
    // The hidden generator itself is not documented.
    assert!(!dir.join("man/sealgate-generate-docs.1").exists());
    // bash loads the completion and completes the subcommands.
    let script = dir.join("completions/sealgate.bash");
    let (status, out, err) = run_tool(
        Command::new("bash").arg("-c").arg(format!(
            "source {} && complete -p sealgate && COMP_WORDS=(sealgate re); COMP_CWORD=1; _sealgate sealgate re sealgate && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        )),
        None,
        Duration::from_secs(30),
    );
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("reload") && out.contains("report"),
        "{out}{err}"
    );
    assert!(dir.join("completions/_sealgate").exists());
    assert!(dir.join("completions/sealgate.fish").exists());
}
