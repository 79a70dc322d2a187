//! The `lienthong` binary: parse flags, load the config, build the services, run until a signal.

mod admin;
mod admin_access;
mod certificates;
mod control;
mod logging;
mod run;
mod services;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

/// Conferences, the gov.vn mail relay and internal DNS for a provincial data center.
#[derive(Debug, Parser)]
#[command(name = "lienthong", version, about)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every enabled service until SIGTERM or SIGINT; SIGHUP reloads the config.
    Run {
        /// The config file; without it, the built-in default config (`lienthong default-config`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file: exit 0, or print every problem as FILE:LINE:COL and exit 2.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the complete, commented default config.
    DefaultConfig,
    /// Read a password on standard input; print its argon2id hash for `[[mail.user]] password`.
    HashPassword,
    /// Tell the running instance to re-read its config file and certificate.
    Reload {
        /// The config file the running instance uses (to find its admin endpoint).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Inspect and act on the running instance's mail queue.
    Queue {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Mail relay tools.
    Mail {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: MailAction,
    },
    /// DNS tools.
    Dns {
        #[command(subcommand)]
        action: DnsAction,
    },
}

#[derive(Debug, Subcommand)]
enum QueueAction {
    /// One line per queued message.
    List,
    /// Envelope, headers and delivery history of one message (never the body).
    Show { id: String },
    /// Try delivery now: one message, or all.
    Flush { id: Option<String> },
    /// Delete a message without delivering it.
    Remove { id: String },
}

#[derive(Debug, Subcommand)]
enum MailAction {
    /// DKIM keys of the local domains.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// A message's whole story from the audit log: acceptance and every delivery attempt.
    Trace {
        /// A Message-ID (with or without <>) or an envelope sender or recipient address.
        needle: String,
        /// Only audit files of this UTC day (YYYY-MM-DD) and later.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DkimAction {
    /// New keys under a new selector; the old one stays published while its mail is in flight.
    Rotate { domain: String },
}

#[derive(Debug, Subcommand)]
enum DnsAction {
    /// Print every record the DNS service will serve, derived ones included.
    Records {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the DS records of a signed zone, to give the parent registry (creates the keys
    /// when the zone has none yet).
    Ds {
        zone: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Start a KSK rollover of a signed zone (a new KSK joins; CDS/CDNSKEY name it), or
    /// with --finish end it once the parent has the new DS. Reload to apply.
    RollKsk {
        zone: String,
        #[arg(long)]
        finish: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lienthong: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            logging::init(cli.log_format);
            run::run(config)
        }
        Command::Check { config } => Ok(check(&config)),
        Command::DefaultConfig => {
            print!("{}", lienthong_config::DEFAULT_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
        Command::HashPassword => hash_password(),
        Command::Reload { config } => {
            let config = load_or_exit(config.as_deref())?;
            control::reload(&config)
        }
        Command::Queue { config, action } => {
            let config = load_or_exit(config.as_deref())?;
            match action {
                QueueAction::List => control::queue_list(&config),
                QueueAction::Show { id } => control::queue_show(&config, &id),
                QueueAction::Flush { id } => control::queue_flush(&config, id.as_deref()),
                QueueAction::Remove { id } => control::queue_remove(&config, &id),
            }
        }
        Command::Mail { config, action: MailAction::Dkim { action: DkimAction::Rotate { domain } } } => {
            let config = load_or_exit(config.as_deref())?;
            control::dkim_rotate(&config, &domain)
        }
        Command::Mail { config, action: MailAction::Trace { needle, since } } => {
            let config = load_or_exit(config.as_deref())?;
            control::mail_trace(&config, needle, since)
        }
        Command::Dns { action: DnsAction::Records { config } } => {
            let config = load_or_exit(config.as_deref())?;
            let published = services::published_records(&config);
            print!("{}", lienthong_dns::render_records(&config, &published)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dns { action: DnsAction::Ds { zone, config } } => {
            let config = load_or_exit(config.as_deref())?;
            for line in lienthong_dns::ds_records(&config, &zone)? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dns { action: DnsAction::RollKsk { zone, finish, config } } => {
            let config = load_or_exit(config.as_deref())?;
            println!("{}", lienthong_dns::roll_ksk(&config, &zone, finish)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lienthong check`: every problem, one per line, exit 2; or a short confirmation.
fn check(path: &Path) -> ExitCode {
    match load_checked(Some(path)) {
        Ok(config) => {
            // Warnings do not refuse the config; they name what it would publish by mistake.
            for warning in services::warnings(&config) {
                eprintln!("{warning}");
            }
            println!("{}: ok", path.display());
            let ports = lienthong_sfu::port_report(&config);
            if !ports.needs.is_empty() {
                println!("conference ports (let these through the firewall):");
                for need in &ports.needs {
                    println!("  {need}");
                }
            }
            for warning in &ports.warnings {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            ExitCode::from(2)
        }
    }
}

/// Loads a config (or the built-in default) and runs the services' own checks too
/// (zone files, inline records). Returns every problem as a printable line.
pub fn load_checked(path: Option<&Path>) -> Result<lienthong_config::Config, Vec<String>> {
    let config = match path {
        Some(path) => lienthong_config::load(path),
        None => lienthong_config::built_in(&std::env::current_dir().unwrap_or_default()),
    }
    .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let problems = services::check(&config);
    if problems.is_empty() { Ok(config) } else { Err(problems) }
}

fn load_or_exit(path: Option<&Path>) -> anyhow::Result<lienthong_config::Config> {
    load_checked(path).map_err(|problems| anyhow::anyhow!("the config has problems:\n{}", problems.join("\n")))
}

fn hash_password() -> anyhow::Result<ExitCode> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the password from standard input")?;
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!(
            "empty password on standard input (expected e.g. `echo -n 'the password' | lienthong hash-password`)"
        );
    }
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|error| anyhow::anyhow!("salt: {error}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| anyhow::anyhow!("hashing failed: {error}"))?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}
