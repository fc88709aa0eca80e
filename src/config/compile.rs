//! The one pass over a parsed file that checks what serde cannot (cross-
//! field rules, matchers, routes, fingerprints) and compiles the typed
//! values on the way: every error with its line and key, the profiles and
//! routes ready for the snapshot. Nothing here reads a file.

use std::net::SocketAddr;
use std::ops::Range;

use super::{line_of, schema, units, ConfigError, Via};
use crate::policy::matcher::{HostMatcher, ProfileIndex};
use crate::policy::{ClientRules, Profile, Profiles, ServerRules};
use crate::smtp::command::{valid_address_literal, valid_domain};

/// What the checking pass yields besides the errors: the typed values a
/// snapshot is built from.
pub(super) struct Compiled {
    pub profiles: Profiles,
    pub routes: crate::policy::route::Routes,
    /// `server.proxy_protocol_from` as an index.
    pub proxy_from: ProfileIndex,
    /// `[tls] groups` and `ticket_lifetime`, checked.
    pub tls: crate::tls::Settings,
}

/// Cross-field and value checks that serde cannot express; compiles the
/// profiles, routes and PROXY senders on the way (their errors are among
/// the rest).
pub(super) fn validate(file: &schema::File, text: &str, errors: &mut Vec<ConfigError>) -> Compiled {
    let mut err = |span: Range<usize>, key: String, message: String| {
        errors.push(ConfigError {
            line: (span != (0..0)).then(|| line_of(text, span.start)),
            key,
            message,
        })
    };
    let s = &file.server;
    if !s.hostname.get_ref().is_empty() && !valid_domain(s.hostname.get_ref()) {
        err(
            s.hostname.span(),
            "server.hostname".into(),
            format!("{:?} is not a valid host name", s.hostname.get_ref()),
        );
    }
    if s.listen.is_empty() {
        err(
            0..0,
            "server.listen".into(),
            "at least one listen address is required".into(),
        );
    }
    for l in &s.listen {
        if l.get_ref().parse::<SocketAddr>().is_err() {
            err(
                l.span(),
                "server.listen".into(),
                format!(
                    "{:?} is not an address:port (e.g. \"0.0.0.0:25\", \"[::]:25\")",
                    l.get_ref()
                ),
            );
        }
    }
    let mut proxy_from = ProfileIndex::default();
    for (i, entry) in s.proxy_protocol_from.iter().enumerate() {
        match entry.parse::<HostMatcher>() {
            Ok(m @ (HostMatcher::Ip(_) | HostMatcher::Net { .. })) => {
                let _ = proxy_from.add_host(0, &m);
            }
            _ => err(
                0..0,
                format!("server.proxy_protocol_from[{i}]"),
                format!("{entry:?} is not an address, 192.0.2.* prefix or CIDR"),
            ),
        }
    }
    for d in &s.accept_domains {
        if !crate::model::valid_mail_domain(d.get_ref()) {
            err(
                d.span(),
                "server.accept_domains".into(),
                format!("{:?} is not a valid domain", d.get_ref()),
            );
        }
    }
    let l = &file.limits;
    for (key, zero) in [
        ("limits.message_size", l.message_size.0 == 0),
        ("limits.recipients", l.recipients == 0),
        ("limits.connections", l.connections == Some(0)),
        ("limits.connections_per_ip", l.connections_per_ip == 0),
        ("limits.command_timeout", l.command_timeout.0.is_zero()),
        ("limits.data_timeout", l.data_timeout.0.is_zero()),
        ("limits.errors", l.errors == 0),
        ("limits.message_buffer", l.message_buffer.0 == 0),
        ("limits.inflight_data", l.inflight_data.0 == 0),
        ("server.spool_writers", file.server.spool_writers == 0),
        (
            "queue.retry",
            file.queue.retry.is_empty() || file.queue.retry.iter().any(|r| r.0.is_zero()),
        ),
        ("queue.lifetime", file.queue.lifetime.0.is_zero()),
        (
            "queue.command_timeout",
            file.queue.command_timeout.0.is_zero(),
        ),
        ("queue.data_timeout", file.queue.data_timeout.0.is_zero()),
        (
            "queue.destination_concurrency",
            file.queue.destination_concurrency == 0,
        ),
        (
            "queue.messages_per_connection",
            file.queue.messages_per_connection == 0,
        ),
    ] {
        if zero {
            err(0..0, key.into(), "must be greater than zero".into());
        }
    }
    // A message record of up to spool_large_message octets, with its
    // envelope, must fit a segment.
    let (seg, large) = (s.spool_segment_size.0, s.spool_large_message.0);
    if seg < 16 * 1024 {
        err(
            0..0,
            "server.spool_segment_size".into(),
            "must be at least 16KB".into(),
        );
    } else if large.saturating_mul(2) > seg {
        err(
            0..0,
            "server.spool_large_message".into(),
            format!("must be at most half of server.spool_segment_size ({seg} octets)"),
        );
    }
    if file.tls.generate_self_signed && file.tls.certificates.is_empty() {
        err(
            0..0,
            "tls.generate_self_signed".into(),
            "needs a tls.certificates entry to write the certificate to".into(),
        );
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, table) in file.profile.iter().enumerate() {
        let p = table.get_ref();
        let name = p.name.get_ref().as_str();
        if name.is_empty() {
            err(
                table.span(),
                format!("profile[{i}].name"),
                "a profile needs a name".into(),
            );
        } else if names.contains(&name) {
            err(
                p.name.span(),
                format!("profile[{i}].name"),
                format!("duplicate profile name {name:?}"),
            );
        }
        names.push(name);
        if let Some(bits) = &p.server.min_cipher_bits {
            if !(40..=256).contains(bits.get_ref()) {
                err(
                    bits.span(),
                    profile_key(file, i, "server.min_cipher_bits"),
                    "must be between 40 and 256".into(),
                );
            }
        }
        for pin in &p.client.pin_sha256 {
            if parse_fingerprint(pin.get_ref()).is_none() {
                err(
                    pin.span(),
                    profile_key(file, i, "client.pin_sha256"),
                    format!(
                        "{:?} is not a SHA-256 fingerprint (64 hex digits)",
                        pin.get_ref()
                    ),
                );
            }
        }
    }
    let (profiles, profile_errors) = compile_profiles(file);
    for (span, key, message) in profile_errors {
        err(span, key, message);
    }
    // OUT-5: presenting a client certificate needs one to present.
    if file.tls.client_certificate.is_none() {
        for (i, table) in file.profile.iter().enumerate() {
            if table.get_ref().client.client_certificate {
                err(
                    table.span(),
                    profile_key(file, i, "client.client_certificate"),
                    "client_certificate = true needs [tls.client_certificate]".into(),
                );
            }
        }
    }
    let mut domains: Vec<String> = Vec::new();
    // Each route's `via`, parsed once (None: reported above).
    let mut vias: Vec<Option<Via>> = Vec::with_capacity(file.route.len());
    for (i, table) in file.route.iter().enumerate() {
        let r = table.get_ref();
        let d = r.domain.get_ref();
        if d.is_empty() {
            err(
                table.span(),
                format!("route[{i}].domain"),
                "a route needs a domain (or \"*\")".into(),
            );
        } else if d != "*" && !crate::model::valid_mail_domain(d) {
            err(
                r.domain.span(),
                format!("route[{i}].domain"),
                format!("{d:?} is not a domain or \"*\""),
            );
        }
        let norm = crate::policy::canonical_domain(d);
        if domains.contains(&norm) {
            err(
                r.domain.span(),
                format!("route[{i}].domain"),
                format!("a route for {d:?} is already defined"),
            );
        }
        domains.push(norm);
        match parse_via(r.via.get_ref()) {
            Ok(via) => vias.push(Some(via)),
            Err(m) => {
                err(r.via.span(), format!("route[{i}].via"), m.to_string());
                vias.push(None);
            }
        }
        if let Some(p) = &r.profile {
            if !names.contains(&p.get_ref().as_str()) {
                err(
                    p.span(),
                    format!("route[{i}].profile"),
                    format!("no profile named {:?}", p.get_ref()),
                );
            }
        }
    }
    // DANE needs DNSSEC status (RFC 7672 §2.1).
    if let (crate::dns::Dnssec::Off, Some(dane)) = (file.dns.dnssec, &file.outbound.dane) {
        if *dane.get_ref() != crate::policy::Enforcement::Off {
            err(
                dane.span(),
                "outbound.dane".into(),
                "DANE needs [dns] dnssec = \"trust-ad\" or \"validate\"".into(),
            );
        }
    }
    if file.outbound.mta_sts_refresh.is_some_and(|s| s.0.is_zero()) {
        err(
            0..0,
            "outbound.mta_sts_refresh".into(),
            "must be at least 1s".into(),
        );
    }
    if file.dns.trust_anchor.is_some() && file.dns.dnssec != crate::dns::Dnssec::Validate {
        err(
            0..0,
            "dns.trust_anchor".into(),
            "a trust anchor is used only with dnssec = \"validate\"".into(),
        );
    }
    for srv in &file.dns.servers {
        let v = srv.get_ref();
        if v.parse::<SocketAddr>().is_err() && v.parse::<std::net::IpAddr>().is_err() {
            err(
                srv.span(),
                "dns.servers".into(),
                format!("{v:?} is not an IP address or address:port"),
            );
        }
    }
    // The routes (a `via` that does not parse was reported above).
    let mut routes = crate::policy::route::Routes::default();
    for (r, via) in file.route.iter().zip(vias) {
        let r = r.get_ref();
        let Some(via) = via else {
            continue;
        };
        routes.add(crate::policy::route::Route {
            domain: r.domain.get_ref().clone(),
            via,
            port: r.port,
            profile: r
                .profile
                .as_ref()
                .and_then(|name| profiles.list.iter().position(|p| p.name == *name.get_ref())),
        });
    }
    // [tls] groups: known names, at least one, none twice.
    let mut tls = crate::tls::Settings::default();
    if let Some(list) = &file.tls.groups {
        let mut groups = Vec::new();
        for g in list.get_ref() {
            match crate::tls::kx_group(g.get_ref()) {
                Some(k)
                    if groups
                        .iter()
                        .any(|h: &&dyn rustls::crypto::SupportedKxGroup| h.name() == k.name()) =>
                {
                    err(
                        g.span(),
                        "tls.groups".into(),
                        format!("{:?} is listed twice", g.get_ref()),
                    )
                }
                Some(k) => groups.push(k),
                None => err(
                    g.span(),
                    "tls.groups".into(),
                    format!(
                        "{:?} is not a key exchange group sealgate knows (one of {})",
                        g.get_ref(),
                        crate::tls::kx_group_names().join(", ")
                    ),
                ),
            }
        }
        if list.get_ref().is_empty() {
            err(
                list.span(),
                "tls.groups".into(),
                "at least one group is required (or leave the key out for the default)".into(),
            );
        }
        tls.groups = groups;
    }
    // RFC 8446 §4.6.1: a ticket lives at most seven days; ours live for
    // two lifetimes.
    let lifetime = file.tls.ticket_lifetime.get_ref().0.as_secs();
    if lifetime > 7 * 86_400 / 2 {
        err(
            file.tls.ticket_lifetime.span(),
            "tls.ticket_lifetime".into(),
            "at most 3.5 days (84h): tickets stay valid for two lifetimes, and TLS 1.3 allows seven days".into(),
        );
    }
    tls.ticket_lifetime = lifetime.min(u64::from(u32::MAX)) as u32;
    if let Some(f) = &file.fleet {
        fleet_errors(f, &mut err);
    }
    if let Some(a) = &file.acme {
        acme_errors(a, &mut err);
        if let Some(d) = &a.dane {
            dane_errors(a, d, file.dns.dnssec, &mut err);
        }
    }
    Compiled {
        profiles,
        routes,
        proxy_from,
        tls,
    }
}

/// `[fleet]`: a Redis URL and a node name other nodes can tell apart.
fn fleet_errors(f: &schema::Fleet, err: &mut impl FnMut(Range<usize>, String, String)) {
    let url = f.redis.get_ref();
    if !(url.starts_with("redis://") || url.starts_with("rediss://"))
        || redis::Client::open(url.as_str()).is_err()
    {
        err(
            f.redis.span(),
            "fleet.redis".into(),
            format!(
                "\"{}\" is not a Redis URL (\"redis://HOST:PORT/DB\", or \"rediss://…\" for TLS)",
                crate::fleet::redacted(url)
            ),
        );
    }
    if let Some(node) = &f.node {
        let n = node.get_ref();
        if n.is_empty()
            || n.len() > 64
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            err(
                node.span(),
                "fleet.node".into(),
                format!("\"{n}\": a node name is 1 to 64 letters, digits, '-', '_' or '.'"),
            );
        }
    }
}

/// `[acme]`: an https directory, names a certificate can carry, mailto
/// contacts (RFC 8555 §7.3), an address for the http-01 responder.
fn acme_errors(a: &schema::Acme, err: &mut impl FnMut(Range<usize>, String, String)) {
    let dir = a.directory.get_ref();
    if dir.is_empty() {
        err(
            0..0,
            "acme.directory".into(),
            "the ACME server's directory URL is required, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"".into(),
        );
    } else if !dir.starts_with("https://") {
        // RFC 8555 §6.1: ACME runs over HTTPS only.
        err(
            a.directory.span(),
            "acme.directory".into(),
            format!("\"{dir}\" is not an https:// URL (RFC 8555 §6.1: ACME is HTTPS only)"),
        );
    }
    if a.domains.is_empty() {
        err(
            0..0,
            "acme.domains".into(),
            "at least one name is required: the names the certificate carries".into(),
        );
    }
    for d in &a.domains {
        if !valid_domain(d.get_ref()) || d.get_ref().starts_with("*.") {
            err(
                d.span(),
                "acme.domains".into(),
                format!(
                    "\"{}\" is not a host name a certificate can carry (no wildcards: http-01 and tls-alpn-01 cannot prove them)",
                    d.get_ref()
                ),
            );
        }
    }
    for c in &a.contact {
        if !c.get_ref().starts_with("mailto:") || !c.get_ref().contains('@') {
            err(
                c.span(),
                "acme.contact".into(),
                format!("\"{}\" is not a mailto: URL", c.get_ref()),
            );
        }
    }
    for (key, value, example) in [
        ("acme.http_listen", &a.http_listen, "0.0.0.0:80"),
        ("acme.tls_alpn_listen", &a.tls_alpn_listen, "0.0.0.0:443"),
    ] {
        if value.get_ref().parse::<SocketAddr>().is_err() {
            err(
                value.span(),
                key.into(),
                format!(
                    "\"{}\" is not an address:port (e.g. \"{example}\")",
                    value.get_ref()
                ),
            );
        }
    }
}

/// `[acme.dane]`: where updates go, a zone holding every name, one TSIG
/// secret, and DNSSEC to see the records validated.
fn dane_errors(
    a: &schema::Acme,
    d: &schema::AcmeDane,
    dnssec: crate::dns::Dnssec,
    err: &mut impl FnMut(Range<usize>, String, String),
) {
    if crate::acme::dane::parse_server(d.update_server.get_ref()).is_none() {
        err(
            d.update_server.span(),
            "acme.dane.update_server".into(),
            format!(
                "\"{}\" is not an IP address with an optional port (e.g. \"192.0.2.53:53\")",
                d.update_server.get_ref()
            ),
        );
    }
    let zone = d.zone.get_ref().trim_end_matches('.').to_ascii_lowercase();
    if !valid_domain(&zone) {
        err(
            d.zone.span(),
            "acme.dane.zone".into(),
            format!("\"{}\" is not a zone name", d.zone.get_ref()),
        );
    } else {
        for name in &a.domains {
            let n = name.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if n != zone && !n.ends_with(&format!(".{zone}")) {
                err(
                    name.span(),
                    "acme.domains".into(),
                    format!(
                        "\"{}\" is not in the zone \"{zone}\": its TLSA records could not be written there",
                        name.get_ref()
                    ),
                );
            }
        }
    }
    if !valid_domain(d.tsig_name.get_ref().trim_end_matches('.')) {
        err(
            d.tsig_name.span(),
            "acme.dane.tsig_name".into(),
            "the TSIG key's name is required (as the DNS server knows it)".into(),
        );
    }
    match (&d.tsig_secret, &d.tsig_secret_file) {
        (Some(_), Some(f)) => err(
            f.span(),
            "acme.dane.tsig_secret_file".into(),
            "give tsig_secret or tsig_secret_file, not both".into(),
        ),
        (None, None) => err(
            0..0,
            "acme.dane.tsig_secret".into(),
            "the TSIG secret is required: tsig_secret (base64) or tsig_secret_file".into(),
        ),
        (Some(secret), None) => {
            if crate::acme::dane::decode_secret(secret.get_ref()).is_none() {
                err(
                    secret.span(),
                    "acme.dane.tsig_secret".into(),
                    "not base64 (as tsig-keygen and dnssec-keygen write it)".into(),
                );
            }
        }
        (None, Some(_)) => {}
    }
    if d.ttl.0 < std::time::Duration::from_secs(1) {
        err(0..0, "acme.dane.ttl".into(), "at least 1s".into());
    }
    // A roll waits until the next key's record is seen validated.
    if dnssec == crate::dns::Dnssec::Off {
        err(
            0..0,
            "acme.dane".into(),
            "needs [dns] dnssec = \"trust-ad\" (a validating resolver) or \"validate\": a key goes into service only once its TLSA record is seen validated".into(),
        );
    }
}

/// A route's `via` that does not parse (as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not \"mx\", \"host:port\" or \"[IP]:port\"")]
pub struct BadVia(pub String);

/// `"mx"`, `"host"`, `"host:port"`, `"[IP]"` or `"[IP]:port"` (port 25 by
/// default, RFC 5321 §4.5.4 brackets: an address, no MX lookup).
pub fn parse_via(via: &str) -> Result<Via, BadVia> {
    if via.eq_ignore_ascii_case("mx") {
        return Ok(Via::Mx);
    }
    let bad = || BadVia(via.to_string());
    let (host, port) = if via.starts_with('[') {
        let close = via.find(']').ok_or_else(bad)?;
        let (lit, rest) = via.split_at(close + 1);
        (lit, rest.strip_prefix(':'))
    } else {
        match via.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (via, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => 25,
    };
    let ok = if host.starts_with('[') {
        valid_address_literal(host)
    } else {
        valid_domain(host)
    };
    if !ok {
        return Err(bad());
    }
    Ok(Via::Host {
        host: host.to_string(),
        port,
    })
}

/// Compiles `[[profile]]` into matchers, rules and the index. Problems come
/// back with the span of the value at fault.
fn compile_profiles(file: &schema::File) -> (Profiles, Vec<(Range<usize>, String, String)>) {
    use crate::policy::matcher::SenderMatcher;
    let mut errors = Vec::new();
    let mut out = Profiles::default();
    for (i, table) in file.profile.iter().enumerate() {
        let p = table.get_ref();
        let srv = &p.server;
        let mut pins = Vec::new();
        for pin in &srv.client_cert_sha256 {
            match parse_fingerprint(pin.get_ref()) {
                Some(fp) => pins.push(fp),
                None => errors.push((
                    pin.span(),
                    profile_key(file, i, "server.client_cert_sha256"),
                    format!(
                        "{:?} is not a SHA-256 fingerprint (64 hex digits)",
                        pin.get_ref()
                    ),
                )),
            }
        }
        out.list.push(Profile {
            name: p.name.get_ref().clone(),
            notes: p.notes.clone(),
            relay: *p.relay.get_ref(),
            server: ServerRules {
                mandatory_tls: srv.mandatory_tls,
                min_cipher_bits: srv.min_cipher_bits.as_ref().map(|b| *b.get_ref()),
                request_client_cert: srv.request_client_cert,
                require_verified_client_cert: srv.require_verified_client_cert,
                client_cert_name: srv.client_cert_name.clone(),
                client_cert_sha256: pins,
                report_only: srv.report_only,
            },
            client: ClientRules {
                mandatory_tls: p.client.mandatory_tls,
                min_version: match (p.client.version, file.tls.default_version) {
                    (units::TlsVersion::V1_3, _)
                    | (units::TlsVersion::System, units::TlsVersion::V1_3) => 13,
                    (units::TlsVersion::V1_2, _)
                    | (
                        units::TlsVersion::System,
                        units::TlsVersion::V1_2 | units::TlsVersion::System,
                    ) => 12,
                },
                high_ciphers_only: p.client.cipher_grade == units::CipherGrade::High,
                verify: p.client.verify,
                match_names: p
                    .client
                    .match_names
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect(),
                pin_sha256: p
                    .client
                    .pin_sha256
                    .iter()
                    .filter_map(|pin| parse_fingerprint(pin.get_ref()))
                    .collect(),
                report_only: p.client.report_only,
                client_certificate: p.client.client_certificate,
            },
        });
        let mut by_client = false;
        let mut open_relay = false;
        for h in &p.hosts {
            match h.get_ref().parse::<HostMatcher>() {
                Ok(m) => {
                    by_client |= m != HostMatcher::Any;
                    open_relay |= *p.relay.get_ref() && m == HostMatcher::Any;
                    if let Err(other) = out.index.add_host(i, &m) {
                        errors.push((
                            h.span(),
                            profile_key(file, i, "hosts"),
                            format!(
                                "{m} is already matched by profile {:?}",
                                file.profile[other].get_ref().name.get_ref()
                            ),
                        ));
                    }
                }
                Err(e) => errors.push((h.span(), profile_key(file, i, "hosts"), e.to_string())),
            }
        }
        for d in &p.sender_domains {
            match d.get_ref().parse::<SenderMatcher>() {
                Ok(m) => {
                    if let Err(other) = out.index.add_sender(i, &m) {
                        errors.push((
                            d.span(),
                            profile_key(file, i, "sender_domains"),
                            format!(
                                "{m} is already matched by profile {:?}",
                                file.profile[other].get_ref().name.get_ref()
                            ),
                        ));
                    }
                }
                Err(e) => errors.push((
                    d.span(),
                    profile_key(file, i, "sender_domains"),
                    e.to_string(),
                )),
            }
        }
        if !p.sender_domains.is_empty() && out.list[i].server.wants_client_cert() {
            out.sender_profile_wants_cert = true;
        }
        let relay_span = if p.relay.span() == (0..0) {
            table.span()
        } else {
            p.relay.span()
        };
        if open_relay {
            errors.push((
                relay_span,
                profile_key(file, i, "relay"),
                "relay = true for hosts = [\"*\"] would make an open relay: every client on the Internet could send mail anywhere through this gateway; list the addresses or names of the servers that may relay".into(),
            ));
        } else if *p.relay.get_ref() && !by_client {
            errors.push((
                relay_span,
                profile_key(file, i, "relay"),
                "relay = true needs hosts (addresses or names): relaying is never granted by sender domain"
                    .into(),
            ));
        }
    }
    (out, errors)
}

/// 64 hex digits, colons allowed (as openssl prints them).
fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// A profile's key in error messages, by its name (`profile "partner-b".relay`),
/// or by its place in the file when it has none.
fn profile_key(file: &schema::File, i: usize, field: &str) -> String {
    match file
        .profile
        .get(i)
        .map(|p| p.get_ref().name.get_ref().as_str())
    {
        Some(name) if !name.is_empty() => format!("profile {name:?}.{field}"),
        _ => format!("profile[{i}].{field}"),
    }
}
