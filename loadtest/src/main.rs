//! `sealgate-load`: load-test an SMTP server (product.md §4), or run a sink.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rustls::pki_types::ServerName;

use sealgate_load::engine::{self, Options, Until};
use sealgate_load::script::{Mode, Params};
use sealgate_load::sink::{Sink, SinkOptions};
use sealgate_load::stats::CpuReport;
use sealgate_load::{cpu, tlsconf};

#[derive(Parser)]
#[command(
    name = "sealgate-load",
    version,
    about = "Load generator and SMTP sink for sealgate",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: Option<LoadArgs>,
}

#[derive(Subcommand)]
enum Command {
    /// Accept and discard (or dump) mail: the downstream of relay tests.
    Sink(SinkArgs),
}

#[derive(Args)]
struct SinkArgs {
    #[arg(long)]
    listen: SocketAddr,
    /// PEM certificate for STARTTLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Write each message to DIR/<id>.eml instead of discarding it.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

#[derive(Args)]
struct LoadArgs {
    /// Server address, HOST:PORT.
    #[arg(long)]
    target: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Sessions in flight at once (closed loop), or at most (open loop).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Run time, e.g. 10s (default 10s unless --sessions is given).
    #[arg(long, conflicts_with = "sessions")]
    duration: Option<String>,
    /// Total sessions to run.
    #[arg(long)]
    sessions: Option<u64>,
    /// Open loop: start R sessions per second ("500" or "500/s").
    #[arg(long)]
    rate: Option<String>,
    /// Message size in octets (message and plain modes).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    rcpts: usize,
    #[arg(long, default_value_t = 1)]
    messages_per_conn: usize,
    /// Recipient domain.
    #[arg(long, default_value = "example.com")]
    to_domain: String,
    #[arg(long, default_value = "load.sealgate.test")]
    helo: String,
    /// Report the CPU time and memory of this server process tree.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Keep each session open after its (post-TLS) EHLO until all are
    /// open, then report the server's memory per held session.
    #[arg(long)]
    hold: bool,
    /// Verify the server certificate (needs --ca).
    #[arg(long)]
    verify: bool,
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS server name (SNI and verification).
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// Resume TLS sessions (default: every handshake is a full one).
    #[arg(long)]
    resumption: bool,
    /// Key exchange groups to offer, in order, by IANA name
    /// (e.g. "X25519" or "X25519MLKEM768,X25519"; the first gets a key
    /// share). Default: X25519 alone, the like-for-like figure.
    #[arg(long, value_delimiter = ',', default_value = "X25519")]
    groups: Vec<String>,
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// A session taking longer fails.
    #[arg(long, default_value = "30s")]
    timeout: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Append each reply that accepted a message ("250 2.0.0 Ok: queued
    /// as ID") to FILE as it arrives.
    #[arg(long)]
    accepted_log: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command, cli.load) {
        (Some(Command::Sink(a)), _) => sink(a),
        (None, Some(a)) => load(a),
        (None, None) => Err("give --target and --mode, or the sink subcommand (see --help)".into()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sealgate-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    s.parse::<sealgate::config::units::Span>()
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

fn sink(a: SinkArgs) -> Result<ExitCode, String> {
    cpu::raise_fd_limit();
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]);
    let mut signals = signals.map_err(|e| e.to_string())?;
    let sink = Sink::start(&SinkOptions {
        listen: a.listen,
        cert: a.tls_cert.zip(a.tls_key),
        dump: a.dump,
        shards: a.shards,
    })?;
    eprintln!("sink ready: listening on {}", a.listen);
    let _ = signals.forever().next();
    let connections = sink.connections();
    let n = sink.stop();
    eprintln!("sink received {n} messages over {connections} connections");
    Ok(ExitCode::SUCCESS)
}

fn load(a: LoadArgs) -> Result<ExitCode, String> {
    let target = a
        .target
        .to_socket_addrs()
        .map_err(|e| format!("--target {}: {e}", a.target))?
        .next()
        .ok_or_else(|| format!("--target {}: no address", a.target))?;
    let until = match (a.sessions, &a.duration) {
        (Some(n), _) => Until::Sessions(n),
        (None, Some(d)) => Until::Elapsed(duration(d)?),
        (None, None) => Until::Elapsed(Duration::from_secs(10)),
    };
    let rate = match &a.rate {
        None => None,
        Some(r) => Some(
            r.trim_end_matches("/s")
                .parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0)
                .ok_or_else(|| format!("--rate {r}: expected a positive number"))?,
        ),
    };
    let tls = if matches!(a.mode, Mode::Starttls | Mode::Message) {
        let config = tlsconf::client_config(&tlsconf::TlsOptions {
            verify: a.verify,
            ca: a.ca.as_deref(),
            resumption: a.resumption,
            groups: &a.groups,
            client_cert: a.client_cert.as_deref().zip(a.client_key.as_deref()),
        })?;
        let name =
            ServerName::try_from(a.sni.clone()).map_err(|e| format!("--sni {}: {e}", a.sni))?;
        Some((config, name))
    } else {
        None
    };
    let params = Params {
        mode: a.mode,
        helo: a.helo.clone(),
        from: format!("load@{}", a.helo),
        rcpts: (1..=a.rcpts.max(1))
            .map(|i| format!("sink{i}@{}", a.to_domain))
            .collect(),
        messages_per_conn: a.messages_per_conn.max(1),
        data: Params::message(a.size),
        hold: a.hold,
    };
    let fd_limit = cpu::raise_fd_limit();
    if a.concurrency as u64 + 16 > fd_limit {
        eprintln!(
            "sealgate-load: warning: --concurrency {} is near the open-file limit {fd_limit}",
            a.concurrency
        );
    }
    let opts = Options {
        target,
        params: Arc::new(params),
        concurrency: a.concurrency.max(1),
        until,
        rate,
        tls,
        session_timeout: duration(&a.timeout)?,
        progress: !a.json && std::io::stderr().is_terminal(),
        accepted_log: match &a.accepted_log {
            Some(path) => Some(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--accepted-log {}: {e}", path.display()))?,
            )),
            None => None,
        },
    };
    let cpu_before = a.server_pid.and_then(cpu::tree_cpu);
    let rss_before = a.server_pid.map(cpu::tree_rss_kib);
    let self_before = cpu::self_cpu_seconds();
    let mut rss_per_held = None;
    let stop = AtomicBool::new(false);
    let (stats, elapsed) = engine::run(&opts, &stop, &mut |stats| {
        if let (Some(pid), Some(before)) = (a.server_pid, rss_before) {
            let now = cpu::tree_rss_kib(pid);
            rss_per_held = Some(now.saturating_sub(before) as f64 / stats.held.max(1) as f64);
        }
    })
    .map_err(|e| e.to_string())?;
    let generator_cpu = cpu::self_cpu_seconds() - self_before;
    let cpu = match (a.server_pid, cpu_before) {
        (Some(pid), Some(before)) => {
            let used = cpu::tree_cpu(pid).unwrap_or(before).since(before);
            let per_session = |s: f64| s * 1e6 / (stats.sessions_ok + stats.held).max(1) as f64;
            Some(CpuReport {
                server_cpu_s: used.total(),
                server_us_per_session: per_session(used.total()),
                server_user_us_per_session: per_session(used.user),
                server_system_us_per_session: per_session(used.system),
                generator_cpu_s: generator_cpu,
                server_rss_kib: cpu::tree_rss_kib(pid),
                rss_kib_per_held_session: rss_per_held,
            })
        }
        (Some(pid), None) => return Err(format!("--server-pid {pid}: no such process")),
        _ => None,
    };
    let report = stats.report(elapsed, cpu);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{report}");
    }
    Ok(if report.sessions_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
