//! The configuration file: parse, collect every error with its line and
//! key, then compile into a [`Snapshot`](crate::snapshot::Snapshot).
//!
//! Errors are collected, never returned one at a time (OPS-1): syntax
//! errors come from the recovering TOML parser; type errors from serde are
//! gathered by deserializing, removing the offending key and trying again
//! (each round removes one key, so it ends); cross-field checks run on the
//! result. An operator fixing a file sees all of its problems at once.
//!
//! Here: loading and parsing, the error list, and building the snapshot
//! from the compiled values (which only loads files: certificates, keys,
//! CA stores); `compile` the checks and the typed values (profiles,
//! matchers, routes); `schema` the file's shape; `units` its value types.

mod compile;
pub mod schema;
pub mod units;

use compile::validate;
pub use compile::{parse_via, BadVia};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::IntoDeserializer;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use std::sync::Arc;

use crate::policy::{AcceptDomains, Limits, Profiles};
use crate::smtp::command::valid_domain;
use crate::snapshot::Snapshot;

/// The embedded default configuration (`config/sealgate.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/sealgate.toml");

/// One problem in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `limits.message_size` or `route[2].via`.
    pub key: String,
    pub message: String,
}

/// Every problem found, with the file they were found in.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.errors {
            match e.line {
                Some(line) => write!(f, "{}:{}: ", self.origin, line)?,
                None => write!(f, "{}: ", self.origin)?,
            }
            if e.key.is_empty() {
                writeln!(f, "{}", e.message)?;
            } else {
                writeln!(f, "{}: {}", e.key, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A parsed, validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: schema::File,
    /// The file name, or `<embedded default>`.
    pub origin: String,
    /// Relative paths in the file are resolved against this directory: the
    /// config file's own, or the current directory for the embedded file.
    pub base_dir: PathBuf,
    /// The profiles and routes, compiled once while the file was checked
    /// (building a snapshot only loads files).
    pub profiles: Profiles,
    pub routes: crate::policy::route::Routes,
    /// `server.proxy_protocol_from`, compiled.
    pub proxy_from: crate::policy::matcher::ProfileIndex,
    /// `[tls] groups` and `ticket_lifetime`.
    pub tls: crate::tls::Settings,
}

/// Files the configuration names that cannot be loaded or made
/// (certificates, keys, CA stores): every one of them.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct LoadErrors(pub Vec<crate::tls::TlsError>);

/// Reads the file at `path`, or the embedded default when `None`.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    load_with(path, false)
}

/// The control socket a configuration file names, read leniently from a
/// file that may not load (`sealgate reload` tells the running gateway of
/// a broken file too): its `[server] spool_dir`, or the default. `None`
/// when the file is not even TOML.
pub fn control_socket_of(path: Option<&Path>, socket: &str) -> Option<PathBuf> {
    let (text, base) = match path {
        None => (DEFAULT_CONFIG.to_string(), PathBuf::from(".")),
        Some(p) => (
            std::fs::read_to_string(p).ok()?,
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        ),
    };
    let table: toml::Table = text.parse().ok()?;
    let spool = table
        .get("server")
        .and_then(|s| s.get("spool_dir"))
        .and_then(|d| d.as_str())
        .map_or_else(|| schema::Server::default().spool_dir, str::to_string);
    Some(resolve_in(&base, &spool).join(socket))
}

/// As [`load`], and also loads the files the configuration names
/// (`sealgate check`): their problems come with the others, each on the
/// line of the key that names the file.
pub fn load_checking_files(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    load_with(path, true)
}

fn load_with(path: Option<&Path>, files: bool) -> Result<Config, ConfigErrors> {
    match path {
        None => parse_with(
            DEFAULT_CONFIG,
            "<embedded default>",
            PathBuf::from("."),
            files,
        ),
        Some(p) => {
            let origin = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigErrors {
                origin: origin.clone(),
                errors: vec![ConfigError {
                    line: None,
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                }],
            })?;
            let base = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            parse_with(&text, &origin, base.to_path_buf(), files)
        }
    }
}

/// Parses and validates configuration text.
pub fn parse(text: &str, origin: &str, base_dir: PathBuf) -> Result<Config, ConfigErrors> {
    parse_with(text, origin, base_dir, false)
}

fn parse_with(
    text: &str,
    origin: &str,
    base_dir: PathBuf,
    files: bool,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let (mut doc, syntax) = DeTable::parse_recoverable(text);
    for e in syntax {
        errors.push(ConfigError {
            line: e.span().map(|s| line_of(text, s.start)),
            key: String::new(),
            message: first_line(e.message()),
        });
    }
    let file = loop {
        match schema::File::deserialize(doc.clone().into_deserializer()) {
            Ok(file) => break Some(file),
            Err(e) => {
                let span = e.span();
                let removed = span
                    .as_ref()
                    .and_then(|s| remove_key_at(doc.get_mut(), s.start, &mut Vec::new()));
                errors.push(ConfigError {
                    line: span.map(|s| line_of(text, s.start)),
                    key: removed.clone().unwrap_or_default(),
                    message: first_line(e.message()),
                });
                if removed.is_none() {
                    break None;
                }
            }
        }
    };
    let compiled = file.as_ref().map(|file| validate(file, text, &mut errors));
    if let (true, Some(file)) = (files, &file) {
        file_errors(file, text, &base_dir, &mut errors);
    }
    errors.sort_by_key(|e| e.line.unwrap_or(0));
    match (file, compiled) {
        (Some(file), Some(compiled)) if errors.is_empty() => Ok(Config {
            file,
            origin: origin.to_string(),
            base_dir,
            profiles: compiled.profiles,
            routes: compiled.routes,
            proxy_from: compiled.proxy_from,
            tls: compiled.tls,
        }),
        _ => Err(ConfigErrors {
            origin: origin.to_string(),
            errors,
        }),
    }
}

/// The certificate and key files of `[tls]`, loaded and checked as the
/// snapshot loads them (the same functions): a missing or unreadable file,
/// a key that does not match, a certificate out of its validity. A first
/// entry whose files are both missing is not a problem when
/// `generate_self_signed` will write it.
fn file_errors(file: &schema::File, text: &str, base_dir: &Path, errors: &mut Vec<ConfigError>) {
    let resolve = |p: &str| resolve_in(base_dir, p);
    let tls = &file.tls;
    for (i, entry) in tls.certificates.iter().enumerate() {
        let (cert, key) = (
            resolve(&entry.get_ref().cert),
            resolve(&entry.get_ref().key),
        );
        if i == 0 && tls.generate_self_signed && !cert.exists() && !key.exists() {
            continue;
        }
        if let Err(e) = load_pair(base_dir, entry.get_ref()) {
            errors.push(ConfigError {
                line: Some(line_of(text, entry.span().start)),
                key: format!("tls.certificates[{i}]"),
                message: e.to_string(),
            });
        }
    }
    if let Some(pair) = &tls.client_certificate {
        if let Err(e) = load_pair(base_dir, pair) {
            errors.push(ConfigError {
                line: None,
                key: "tls.client_certificate".into(),
                message: e.to_string(),
            });
        }
    }
    if let Some(f) = file.fleet.as_ref().and_then(|f| f.password_file.as_ref()) {
        let path = resolve(f.get_ref());
        let problem = match std::fs::metadata(&path) {
            Err(e) => Some(format!("{}: {e}", path.display())),
            Ok(m) if std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o077 != 0 => {
                Some(format!(
                    "{}: a password must be readable by its owner only (chmod 600)",
                    path.display()
                ))
            }
            Ok(_) => None,
        };
        if let Some(message) = problem {
            errors.push(ConfigError {
                line: Some(line_of(text, f.span().start)),
                key: "fleet.password_file".into(),
                message,
            });
        }
    }
    if let Some(f) = file
        .acme
        .as_ref()
        .and_then(|a| a.dane.as_ref())
        .and_then(|d| d.tsig_secret_file.as_ref())
    {
        if let Err(message) = read_tsig_secret(&resolve(f.get_ref())) {
            errors.push(ConfigError {
                line: Some(line_of(text, f.span().start)),
                key: "acme.dane.tsig_secret_file".into(),
                message,
            });
        }
    }
    let ca_files: Vec<PathBuf> = tls.ca_files.iter().map(|f| resolve(f)).collect();
    if let Err(problems) = crate::tls::ca_store(tls.system_roots, &ca_files) {
        for e in problems {
            errors.push(ConfigError {
                line: None,
                key: "tls.ca_files".into(),
                message: e.to_string(),
            });
        }
    }
}

/// A path from the file, relative to the file's own directory.
fn resolve_in(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// A certificate and its key as the configuration names them, loaded and
/// checked (the key fits, the certificate is in its validity): the one
/// loader behind the snapshot and `sealgate check`.
fn load_pair(
    base_dir: &Path,
    pair: &schema::CertPair,
) -> Result<(Arc<rustls::sign::CertifiedKey>, PathBuf), crate::tls::TlsError> {
    let (cert, key) = (
        resolve_in(base_dir, &pair.cert),
        resolve_in(base_dir, &pair.key),
    );
    let ck = crate::tls::load_cert_and_key(&cert, &key)
        .and_then(|ck| crate::tls::certified_key(ck, &cert))?;
    Ok((ck, cert))
}

/// A TSIG secret file: base64 (alone, or the `secret "…";` of a
/// `tsig-keygen` key statement), readable by its owner only.
fn read_tsig_secret(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{}: mode {:o}: a secret must be readable by its owner only (chmod 600)",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = match text.find("secret") {
        Some(i) => text[i + "secret".len()..]
            .trim_start()
            .trim_start_matches('"')
            .split('"')
            .next()
            .unwrap_or_default(),
        None => text.trim(),
    };
    crate::acme::dane::decode_secret(secret)
        .ok_or_else(|| format!("{}: no base64 secret in it", path.display()))
}

fn first_line(msg: &str) -> String {
    msg.lines().next().unwrap_or("").trim().to_string()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Removes the innermost key whose key or value covers `offset` (looking
/// into every table, since a `[table]` value's span is only its header),
/// returning its dotted path. `None` when nothing covers it.
fn remove_key_at(table: &mut DeTable<'_>, offset: usize, path: &mut Vec<String>) -> Option<String> {
    let keys: Vec<_> = table.keys().cloned().collect();
    for key in keys {
        let name = key.get_ref().to_string();
        let Some(value) = table.get_mut(key.get_ref().as_ref()) else {
            continue;
        };
        let covers = key.span().contains(&offset) || value.span().contains(&offset);
        path.push(name.clone());
        let inner = if key.span().contains(&offset) {
            None
        } else {
            match value.get_mut() {
                DeValue::Table(inner) => remove_key_at(inner, offset, path),
                DeValue::Array(items) => {
                    let mut found = None;
                    for (i, item) in items.as_mut().iter_mut().enumerate() {
                        if let DeValue::Table(inner) = item.get_mut() {
                            path.push(format!("[{i}]"));
                            found = remove_key_at(inner, offset, path);
                            path.pop();
                            if found.is_some() {
                                break;
                            }
                        }
                    }
                    found
                }
                _ => None,
            }
        };
        if inner.is_some() {
            return inner;
        }
        if covers {
            let p = dotted(path);
            table.remove(key.get_ref().as_ref());
            return Some(p);
        }
        path.pop();
    }
    None
}

/// `["route", "[1]", "via"]` → `route[1].via`.
fn dotted(path: &[String]) -> String {
    let mut s = String::new();
    for part in path {
        if !s.is_empty() && !part.starts_with('[') {
            s.push('.');
        }
        s.push_str(part);
    }
    s
}

pub use crate::policy::route::Via;

impl Config {
    pub fn resolve(&self, path: &str) -> PathBuf {
        resolve_in(&self.base_dir, path)
    }

    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.file
            .server
            .listen
            .iter()
            .filter_map(|l| l.get_ref().parse().ok())
            .collect()
    }

    /// The number of shards: `server.shards`, or one per core for 0.
    pub fn shard_count(&self) -> usize {
        match self.file.server.shards {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }

    /// The journal sizes of `[server]`.
    pub fn journal_options(&self) -> crate::spool::Options {
        crate::spool::Options {
            segment_size: self.file.server.spool_segment_size.0,
            large_message: self.file.server.spool_large_message.0 as usize,
        }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.resolve(&self.file.server.spool_dir)
    }

    pub fn hostname(&self) -> String {
        let h = self.file.server.hostname.get_ref();
        if h.is_empty() {
            system_hostname()
        } else {
            h.clone()
        }
    }

    /// `server.accept_domains`, compiled for lookups.
    pub fn accept_domains(&self) -> AcceptDomains {
        let domains: Vec<&str> = self
            .file
            .server
            .accept_domains
            .iter()
            .map(|d| d.get_ref().as_str())
            .collect();
        AcceptDomains::new(&domains)
    }

    pub fn limits(&self) -> Limits {
        let l = &self.file.limits;
        Limits {
            message_size: usize::try_from(l.message_size.0).unwrap_or(usize::MAX),
            recipients: l.recipients,
            connections: l
                .connections
                .unwrap_or_else(crate::policy::limits::default_connections),
            connections_per_ip: l.connections_per_ip,
            command_timeout: l.command_timeout.0,
            data_timeout: l.data_timeout.0,
            min_data_rate: l.min_data_rate,
            errors: l.errors,
            shutdown_timeout: l.shutdown_timeout.0,
            message_buffer: usize::try_from(l.message_buffer.0).unwrap_or(usize::MAX),
            inflight_data: l.inflight_data.0,
            bare_line_endings: match l.bare_line_endings {
                units::BareLineEndings::Reject => crate::smtp::data::BareLineEndings::Reject,
                units::BareLineEndings::Normalize => crate::smtp::data::BareLineEndings::Normalize,
            },
            ..Limits::default()
        }
    }

    /// Generates the self-signed certificate if the file asks for it and
    /// its files are absent. Returns the path written, if any.
    pub fn ensure_certificates(&self) -> Result<Option<PathBuf>, LoadErrors> {
        if !self.file.tls.generate_self_signed {
            return Ok(None);
        }
        let Some(first) = self.file.tls.certificates.first() else {
            return Ok(None);
        };
        let (cert, key) = (
            self.resolve(&first.get_ref().cert),
            self.resolve(&first.get_ref().key),
        );
        match crate::tls::ensure_self_signed(&cert, &key, &self.hostname()) {
            Ok(true) => Ok(Some(cert)),
            Ok(false) => Ok(None),
            Err(e) => Err(LoadErrors(vec![e])),
        }
    }

    /// Every certificate file the configuration names (server and client).
    pub fn certificate_files(&self) -> Vec<PathBuf> {
        let t = &self.file.tls;
        t.certificates
            .iter()
            .map(|c| self.resolve(&c.get_ref().cert))
            .chain(t.client_certificate.iter().map(|c| self.resolve(&c.cert)))
            .collect()
    }

    /// The certificate files the metrics and the status page show: the
    /// configured ones and the one ACME keeps (which warns of its own end
    /// itself: renewal is due long before).
    pub fn shown_certificate_files(&self) -> Vec<PathBuf> {
        let mut files = self.certificate_files();
        files.extend(self.acme().map(|a| a.store().certificate_path()));
        files
    }

    /// The CA store, the compiled profiles and the outbound TLS
    /// configurations: everything but the server certificates (`probe`
    /// needs only these).
    pub fn outbound(
        &self,
    ) -> Result<
        (
            rustls::RootCertStore,
            Profiles,
            crate::tls::outbound::Outbound,
        ),
        LoadErrors,
    > {
        let mut problems = Vec::new();
        let tls_cfg = &self.file.tls;
        // CERT-1: system roots and the configured CA files.
        let ca_files: Vec<PathBuf> = tls_cfg.ca_files.iter().map(|f| self.resolve(f)).collect();
        let roots = match crate::tls::ca_store(tls_cfg.system_roots, &ca_files) {
            Ok(r) => r,
            Err(errs) => {
                problems.extend(errs);
                rustls::RootCertStore::empty()
            }
        };
        let profiles = self.profiles.clone();
        if !problems.is_empty() {
            return Err(LoadErrors(problems));
        }
        // OUT-5: the client certificate for partners that ask for one.
        let client_cert = match &tls_cfg.client_certificate {
            Some(pair) => match load_pair(&self.base_dir, pair) {
                Ok((ck, _)) => Some(ck),
                Err(e) => return Err(LoadErrors(vec![e])),
            },
            None => None,
        };
        let mut per_profile = Vec::new();
        for p in &profiles.list {
            match crate::tls::outbound::client_config(
                Some(&p.client),
                client_cert.clone(),
                &self.tls,
            ) {
                Ok(c) => per_profile.push(c),
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(LoadErrors(problems));
        }
        let outbound = crate::tls::outbound::Outbound {
            per_profile,
            default: crate::tls::outbound::client_config(None, None, &self.tls)
                .map_err(|e| LoadErrors(vec![e]))?,
            roots: Arc::new(roots.clone()),
            // The files loaded above, so this cannot fail now.
            web_roots: Arc::new(crate::tls::web_roots(
                &crate::tls::ca_store(false, &ca_files)
                    .unwrap_or_else(|_| rustls::RootCertStore::empty()),
            )),
        };
        Ok((roots, profiles, outbound))
    }

    /// `[outbound] dane` in force: off without DNSSEC, `enforce` unless
    /// set.
    pub fn dane(&self) -> crate::policy::Enforcement {
        use crate::policy::Enforcement;
        match (self.file.dns.dnssec, &self.file.outbound.dane) {
            (crate::dns::Dnssec::Off, _) => Enforcement::Off,
            (_, Some(d)) => *d.get_ref(),
            (_, None) => Enforcement::Enforce,
        }
    }

    /// `[tls_rpt]` with its defaults.
    pub fn tls_rpt(&self) -> crate::tlsrpt::Settings {
        let t = &self.file.tls_rpt;
        let d = crate::tlsrpt::Settings::for_host(&self.hostname());
        crate::tlsrpt::Settings {
            send: t.send.unwrap_or(d.send),
            only_failures: t.only_failures.unwrap_or(d.only_failures),
            suppress: t
                .suppress
                .iter()
                .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            submitter: crate::tlsrpt::Submitter {
                organization: t.organization.clone().unwrap_or(d.submitter.organization),
                contact: t.contact.clone().unwrap_or(d.submitter.contact),
                hostname: d.submitter.hostname,
            },
            from: t.from.clone().unwrap_or(d.from),
            spread: t.spread.map_or(d.spread, |s| s.0.as_secs()),
        }
    }

    /// `[acme]`, checked; `None` without the section.
    pub fn acme(&self) -> Option<crate::acme::Settings> {
        let a = self.file.acme.as_ref()?;
        let mut domains: Vec<String> = a
            .domains
            .iter()
            .map(|d| crate::model::canonical_domain(d.get_ref()))
            .collect();
        domains.sort();
        domains.dedup();
        Some(crate::acme::Settings {
            directory: a.directory.get_ref().clone(),
            ca_files: a.ca_files.iter().map(|f| self.resolve(f)).collect(),
            contact: a.contact.iter().map(|c| c.get_ref().clone()).collect(),
            domains,
            challenge: a.challenge,
            http_listen: a
                .http_listen
                .get_ref()
                .parse()
                .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 80))),
            tls_alpn_listen: a
                .tls_alpn_listen
                .get_ref()
                .parse()
                .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 443))),
            key: a.key,
            renew_before: a.renew_before.0,
            key_lifetime: a.key_lifetime.0,
            dane: a.dane.as_ref().map(|d| {
                let mut ports: Vec<u16> = self.listen_addrs().iter().map(|l| l.port()).collect();
                ports.sort_unstable();
                ports.dedup();
                crate::acme::dane::DaneSettings {
                    update_server: crate::acme::dane::parse_server(d.update_server.get_ref())
                        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 53))),
                    zone: format!(
                        "{}.",
                        d.zone.get_ref().trim_end_matches('.').to_ascii_lowercase()
                    ),
                    tsig_name: d.tsig_name.get_ref().clone(),
                    tsig_algorithm: d.tsig_algorithm,
                    // Checked when the file was loaded.
                    tsig_secret: match (&d.tsig_secret, &d.tsig_secret_file) {
                        (Some(s), _) => crate::acme::dane::decode_secret(s.get_ref()),
                        (None, Some(f)) => read_tsig_secret(&self.resolve(f.get_ref())).ok(),
                        (None, None) => None,
                    }
                    .unwrap_or_default(),
                    ttl: d.ttl.0,
                    ports,
                }
            }),
            dir: self.spool_dir().join("acme"),
        })
    }

    /// `[fleet]`, checked; `None` without the section. The node name
    /// defaults to the host name; a password file's password goes into the
    /// URL.
    pub fn fleet(&self) -> Option<crate::fleet::Settings> {
        let f = self.file.fleet.as_ref()?;
        let mut url = f.redis.get_ref().clone();
        if let Some(file) = &f.password_file {
            if let Ok(password) = std::fs::read_to_string(self.resolve(file.get_ref())) {
                let password: String = password
                    .trim()
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                            char::from(b).to_string()
                        }
                        other => format!("%{other:02X}"),
                    })
                    .collect();
                if let Some(i) = url.find("://") {
                    url.insert_str(i + 3, &format!(":{password}@"));
                }
            }
        }
        Some(crate::fleet::Settings {
            url,
            node: f
                .node
                .as_ref()
                .map_or_else(system_hostname, |n| n.get_ref().clone()),
        })
    }

    /// `[outbound] mta_sts` in force (`enforce` unless set).
    pub fn mta_sts(&self) -> crate::policy::Enforcement {
        self.file
            .outbound
            .mta_sts
            .unwrap_or(crate::policy::Enforcement::Enforce)
    }

    /// Loads certificates and builds the snapshot. Every certificate
    /// problem is reported.
    pub fn snapshot(&self) -> Result<Snapshot, LoadErrors> {
        let mut problems = Vec::new();
        let tls_cfg = &self.file.tls;
        // CERT-2: every certificate, chosen by SNI; the first is the default.
        let mut certs = Vec::new();
        for pair in &tls_cfg.certificates {
            match load_pair(&self.base_dir, pair.get_ref()) {
                Ok(loaded) => certs.push(loaded),
                Err(e) => problems.push(e),
            }
        }
        // The certificate ACME keeps, for its names (after the static ones:
        // the first static certificate stays the default).
        let acme = self.acme();
        if let Some(a) = &acme {
            let path = a.store().certificate_path();
            if path.exists() {
                match crate::tls::load_cert_and_key(&path, &path)
                    .and_then(|ck| crate::tls::certified_key(ck, &path))
                {
                    Ok(ck) => certs.push((ck, path)),
                    Err(e) => problems.push(e),
                }
            }
        }
        let (roots, profiles, outbound) = match self.outbound() {
            Ok(parts) if problems.is_empty() => parts,
            Ok(_) => return Err(LoadErrors(problems)),
            Err(more) => {
                problems.extend(more.0);
                return Err(LoadErrors(problems));
            }
        };
        let routes = self.routes.clone();
        let client_verifier = crate::tls::client_verifier(roots);
        let (mut tls, mut tls_ask_cert) = (None, None);
        if let Some(path) = certs.first().map(|c| c.1.clone()) {
            let build = || -> Result<_, crate::tls::TlsError> {
                let resolver = Arc::new(crate::tls::SniResolver::new(certs.clone())?);
                let plain =
                    crate::tls::server_config_with(resolver.clone(), None, &path, &self.tls)?;
                let ask = Arc::new(crate::tls::AskForCertificate::new(client_verifier.as_ref()));
                let asking = crate::tls::server_config_with(resolver, Some(ask), &path, &self.tls)?;
                Ok((plain, asking))
            };
            match build() {
                Ok((plain, asking)) => {
                    tls = Some(plain);
                    tls_ask_cert = Some(asking);
                }
                Err(e) => return Err(LoadErrors(vec![e])),
            }
        }
        Ok(Snapshot {
            hostname: self.hostname(),
            accept_domains: self.accept_domains(),
            limits: self.limits(),
            tls,
            relay_everyone: false,
            profiles,
            tls_ask_cert,
            client_verifier,
            routes,
            outbound,
            proxy_from: self.proxy_from.clone(),
            dane: self.dane(),
            mta_sts: self.mta_sts(),
            honour_tls_required_no: self.file.outbound.tls_required_header
                == schema::TlsRequiredHeader::Honour,
            tls_rpt: self.tls_rpt(),
            connection_cache: self.connection_cache(),
            queue: self.queue_settings(),
            acme,
        })
    }

    /// The resolver thread, with `[dns] servers` (or /etc/resolv.conf),
    /// as the gateway, `probe` and `explain --dns` use it.
    pub fn start_resolver(&self) -> std::io::Result<crate::dns::Resolver> {
        let servers: Vec<_> = self
            .file
            .dns
            .servers
            .iter()
            .filter_map(|s| crate::dns::parse_server(s.get_ref()))
            .collect();
        let dnssec = self.file.dns.dnssec;
        if dnssec == crate::dns::Dnssec::TrustAd && !servers.iter().all(|s| s.ip().is_loopback()) {
            // The AD bit is only as good as the path it came over.
            tracing::warn!(
                "[dns] dnssec = \"trust-ad\" trusts the resolver's AD bit: use a validating resolver on loopback"
            );
        }
        let anchor = self
            .file
            .dns
            .trust_anchor
            .as_deref()
            .map(|f| self.resolve(f));
        crate::dns::Resolver::start(
            &servers,
            std::time::Duration::from_secs(5),
            dnssec,
            anchor.as_deref(),
            Some(crate::dns::mta_sts::cache_file(&self.spool_dir())),
            self.file
                .outbound
                .mta_sts_refresh
                .map_or(crate::dns::mta_sts::REFRESH_EVERY, |s| s.0),
        )
    }

    /// `[queue]`'s delivery settings (the connection cache aside).
    pub fn queue_settings(&self) -> crate::snapshot::QueueSettings {
        let q = &self.file.queue;
        crate::snapshot::QueueSettings {
            retry: q.retry.iter().map(|s| s.0).collect(),
            lifetime: q.lifetime.0,
            delay_notice: q.delay_notice.0,
            per_destination: q.destination_concurrency,
            messages_per_connection: q.messages_per_connection,
            command_timeout: q.command_timeout.0,
            data_timeout: q.data_timeout.0,
        }
    }

    /// `[queue] connection_idle` and `idle_connections`.
    pub fn connection_cache(&self) -> crate::snapshot::ConnectionCache {
        let q = &self.file.queue;
        crate::snapshot::ConnectionCache {
            idle: q.connection_idle.0,
            per_shard: q.idle_connections,
        }
    }
}

/// The system host name (gethostname(2)), or `localhost`.
#[allow(unsafe_code)] // FFI (libc); SAFETY comment at the call
pub fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many octets.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if valid_domain(&name) {
        name
    } else {
        "localhost".into()
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
