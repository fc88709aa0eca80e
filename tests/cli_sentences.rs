//! What the command line says is sentences: no Rust value shapes
//! (`Temporary("…")`, `SomeError { field: … }`) in the outputs of
//! commands that fail for ordinary reasons.

mod common;

use std::process::Command;
use std::time::Duration;

/// A Rust value shape: `Name {` with a CamelCase name, or `Name("`.
fn debug_shape(text: &str) -> Option<String> {
    for (i, _) in text.match_indices(|c: char| c.is_ascii_uppercase()) {
        let ident: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let after = &text[i + ident.len()..];
        let camel = ident.chars().skip(1).any(|c| c.is_ascii_uppercase())
            && ident.chars().any(|c| c.is_ascii_lowercase());
        if (camel && after.starts_with(" {")) || after.starts_with("(\"") {
            return Some(text[i..].chars().take(60).collect());
        }
    }
    None
}

#[test]
fn failing_commands_speak_in_sentences() {
    assert!(debug_shape("Temporary(\"x\")").is_some());
    assert!(debug_shape("UnknownIssuer { a: 1 }").is_some());
    assert!(debug_shape("the host refused STARTTLS (RFC 3207)").is_none());

    let dir = common::temp_dir("cli-sentences");
    let file = dir.join("sealgate.toml");
    // DNS that does not answer; a route by MX for partner.test.
    std::fs::write(
        &file,
        common::config(common::free_port(), 1, "")
            + "\n[dns]\nservers = [\"127.0.0.1:1\"]\n\n[[route]]\ndomain = \"partner.test\"\nvia = \"mx\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("junk.crt"), "not a certificate\n").unwrap();
    let closed = format!("127.0.0.1:{}", common::free_port());
    let runs: Vec<Vec<&str>> = vec![
        vec!["probe", &closed],
        vec!["probe", "--mx", "partner.test"],
        vec!["cert", "inspect", "junk.crt"],
        vec!["explain", "--client-ip", "not-an-ip"],
    ];
    for args in runs {
        let (status, out, err) = common::run_tool(
            Command::new(common::BIN)
                .args(&args)
                .args(if args[0] == "cert" {
                    vec![]
                } else {
                    vec!["-c", file.to_str().unwrap()]
                })
                .current_dir(&dir),
            None,
            Duration::from_secs(60),
        );
        assert!(!status.success(), "{args:?} should fail: {out}{err}");
        let text = format!("{out}{err}");
        assert!(!text.trim().is_empty(), "{args:?} says why");
        assert!(
            debug_shape(&text).is_none(),
            "{args:?}: a Rust value shape in: {text}"
        );
        // Each fact once.
        assert!(
            !text.contains("partner.test: partner.test"),
            "{args:?}: {text}"
        );
    }
}
