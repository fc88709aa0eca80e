//! Certificates the gateway orders and renews itself (`[acme]`, RFC 8555;
//! docs/tls-guide.md, "Certificates by ACME").
//!
//! One thread (`acme`) keeps the certificate: it asks [`plan::next`] what
//! is due, runs the order ([`order`]), stores the result
//! ([`store::Store`], `SPOOL/acme/`) and asks the gateway to build a new
//! snapshot with it, so new connections present it without a restart;
//! connections already open keep theirs. A renewal keeps the key (a DANE
//! `3 1 1` record stays valid) until the key is older than
//! `key_lifetime`. A failed order is logged, counted and retried with
//! backoff; the stored certificate keeps being served meanwhile.

pub mod order;
pub mod plan;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `http_listen`'s default: where ACME servers validate http-01 (RFC 8555
/// §8.3: port 80).
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:80";
/// `tls_alpn_listen`'s default: where ACME servers validate tls-alpn-01
/// (RFC 8737 §3: port 443).
pub const DEFAULT_TLS_ALPN_LISTEN: &str = "0.0.0.0:443";
/// `renew_before`'s default.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// `key_lifetime`'s default.
pub const DEFAULT_KEY_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// How the ACME server checks that the gateway holds a name.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, strum::IntoStaticStr,
)]
pub enum Challenge {
    /// RFC 8555 §8.3: a token served over HTTP on `http_listen`.
    #[default]
    #[serde(rename = "http-01")]
    #[strum(serialize = "http-01")]
    Http01,
    /// RFC 8737: a validation certificate in a TLS handshake with ALPN
    /// `acme-tls/1` on `tls_alpn_listen`.
    #[serde(rename = "tls-alpn-01")]
    #[strum(serialize = "tls-alpn-01")]
    TlsAlpn01,
}

/// The certificate's key.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, strum::IntoStaticStr,
)]
pub enum KeyKind {
    #[default]
    #[serde(rename = "ecdsa-p256")]
    #[strum(serialize = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    #[strum(serialize = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    #[strum(serialize = "rsa-2048")]
    Rsa2048,
}

/// `[acme]`, checked (part of the snapshot: a reload applies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub directory: String,
    pub ca_files: Vec<PathBuf>,
    pub contact: Vec<String>,
    /// Canonical (lower case, A-labels), sorted, without repeats.
    pub domains: Vec<String>,
    pub challenge: Challenge,
    pub http_listen: SocketAddr,
    pub tls_alpn_listen: SocketAddr,
    pub key: KeyKind,
    pub renew_before: Duration,
    pub key_lifetime: Duration,
    /// `SPOOL/acme`.
    pub dir: PathBuf,
}

impl Settings {
    pub fn store(&self) -> store::Store {
        store::Store::new(self.dir.clone())
    }

    fn wanted(&self) -> plan::Wanted {
        plan::Wanted {
            names: self.domains.clone(),
            renew_before: self.renew_before,
            key_lifetime: self.key_lifetime,
        }
    }
}

/// The ACME figures for the metrics endpoint and the status page.
#[derive(Debug, Default)]
pub struct Stats {
    /// The served certificate's end (Unix time); 0: none.
    pub not_after: AtomicI64,
    pub renewals_ok: AtomicU64,
    pub renewals_failed: AtomicU64,
}

/// What `sealgate acme renew` asks of the running gateway.
pub enum Command {
    /// Order now; the answer is the order's outcome.
    Renew(crossbeam_channel::Sender<Result<String, String>>),
}

/// Sends commands to the ACME thread.
#[derive(Clone)]
pub struct Handle {
    tx: crossbeam_channel::Sender<Command>,
}

impl Handle {
    /// Orders now and waits for the outcome (at most `limit`).
    pub fn renew(&self, limit: Duration) -> Result<String, String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(Command::Renew(tx))
            .map_err(|_| "the ACME thread has stopped".to_string())?;
        rx.recv_timeout(limit)
            .map_err(|_| format!("no outcome within {} s", limit.as_secs()))?
    }
}

/// The gateway's side: the current settings (`None` without `[acme]`)
/// and how a new certificate goes into service.
pub trait Gateway: Send + 'static {
    fn settings(&self) -> Option<Settings>;
    /// Builds and swaps in a snapshot with the stored certificate.
    fn install(&self) -> Result<(), String>;
    fn stopping(&self) -> bool;
}

/// Starts the ACME thread.
pub fn start(gateway: impl Gateway, stats: Arc<Stats>) -> std::io::Result<Handle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("acme".into())
        .spawn(move || run(gateway, stats, rx))?;
    Ok(Handle { tx })
}

/// The longest the thread sleeps between looks (a reload may have added
/// or changed `[acme]`; the stop flag is read).
const LOOK_EVERY: Duration = Duration::from_secs(60);

fn unix_now() -> i64 {
    i64::try_from(crate::model::unix_now()).unwrap_or(i64::MAX)
}

fn run(gateway: impl Gateway, stats: Arc<Stats>, rx: crossbeam_channel::Receiver<Command>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("acme: cannot start: {e}");
            return;
        }
    };
    let mut asked: Vec<crossbeam_channel::Sender<Result<String, String>>> = Vec::new();
    let mut warned_expiry_day = 0;
    loop {
        if gateway.stopping() {
            return;
        }
        let Some(settings) = gateway.settings() else {
            for reply in asked.drain(..) {
                let _ = reply.send(Err("no [acme] section in the running configuration".into()));
            }
            match rx.recv_timeout(LOOK_EVERY) {
                Ok(Command::Renew(reply)) => asked.push(reply),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            continue;
        };
        let store = settings.store();
        let (state, stored) = match (store.state(), store.certificate()) {
            (Ok(state), Ok(stored)) => (state, stored),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("acme: {e}");
                for reply in asked.drain(..) {
                    let _ = reply.send(Err(e.to_string()));
                }
                std::thread::sleep(LOOK_EVERY);
                continue;
            }
        };
        let now = unix_now();
        if let Some(c) = &stored {
            if stats.not_after.swap(c.not_after, Ordering::Relaxed) != c.not_after {
                // Said once per certificate: at start, and after a renewal.
                tracing::info!(
                    "acme: the certificate for {} is in service: serial {}, not after {}, renewal at {}",
                    c.names.join(", "),
                    c.serial,
                    crate::model::rfc3339(c.not_after),
                    crate::model::rfc3339(c.not_after - plan::secs(settings.renew_before))
                );
            }
            let day = now / 86_400;
            let left = c.not_after - now;
            if left < plan::secs(plan::EXPIRY_WARNING) && day != warned_expiry_day {
                warned_expiry_day = day;
                tracing::warn!(
                    "acme: the certificate for {} ends in {} day(s) ({}); renewal has not succeeded",
                    c.names.join(", "),
                    left.max(0) / 86_400,
                    crate::model::rfc3339(c.not_after)
                );
            }
        }
        let facts = stored.as_ref().map(|c| plan::Stored {
            names: c.names.clone(),
            not_after: c.not_after,
            key_since: state.key_since,
        });
        let next = plan::next(
            facts.as_ref(),
            &settings.wanted(),
            state.failures(),
            !asked.is_empty(),
            now,
        );
        match next {
            plan::Next::Wait { until } => {
                let wait = Duration::from_secs(u64::try_from(until - now).unwrap_or(0).max(1))
                    .min(LOOK_EVERY);
                match rx.recv_timeout(wait) {
                    Ok(Command::Renew(reply)) => asked.push(reply),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
            }
            plan::Next::Order { reason, new_key } => {
                let outcome =
                    runtime.block_on(renew(&settings, &gateway, state, reason, new_key, now));
                match &outcome {
                    Ok(_) => stats.renewals_ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => stats.renewals_failed.fetch_add(1, Ordering::Relaxed),
                };
                for reply in asked.drain(..) {
                    let _ = reply.send(outcome.clone());
                }
            }
        }
    }
}

/// One order and what follows it: the certificate stored and put into
/// service, or the failure recorded. Returns the line that says so.
async fn renew(
    settings: &Settings,
    gateway: &impl Gateway,
    mut state: store::State,
    reason: plan::Reason,
    new_key: bool,
    now: i64,
) -> Result<String, String> {
    let store = settings.store();
    let names = settings.domains.join(", ");
    let why: &'static str = reason.into();
    tracing::info!(
        "acme: ordering a certificate for {names} from {} ({}, {} key)",
        settings.directory,
        why.replace('_', " "),
        if new_key { "new" } else { "same" }
    );
    let result = async {
        let key = match (new_key, store.key_pem().map_err(|e| e.to_string())?) {
            (false, Some(pem)) => {
                rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("the stored key: {e}"))?
            }
            (true, _) | (false, None) => {
                crate::cert::generate_key(<&str>::from(settings.key), false)
                    .map_err(|e| e.to_string())?
            }
        };
        let account = store.account().map_err(|e| e.to_string())?;
        let ordered = order::order(settings, account.as_deref(), &key)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(json) = &ordered.new_account {
            store.save_account(json).map_err(|e| e.to_string())?;
        }
        store
            .install(&key.serialize_pem(), &ordered.chain)
            .map_err(|e| e.to_string())?;
        Ok::<bool, String>(new_key || state.key_since == 0)
    }
    .await;
    match result {
        Ok(key_is_new) => {
            if key_is_new {
                state.key_since = now;
            }
            state.failures = 0;
            state.last_error = None;
            state.last_renewal = now;
            if let Err(e) = store.save_state(&state) {
                tracing::warn!("acme: {e}");
            }
            let installed = gateway.install();
            let facts = store.certificate().ok().flatten();
            let line = match (&installed, facts) {
                (Ok(()), Some(c)) => format!(
                    "acme: installed the certificate for {names}: serial {}, not after {}, issuer {}",
                    c.serial,
                    crate::model::rfc3339(c.not_after),
                    c.issuer
                ),
                (Ok(()), None) => format!("acme: installed the certificate for {names}"),
                (Err(e), _) => format!(
                    "acme: stored the certificate for {names}, but it is not in service: {e}"
                ),
            };
            match installed {
                Ok(()) => tracing::info!("{line}"),
                Err(_) => tracing::error!("{line}"),
            }
            Ok(line)
        }
        Err(why) => {
            state.failures = state.failures.saturating_add(1);
            state.last_failure = now;
            state.last_error = Some(why.clone());
            if let Err(e) = store.save_state(&state) {
                tracing::warn!("acme: {e}");
            }
            let line = format!(
                "acme: the order for {names} failed: {why}; the next try in {} s; the certificate in service stays",
                plan::backoff(state.failures).as_secs()
            );
            tracing::warn!("{line}");
            Err(line)
        }
    }
}

/// `sealgate acme status`: the certificate and its keeping, read from
/// `SPOOL/acme` (the gateway need not run).
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub directory: String,
    pub domains: Vec<String>,
    pub challenge: &'static str,
    pub key: &'static str,
    pub certificate: Option<store::Certificate>,
    /// When the renewal falls due (Unix time).
    pub renewal_due: Option<i64>,
    /// When the key went into service (Unix time); 0: not yet.
    pub key_since: i64,
    pub last_renewal: i64,
    pub failures: u32,
    pub last_error: Option<String>,
    /// The next step, in words.
    pub next: String,
}

impl View {
    pub fn read(settings: &Settings, now: i64) -> std::io::Result<View> {
        let store = settings.store();
        let state = store.state()?;
        let certificate = store.certificate()?;
        let facts = certificate.as_ref().map(|c| plan::Stored {
            names: c.names.clone(),
            not_after: c.not_after,
            key_since: state.key_since,
        });
        let wanted = settings.wanted();
        let next = match plan::next(facts.as_ref(), &wanted, state.failures(), false, now) {
            plan::Next::Wait { until } if facts.is_some() && state.failures == 0 => {
                format!("renewal at {}", crate::model::rfc3339(until))
            }
            plan::Next::Wait { until } => {
                format!("next try at {}", crate::model::rfc3339(until))
            }
            plan::Next::Order { reason, new_key } => format!(
                "order now ({}{})",
                <&str>::from(reason).replace('_', " "),
                if new_key { ", new key" } else { "" }
            ),
        };
        Ok(View {
            directory: settings.directory.clone(),
            domains: settings.domains.clone(),
            challenge: settings.challenge.into(),
            key: settings.key.into(),
            renewal_due: facts.as_ref().map(|f| plan::renewal_due(f, &wanted)),
            certificate,
            key_since: state.key_since,
            last_renewal: state.last_renewal,
            failures: state.failures,
            last_error: state.last_error,
            next,
        })
    }

    /// The text form.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let time = |t: i64| {
            if t > 0 {
                crate::model::rfc3339(t)
            } else {
                "never".into()
            }
        };
        let mut out = format!(
            "ACME certificate for {}\n  directory:     {}\n  challenge:     {}\n",
            self.domains.join(", "),
            self.directory,
            self.challenge
        );
        match &self.certificate {
            Some(c) => {
                let _ = write!(
                    out,
                    "  names:         {}\n  issuer:        {}\n  serial:        {}\n  valid:         {} to {}\n",
                    c.names.join(", "),
                    c.issuer,
                    c.serial,
                    time(c.not_before),
                    time(c.not_after)
                );
                let _ = writeln!(
                    out,
                    "  key:           {}, in service since {}\n  TLSA 3 1 1:    {}",
                    self.key,
                    time(self.key_since),
                    c.spki_sha256
                );
                if let Some(due) = self.renewal_due {
                    let _ = writeln!(out, "  renewal due:   {}", time(due));
                }
            }
            None => out.push_str("  certificate:   none yet\n"),
        }
        let _ = writeln!(out, "  last renewal:  {}", time(self.last_renewal));
        match &self.last_error {
            Some(e) => {
                let _ = writeln!(out, "  last failure:  {e} ({} in a row)", self.failures);
            }
            None => out.push_str("  last failure:  none\n"),
        }
        let _ = writeln!(out, "  next:          {}", self.next);
        out
    }
}
