//! The `sealgate` command line (product.md §4).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sealgate",
    version,
    about = "Secure email gateway: an SMTP relay that enforces TLS policy per partner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground.
    Run {
        /// Configuration file; the embedded default when omitted.
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and certificates; exit 1 on any error.
    Check {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Show which profile applies to a client and what the gateway would do.
    Explain {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        #[arg(long)]
        client_ip: std::net::IpAddr,
        /// The client's forward-confirmed host name (what reverse DNS
        /// would give), for host-name profiles.
        #[arg(long)]
        client_name: Option<String>,
        #[arg(long)]
        helo: Option<String>,
        /// MAIL FROM address.
        #[arg(long)]
        from: Option<String>,
        /// RCPT TO addresses.
        #[arg(long = "rcpt")]
        rcpts: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Queue administration on the running gateway.
    Queue {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Ask the running gateway (pid file in the spool directory) to reload.
    Reload {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Every queued message with its recipients' state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One message: envelope, headers, recipients' state.
    Show { id: String },
    /// Attempt every pending recipient now.
    Flush,
    /// Remove a message without notifying anyone.
    Delete { id: String },
    /// Keep a message from delivery until released.
    Hold { id: String },
    /// Release a held message for delivery now.
    Release { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => sealgate::run::run(config.as_deref()),
        Command::Check { config } => sealgate::run::check(config.as_deref()),
        Command::Reload { config } => sealgate::run::signal_reload(config.as_deref()),
        Command::Queue { config, command } => {
            let line = match command {
                QueueCommand::List { json: true } => "list --json".to_string(),
                QueueCommand::List { json: false } => "list".to_string(),
                QueueCommand::Show { id } => format!("show {id}"),
                QueueCommand::Flush => "flush".to_string(),
                QueueCommand::Delete { id } => format!("delete {id}"),
                QueueCommand::Hold { id } => format!("hold {id}"),
                QueueCommand::Release { id } => format!("release {id}"),
            };
            sealgate::run::queue_command(config.as_deref(), &line)
        }
        Command::Explain {
            config,
            client_ip,
            client_name,
            helo,
            from,
            rcpts,
            json,
        } => {
            let cfg = match sealgate::config::load(config.as_deref()) {
                Ok(c) => c,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::from(1);
                }
            };
            // Host-name profiles need the client's name: ask DNS as the
            // gateway would, unless the name was given.
            let (compiled, _) = sealgate::config::compile_profiles(&cfg.file);
            let looked_up = match (&client_name, compiled.index.needs_names()) {
                (None, true) => sealgate::run::start_resolver(&cfg)
                    .ok()
                    .flatten()
                    .and_then(|r| r.client_name_blocking(client_ip)),
                _ => None,
            };
            let q = sealgate::explain::Question {
                client_ip,
                client_name: client_name.as_deref().or(looked_up.as_deref()),
                helo: helo.as_deref(),
                from: from.as_deref(),
                rcpts: &rcpts,
            };
            let e = sealgate::explain::explain(&cfg, &q);
            if json {
                match serde_json::to_string_pretty(&e) {
                    Ok(j) => println!("{j}"),
                    Err(err) => {
                        eprintln!("{err}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{e}");
            }
            ExitCode::SUCCESS
        }
    }
}
