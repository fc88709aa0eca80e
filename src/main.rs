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
    /// Ask the running gateway (pid file in the spool directory) to reload.
    Reload {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => sealgate::run::run(config.as_deref()),
        Command::Check { config } => sealgate::run::check(config.as_deref()),
        Command::Reload { config } => sealgate::run::signal_reload(config.as_deref()),
    }
}
