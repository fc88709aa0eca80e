//! The `sealgate` command line (docs/operations.md; `sealgate --help`).

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
        /// Configuration file (default: the embedded default).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and certificates; exit 1 on any error.
    Check {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Show which profile applies to a client and what the gateway would do.
    Explain {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// The client's address, as a connection would come from it.
        #[arg(long)]
        client_ip: std::net::IpAddr,
        /// The client's forward-confirmed host name (what reverse DNS
        /// would give), for host-name profiles.
        #[arg(long)]
        client_name: Option<String>,
        /// The name the client gives in EHLO.
        #[arg(long)]
        helo: Option<String>,
        /// MAIL FROM address.
        #[arg(long)]
        from: Option<String>,
        /// RCPT TO addresses.
        #[arg(long = "rcpt")]
        rcpts: Vec<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Also ask DNS what the recipients' DANE records and MTA-STS
        /// policies say now (the live verdict of every source).
        #[arg(long)]
        dns: bool,
    },
    /// Certificate tooling: keys, CSRs, a test CA, signing, inspection, PFX.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Connect to a mail server as delivery would and report its TLS.
    ///
    /// Exit status: 0 when the server would be accepted (by the profile
    /// given, or the route's), 2 when it would be refused (the reason is
    /// printed), 1 when the probe could not be made (no such host, no
    /// connection, a configuration error).
    Probe {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// HOST[:PORT] or [IP]:PORT (port 25 by default).
        target: String,
        /// Judge the server by this outbound profile.
        #[arg(long)]
        profile: Option<String>,
        /// TARGET is a mail domain: probe its first MX host (port 25 or
        /// the port given).
        #[arg(long)]
        mx: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue administration on the running gateway.
    Queue {
        /// Configuration file (default: the embedded default, as `run`
        /// uses it); before or after the queue command (`queue list -c FILE`).
        #[arg(short = 'c', long = "config", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Outbound policy of a recipient domain on the running gateway: the
    /// route's profile, DANE records and MTA-STS policy.
    Policy {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The partners' TLS posture on the running gateway: configured
    /// partners and the busiest destination domains, with the TLS of the
    /// last delivery, certificate expiry, policies, last failure; then the
    /// queue and the recent downgrades (the status page's table).
    Partners {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// The status page's JSON (`/status.json`) instead.
        #[arg(long)]
        json: bool,
    },
    /// The certificate the gateway keeps by ACME (`[acme]`): `status`
    /// reads it from the spool directory; `renew` orders one now.
    Acme {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: AcmeCommand,
    },
    /// Reports the gateway makes: `report tls` (RFC 8460).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The spool on disk, offline (the gateway may be running or not).
    Spool {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// Ask the running gateway to reload its configuration and wait for
    /// the answer: exit 1, with the errors, when it refused the file.
    Reload {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Man pages (OUT/man/*.1) and shell completions (OUT/completions:
    /// bash, zsh, fish) generated from this command line, for packages.
    #[command(hide = true)]
    GenerateDocs {
        /// The directory to write man/ and completions/ into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `sealgate generate-docs`: every page and completion script comes from
/// the clap definitions above, so they cannot drift from `--help`.
fn generate_docs(out: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    // The main page: where things are, and where to read on.
    let page = man.join("sealgate.1");
    let mut text = std::fs::read_to_string(&page)?;
    text.push_str(
        ".SH FILES\n\
         .TP\n/etc/sealgate/sealgate.toml\nThe configuration (the package's; \\fBsealgate run\\fR without \\fB\\-c\\fR uses the embedded default).\n\
         .TP\n/var/spool/sealgate\nThe spool (\\fB[server] spool_dir\\fR): the journals, the queue's state, TLS\\-report days, the ACME state, the MTA\\-STS cache.\n\
         .TP\n/var/spool/sealgate/sealgate.ctl\nThe control socket (mode 0600) that \\fBreload\\fR, \\fBqueue\\fR, \\fBpolicy\\fR, \\fBpartners\\fR, \\fBacme\\fR and \\fBreport tls \\-\\-send\\fR talk to.\n\
         .SH SEE ALSO\n\
         The documentation in /usr/share/doc/sealgate/ (configuration, TLS guide, policy, delivery, spool, operations, security, architecture, performance), and the subcommands' pages: \\fBsealgate\\-run\\fR(1), \\fBsealgate\\-check\\fR(1), \\fBsealgate\\-reload\\fR(1), \\fBsealgate\\-queue\\fR(1), \\fBsealgate\\-cert\\fR(1), \\fBsealgate\\-acme\\fR(1).\n",
    );
    std::fs::write(&page, text)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut Cli::command(), "sealgate", &completions)?;
    }
    Ok(())
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The TLS reports (RFC 8460) of a UTC day: what would be (or was)
    /// sent, per policy domain; with --send, send them now.
    Tls {
        /// Configuration file (default: the embedded default, as `run` uses it).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// YYYY-MM-DD (UTC); today when omitted.
        #[arg(long)]
        day: Option<String>,
        /// One policy domain only.
        #[arg(long)]
        domain: Option<String>,
        /// The reports' JSON, as sent (RFC 8460 §4).
        #[arg(long)]
        json: bool,
        /// Ask the running gateway to send them now.
        #[arg(long)]
        send: bool,
    },
}

#[derive(Subcommand)]
enum AcmeCommand {
    /// The certificate: names, issuer, serial, validity, renewal due,
    /// its key's SHA-256 (the TLSA 3 1 1 data), the last order's outcome
    /// and what comes next. Read from the spool directory.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Order a certificate now on the running gateway (same key unless it
    /// is older than key_lifetime) and wait for the outcome: exit 1 when
    /// the order failed (the certificate in service stays).
    Renew,
    /// Roll the key now. With [acme.dane]: the next key goes into service
    /// once its TLSA record has been seen validated for two TTLs (the
    /// answer comes at once; `acme status` follows the roll). Without: a
    /// certificate on a new key is ordered now.
    Roll,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// What applies and why: profile, DANE records and their DNSSEC
    /// status, the MTA-STS policy and its age.
    Show {
        /// The recipient domain.
        domain: String,
    },
    /// Fetch the domain's MTA-STS policy again now, then show.
    Refresh {
        /// The recipient domain.
        domain: String,
    },
    /// Drop the domain's cached MTA-STS policy.
    Forget {
        /// The recipient domain.
        domain: String,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// CRC-check every journal segment and every queued message; count
    /// the live messages. Exit 1 on damage.
    Verify,
    /// Write a queued message to standard output as RFC 5322 text
    /// (sealgate's Received header first).
    Export {
        /// The queue id.
        id: String,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// A new private key (PEM, mode 0600).
    Key {
        /// Key type.
        #[arg(long = "type", default_value = "ecdsa-p256", value_parser = key_types())]
        kind: String,
        /// Where to write the key (PKCS#8 PEM, mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// With a weak type (rsa-1024, rsa-512): say that it cannot be
        /// made, instead of refusing it as weak (no TLS stack sealgate
        /// speaks with accepts such keys either way).
        #[arg(long)]
        allow_weak: bool,
    },
    /// A certificate signing request (PKCS#10) with subjectAltNames.
    Csr {
        /// The private key the request is for (PEM).
        #[arg(long)]
        key: PathBuf,
        /// The subject's common name.
        #[arg(long)]
        cn: String,
        /// A subjectAltName (DNS name or IP address); repeat for more.
        /// Clients match these only; without any, the CN becomes one.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// The subject's organisation (O).
        #[arg(long)]
        org: Option<String>,
        /// The subject's organisational unit (OU).
        #[arg(long)]
        ou: Option<String>,
        /// The subject's two-letter country code (C).
        #[arg(long)]
        country: Option<String>,
        /// Where to write the request (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// A self-signed certificate and its new key, for a quick start or a
    /// lab (clients that verify will not trust it).
    SelfSigned {
        /// The common name, and a subjectAltName unless --san is given.
        #[arg(long)]
        cn: String,
        /// A subjectAltName (DNS name or IP address); repeat for more.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Key type.
        #[arg(long = "type", default_value = "ecdsa-p256", value_parser = key_types())]
        kind: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out_cert: PathBuf,
        /// Where to write the key (PEM, mode 0600).
        #[arg(long)]
        out_key: PathBuf,
    },
    /// A test certificate authority (marked as such in its subject).
    Ca {
        /// The CA's common name ("(test CA)" is added).
        #[arg(long)]
        cn: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Where to write the CA certificate (PEM).
        #[arg(long)]
        out_cert: PathBuf,
        /// Where to write the CA's key (PEM, mode 0600).
        #[arg(long)]
        out_key: PathBuf,
    },
    /// Sign a CSR with a CA: serverAuth and clientAuth, the CSR's SANs.
    Sign {
        /// The CA certificate (PEM).
        #[arg(long)]
        ca_cert: PathBuf,
        /// The CA's private key (PEM).
        #[arg(long)]
        ca_key: PathBuf,
        /// The request to sign (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// Validity in days (warned about when it outlives the CA).
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// What a certificate (chain) file or a server's STARTTLS chain says.
    Inspect {
        /// A PEM file, or HOST:PORT to fetch the chain over STARTTLS.
        target: String,
        /// A private key that must match the certificate.
        #[arg(long)]
        key: Option<PathBuf>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// PKCS#12 / PFX to PEM certificate chain and key.
    Pkcs12 {
        /// The PKCS#12 (.p12, .pfx) file.
        #[arg(long = "in")]
        input: PathBuf,
        /// A file holding its password (none: an empty password).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Where to write the certificate chain (PEM).
        #[arg(long)]
        out_cert: PathBuf,
        /// Where to write the key (PEM, mode 0600).
        #[arg(long)]
        out_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Every queued message with its recipients' state.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// One message: envelope, headers, recipients' state.
    Show {
        /// The queue id (as the log and `queue list` show it).
        id: String,
    },
    /// Attempt every pending recipient now.
    Flush,
    /// Remove a message without notifying anyone.
    Delete {
        /// The queue id.
        id: String,
    },
    /// Keep a message from delivery until released.
    Hold {
        /// The queue id.
        id: String,
    },
    /// Release a held message for delivery now.
    Release {
        /// The queue id.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => sealgate::run::run(config.as_deref()),
        Command::Check { config } => sealgate::run::check(config.as_deref()),
        Command::Reload { config } => sealgate::run::reload_command(config.as_deref()),
        Command::GenerateDocs { out } => match generate_docs(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealgate generate-docs: {}: {e}", out.display());
                ExitCode::from(1)
            }
        },
        Command::Cert { command } => match cert(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealgate cert: {e}");
                ExitCode::from(1)
            }
        },
        Command::Probe {
            config,
            target,
            profile,
            mx,
            json,
        } => {
            let result = sealgate::config::load(config.as_deref())
                .map_err(|e| e.to_string())
                .and_then(|cfg| {
                    let (host, addr, published) = if mx {
                        sealgate::probe::mx_target(&cfg, &target)
                    } else {
                        sealgate::probe::target(&target).map(|(h, a)| (h, a, Default::default()))
                    }
                    .map_err(|e| e.to_string())?;
                    sealgate::probe::probe(&cfg, &host, addr, profile.as_deref(), &published)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(report) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).unwrap_or_default()
                        );
                    } else {
                        print!("{report}");
                    }
                    if report.would_deliver {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    }
                }
                Err(e) => {
                    eprintln!("sealgate probe: {}", sealgate::model::plain_error(&e));
                    ExitCode::from(1)
                }
            }
        }
        Command::Spool { config, command } => {
            let cfg = match sealgate::config::load(config.as_deref()) {
                Ok(c) => c,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::from(1);
                }
            };
            let root = cfg.spool_dir();
            match command {
                SpoolCommand::Verify => sealgate::spool::verify_command(&root),
                SpoolCommand::Export { id } => sealgate::spool::export_command(&root, &id),
            }
        }
        Command::Report {
            command:
                ReportCommand::Tls {
                    config,
                    day,
                    domain,
                    json,
                    send,
                },
        } => sealgate::run::report_command(
            config.as_deref(),
            day.as_deref(),
            domain.as_deref(),
            json,
            send,
        ),
        Command::Acme { config, command } => match command {
            AcmeCommand::Status { json } => {
                sealgate::run::acme_status_command(config.as_deref(), json)
            }
            AcmeCommand::Renew => sealgate::run::queue_command(
                config.as_deref(),
                sealgate::control::Command::AcmeRenew,
                false,
            ),
            AcmeCommand::Roll => sealgate::run::queue_command(
                config.as_deref(),
                sealgate::control::Command::AcmeRoll,
                false,
            ),
        },
        Command::Partners { config, json } => sealgate::run::queue_command(
            config.as_deref(),
            sealgate::control::Command::Partners,
            json,
        ),
        Command::Policy { config, command } => {
            use sealgate::delivery::PolicyAction;
            let (action, domain) = match command {
                PolicyCommand::Show { domain } => (PolicyAction::Show, domain),
                PolicyCommand::Refresh { domain } => (PolicyAction::Refresh, domain),
                PolicyCommand::Forget { domain } => (PolicyAction::Forget, domain),
            };
            let domain = sealgate::model::canonical_domain(&domain);
            sealgate::run::queue_command(
                config.as_deref(),
                sealgate::control::Command::Delivery(sealgate::delivery::Admin::Policy(
                    action, domain,
                )),
                false,
            )
        }
        Command::Queue { config, command } => {
            use sealgate::delivery::{Admin, QueueChange};
            let (admin, json) = match command {
                QueueCommand::List { json } => (Admin::List, json),
                QueueCommand::Show { id } => (Admin::Show(id), false),
                QueueCommand::Flush => (Admin::Change(QueueChange::Flush), false),
                QueueCommand::Delete { id } => (Admin::Change(QueueChange::Delete(id)), false),
                QueueCommand::Hold { id } => (Admin::Change(QueueChange::Hold(id)), false),
                QueueCommand::Release { id } => (Admin::Change(QueueChange::Release(id)), false),
            };
            sealgate::run::queue_command(
                config.as_deref(),
                sealgate::control::Command::Delivery(admin),
                json,
            )
        }
        Command::Explain {
            config,
            client_ip,
            client_name,
            helo,
            from,
            rcpts,
            json,
            dns,
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
            let compiled = &cfg.profiles;
            let looked_up = match (&client_name, compiled.index.needs_names()) {
                (None, true) => cfg
                    .start_resolver()
                    .ok()
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
            let mut e = sealgate::explain::explain(&cfg, &q);
            // The recipients' published policies need DNS: asked with
            // --dns only (explain is otherwise offline).
            if dns && !rcpts.is_empty() {
                if let Ok(resolver) = cfg.start_resolver() {
                    sealgate::explain::add_live_verdicts(&mut e, &cfg, &resolver);
                }
            }
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

/// What a command line tool reports before exiting 1.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Cert(#[from] sealgate::cert::CertError),
    #[error(transparent)]
    Probe(#[from] sealgate::probe::ProbeError),
    #[error(transparent)]
    Config(#[from] sealgate::config::ConfigErrors),
    /// A file named on the command line that cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate tool's error about one input file.
    #[error("{}: {source}", path.display())]
    Input {
        path: std::path::PathBuf,
        #[source]
        source: sealgate::cert::CertError,
    },
    /// `cert inspect FILE`: PEM that does not parse.
    #[error("{target}: {reason}")]
    Pem { target: String, reason: String },
    #[error("{0}: no CERTIFICATE block found")]
    NoCertificateBlock(String),
    /// `cert inspect HOST`: the server showed no certificate.
    #[error("{target}: no certificate (STARTTLS {})", if *.starttls_offered { "failed" } else { "not offered" })]
    NoServerCertificate {
        target: String,
        starttls_offered: bool,
    },
}

/// `cert key --type`: the types it makes, listed in `--help`; the weak
/// ones are accepted here (hidden) so that `cert key` can say why not.
fn key_types() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    let mut values: Vec<PossibleValue> = sealgate::cert::KEY_TYPES
        .iter()
        .map(|t| PossibleValue::new(*t))
        .collect();
    values.extend(["rsa-1024", "rsa-512"].map(|t| PossibleValue::new(t).hide(true)));
    clap::builder::PossibleValuesParser::new(values)
}

fn read_text(p: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(p).map_err(|source| CliError::Read {
        path: p.to_path_buf(),
        source,
    })
}

fn cert(command: CertCommand) -> Result<(), CliError> {
    use sealgate::cert;
    match command {
        CertCommand::Key {
            kind,
            out,
            allow_weak,
        } => {
            let key = cert::generate_key(&kind, allow_weak)?;
            cert::save(&out, &key.serialize_pem(), true)?;
            println!("{}: {kind} private key written (mode 0600)", out.display());
        }
        CertCommand::Csr {
            key,
            cn,
            sans,
            org,
            ou,
            country,
            out,
        } => {
            let key = cert::load_key(&key)?;
            let subject = cert::Subject {
                cn: &cn,
                sans: &sans,
                org: org.as_deref(),
                ou: ou.as_deref(),
                country: country.as_deref(),
            };
            let (pem, warnings) = cert::csr(&key, &subject)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            cert::save(&out, &pem, false)?;
            println!("{}: certificate signing request written", out.display());
        }
        CertCommand::SelfSigned {
            cn,
            sans,
            kind,
            days,
            out_cert,
            out_key,
        } => {
            let key = cert::generate_key(&kind, false)?;
            let pem = cert::self_signed(
                &key,
                &cert::Subject {
                    cn: &cn,
                    sans: &sans,
                    org: None,
                    ou: None,
                    country: None,
                },
                days,
            )?;
            cert::save(&out_key, &key.serialize_pem(), true)?;
            cert::save(&out_cert, &pem, false)?;
            println!(
                "{}: self-signed certificate written ({days} days); key in {}",
                out_cert.display(),
                out_key.display()
            );
        }
        CertCommand::Ca {
            cn,
            days,
            out_cert,
            out_key,
        } => {
            let key = cert::generate_key("ecdsa-p256", false)?;
            let pem = cert::test_ca(&cn, days, &key)?;
            cert::save(&out_key, &key.serialize_pem(), true)?;
            cert::save(&out_cert, &pem, false)?;
            println!(
                "{}: test CA certificate written ({days} days); key in {}",
                out_cert.display(),
                out_key.display()
            );
        }
        CertCommand::Sign {
            ca_cert,
            ca_key,
            csr,
            days,
            out,
        } => {
            let ca_pem = read_text(&ca_cert)?;
            let pem = cert::sign(&read_text(&csr)?, &ca_pem, &cert::load_key(&ca_key)?, days)?;
            cert::save(&out, &pem, false)?;
            println!("{}: certificate signed for {days} days", out.display());
            if let Some(w) = cert::outlives_ca(&ca_pem, days) {
                eprintln!("{w}");
            }
        }
        CertCommand::Inspect { target, key, json } => {
            let path = std::path::Path::new(&target);
            let chain: Vec<Vec<u8>> = if path.exists() {
                use rustls::pki_types::pem::PemObject;
                let pem = |e: rustls::pki_types::pem::Error| CliError::Pem {
                    target: target.clone(),
                    reason: sealgate::model::plain_error(&e.to_string()),
                };
                rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(pem)?
                    .map(|c| c.map(|c| c.to_vec()).map_err(pem))
                    .collect::<Result<_, _>>()?
            } else {
                let cfg = sealgate::config::load(None)?;
                let (host, addr) = sealgate::probe::target(&target)?;
                let report = sealgate::probe::probe(&cfg, &host, addr, None, &Default::default())?;
                return match report.chain {
                    Some(c) => {
                        print_inspect(&c, json);
                        Ok(())
                    }
                    None => Err(CliError::NoServerCertificate {
                        target,
                        starttls_offered: report.starttls_offered,
                    }),
                };
            };
            if chain.is_empty() {
                return Err(CliError::NoCertificateBlock(target));
            }
            let spki = match key {
                Some(k) => Some(rcgen::PublicKeyData::subject_public_key_info(
                    &cert::load_key(&k)?,
                )),
                None => None,
            };
            let report = cert::inspect::inspect(&chain, spki.as_deref())?;
            print_inspect(&report, json);
        }
        CertCommand::Pkcs12 {
            input,
            password_file,
            out_cert,
            out_key,
        } => {
            let pfx = std::fs::read(&input).map_err(|source| CliError::Read {
                path: input.clone(),
                source,
            })?;
            let password = match password_file {
                Some(p) => read_text(&p)?.trim_end_matches(['\r', '\n']).to_string(),
                None => String::new(),
            };
            let (certs, key) =
                cert::from_pkcs12(&pfx, &password).map_err(|source| CliError::Input {
                    path: input.clone(),
                    source,
                })?;
            cert::save(&out_key, &key, true)?;
            cert::save(&out_cert, &certs, false)?;
            println!(
                "{}: certificate chain written; key in {} (mode 0600)",
                out_cert.display(),
                out_key.display()
            );
        }
    }
    Ok(())
}

fn print_inspect(report: &sealgate::cert::inspect::Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{report}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for
    /// (`--help`, the man pages).
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "sealgate", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
