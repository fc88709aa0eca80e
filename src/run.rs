//! `sealgate run` and `sealgate check`: load the configuration, recover the
//! spool, start the shards, wait for signals.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config};
use crate::shard::Shards;
use crate::spool;
use crate::state::Shared;

/// `sealgate check`: every configuration and certificate problem, exit 1
/// on any.
pub fn check(path: Option<&Path>) -> ExitCode {
    let cfg = match config::load_checking_files(path) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            eprintln!("{} error(s) found", errors.errors.len());
            return ExitCode::from(1);
        }
    };
    let missing_will_be_generated = cfg.file.tls.generate_self_signed
        && cfg.file.tls.certificates.first().is_some_and(|c| {
            !cfg.resolve(&c.get_ref().cert).exists() && !cfg.resolve(&c.get_ref().key).exists()
        });
    if missing_will_be_generated {
        println!(
            "{}: the self-signed certificate will be generated at first start",
            cfg.origin
        );
    } else if let Err(problems) = cfg.snapshot() {
        let problems = problems.0;
        for p in &problems {
            eprintln!("{}: {p}", cfg.origin);
        }
        eprintln!("{} error(s) found", problems.len());
        return ExitCode::from(1);
    }
    for w in crate::tls::expiry_warnings(&cfg.certificate_files()) {
        println!("warning: {w}");
    }
    if cfg.file.server.accept_domains.is_empty() {
        println!(
            "warning: server.accept_domains is empty: every recipient is refused (554 5.7.1 Relay access denied) unless the client's profile may relay"
        );
    }
    println!("{}: configuration OK", cfg.origin);
    ExitCode::SUCCESS
}

/// What a start and a reload build from a configuration, by one piece of
/// code: the self-signed certificate where the file asks for one and both
/// its files are missing (its path is returned), then the snapshot that
/// every connection and delivery reads. Every reloadable key reaches the
/// snapshot, except the log levels (`log_filter`).
pub fn compile(
    cfg: &Config,
) -> Result<(crate::snapshot::Snapshot, Option<std::path::PathBuf>), config::LoadErrors> {
    let generated = cfg.ensure_certificates()?;
    Ok((cfg.snapshot()?, generated))
}

/// OPS-2: re-reads the configuration and certificates on this (the main,
/// non-shard) thread, validates everything, and only then swaps the
/// snapshot. Any problem keeps the running snapshot and is logged in full.
/// Sessions in flight keep the snapshot they were accepted under.
fn reload(
    running: &Config,
    path: Option<&Path>,
    shared: &Shared,
) -> Result<(Vec<String>, Config), Vec<String>> {
    let started = std::time::Instant::now();
    // Every problem is logged and handed back (to `sealgate reload`).
    let refuse = |problems: Vec<String>| {
        let mut lines: Vec<String> = problems.iter().map(|p| format!("reload: {p}")).collect();
        lines.push(format!(
            "reload failed: {} error(s); the running configuration stays in force",
            problems.len()
        ));
        for l in &lines {
            tracing::error!("{l}");
        }
        shared.reloads_failed.fetch_add(1, Ordering::Relaxed);
        lines
    };
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            return Err(refuse(
                errors.to_string().lines().map(str::to_string).collect(),
            ))
        }
    };
    let snapshot = match compile(&cfg) {
        Ok((s, generated)) => {
            if let Some(path) = generated {
                tracing::info!(
                    "reload: generated a self-signed ECDSA P-256 certificate: {}",
                    path.display()
                );
            }
            s
        }
        Err(problems) => {
            return Err(refuse(
                problems
                    .0
                    .iter()
                    .map(|p| format!("{}: {p}", cfg.origin))
                    .collect(),
            ))
        }
    };
    let mut notes = Vec::new();
    for key in needs_restart(running, &cfg) {
        let note =
            format!("reload: {key}: needs a restart; the running value stays in force until then");
        tracing::warn!("{note}");
        notes.push(note);
    }
    let profiles = snapshot.profiles.list.len();
    shared.snapshot.store(Arc::new(snapshot));
    shared.reloads_ok.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    shared.last_reload.store(now, Ordering::Relaxed);
    if let Some(handle) = LOG_RELOAD.get() {
        if let Err(e) = handle.reload(log_filter(&cfg)) {
            tracing::warn!("reload: log levels unchanged: {e}");
        }
    }
    let done = format!(
        "reload: configuration reloaded from {} ({profiles} profile(s)) in {} ms",
        cfg.origin,
        started.elapsed().as_millis()
    );
    tracing::info!("{done}");
    notes.push(done);
    Ok((notes, cfg))
}

/// The keys that only a restart changes (docs/configuration.md marks them
/// "restart") whose value in `new` differs from the running one's: the
/// configuration the gateway started with.
pub fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&running.file, &new.file);
    [
        (o.server.listen != n.server.listen, "server.listen"),
        (o.server.shards != n.server.shards, "server.shards"),
        (running.spool_dir() != new.spool_dir(), "server.spool_dir"),
        (
            o.server.spool_writers != n.server.spool_writers,
            "server.spool_writers",
        ),
        (
            o.server.spool_segment_size.0 != n.server.spool_segment_size.0,
            "server.spool_segment_size",
        ),
        (
            o.server.spool_large_message.0 != n.server.spool_large_message.0,
            "server.spool_large_message",
        ),
        (
            o.server.steer_by_cpu != n.server.steer_by_cpu,
            "server.steer_by_cpu",
        ),
        (o.log.format != n.log.format, "log.format"),
        (o.admin.listen != n.admin.listen, "admin.listen"),
        (o.dns.servers != n.dns.servers, "dns.servers"),
        (o.dns.dnssec != n.dns.dnssec, "dns.dnssec"),
        (
            running
                .file
                .dns
                .trust_anchor
                .as_deref()
                .map(|f| running.resolve(f))
                != new.file.dns.trust_anchor.as_deref().map(|f| new.resolve(f)),
            "dns.trust_anchor",
        ),
        (
            o.outbound.mta_sts_refresh.map(|s| s.0) != n.outbound.mta_sts_refresh.map(|s| s.0),
            "outbound.mta_sts_refresh",
        ),
        (
            o.fleet.as_ref().map(|f| f.redis.get_ref())
                != n.fleet.as_ref().map(|f| f.redis.get_ref()),
            "fleet.redis",
        ),
        (
            o.fleet
                .as_ref()
                .and_then(|f| f.node.as_ref().map(|n| n.get_ref()))
                != n.fleet
                    .as_ref()
                    .and_then(|f| f.node.as_ref().map(|n| n.get_ref())),
            "fleet.node",
        ),
        (
            o.fleet
                .as_ref()
                .and_then(|f| f.password_file.as_ref().map(|p| p.get_ref()))
                != n.fleet
                    .as_ref()
                    .and_then(|f| f.password_file.as_ref().map(|p| p.get_ref())),
            "fleet.password_file",
        ),
    ]
    .into_iter()
    .filter_map(|(changed, key)| changed.then_some(key))
    .collect()
}

/// What a reload needs, shared by the signal loop (SIGHUP) and the
/// control socket (`sealgate reload`): the configuration the gateway
/// started with (for what only a restart changes), where to read the new
/// one, and a lock so that two reloads never run at once.
struct Reloader {
    running: Config,
    path: Option<std::path::PathBuf>,
    /// The configuration in force (the last one loaded); its lock keeps a
    /// reload and a certificate installation from running at once.
    current: std::sync::Mutex<Config>,
}

impl Reloader {
    fn reload(&self, shared: &Shared) -> Result<Vec<String>, Vec<String>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let (notes, cfg) = reload(&self.running, self.path.as_deref(), shared)?;
        *current = cfg;
        Ok(notes)
    }

    /// ACME stored a new certificate: the configuration in force is
    /// compiled again (with it) and swapped in.
    fn refresh(&self, shared: &Shared) -> Result<(), String> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let (snapshot, _) = compile(&current).map_err(|e| e.to_string())?;
        shared.snapshot.store(Arc::new(snapshot));
        Ok(())
    }
}

/// The fleet's way to delivery's TLS postures: exported as JSON, and
/// another node's export taken in.
fn posture_link(gauges: &Arc<crate::delivery::Gauges>) -> crate::fleet::PostureLink {
    let (out, into, back) = (gauges.clone(), gauges.clone(), gauges.clone());
    crate::fleet::PostureLink {
        restore: Box::new(move |text| {
            let Ok(before) = serde_json::from_str::<crate::delivery::posture::Export>(text) else {
                return;
            };
            if let Ok(mut p) = back.postures.lock() {
                p.restore(&before);
            }
        }),
        export: Box::new(move || {
            // Copied under the lock, written out after it: delivery waits
            // on this lock once per attempt.
            let export = out.postures.lock().map(|p| p.export()).unwrap_or_default();
            serde_json::to_string(&export).unwrap_or_default()
        }),
        adopt: Box::new(move |text| {
            let Ok(theirs) = serde_json::from_str::<crate::delivery::posture::Export>(text) else {
                return;
            };
            if let Ok(mut p) = into.postures.lock() {
                for partner in &theirs.partners {
                    p.adopt(partner);
                }
            }
        }),
    }
}

/// The ACME thread's view of the running gateway.
struct AcmeGateway {
    shared: Arc<Shared>,
    reloader: Arc<Reloader>,
    resolver: Option<crate::dns::Resolver>,
}

impl crate::acme::Gateway for AcmeGateway {
    fn settings(&self) -> Option<crate::acme::Settings> {
        self.shared.snapshot.load().acme.clone()
    }

    fn install(&self) -> Result<(), String> {
        self.reloader.refresh(&self.shared)
    }

    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    fn tlsa(&self, name: &str, port: u16) -> Result<Option<Vec<crate::model::Tlsa>>, String> {
        match &self.resolver {
            Some(r) => r.tlsa_blocking(name, port),
            None => Err("the resolver did not start".into()),
        }
    }
}

/// systemd's notification protocol (`Type=notify`, sd_notify(3)), by
/// the `sd-notify` crate: a datagram to `$NOTIFY_SOCKET` when set
/// (abstract sockets included); nothing happens otherwise.
fn sd_notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Certificates or keys that cannot be loaded or generated.
    #[error(transparent)]
    Tls(#[from] config::LoadErrors),
    /// An operating-system call failed: what sealgate was doing, and why.
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// A listener that cannot be opened (the error names the address).
    #[error("{0}")]
    Listen(#[source] std::io::Error),
    #[error(transparent)]
    Admin(#[from] crate::admin::StartError),
}

/// Takes `SPOOL/sealgate.lock` (flock, exclusive): fails, naming the
/// gateway that holds it (its pid file), when another one runs on the
/// same spool directory.
#[allow(unsafe_code)] // FFI (libc); SAFETY comment at the call
fn lock_spool(root: &Path) -> Result<std::fs::File, StartError> {
    use std::os::fd::AsRawFd;
    let path = root.join("sealgate.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed(format!("cannot open {}", path.display())))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        let pid = std::fs::read_to_string(root.join("sealgate.pid"))
            .map(|p| format!(" (pid {})", p.trim()))
            .unwrap_or_default();
        return Err(StartError::Io {
            doing: format!(
                "spool directory {} is in use by another sealgate{pid}",
                root.display()
            ),
            source: e,
        });
    }
    Ok(file)
}

/// What to wrap an I/O error in: `doing` says what failed.
fn failed(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let doing = doing.into();
    move |source| StartError::Io { doing, source }
}

/// The control socket in the spool directory (OPS-5): one request per
/// connection, answered and closed (`crate::control`). Mode 0600, in a
/// root-only directory.
pub const CONTROL_SOCKET: &str = "sealgate.ctl";

/// How long `sealgate acme renew` waits for the order's outcome.
const ACME_RENEW_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

fn start_control(
    path: &Path,
    delivery: crate::handoff::Sender<crate::delivery::Event>,
    shared: Arc<Shared>,
    certificates: Vec<std::path::PathBuf>,
    reloader: Arc<Reloader>,
    acme: crate::acme::Handle,
) -> Result<(), StartError> {
    use crate::control::{Command, Refusal, Reply};
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(failed(format!("cannot create {}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(failed(format!("cannot make {} owner-only", path.display())))?;
    }
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                crate::control::serve(&stream, |command| match command {
                    Command::Reload => reloader
                        .reload(&shared)
                        .map(Reply::Reloaded)
                        .map_err(Refusal::ReloadFailed),
                    Command::AcmeRenew => acme
                        .renew(ACME_RENEW_LIMIT)
                        .map(Reply::Acme)
                        .map_err(Refusal::Acme),
                    Command::AcmeRoll => acme
                        .roll(ACME_RENEW_LIMIT)
                        .map(Reply::Acme)
                        .map_err(Refusal::Acme),
                    Command::Partners => Ok(Reply::Partners(Box::new(crate::status::read(
                        &shared,
                        &certificates,
                    )))),
                    Command::Delivery(cmd) => {
                        let (tx, rx) = crossbeam_channel::bounded(1);
                        let answer = if delivery
                            .send(crate::delivery::Event::Admin(cmd, tx))
                            .is_err()
                        {
                            Err(crate::delivery::AdminError::NotRunning)
                        } else {
                            rx.recv_timeout(std::time::Duration::from_secs(60))
                                .unwrap_or(Err(crate::delivery::AdminError::NoAnswer))
                        };
                        answer.map(Reply::Delivery).map_err(Refusal::Delivery)
                    }
                });
            }
        })
        .map_err(failed("cannot start the control thread"))?;
    Ok(())
}

/// One command to the running gateway's control socket: its reply, or
/// what went wrong (printed as it is).
fn control(
    cfg: &Config,
    command: crate::control::Command,
) -> Result<crate::control::Reply, crate::control::Failure> {
    crate::control::ask(&cfg.spool_dir().join(CONTROL_SOCKET), command)
}

/// `sealgate queue …`, `policy …` and `partners`: one command to the
/// running gateway's control socket, its answer printed (`json`: as JSON
/// where the command offers it).
pub fn queue_command(
    path: Option<&Path>,
    command: crate::control::Command,
    json: bool,
) -> ExitCode {
    use crate::control::Reply;
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(1);
        }
    };
    match control(&cfg, command) {
        Ok(reply) => {
            let text = match reply {
                Reply::Delivery(answer) => answer.render(crate::model::unix_now(), json),
                Reply::Partners(status) if json => {
                    serde_json::to_string_pretty(&status).unwrap_or_default() + "\n"
                }
                Reply::Partners(status) => status.text(),
                Reply::Reloaded(notes) => notes.join("\n") + "\n",
                Reply::Acme(line) => line + "\n",
            };
            print!("{text}");
            if !text.is_empty() && !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::from(1)
        }
    }
}

/// `sealgate acme status`: the ACME certificate, from the spool
/// directory. Exit 1 without `[acme]` or when the files cannot be read.
pub fn acme_status_command(path: Option<&Path>, json: bool) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(1);
        }
    };
    let Some(settings) = cfg.acme() else {
        eprintln!(
            "{}: no [acme] section: certificates come from [tls] only",
            cfg.origin
        );
        return ExitCode::from(1);
    };
    let now = i64::try_from(crate::model::unix_now()).unwrap_or(i64::MAX);
    match crate::acme::View::read(&settings, now) {
        Ok(view) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&view).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(view) => {
            print!("{}", view.text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `sealgate report tls`: the day's TLS reports (RFC 8460) as they would
/// be (or were) sent, from the day's file in the spool directory (the
/// running gateway, if any, writes today's out first); with `send`, the
/// running gateway sends them now.
pub fn report_command(
    path: Option<&Path>,
    day: Option<&str>,
    domain: Option<&str>,
    json: bool,
    send: bool,
) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(1);
        }
    };
    let day = day.map_or_else(
        || crate::tlsrpt::day_of(crate::model::unix_now()),
        str::to_string,
    );
    if crate::tlsrpt::day_start(&day).is_none() {
        eprintln!("--day {day:?}: use YYYY-MM-DD");
        return ExitCode::from(2);
    }
    let domain = domain.map(crate::model::canonical_domain);
    if send {
        return queue_command(
            path,
            crate::control::Command::Delivery(crate::delivery::Admin::ReportSend { day, domain }),
            false,
        );
    }
    // Not running: the file is all there is.
    let _ = control(
        &cfg,
        crate::control::Command::Delivery(crate::delivery::Admin::ReportFlush),
    );
    let settings = cfg.tls_rpt();
    let mut d = crate::tlsrpt::Day::load(&crate::tlsrpt::dir(&cfg.spool_dir()), &day);
    // In a fleet: the fleet's figures (this node's own from its file).
    if let Some(fleet) = cfg.fleet() {
        let merged = crate::fleet::connect(&fleet.url)
            .and_then(|mut conn| crate::fleet::fleet_day(&mut conn, &day, (&fleet.node, &d)));
        match merged {
            Ok((mut all, nodes, sent)) => {
                for name in &sent {
                    if let Some(x) = all.domains.get_mut(name) {
                        x.sent = true;
                    }
                }
                if !json {
                    println!("{day}: the fleet's figures, from {nodes} node(s)");
                }
                d = all;
            }
            Err(e) => eprintln!(
                "the fleet store at {} is unreachable ({e}): this node's figures only",
                crate::fleet::redacted(&fleet.url)
            ),
        }
    }
    let names: Vec<&String> = d
        .domains
        .keys()
        .filter(|n| domain.as_ref().is_none_or(|x| x == *n))
        .collect();
    if json {
        let reports: Vec<serde_json::Value> = names
            .iter()
            .filter_map(|n| crate::tlsrpt::report(&d, n, &settings.submitter))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if names.is_empty() {
        println!("{day}: no session recorded");
    }
    for n in names {
        let state = match (
            d.domains.get(n.as_str()).is_some_and(|x| x.sent),
            settings.wants(&d, n),
        ) {
            (true, _) => "sent",
            (false, true) => "due",
            (false, false) => {
                "not sent (suppressed, sending off, or no failure with only_failures)"
            }
        };
        println!("{n} ({day}): {state}");
        for (policy, mx, counts) in d
            .domains
            .get(n.as_str())
            .map_or(&[][..], |x| &x.policies[..])
        {
            let kind = match policy {
                crate::tlsrpt::Policy::Tlsa { .. } => "tlsa",
                crate::tlsrpt::Policy::Sts { .. } => "sts",
                crate::tlsrpt::Policy::NoPolicyFound => "no-policy-found",
            };
            println!(
                "  policy {kind}{}: {} successful, {} failed",
                mx.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(),
                counts.successful,
                counts.failed()
            );
            for (rt, host, ip, info, count) in &counts.failures {
                println!("    {} {host}[{ip}]: {count} ({info})", rt.as_str());
            }
        }
    }
    ExitCode::SUCCESS
}

/// `sealgate reload`: asks the running gateway (through its control
/// socket in the spool directory) to reload, and waits for its answer:
/// exit 0 with what changed, exit 1 with every error when the gateway
/// refused the new configuration (the old one stays in force).
pub fn reload_command(path: Option<&Path>) -> ExitCode {
    let socket = match config::load(path) {
        Ok(cfg) => cfg.spool_dir().join(CONTROL_SOCKET),
        Err(errors) => {
            // The running gateway hears of a broken file too: it logs the
            // errors and counts the failed reload, and keeps its
            // configuration. Without a gateway, the errors are said here.
            let told = config::control_socket_of(path, CONTROL_SOCKET)
                .map(|s| crate::control::ask(&s, crate::control::Command::Reload));
            match told {
                Some(Err(crate::control::Failure::Refused(why))) => eprintln!("{why}"),
                Some(Ok(_)) | Some(Err(_)) | None => {
                    eprint!("{errors}");
                    eprintln!("not reloading: fix the configuration first");
                }
            }
            return ExitCode::from(1);
        }
    };
    match crate::control::ask(&socket, crate::control::Command::Reload) {
        Ok(crate::control::Reply::Reloaded(notes)) => {
            for note in notes {
                println!("{note}");
            }
            ExitCode::SUCCESS
        }
        Ok(
            crate::control::Reply::Partners(_)
            | crate::control::Reply::Delivery(_)
            | crate::control::Reply::Acme(_),
        ) => {
            eprintln!("the gateway answered the reload with another command's reply");
            ExitCode::from(1)
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::from(1)
        }
    }
}

/// The log filter for a configuration: per-direction levels, `receive`
/// (inbound) and `send` (outbound); the rest of sealgate logs at the more
/// verbose of the two. A reload swaps it in.
pub fn log_filter(cfg: &Config) -> EnvFilter {
    let log = &cfg.file.log;
    let general = if log.receive as u8 >= log.send as u8 {
        log.receive
    } else {
        log.send
    };
    let directives = format!(
        "warn,sealgate={},receive={},send={}",
        general.as_str(),
        log.receive.as_str(),
        log.send.as_str()
    );
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Lets a reload change the levels (OPS-3).
static LOG_RELOAD: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// Sets up logging: lines are formatted where they happen and written to
/// standard error by a thread of their own (crate::logbuf), so that an
/// event loop never waits on, or pays a write(2) per line for, the log.
/// The returned guard writes what is left when the gateway stops.
fn init_logging(cfg: &Config) -> Option<crate::logbuf::Guard> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(cfg));
    let _ = LOG_RELOAD.set(handle);
    let ansi = std::io::stderr().is_terminal();
    let (buffer, guard) = match crate::logbuf::start(Box::new(std::io::stderr())) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("cannot start the log writer: {e}");
            return None;
        }
    };
    let _ = crate::admin::LOG_BUFFER.set(buffer.clone());
    let writer = crate::logbuf::LineWriter(buffer);
    let registry = tracing_subscriber::registry().with(filter);
    // The format is fixed at start; levels follow reloads.
    // A line's facts are fields of its event (docs/operations.md, "Logs"):
    // JSON puts each under its own key beside `message`; the text format
    // writes the message alone, the Postfix wording that already says
    // them.
    let result = match cfg.file.log.format {
        config::units::LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(writer),
            )
            .try_init(),
        config::units::LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                        |w, field, value| match field.name() {
                            "message" => write!(w, "{value:?}"),
                            _ => Ok(()),
                        },
                    ))
                    .with_writer(writer),
            )
            .try_init(),
    };
    match result {
        Ok(()) => Some(guard),
        Err(e) => {
            eprintln!("cannot set up logging: {e}");
            None
        }
    }
}

/// Each connection costs a descriptor, and the soft open-file limit is
/// often 1024: raise it to the hard limit, and warn when even that is
/// below `limits.connections` (plus room for outbound connections and the
/// spool), since past it accepts fail instead of answering `421`.
#[allow(unsafe_code)] // FFI (libc); SAFETY comment at the call
fn check_fd_limit(connections: Option<usize>) {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    let (soft, hard) = unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return;
        }
        if rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
        (rl.rlim_cur, rl.rlim_max)
    };
    crate::policy::limits::OPEN_FILES.store(soft, Ordering::Relaxed);
    let reserved = crate::policy::limits::RESERVED_FILES;
    match connections {
        // The operator's own number cannot be met: say so.
        Some(n) if soft < n as u64 + reserved => tracing::warn!(
            "open-file limit is {soft} (hard {hard}), below limits.connections + {reserved} = {}: \
             raise LimitNOFILE (systemd) or ulimit -n, or lower limits.connections",
            n as u64 + reserved
        ),
        Some(_) => {}
        None => {
            let n = crate::policy::limits::default_connections();
            if n < crate::policy::Limits::default().connections {
                tracing::info!(
                    "limits.connections is {n} (the open-file limit {soft} less {reserved}); set it, and LimitNOFILE, for more"
                );
            }
        }
    }
}

/// `sealgate run`.
pub fn run(path: Option<&Path>) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(1);
        }
    };
    let _log = init_logging(&cfg);
    match serve(&cfg, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e}");
            ExitCode::from(1)
        }
    }
}

#[allow(unsafe_code)] // FFI (libc); SAFETY comment at the call
fn serve(cfg: &Config, path: Option<&Path>) -> Result<(), StartError> {
    // Before the snapshot: the default connection limit depends on it.
    check_fd_limit(cfg.file.limits.connections);
    let (snapshot, generated) = compile(cfg).map_err(StartError::Tls)?;
    if let Some(path) = generated {
        tracing::info!(
            "generated a self-signed ECDSA P-256 certificate: {}",
            path.display()
        );
    }
    if snapshot.tls.is_none() {
        tracing::warn!("no certificate configured: STARTTLS will not be offered");
    }
    let spool_root = cfg.spool_dir();
    std::fs::create_dir_all(&spool_root).map_err(failed(format!(
        "cannot create spool {}",
        spool_root.display()
    )))?;
    // One gateway per spool: a second one would recover and deliver the
    // same journals. The lock lasts as long as the process.
    let _spool_lock = lock_spool(&spool_root)?;
    let spool_stats = Arc::new(spool::Stats::default());
    let mut opened = spool::open(
        &spool_root,
        cfg.file.server.spool_writers,
        cfg.journal_options(),
        &spool_stats,
    )
    .map_err(failed("spool recovery failed"))?;
    for (n, r) in opened.recovered.iter().enumerate() {
        if let Some((slot, offset, why)) = r.cut {
            tracing::warn!(
                "spool: journal-{n}: cut at segment {slot} offset {offset} ({why}): an unfinished write, never acknowledged"
            );
        }
        for (slot, offset, why) in &r.damaged {
            tracing::error!(
                "spool: journal-{n}: damage in segment {slot} at offset {offset} ({why}): records after it in that segment are skipped; run `sealgate spool verify`"
            );
        }
    }
    // A spool written by the file-per-message format: imported once.
    let legacy = opened.stores[0]
        .import_legacy(&spool_root)
        .map_err(failed("cannot import the old spool format"))?;
    for (path, why) in &legacy.quarantined {
        tracing::warn!("spool: quarantined {}: {why}", path.display());
    }
    if !legacy.queued.is_empty() {
        tracing::info!(
            "spool {}: imported {} message(s) from the file-per-message format",
            spool_root.display(),
            legacy.queued.len()
        );
    }
    let recovered: Vec<spool::Entry> = opened.stores.iter().flat_map(|s| s.entries()).collect();
    tracing::info!(
        "spool {}: recovered {} queued message(s) from {} journal(s), {} segment(s), {} record(s); cut {}, damaged {}",
        spool_root.display(),
        recovered.len(),
        opened.stores.len(),
        opened.recovered.iter().map(|r| r.segments).sum::<usize>(),
        opened.recovered.iter().map(|r| r.records).sum::<usize>(),
        opened.recovered.iter().filter(|r| r.cut.is_some()).count(),
        opened.recovered.iter().map(|r| r.damaged.len()).sum::<usize>(),
    );
    let pid_file = spool_root.join("sealgate.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(failed(format!("cannot write {}", pid_file.display())))?;

    let listen = cfg.listen_addrs();
    let count = cfg.shard_count();
    // Over a file-size limit (ulimit -f, systemd LimitFSIZE) the kernel
    // sends SIGXFSZ, whose default is to kill the process: every session
    // would be lost for one big message. Ignored, the write fails with
    // EFBIG instead and that one message gets `452 4.3.1`.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let shared = Shared::new(snapshot, count);
    let _ = shared.spool.set(spool_stats);
    let area = spool::SpillArea::open(&spool_root).map_err(failed(format!(
        "cannot open {}/staging",
        spool_root.display()
    )))?;
    let _ = shared.spill.set(Arc::new(area));
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(failed("cannot install signal handlers"))?;
    let reader = spool::Reader::new(&spool_root, &opened.stores).map_err(failed(format!(
        "cannot open spool {}",
        spool_root.display()
    )))?;
    let mut work = Vec::with_capacity(opened.stores.len());
    let mut stores: Vec<crate::shard::writers::WriterStore> =
        Vec::with_capacity(opened.stores.len());
    for s in opened.stores.drain(..) {
        let (tx, rx) = crate::handoff::channel(vec![crate::handoff::Bell::new()]);
        work.push(tx);
        stores.push((Box::new(s), Some(rx)));
    }
    // The resolver serves host-name profiles; without one they cannot
    // match, so it must start when any exists.
    let needs_names = shared.snapshot.load().profiles.index.needs_names();
    let resolver = match cfg
        .start_resolver()
        .map_err(failed("cannot start the resolver"))
    {
        Ok(r) => Some(r),
        Err(e) if !needs_names => {
            tracing::warn!("{e}; client names will not be looked up");
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(r) = &resolver {
        let _ = shared.dane.set(r.dane_stats.clone());
        let _ = shared.sts.set(r.sts.clone());
    }
    let (delivery_tx, delivery_rx) = crate::handoff::channel(vec![crate::handoff::Bell::new()]);
    let shards = Shards::start(
        &listen,
        cfg.file.server.steer_by_cpu,
        stores,
        resolver.clone(),
        Some(delivery_tx.clone()),
        shared.clone(),
    )
    .map_err(StartError::Listen)?;
    let fleet = match cfg.fleet() {
        Some(settings) => {
            let stats = Arc::new(crate::fleet::Stats::default());
            let _ = shared.fleet.set(stats.clone());
            tracing::info!(
                "fleet: node {} of the fleet in {}",
                settings.node,
                crate::fleet::redacted(&settings.url)
            );
            Some(
                crate::fleet::start(
                    settings,
                    cfg.hostname(),
                    crate::tlsrpt::dir(&cfg.spool_dir()),
                    resolver.as_ref().map(|r| r.sts.clone()),
                    posture_link(&shared.delivery),
                    stats,
                )
                .map_err(failed("cannot start the fleet thread"))?,
            )
        }
        None => None,
    };
    let scheduler = crate::delivery::Scheduler::new(
        delivery_rx,
        delivery_tx.clone(),
        {
            let shared = shared.clone();
            Box::new(move || shared.snapshot.load_full())
        },
        shared.delivery.clone(),
        shards.doors(),
        resolver.clone(),
        crate::delivery::SpoolAccess::new(reader, work),
        Some(crate::tlsrpt::dir(&cfg.spool_dir())),
        recovered,
    )
    .with_fleet(fleet);
    let delivery = std::thread::Builder::new()
        .name("delivery".into())
        .spawn(move || scheduler.run())
        .map_err(failed("cannot start delivery"))?;
    // CERT-3: a warning at start and every day for certificates that
    // expire within 30 days.
    let files = cfg.certificate_files();
    let _ = std::thread::Builder::new()
        .name("cert-expiry".into())
        .spawn(move || loop {
            for w in crate::tls::expiry_warnings(&files) {
                tracing::warn!("{w}");
            }
            std::thread::sleep(std::time::Duration::from_secs(86_400));
        });
    let control_path = cfg.spool_dir().join(CONTROL_SOCKET);
    let reloader = Arc::new(Reloader {
        running: cfg.clone(),
        path: path.map(Path::to_path_buf),
        current: std::sync::Mutex::new(cfg.clone()),
    });
    // The ACME thread runs always: a reload may add `[acme]`.
    let acme = crate::acme::start(
        AcmeGateway {
            shared: shared.clone(),
            reloader: reloader.clone(),
            resolver: resolver.clone(),
        },
        shared.acme.clone(),
    )
    .map_err(failed("cannot start the ACME thread"))?;
    start_control(
        &control_path,
        delivery_tx.clone(),
        shared.clone(),
        cfg.shown_certificate_files(),
        reloader.clone(),
        acme,
    )?;
    let admin = crate::admin::start(
        &cfg.file.admin.listen,
        shared.clone(),
        cfg.shown_certificate_files(),
    )?;
    let addrs: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
    // What a newcomer needs first: where to send, where to look, where the
    // mail goes, how to stop.
    let elsewhere = match shared
        .snapshot
        .load()
        .routes
        .for_domain("other.invalid")
        .via
    {
        crate::policy::route::Via::Mx => "by MX lookup (to the Internet)".to_string(),
        via @ crate::policy::route::Via::Host { .. } => format!("to {via}"),
    };
    tracing::info!(
        "sealgate ready: listening on {} with {} shard(s); status page and metrics on http://{admin}/ (/metrics); mail goes {elsewhere} unless a route says otherwise; stop with Ctrl-C or SIGTERM",
        addrs.join(", "),
        count
    );

    sd_notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("accepting mail"),
    ]);
    for sig in signals.forever() {
        if sig == SIGHUP {
            sd_notify(&[sd_notify::NotifyState::Reloading]);
            let _ = reloader.reload(&shared);
            sd_notify(&[sd_notify::NotifyState::Ready]);
            continue;
        }
        tracing::info!(
            "signal {sig}: stopping: no new connections, sessions finish their messages"
        );
        sd_notify(&[sd_notify::NotifyState::Stopping]);
        break;
    }
    // Shards first (no new messages), then delivery (its last state
    // changes go to the writers), then the writers (they sync and stop).
    let writers = shards.stop_serving();
    let _ = delivery_tx.send(crate::delivery::Event::Stop);
    let _ = delivery.join();
    writers.stop();
    let _ = std::fs::remove_file(&control_path);
    for (i, s) in shared.stats.iter().enumerate() {
        tracing::info!(
            "shard {i}: connections={} messages={}",
            s.accepted.load(Ordering::Relaxed),
            s.messages.load(Ordering::Relaxed)
        );
    }
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("sealgate stopped");
    Ok(())
}
