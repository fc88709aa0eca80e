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

pub mod dane;
pub mod order;
pub mod plan;
pub mod roll;
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
/// `[acme.dane] ttl`'s default.
pub const DEFAULT_DANE_TTL: Duration = Duration::from_secs(3600);
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
    /// `[acme.dane]`: the keys roll with their TLSA records.
    pub dane: Option<dane::DaneSettings>,
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
    /// With `[acme.dane]`: the roll's [`RollPhase`], as a number.
    pub roll: std::sync::atomic::AtomicU8,
}

/// Where a key roll stands, for `sealgate_acme_key_roll`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr, strum::FromRepr,
)]
#[strum(serialize_all = "lowercase")]
#[repr(u8)]
pub enum RollPhase {
    /// No `[acme.dane]`.
    Off,
    /// Current and next keys published.
    Steady,
    /// A roll waits for the next key's record.
    Waiting,
    /// The next key is in service; the replaced key's records remain.
    Switched,
}

impl RollPhase {
    fn of(d: &roll::DaneState) -> RollPhase {
        match (&d.old, d.roll_asked) {
            (Some(_), _) => RollPhase::Switched,
            (None, true) => RollPhase::Waiting,
            (None, false) => RollPhase::Steady,
        }
    }
}

/// What `sealgate acme renew` and `acme roll` ask of the running gateway.
pub enum Command {
    /// Order now on the same key; the answer is the order's outcome.
    Renew(Reply),
    /// Roll the key: with `[acme.dane]`, as soon as the next key's record
    /// has been seen validated for two TTLs (the answer says so at once);
    /// without, order now on a new key.
    Roll(Reply),
}

type Reply = crossbeam_channel::Sender<Result<String, String>>;

/// Sends commands to the ACME thread.
#[derive(Clone)]
pub struct Handle {
    tx: crossbeam_channel::Sender<Command>,
}

impl Handle {
    /// Orders now and waits for the outcome (at most `limit`).
    pub fn renew(&self, limit: Duration) -> Result<String, String> {
        self.ask(Command::Renew, limit)
    }

    /// Starts a key roll and waits for its answer (at most `limit`).
    pub fn roll(&self, limit: Duration) -> Result<String, String> {
        self.ask(Command::Roll, limit)
    }

    fn ask(&self, command: fn(Reply) -> Command, limit: Duration) -> Result<String, String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(command(tx))
            .map_err(|_| "the ACME thread has stopped".to_string())?;
        rx.recv_timeout(limit)
            .map_err(|_| format!("no outcome within {} s", limit.as_secs()))?
    }
}

/// The gateway's side: the current settings (`None` without `[acme]`),
/// how a new certificate goes into service, and its validating resolver.
pub trait Gateway: Send + 'static {
    fn settings(&self) -> Option<Settings>;
    /// Builds and swaps in a snapshot with the stored certificate.
    fn install(&self) -> Result<(), String>;
    fn stopping(&self) -> bool;
    /// The validated TLSA records at `_PORT._tcp.NAME`; `None` when the
    /// answer is not signed.
    fn tlsa(&self, name: &str, port: u16) -> Result<Option<Vec<crate::model::Tlsa>>, String>;
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

/// What the commands waiting for the thread asked.
#[derive(Default)]
struct Asked {
    renew: Vec<Reply>,
    roll: Vec<Reply>,
}

impl Asked {
    fn take(&mut self, command: Command) {
        match command {
            Command::Renew(r) => self.renew.push(r),
            Command::Roll(r) => self.roll.push(r),
        }
    }

    fn answer_renew(&mut self, outcome: &Result<String, String>) {
        for reply in self.renew.drain(..) {
            let _ = reply.send(outcome.clone());
        }
    }

    fn answer_roll(&mut self, outcome: &Result<String, String>) {
        for reply in self.roll.drain(..) {
            let _ = reply.send(outcome.clone());
        }
    }
}

/// Waits up to `wait` for a command; false when every handle is gone.
fn wait_for_command(
    rx: &crossbeam_channel::Receiver<Command>,
    asked: &mut Asked,
    wait: Duration,
) -> bool {
    match rx.recv_timeout(wait) {
        Ok(command) => {
            asked.take(command);
            true
        }
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => true,
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => false,
    }
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
    let mut asked = Asked::default();
    let mut warned_expiry_day = 0;
    loop {
        if gateway.stopping() {
            return;
        }
        let Some(settings) = gateway.settings() else {
            let none = Err("no [acme] section in the running configuration".to_string());
            asked.answer_renew(&none);
            asked.answer_roll(&none);
            if !wait_for_command(&rx, &mut asked, LOOK_EVERY) {
                return;
            }
            continue;
        };
        let store = settings.store();
        let (state, stored) = match (store.state(), store.certificate()) {
            (Ok(state), Ok(stored)) => (state, stored),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("acme: {e}");
                let failed = Err(e.to_string());
                asked.answer_renew(&failed);
                asked.answer_roll(&failed);
                if !wait_for_command(&rx, &mut asked, LOOK_EVERY) {
                    return;
                }
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
        let wait = match &settings.dane {
            Some(dane) => runtime.block_on(dane_turn(
                &settings, dane, &gateway, &stats, &mut asked, now,
            )),
            None => plain_turn(
                &settings,
                &gateway,
                &stats,
                &runtime,
                &mut asked,
                (state, stored.as_ref()),
                now,
            ),
        };
        if !wait.is_zero() && !wait_for_command(&rx, &mut asked, wait) {
            return;
        }
    }
}

/// Without `[acme.dane]`: order when [`plan::next`] says so; a roll is an
/// order on a new key. Returns how long to wait before the next look.
fn plain_turn(
    settings: &Settings,
    gateway: &impl Gateway,
    stats: &Stats,
    runtime: &tokio::runtime::Runtime,
    asked: &mut Asked,
    (mut state, stored): (store::State, Option<&store::Certificate>),
    now: i64,
) -> Duration {
    let facts = stored.map(|c| plan::Stored {
        names: c.names.clone(),
        not_after: c.not_after,
        key_since: state.key_since,
    });
    let rolling = !asked.roll.is_empty();
    let next = plan::next(
        facts.as_ref(),
        &settings.wanted(),
        state.failures(),
        !asked.renew.is_empty() || rolling,
        now,
    );
    match next {
        plan::Next::Wait { until } => {
            Duration::from_secs(u64::try_from(until - now).unwrap_or(0).max(1)).min(LOOK_EVERY)
        }
        plan::Next::Order { reason, new_key } => {
            let new_key = new_key || rolling;
            let store = settings.store();
            let key = match (new_key, store.key_pem()) {
                (false, Ok(Some(pem))) => {
                    rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("the stored key: {e}"))
                }
                (_, Err(e)) => Err(e.to_string()),
                (true, Ok(_)) | (false, Ok(None)) => new_key_pair(settings),
            };
            let outcome = match key {
                Ok(key) => runtime.block_on(order_and_install(
                    settings,
                    gateway,
                    &key,
                    <&str>::from(reason),
                    new_key,
                )),
                Err(e) => Err(e),
            };
            let key_is_new = new_key || state.key_since == 0;
            let outcome = record(settings, stats, &mut state, outcome, key_is_new, now);
            asked.answer_renew(&outcome);
            asked.answer_roll(&outcome);
            Duration::ZERO
        }
    }
}

fn new_key_pair(settings: &Settings) -> Result<rcgen::KeyPair, String> {
    crate::cert::generate_key(<&str>::from(settings.key), false).map_err(|e| e.to_string())
}

/// One order on `key`, the certificate stored and put into service.
/// Returns the line that says so.
async fn order_and_install(
    settings: &Settings,
    gateway: &impl Gateway,
    key: &rcgen::KeyPair,
    why: &str,
    new_key: bool,
) -> Result<String, String> {
    let store = settings.store();
    let names = settings.domains.join(", ");
    tracing::info!(
        "acme: ordering a certificate for {names} from {} ({}, {} key {})",
        settings.directory,
        why.replace('_', " "),
        if new_key { "new" } else { "same" },
        store::spki_sha256(key)
    );
    let account = store.account().map_err(|e| e.to_string())?;
    let ordered = order::order(settings, account.as_deref(), key)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(json) = &ordered.new_account {
        store.save_account(json).map_err(|e| e.to_string())?;
    }
    store
        .install(&key.serialize_pem(), &ordered.chain)
        .map_err(|e| e.to_string())?;
    let facts = store.certificate().ok().flatten();
    let line = match (gateway.install(), facts) {
        (Ok(()), Some(c)) => format!(
            "acme: installed the certificate for {names}: serial {}, not after {}, issuer {}",
            c.serial,
            crate::model::rfc3339(c.not_after),
            c.issuer
        ),
        (Ok(()), None) => format!("acme: installed the certificate for {names}"),
        (Err(e), _) => {
            return Err(format!(
                "stored the certificate for {names}, but it is not in service: {e}"
            ))
        }
    };
    tracing::info!("{line}");
    Ok(line)
}

/// Records an order's outcome in the state file and the counters; a
/// failure is logged with the next try.
fn record(
    settings: &Settings,
    stats: &Stats,
    state: &mut store::State,
    outcome: Result<String, String>,
    key_is_new: bool,
    now: i64,
) -> Result<String, String> {
    let names = settings.domains.join(", ");
    let outcome = match outcome {
        Ok(line) => {
            stats.renewals_ok.fetch_add(1, Ordering::Relaxed);
            if key_is_new {
                state.key_since = now;
            }
            state.failures = 0;
            state.last_error = None;
            state.last_renewal = now;
            Ok(line)
        }
        Err(why) => {
            stats.renewals_failed.fetch_add(1, Ordering::Relaxed);
            state.failures = state.failures.saturating_add(1);
            state.last_failure = now;
            state.last_error = Some(why.clone());
            let line = format!(
                "acme: the order for {names} failed: {why}; the next try in {} s; the certificate in service stays",
                plan::backoff(state.failures).as_secs()
            );
            tracing::warn!("{line}");
            Err(line)
        }
    };
    if let Err(e) = settings.store().save_state(state) {
        tracing::warn!("acme: {e}");
    }
    outcome
}

/// With `[acme.dane]`: the steps of [`roll::step`] until it says to wait.
/// Returns how long.
async fn dane_turn(
    settings: &Settings,
    dane: &dane::DaneSettings,
    gateway: &impl Gateway,
    stats: &Stats,
    asked: &mut Asked,
    now: i64,
) -> Duration {
    use roll::{Step, Which};
    let store = settings.store();
    let names = settings.domains.join(", ");
    let owners = dane.owners(&settings.domains);
    let fail = |state: &mut store::State, what: String| -> Duration {
        state.failures = state.failures.saturating_add(1);
        state.last_failure = now;
        state.last_error = Some(what.clone());
        let wait = plan::backoff(state.failures);
        tracing::error!(
            "acme: {what}; the key roll waits, the next try in {} s",
            wait.as_secs()
        );
        if let Err(e) = store.save_state(state) {
            tracing::warn!("acme: {e}");
        }
        wait.min(LOOK_EVERY * 60)
    };
    let mut state = match store.state() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("acme: {e}");
            return LOOK_EVERY;
        }
    };
    let updater = match dane::Updater::new(dane) {
        Ok(u) => u,
        Err(e) => return fail(&mut state, e.to_string()),
    };
    if !asked.roll.is_empty() && !state.dane.roll_asked {
        state.dane.roll_asked = true;
        // Recorded before the answer: a restart goes on with the roll.
        if let Err(e) = store.save_state(&state) {
            let failed = Err(format!("cannot record the roll: {e}"));
            asked.answer_roll(&failed);
            return LOOK_EVERY;
        }
        let line = format!(
            "acme: key roll for {names} started: the next key goes into service once its TLSA record has been seen validated for two TTLs ({} s)",
            2 * dane.ttl_secs()
        );
        tracing::info!("{line}");
        asked.answer_roll(&Ok(line));
    }
    // A backoff after a failure holds off everything but an asked renewal.
    if state.failures > 0 && asked.renew.is_empty() {
        let retry = state.last_failure + plan::secs(plan::backoff(state.failures));
        if now < retry {
            return Duration::from_secs(u64::try_from(retry - now).unwrap_or(1).max(1))
                .min(LOOK_EVERY);
        }
    }
    // The owners changed (names or ports): the records move.
    if state.dane.owners != owners {
        if !state.dane.owners.is_empty() {
            for key in state.dane.published.clone() {
                if let Some(spki) = dane::unhex(&key) {
                    if let Err(e) = updater.remove(&state.dane.owners, &spki) {
                        return fail(
                            &mut state,
                            format!("removing the TLSA records at the old names: {e}"),
                        );
                    }
                }
            }
        }
        state.dane.published.clear();
        state.dane.owners = owners.clone();
    }
    // What the validating resolver shows of each key's records.
    let keys = match dane_keys(&store) {
        Ok(k) => k,
        Err(e) => return fail(&mut state, e),
    };
    for (which, key) in [(Which::Current, &keys.current), (Which::Next, &keys.next)] {
        let seen = key
            .as_ref()
            .is_some_and(|k| records_validated(gateway, settings, dane, k));
        roll::observe(&mut state.dane, which, seen, now);
    }
    for _ in 0..16 {
        let keys = match dane_keys(&store) {
            Ok(k) => k,
            Err(e) => return fail(&mut state, e),
        };
        let served = match store.certificate() {
            Ok(c) => c,
            Err(e) => return fail(&mut state, e.to_string()),
        };
        let key_old = !settings.key_lifetime.is_zero()
            && state.key_since > 0
            && now >= state.key_since + plan::secs(settings.key_lifetime);
        let renewal_due = !asked.renew.is_empty()
            || served.as_ref().is_some_and(|c| {
                c.names != settings.domains
                    || now >= c.not_after - plan::secs(settings.renew_before)
            });
        let facts = roll::Facts {
            keys,
            served: served.map(|c| c.spki_sha256),
            ttl: dane.ttl_secs(),
            key_old,
            renewal_due,
            now,
        };
        let step = roll::step(&state.dane, &facts);
        match step {
            Step::Wait { until, why } => {
                tracing::debug!("acme: waiting: {why}");
                stats
                    .roll
                    .store(RollPhase::of(&state.dane) as u8, Ordering::Relaxed);
                if let Err(e) = store.save_state(&state) {
                    tracing::warn!("acme: {e}");
                }
                return Duration::from_secs(u64::try_from(until - now).unwrap_or(1).max(1))
                    .min(LOOK_EVERY);
            }
            Step::NewKey(which) => {
                let made = new_key_pair(settings).and_then(|key| {
                    store
                        .save_dane_key(which, &key.serialize_pem())
                        .map(|()| store::spki_sha256(&key))
                        .map_err(|e| e.to_string())
                });
                match made {
                    Ok(spki) => tracing::info!(
                        "acme: made the {} key for {names}: TLSA 3 1 1 {spki}",
                        if which == Which::Current {
                            "current"
                        } else {
                            "next"
                        }
                    ),
                    Err(e) => return fail(&mut state, format!("making a key: {e}")),
                }
            }
            Step::Publish(key) => {
                let Some(spki) = dane::unhex(&key) else {
                    return fail(
                        &mut state,
                        format!("a key digest \"{key}\" that is not hex"),
                    );
                };
                let ttl = u32::try_from(dane.ttl.as_secs()).unwrap_or(u32::MAX);
                if let Err(e) = updater.publish(&owners, &spki, ttl) {
                    return fail(&mut state, format!("publishing TLSA 3 1 1 {key}: {e}"));
                }
                tracing::info!(
                    "acme: published TLSA 3 1 1 {key} at {} (TTL {} s)",
                    owners.join(", "),
                    dane.ttl.as_secs()
                );
                state.dane.published.push(key);
            }
            Step::Remove(key) => {
                let Some(spki) = dane::unhex(&key) else {
                    return fail(
                        &mut state,
                        format!("a key digest \"{key}\" that is not hex"),
                    );
                };
                if let Err(e) = updater.remove(&owners, &spki) {
                    return fail(&mut state, format!("removing TLSA 3 1 1 {key}: {e}"));
                }
                tracing::info!(
                    "acme: removed TLSA 3 1 1 {key} (the replaced key) at {}",
                    owners.join(", ")
                );
                state.dane.published.retain(|k| *k != key);
                state.dane.old = None;
                state.dane.switched_at = 0;
            }
            Step::FinishSwitch => {
                finish_switch(&store, &mut state, now, dane.ttl_secs());
                if let Err(e) = gateway.install() {
                    return fail(
                        &mut state,
                        format!("the new certificate is not in service: {e}"),
                    );
                }
            }
            Step::Order(which) => {
                let pem = match store.dane_key(which) {
                    Ok(Some(pem)) => pem,
                    Ok(None) => return fail(&mut state, "the key to order on is missing".into()),
                    Err(e) => return fail(&mut state, e.to_string()),
                };
                let key = match rcgen::KeyPair::from_pem(&pem) {
                    Ok(k) => k,
                    Err(e) => return fail(&mut state, format!("the stored key: {e}")),
                };
                let why = match which {
                    Which::Next => "key roll",
                    Which::Current if state.last_renewal == 0 => "no certificate",
                    Which::Current => "renewal",
                };
                let outcome =
                    order_and_install(settings, gateway, &key, why, which == Which::Next).await;
                if outcome.is_ok() && which == Which::Next {
                    finish_switch(&store, &mut state, now, dane.ttl_secs());
                }
                let key_is_new = which == Which::Next || state.key_since == 0;
                let outcome = record(settings, stats, &mut state, outcome, key_is_new, now);
                asked.answer_renew(&outcome);
                if outcome.is_err() {
                    return plan::backoff(state.failures).min(LOOK_EVERY);
                }
            }
        }
        if let Err(e) = store.save_state(&state) {
            tracing::warn!("acme: {e}");
        }
    }
    Duration::from_secs(1)
}

/// The keys on disk, by their SPKI digest.
fn dane_keys(store: &store::Store) -> Result<roll::Keys, String> {
    let spki = |which| -> Result<Option<String>, String> {
        match store.dane_key(which).map_err(|e| e.to_string())? {
            Some(pem) => rcgen::KeyPair::from_pem(&pem)
                .map(|k| Some(store::spki_sha256(&k)))
                .map_err(|e| format!("the stored key: {e}")),
            None => Ok(None),
        }
    };
    Ok(roll::Keys {
        current: spki(roll::Which::Current)?,
        next: spki(roll::Which::Next)?,
    })
}

/// The next key is in service: it becomes the current one, the old one's
/// record is kept two more TTLs.
fn finish_switch(store: &store::Store, state: &mut store::State, now: i64, ttl: i64) {
    let old = dane_keys(store).ok().and_then(|k| k.current);
    if let Err(e) = store.promote_next_key() {
        tracing::error!("acme: {e}");
        return;
    }
    state.dane.old = old;
    state.dane.switched_at = now;
    state.dane.current_seen_since = state.dane.next_seen_since;
    state.dane.next_seen_since = 0;
    state.dane.roll_asked = false;
    state.key_since = now;
    tracing::info!(
        "acme: key roll: the next key is in service; the replaced key's records stay until {}",
        crate::model::rfc3339(now + 2 * ttl)
    );
    if let Err(e) = store.save_state(state) {
        tracing::warn!("acme: {e}");
    }
}

/// Whether the key's `3 1 1` record is in the validated answer at every
/// owner.
fn records_validated(
    gateway: &impl Gateway,
    settings: &Settings,
    dane: &dane::DaneSettings,
    key: &str,
) -> bool {
    let Some(data) = dane::unhex(key) else {
        return false;
    };
    settings.domains.iter().all(|name| {
        dane.ports
            .iter()
            .all(|port| match gateway.tlsa(name, *port) {
                Ok(Some(records)) => records
                    .iter()
                    .any(|r| r.usage == 3 && r.selector == 1 && r.matching == 1 && r.data == data),
                Ok(None) | Err(_) => false,
            })
    })
}

/// `sealgate acme status`: the certificate and its keeping, read from
/// `SPOOL/acme` (the gateway need not run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub directory: String,
    pub domains: Vec<String>,
    pub challenge: String,
    pub key: String,
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
    /// With `[acme.dane]`: the keys, their records, the roll.
    pub dane: Option<DaneView>,
}

/// The keys and their TLSA records, as `acme status` and the status page
/// show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaneView {
    /// SPKI SHA-256 of the key in service, and of the next one.
    pub current_key: Option<String>,
    pub next_key: Option<String>,
    pub records: Vec<RecordView>,
    /// `steady`, `waiting` (a roll waits for the next key's record),
    /// `switched` (the replaced key's records are still published).
    pub roll: String,
    /// The roll in words.
    pub roll_detail: String,
}

/// One published `3 1 1` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordView {
    pub owner: String,
    pub key: String,
    /// `current`, `next` or `replaced`.
    pub role: String,
    /// Since when it has been seen in a validated answer (Unix time); 0:
    /// not seen.
    pub validated_since: i64,
}

impl DaneView {
    fn read(
        settings: &Settings,
        dane: &dane::DaneSettings,
        state: &store::State,
    ) -> std::io::Result<DaneView> {
        let keys = dane_keys(&settings.store()).map_err(std::io::Error::other)?;
        let d = &state.dane;
        let mut records = Vec::new();
        for key in &d.published {
            let (role, validated_since) = if Some(key) == keys.current.as_ref() {
                ("current", d.current_seen_since)
            } else if Some(key) == keys.next.as_ref() {
                ("next", d.next_seen_since)
            } else {
                ("replaced", 0)
            };
            for owner in &d.owners {
                records.push(RecordView {
                    owner: owner.clone(),
                    key: key.clone(),
                    role: role.into(),
                    validated_since,
                });
            }
        }
        let two_ttls = 2 * dane.ttl_secs();
        let (roll, roll_detail) = match (&d.old, d.roll_asked) {
            (Some(old), _) => (
                "switched",
                format!(
                    "the next key went into service at {}; the replaced key's records ({old}) go at {}",
                    crate::model::rfc3339(d.switched_at),
                    crate::model::rfc3339(d.switched_at + two_ttls)
                ),
            ),
            (None, true) => (
                "waiting",
                if d.next_seen_since > 0 {
                    format!(
                        "a roll is asked: the next key goes into service at {}",
                        crate::model::rfc3339(d.next_seen_since + two_ttls)
                    )
                } else {
                    "a roll is asked: the next key's record is not seen validated yet".to_string()
                },
            ),
            (None, false) => ("steady", "current and next keys published".to_string()),
        };
        Ok(DaneView {
            current_key: keys.current,
            next_key: keys.next,
            records,
            roll: roll.into(),
            roll_detail,
        })
    }
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
        let dane = match &settings.dane {
            Some(d) => Some(DaneView::read(settings, d, &state)?),
            None => None,
        };
        Ok(View {
            directory: settings.directory.clone(),
            domains: settings.domains.clone(),
            challenge: <&str>::from(settings.challenge).into(),
            key: <&str>::from(settings.key).into(),
            dane,
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
        if let Some(d) = &self.dane {
            let key = |k: &Option<String>| k.clone().unwrap_or_else(|| "none yet".into());
            let _ = writeln!(
                out,
                "  current key:   {}\n  next key:      {}\n  roll:          {}: {}",
                key(&d.current_key),
                key(&d.next_key),
                d.roll,
                d.roll_detail
            );
            for r in &d.records {
                let seen = if r.validated_since > 0 {
                    format!("validated since {}", time(r.validated_since))
                } else {
                    "not seen validated".into()
                };
                let _ = writeln!(
                    out,
                    "  TLSA {} 3 1 1 {} ({}, {seen})",
                    r.owner, r.key, r.role
                );
            }
        }
        out
    }
}
