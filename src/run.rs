//! `sealgate run` and `sealgate check`: load the configuration, recover the
//! spool, start the shards, wait for signals.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config};
use crate::shard::{Shards, Shared};
use crate::spool;

/// `sealgate check`: every configuration and certificate problem, exit 1
/// on any.
pub fn check(path: Option<&Path>) -> ExitCode {
    let cfg = match config::load(path) {
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
        for p in &problems {
            eprintln!("{}: {p}", cfg.origin);
        }
        eprintln!("{} error(s) found", problems.len());
        return ExitCode::from(1);
    }
    println!("{}: configuration OK", cfg.origin);
    ExitCode::SUCCESS
}

fn init_logging(cfg: &Config) {
    let log = &cfg.file.log;
    // Per-direction levels: `receive` (inbound), `send` (outbound); the
    // rest of sealgate logs at the more verbose of the two.
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
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        config::units::LogFormat::Json => builder.json().init(),
        config::units::LogFormat::Text => builder.init(),
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
    init_logging(&cfg);
    match serve(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(cfg: &Config) -> Result<(), String> {
    match cfg.ensure_certificates() {
        Ok(Some(path)) => tracing::info!(
            "generated a self-signed ECDSA P-256 certificate: {}",
            path.display()
        ),
        Ok(None) => {}
        Err(problems) => return Err(problems.join("; ")),
    }
    let snapshot = cfg.snapshot().map_err(|p| p.join("; "))?;
    if snapshot.tls.is_none() {
        tracing::warn!("no certificate configured: STARTTLS will not be offered");
    }
    let spool_root = cfg.spool_dir();
    std::fs::create_dir_all(&spool_root)
        .map_err(|e| format!("cannot create spool {}: {e}", spool_root.display()))?;
    let recovery =
        spool::recover(&spool_root).map_err(|e| format!("spool recovery failed: {e}"))?;
    for (path, why) in &recovery.quarantined {
        tracing::warn!("spool: quarantined {}: {why}", path.display());
    }
    tracing::info!(
        "spool {}: recovered {} queued message(s), removed {} partial file(s), quarantined {}",
        spool_root.display(),
        recovery.queued.len(),
        recovery.removed_partial.len(),
        recovery.quarantined.len()
    );
    let pid_file = spool_root.join("sealgate.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;

    let listen = cfg.listen_addrs();
    let count = cfg.shard_count();
    let shared = Shared::new(snapshot, count);
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut stores: Vec<Arc<dyn spool::Store>> = Vec::with_capacity(count);
    for id in 0..count {
        let s = spool::Spool::open(&spool_root, id as u16)
            .map_err(|e| format!("cannot open spool {}: {e}", spool_root.display()))?;
        stores.push(Arc::new(s));
    }
    let writers = cfg.file.server.spool_writers;
    let shards =
        Shards::start(&listen, stores, writers, shared.clone()).map_err(|e| e.to_string())?;
    let addrs: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
    tracing::info!(
        "sealgate ready: listening on {} with {} shard(s)",
        addrs.join(", "),
        count
    );

    if let Some(sig) = signals.forever().next() {
        tracing::info!("signal {sig}: stopping");
    }
    shards.stop();
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
