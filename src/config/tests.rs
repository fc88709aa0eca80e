use super::*;

fn errors_of(text: &str) -> Vec<ConfigError> {
    parse(text, "t.toml", PathBuf::from("."))
        .err()
        .map(|e| e.errors)
        .unwrap_or_default()
}

#[test]
fn embedded_default_is_valid() {
    let cfg = load(None).unwrap();
    assert_eq!(cfg.listen_addrs(), vec!["127.0.0.1:2525".parse().unwrap()]);
    assert!(cfg.file.tls.generate_self_signed);
}

#[test]
fn a_complete_example_is_valid() {
    // A complete file using every section, as an operator would write one.
    let text = r#"
[server]
hostname = "mx.example.com"
listen = ["0.0.0.0:25"]
shards = 0
spool_dir = "/var/spool/sealgate"
accept_domains = ["example.com"]
[limits]
message_size = "25MB"
recipients = 1000
connections = 20000
connections_per_ip = 50
command_timeout = "5m"
data_timeout = "10m"
[tls]
certificates = [ { cert = "config/certs/server.crt", key = "config/certs/server.key" } ]
client_certificate = { cert = "config/certs/client.crt", key = "config/certs/client.key" }
ca_files = ["config/certs/ca.crt"]
system_roots = true
default_version = "1.2"
[log]
receive = "info"
send = "info"
format = "text"
[admin]
listen = "127.0.0.1:9025"
[queue]
retry = ["5m", "10m", "30m", "1h", "2h", "4h"]
lifetime = "5d"
[[profile]]
name = "partner-b"
notes = "Company B, mandatory TLS both ways"
hosts = ["192.0.2.10", "198.51.100.*", "203.0.113.0/24", "mail.partner-b.example"]
sender_domains = ["partner-b.example"]
relay = false
[profile.server]
mandatory_tls = true
min_cipher_bits = 128
request_client_cert = true
require_verified_client_cert = false
client_cert_name = ""
client_cert_sha256 = []
[profile.client]
mandatory_tls = true
version = "system"
cipher_grade = "high"
verify = true
match_names = ["*.partner-b.example"]
pin_sha256 = []
client_certificate = true
[[route]]
domain = "partner-b.example"
via = "mx"
port = 25
profile = "partner-b"
[[route]]
domain = "example.com"
via = "[10.0.0.5]:25"
[[route]]
domain = "*"
via = "mx"
[dns]
servers = []
"#;
    let cfg = parse(text, "spec.toml", PathBuf::from(".")).unwrap();
    assert_eq!(
        cfg.file.profile[0]
            .get_ref()
            .server
            .min_cipher_bits
            .as_ref()
            .map(|b| *b.get_ref()),
        Some(128)
    );
    assert_eq!(cfg.limits().message_size, 25_000_000);
    assert_eq!(
        parse_via(cfg.file.route[1].get_ref().via.get_ref()),
        Ok(Via::Host {
            host: "[10.0.0.5]".into(),
            port: 25
        })
    );
}

#[test]
fn three_mistakes_are_all_reported_with_lines() {
    let text = "[server]\nlisten = [\"127.0.0.1:2525\"]\nshards = \"two\"\n\n[limits]\nmessage_size = \"25XB\"\ncommand_timeot = \"5m\"\n";
    let errs = errors_of(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(
        (errs[0].line, errs[0].key.as_str()),
        (Some(3), "server.shards")
    );
    assert_eq!(
        (errs[1].line, errs[1].key.as_str()),
        (Some(6), "limits.message_size")
    );
    assert!(
        errs[1].message.contains("invalid size"),
        "{}",
        errs[1].message
    );
    assert_eq!(
        (errs[2].line, errs[2].key.as_str()),
        (Some(7), "limits.command_timeot")
    );
    assert!(
        errs[2].message.contains("unknown field"),
        "{}",
        errs[2].message
    );
}

#[test]
fn cross_field_errors_have_lines() {
    let text = r#"[server]
listen = ["nowhere"]
accept_domains = ["ok.example", "bad domain"]

[[profile]]
name = "p"
server = { min_cipher_bits = 12 }

[[route]]
domain = "x.example"
via = "mx"
profile = "q"

[[route]]
domain = "y.example"
via = "host:99999"
"#;
    let errs = errors_of(text);
    let lines: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        lines,
        vec![
            (Some(2), "server.listen"),
            (Some(3), "server.accept_domains"),
            (Some(7), "profile \"p\".server.min_cipher_bits"),
            (Some(12), "route[0].profile"),
            (Some(16), "route[1].via"),
        ],
        "{errs:#?}"
    );
}

/// A profile that presents a client certificate with none configured is a
/// configuration error with its line and key (`check` says so; it used to
/// surface only when the snapshot was built, without either), and the
/// PROXY senders are compiled once with the rest.
#[test]
fn client_certificate_without_one_configured_is_an_error_with_a_line() {
    let text = r#"[server]
proxy_protocol_from = ["10.0.0.0/8", "192.0.2.7"]

[[profile]]
name = "p"
hosts = ["192.0.2.1"]

[profile.client]
client_certificate = true
"#;
    let errs = errors_of(text);
    let lines: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        lines,
        vec![(Some(4), "profile \"p\".client.client_certificate")],
        "{errs:#?}"
    );
    let fixed = text.replace("client_certificate = true", "client_certificate = false");
    let cfg = parse(&fixed, "t.toml", PathBuf::from(".")).unwrap();
    for (ip, trusted) in [
        ("10.1.2.3", true),
        ("192.0.2.7", true),
        ("192.0.2.8", false),
    ] {
        let snapshot = Snapshot {
            proxy_from: cfg.proxy_from.clone(),
            ..Snapshot::for_tests("h", &[])
        };
        assert_eq!(snapshot.proxy_trusted(ip.parse().unwrap()), trusted, "{ip}");
    }
}

/// DANE without DNSSEC, or a trust anchor nothing reads, is an error; DANE
/// is enforced by default once DNSSEC is on.
#[test]
fn dane_needs_dnssec_and_defaults_to_enforce_with_it() {
    let errs = errors_of("[dns]\ntrust_anchor = \"keys\"\n\n[outbound]\ndane = \"report\"\n");
    let keys: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        keys,
        vec![(None, "dns.trust_anchor"), (Some(5), "outbound.dane")],
        "{errs:#?}"
    );
    let on = parse(
        "[dns]\ndnssec = \"trust-ad\"\n",
        "t.toml",
        PathBuf::from("."),
    )
    .unwrap();
    assert_eq!(on.dane(), crate::policy::Enforcement::Enforce);
    let off = parse("", "t.toml", PathBuf::from(".")).unwrap();
    assert_eq!(off.dane(), crate::policy::Enforcement::Off);
}

#[test]
fn syntax_error_has_line() {
    let errs = errors_of("[server]\nlisten = [\"a\"\nshards = 1\n");
    assert!(!errs.is_empty());
    assert!(errs[0].line.is_some());
}

#[test]
fn missing_required_key_is_reported() {
    let errs = errors_of("[[route]]\nvia = \"mx\"\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("domain"), "{errs:#?}");
}

#[test]
fn via_forms() {
    assert_eq!(parse_via("mx"), Ok(Via::Mx));
    assert_eq!(
        parse_via("relay.example:2525"),
        Ok(Via::Host {
            host: "relay.example".into(),
            port: 2525
        })
    );
    assert_eq!(
        parse_via("relay.example"),
        Ok(Via::Host {
            host: "relay.example".into(),
            port: 25
        })
    );
    assert!(parse_via("[10.0.0.300]:25").is_err());
    assert!(parse_via("host:0").is_err());
}

/// `[tls] groups`: unknown and repeated names, and an empty list, are
/// errors on their lines; the default puts the post-quantum hybrid first;
/// `ticket_lifetime` is bounded by TLS 1.3's seven days.
#[test]
fn tls_groups_and_ticket_lifetime_are_checked() {
    let errs = errors_of(
        "[tls]\ngroups = [\n  \"X25519\",\n  \"X448\",\n  \"x25519\",\n]\nticket_lifetime = \"5d\"\n",
    );
    let keys: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        keys,
        vec![
            (Some(4), "tls.groups"),
            (Some(5), "tls.groups"),
            (Some(7), "tls.ticket_lifetime")
        ],
        "{errs:#?}"
    );
    assert!(
        errs[0]
            .message
            .contains("\"X448\" is not a key exchange group"),
        "{}",
        errs[0].message
    );
    assert!(
        errs[0].message.contains("X25519MLKEM768"),
        "{}",
        errs[0].message
    );
    assert!(errs[1].message.contains("twice"), "{}", errs[1].message);
    let errs = errors_of("[tls]\ngroups = []\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].line, errs[0].key.as_str()),
        (Some(2), "tls.groups")
    );

    let default = parse("", "t.toml", PathBuf::from(".")).unwrap();
    let names: Vec<&str> = default
        .tls
        .groups
        .iter()
        .map(|g| crate::tls::group_name(g.name()))
        .collect();
    assert_eq!(
        names,
        ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"]
    );
    assert_eq!(default.tls.ticket_lifetime, 6 * 3600);
    let set = parse(
        "[tls]\ngroups = [\"secp384r1\"]\nticket_lifetime = \"0s\"\n",
        "t.toml",
        PathBuf::from("."),
    )
    .unwrap();
    assert_eq!(set.tls.groups.len(), 1);
    assert_eq!(set.tls.ticket_lifetime, 0);
}

/// `relay = true` with `hosts = ["*"]`: one error, on the `relay` line,
/// saying why; profiles are named by their name.
#[test]
fn an_open_relay_profile_is_refused_at_its_relay_key() {
    let text = "[[profile]]\nname = \"open\"\nhosts = [\"*\"]\nrelay = true\n";
    let errs = errors_of(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].line, errs[0].key.as_str()),
        (Some(4), "profile \"open\".relay")
    );
    assert!(
        errs[0].message.contains("open relay"),
        "{}",
        errs[0].message
    );
    assert!(
        errs[0].message.contains("every client"),
        "{}",
        errs[0].message
    );
}

#[test]
fn every_queue_key_reaches_the_snapshot() {
    let text = r#"
[queue]
retry = ["1s", "7s"]
lifetime = "3h"
delay_notice = "9m"
command_timeout = "11s"
data_timeout = "13s"
destination_concurrency = 3
messages_per_connection = 17
connection_idle = "5s"
idle_connections = 9
"#;
    let cfg = parse(text, "t.toml", PathBuf::from(".")).unwrap();
    let s = std::time::Duration::from_secs;
    assert_eq!(
        cfg.queue_settings(),
        crate::snapshot::QueueSettings {
            retry: vec![s(1), s(7)],
            lifetime: s(3 * 3600),
            delay_notice: s(9 * 60),
            per_destination: 3,
            messages_per_connection: 17,
            command_timeout: s(11),
            data_timeout: s(13),
        }
    );
    assert_eq!(
        cfg.connection_cache(),
        crate::snapshot::ConnectionCache {
            idle: s(5),
            per_shard: 9,
        }
    );
    // Without the section, the snapshot's own defaults.
    let cfg = parse("", "t.toml", PathBuf::from(".")).unwrap();
    assert_eq!(
        cfg.queue_settings(),
        crate::snapshot::QueueSettings::default()
    );
    assert_eq!(
        cfg.connection_cache(),
        crate::snapshot::ConnectionCache::default()
    );
}
