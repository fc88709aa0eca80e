//! Every key docs/configuration.md calls reloadable reaches what a reload
//! swaps in: each one changed alone changes the snapshot that
//! `run::compile` builds (the code a start and a reload share), or, for
//! the log levels, the log filter. A key the reference lists without an
//! entry here, or an entry for a key it does not list, fails the test.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

/// How a changed key is seen.
enum Seen {
    /// The compiled snapshot differs.
    Snapshot,
    /// The log filter differs.
    LogFilter,
    /// Not visible in the snapshot's printed form: checked end to end by
    /// this test of this file, which must exist.
    EndToEnd(&'static str, &'static str),
}

/// Each reloadable key: its table, its name, another value (TOML).
fn changes() -> Vec<(&'static str, &'static str, &'static str, Seen)> {
    use Seen::*;
    vec![
        ("server", "hostname", "\"relay.test\"", Snapshot),
        ("server", "accept_domains", "[\"other.test\"]", Snapshot),
        ("server", "proxy_protocol_from", "[\"10.0.0.1\"]", Snapshot),
        ("limits", "message_size", "\"2MB\"", Snapshot),
        ("limits", "recipients", "7", Snapshot),
        ("limits", "connections", "99", Snapshot),
        ("limits", "connections_per_ip", "9", Snapshot),
        ("limits", "command_timeout", "\"1m\"", Snapshot),
        ("limits", "data_timeout", "\"1m\"", Snapshot),
        ("limits", "min_data_rate", "100", Snapshot),
        ("limits", "shutdown_timeout", "\"5s\"", Snapshot),
        ("limits", "errors", "3", Snapshot),
        ("limits", "bare_line_endings", "\"normalize\"", Snapshot),
        ("limits", "message_buffer", "\"1MiB\"", Snapshot),
        ("limits", "inflight_data", "\"1GiB\"", Snapshot),
        (
            "tls",
            "certificates",
            "[{ cert = \"c2.pem\", key = \"k2.pem\" }]",
            Snapshot,
        ),
        // The files of the first entry are missing: generated, as at start.
        (
            "tls",
            "generate_self_signed",
            "true\ncertificates = [{ cert = \"new.pem\", key = \"new.key\" }]",
            Snapshot,
        ),
        (
            "tls",
            "client_certificate",
            "{ cert = \"c2.pem\", key = \"k2.pem\" }",
            Snapshot,
        ),
        ("tls", "ca_files", "[\"c2.pem\"]", Snapshot),
        ("tls", "system_roots", "false", Snapshot),
        ("tls", "default_version", "\"1.3\"", Snapshot),
        ("tls", "groups", "[\"X25519\"]", Snapshot),
        (
            "tls",
            "ticket_lifetime",
            "\"1h\"",
            EndToEnd(
                "tls_session.rs",
                "groups_decide_the_key_exchange_and_clients_resume_across_reloads",
            ),
        ),
        ("log", "receive", "\"debug\"", LogFilter),
        ("log", "send", "\"debug\"", LogFilter),
        ("queue", "retry", "[\"1m\"]", Snapshot),
        ("queue", "lifetime", "\"1d\"", Snapshot),
        ("queue", "delay_notice", "\"1h\"", Snapshot),
        ("queue", "command_timeout", "\"1m\"", Snapshot),
        ("queue", "data_timeout", "\"1m\"", Snapshot),
        ("queue", "destination_concurrency", "3", Snapshot),
        ("queue", "messages_per_connection", "5", Snapshot),
        ("queue", "connection_idle", "\"5s\"", Snapshot),
        ("queue", "idle_connections", "8", Snapshot),
        ("profile", "name", "\"q\"", Snapshot),
        ("profile", "notes", "\"a note\"", Snapshot),
        ("profile", "hosts", "[\"192.0.2.2\"]", Snapshot),
        ("profile", "sender_domains", "[\"example.net\"]", Snapshot),
        ("profile", "relay", "true", Snapshot),
        ("profile", "server.mandatory_tls", "true", Snapshot),
        ("profile", "server.min_cipher_bits", "256", Snapshot),
        ("profile", "server.request_client_cert", "true", Snapshot),
        (
            "profile",
            "server.require_verified_client_cert",
            "true",
            Snapshot,
        ),
        (
            "profile",
            "server.client_cert_name",
            "\"client.test\"",
            Snapshot,
        ),
        (
            "profile",
            "server.client_cert_sha256",
            "[\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"]",
            Snapshot,
        ),
        ("profile", "server.report_only", "true", Snapshot),
        ("profile", "client.mandatory_tls", "true", Snapshot),
        ("profile", "client.version", "\"1.3\"", Snapshot),
        ("profile", "client.cipher_grade", "\"high\"", Snapshot),
        ("profile", "client.verify", "true", Snapshot),
        (
            "profile",
            "client.match_names",
            "[\"mx.partner.test\"]",
            Snapshot,
        ),
        (
            "profile",
            "client.pin_sha256",
            "[\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"]",
            Snapshot,
        ),
        ("profile", "client.client_certificate", "false", Snapshot),
        ("profile", "client.report_only", "true", Snapshot),
        ("route", "domain", "\"other.test\"", Snapshot),
        ("route", "via", "\"[127.0.0.1]:26\"", Snapshot),
        ("route", "port", "2526", Snapshot),
        ("route", "profile", "\"p\"", Snapshot),
        ("outbound", "dane", "\"report\"", Snapshot),
        ("outbound", "mta_sts", "\"report\"", Snapshot),
        ("outbound", "tls_required_header", "\"ignore\"", Snapshot),
        ("tls_rpt", "send", "false", Snapshot),
        ("tls_rpt", "only_failures", "false", Snapshot),
        ("tls_rpt", "suppress", "[\"x.test\"]", Snapshot),
        ("tls_rpt", "organization", "\"Org\"", Snapshot),
        ("tls_rpt", "contact", "\"c@x.test\"", Snapshot),
        ("tls_rpt", "from", "\"f@x.test\"", Snapshot),
        ("tls_rpt", "spread", "\"1h\"", Snapshot),
        (
            "acme",
            "directory",
            "\"https://acme.example.net/dir\"",
            Snapshot,
        ),
        ("acme", "ca_files", "[\"c2.pem\"]", Snapshot),
        ("acme", "contact", "[\"mailto:ops@example.org\"]", Snapshot),
        ("acme", "domains", "[\"mx2.example.org\"]", Snapshot),
        ("acme", "challenge", "\"tls-alpn-01\"", Snapshot),
        ("acme", "http_listen", "\"127.0.0.1:8080\"", Snapshot),
        ("acme", "tls_alpn_listen", "\"127.0.0.1:8443\"", Snapshot),
        ("acme", "key", "\"rsa-2048\"", Snapshot),
        ("acme", "renew_before", "\"10d\"", Snapshot),
        ("acme", "key_lifetime", "\"0\"", Snapshot),
        ("acme.dane", "update_server", "\"127.0.0.1:5353\"", Snapshot),
        ("acme.dane", "zone", "\"mx1.example.org.\"", Snapshot),
        ("acme.dane", "tsig_name", "\"other-key\"", Snapshot),
        ("acme.dane", "tsig_algorithm", "\"hmac-sha512\"", Snapshot),
        ("acme.dane", "tsig_secret", "\"b3RoZXIgc2VjcmV0\"", Snapshot),
        // The secret from a file (0600) instead of the file's text.
        (
            "acme.dane",
            "tsig_secret_file",
            "\"tsig.key\"\ntsig_secret = REMOVE",
            Snapshot,
        ),
        ("acme.dane", "ttl", "\"2m\"", Snapshot),
    ]
}

/// The reloadable keys docs/configuration.md lists: "active" in a table
/// with a status column; every key of a table without one (its text says
/// all are reloadable).
fn documented() -> BTreeSet<(String, String)> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut found = BTreeSet::new();
    let mut section = String::new();
    let mut has_status = false;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h
                .trim_matches(|c| c == '`' || c == '[' || c == ']')
                .to_string();
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if line.starts_with("| key |") {
            has_status = cells.get(3) == Some(&"status");
        }
        if line.starts_with("| `") && (!has_status || cells.get(3) == Some(&"active")) {
            found.insert((section.clone(), cells[1].trim_matches('`').to_string()));
        }
    }
    found
}

/// The base file: every table present, nothing at its default where the
/// change would set the default.
const BASE: &str = r#"
[server]
hostname = "mx.test"
listen = ["127.0.0.1:2525"]
shards = 1
spool_dir = "spool"
accept_domains = ["example.com"]

[tls]
certificates = [{ cert = "c.pem", key = "k.pem" }]
client_certificate = { cert = "c.pem", key = "k.pem" }

[dns]
dnssec = "trust-ad"
servers = ["127.0.0.1:53"]

[[profile]]
name = "p"
hosts = ["192.0.2.1"]
client = { client_certificate = true }

[[route]]
domain = "partner.test"
via = "mx"

[acme]
directory = "https://acme.example.org/dir"
domains = ["mx1.example.org"]

[acme.dane]
update_server = "127.0.0.1:53"
zone = "example.org."
tsig_name = "sealgate-update"
tsig_secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
"#;

/// BASE with `table.key = value` set (a dotted key inside `[[profile]]`
/// goes into its sub-table).
fn with(table: &str, key: &str, value: &str) -> String {
    let mut doc: toml::Table = BASE.parse().unwrap();
    // A value may have a second line: another key of the same table, set,
    // or removed (`= REMOVE`).
    let removed: Vec<String> = value
        .lines()
        .filter_map(|l| l.strip_suffix(" = REMOVE").map(str::to_string))
        .collect();
    let value: String = value
        .lines()
        .filter(|l| !l.ends_with(" = REMOVE"))
        .collect::<Vec<_>>()
        .join("\n");
    let extra: toml::Table = format!("v = {value}").parse().unwrap();
    let mut target = &mut doc;
    for part in table.split('.') {
        target = match target
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Array(a) => a[0].as_table_mut().unwrap(),
            toml::Value::Table(t) => t,
            other => panic!("{table}: {other:?}"),
        };
    }
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap();
    for p in parts {
        target = target
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
    }
    for (k, v) in extra {
        target.insert(if k == "v" { last.to_string() } else { k }, v);
    }
    for k in removed {
        target.remove(&k);
    }
    toml::to_string(&doc).unwrap()
}

fn compiled(dir: &Path, name: &str, text: &str) -> (String, String) {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let cfg = sealgate::config::load(Some(&file)).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
    let (snapshot, _) =
        sealgate::run::compile(&cfg).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
    (
        format!("{snapshot:?}"),
        sealgate::run::log_filter(&cfg).to_string(),
    )
}

/// Where two printed snapshots part, with some context.
fn first_difference(a: &str, b: &str) -> String {
    let at = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = a.floor_char_boundary(at.saturating_sub(200));
    let to = |s: &str| s.floor_char_boundary((at + 200).min(s.len()));
    format!("…{}… / …{}…", &a[from..to(a)], &b[from..to(b)])
}

#[test]
fn every_reloadable_key_reaches_what_a_reload_swaps_in() {
    let dir = common::temp_dir("reload-every-key");
    for (cert, key, host) in [
        ("c.pem", "k.pem", "mx.test"),
        ("c2.pem", "k2.pem", "other.test"),
    ] {
        sealgate::tls::ensure_self_signed(&dir.join(cert), &dir.join(key), host).unwrap();
    }
    let listed: BTreeSet<(String, String)> = changes()
        .iter()
        .map(|(t, k, _, _)| (t.to_string(), k.to_string()))
        .collect();
    assert_eq!(
        listed,
        documented(),
        "the keys here are the reloadable keys of docs/configuration.md"
    );

    let base = compiled(&dir, "base.toml", BASE);
    let again = compiled(&dir, "again.toml", BASE);
    assert!(
        base == again,
        "the same file compiles the same: {}",
        first_difference(&base.0, &again.0)
    );
    for (table, key, value, seen) in changes() {
        let text = with(table, key, value);
        let name = format!("{table}.{key}.toml");
        match seen {
            Seen::Snapshot => {
                let (snapshot, _) = compiled(&dir, &name, &text);
                assert!(snapshot != base.0, "{table}.{key} changes nothing:\n{text}");
            }
            Seen::LogFilter => {
                let (_, filter) = compiled(&dir, &name, &text);
                assert_ne!(filter, base.1, "{table}.{key}");
            }
            Seen::EndToEnd(file, test) => {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests")
                    .join(file);
                let source = std::fs::read_to_string(&path).unwrap();
                assert!(
                    source.contains(&format!("fn {test}()")),
                    "{table}.{key}: {file} has no test {test}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
