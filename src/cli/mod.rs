//! The command line: clap types, the configuration source decided once, one
//! mapping from errors to exit codes, and one file per verb.
//!
//! Exit codes: 0 success; 2 for any error (a configuration that does not load,
//! a file that cannot be read, the agent failing); `probe` returns the
//! monitoring-plugin code of its worst result (0 ok, 1 warning, 2 critical,
//! 3 unknown).

pub mod baseline;
pub mod fingerprints;
pub mod import_arpwatch;
pub mod probe;
pub mod replay;
pub mod status;
pub mod test_alert;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, ConfigSource, GatewaySpec};

/// The command line of `netsentry`.
#[derive(Parser)]
#[command(
    name = "netsentry",
    version,
    about = "Host-level network integrity agent: gateway, routes, links, and who answers for them",
    long_about = "Host-level network integrity agent. Watches the default gateway's MAC, the default routes and the links through netlink, ARP and IPv6 neighbour discovery on the wire, and the TLS certificates of your services from the outside; reports to webhooks (and Alertmanager), journald and metrics.\n\nConfiguration: /etc/netsentry/netsentry.toml. State: /var/lib/netsentry."
)]
pub struct Cli {
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Subcommand)]
pub enum Command {
    /// Run the agent in the foreground until SIGTERM or SIGINT
    Run {
        /// Configuration file [default: /etc/netsentry/netsentry.toml, or built-in defaults when it does not exist]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Parse and validate the configuration; print the effective configuration
    CheckConfig {
        /// Configuration file [default: /etc/netsentry/netsentry.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print nothing when the configuration is fine (for ExecReload=)
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run the packet detectors over a pcap or pcapng file (packet timestamps as time, no rate limits); nothing is sent
    Replay {
        /// The capture file (Ethernet link type)
        pcap: PathBuf,
        /// Configuration whose [arp] settings, gateways and stored baseline to use [default: none]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print one alert per line as JSON
        #[arg(long)]
        json: bool,
        /// A gateway and the MAC it really is at, e.g. 192.0.2.1=02:00:00:00:00:01 (repeatable; adds to or overrides [arp] gateways): a capture that starts in the middle of an attack cannot make the attacker's MAC the reference
        #[arg(long = "gateway", value_name = "IP=MAC", value_parser = GatewaySpec::parse)]
        gateways: Vec<GatewaySpec>,
    },
    /// Run the TLS checks once, as a monitoring plugin (Nagios, Icinga, Naemon): exit 0 ok, 1 warning, 2 critical, 3 unknown (also for usage and configuration errors); first line `NETSENTRY STATE - summary | perfdata`, then one line per endpoint
    Probe {
        /// Targets to check by name [default: all]
        targets: Vec<String>,
        /// Configuration file [default: /etc/netsentry/netsentry.toml; not read with --address]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print JSON instead of the plugin output
        #[arg(long)]
        json: bool,
        /// WARNING when our certificate ends within this many days [default: each target's expiry_warning]
        #[arg(short = 'w', long = "warning", value_name = "DAYS")]
        warning_days: Option<i64>,
        /// CRITICAL when our certificate ends within this many days
        #[arg(short = 'C', long = "critical", value_name = "DAYS")]
        critical_days: Option<i64>,
        #[command(flatten)]
        adhoc: probe::AdHoc,
    },
    /// Print SHA-256 of each certificate and of its public key (SPKI), for publishing
    Fingerprints {
        /// PEM files [default: the expected certificate files of the configuration]
        files: Vec<PathBuf>,
        /// Configuration file [default: /etc/netsentry/netsentry.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Print the certificate history instead: every certificate the agent has seen in the expected files (state_dir/cert_history.json)
        #[arg(long, conflicts_with = "files")]
        history: bool,
    },
    /// See the gateways the agent trusts and the changes it holds as suspect; accept or forget them
    Baseline {
        /// show (default) | accept [IP] | forget IP
        #[command(subcommand)]
        action: Option<baseline::Action>,
        /// Configuration file (for state_dir) [default: /etc/netsentry/netsentry.toml]
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        /// Print JSON (show)
        #[arg(long, global = true)]
        json: bool,
    },
    /// Send one `test` alert through every configured receiver now (not spooled, nothing stored); print each receiver's answer; exit 1 if any failed
    TestAlert {
        /// Configuration file [default: /etc/netsentry/netsentry.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Only the receiver with this name (`name`, or the URL without path as `status` shows it)
        #[arg(long, value_name = "NAME")]
        receiver: Option<String>,
    },
    /// Bring arpwatch's station list along: add the stations of an arp.dat to the agent's station table (run it with the agent stopped), so they are not announced again as new
    ImportArpwatch {
        /// arpwatch's file (e.g. /var/lib/arpwatch/arp.dat)
        file: PathBuf,
        /// The interface of lines that name none (arpwatch before 2.1a15 wrote none)
        #[arg(long, value_name = "NAME")]
        interface: Option<String>,
        /// Configuration file (for state_dir and [arp] max_stations) [default: /etc/netsentry/netsentry.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Create a minisign key pair for [publish]: the secret key (mode 0600) and FILE.pub; prints the public key line for the probers' manifest_key
    Keygen {
        /// The secret key file to create (FILE.pub gets the public key)
        #[arg(short, long, default_value = "/etc/netsentry/manifest.key")]
        output: PathBuf,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
    /// Show default routes, gateway neighbour entries, watched links and the stored baseline
    Status {
        /// Configuration file [default: /etc/netsentry/netsentry.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

/// Why a verb failed; printed on stderr, and the process exits 2.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration did not load (`FILE:LINE:COL: message`).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A verb's own failure, printed after its name.
    #[error("netsentry {verb}: {message}")]
    Verb {
        /// The verb, as typed.
        verb: &'static str,
        /// A sentence a user can act on.
        message: String,
    },
    /// A failure whose sentence already says where (e.g. a capture file).
    #[error("{0}")]
    Plain(String),
    /// `run` with a configuration that does not load: exit 78 (EX_CONFIG),
    /// which the unit's `RestartPreventExitStatus=` does not restart.
    #[error("{0}")]
    StartConfig(ConfigError),
}

/// The exit status of `netsentry run` when its configuration does not load.
pub const EXIT_CONFIG: u8 = 78;

impl CliError {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::StartConfig(_) => EXIT_CONFIG,
            _ => 2,
        }
    }

    fn verb(verb: &'static str, message: impl ToString) -> CliError {
        CliError::Verb {
            verb,
            message: message.to_string(),
        }
    }
}

/// `netsentry keygen`: a minisign key pair; the secret key is created 0600
/// and never replaces a file unless `--force`.
fn keygen(output: &Path, force: bool) -> Result<u8, CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let public = crate::agent::publish::pub_path(output);
    let (secret, public_text, line) =
        crate::manifest::keygen("netsentry manifest").map_err(|e| CliError::verb("keygen", e))?;
    for (path, text, mode) in [
        (output, &secret, 0o600),
        (public.as_path(), &public_text, 0o644),
    ] {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(mode);
        match force {
            true => options.create(true).truncate(true),
            false => options.create_new(true),
        };
        let mut f = options.open(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
                " (use --force to replace it)"
            } else {
                ""
            };
            CliError::verb(
                "keygen",
                format!("cannot create {}: {e}{hint}", path.display()),
            )
        })?;
        f.write_all(text.as_bytes()).map_err(|e| {
            CliError::verb("keygen", format!("cannot write {}: {e}", path.display()))
        })?;
    }
    println!("{line}");
    eprintln!(
        "secret key: {} (keep it; [publish] key_file)\npublic key: {} (give the line above to the probers: expect.manifest_key)",
        output.display(),
        public.display()
    );
    Ok(0)
}

/// Loads the configuration from `-c FILE`, the default file or the defaults.
fn load(explicit: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
    let source = ConfigSource::resolve(explicit);
    Ok((source.load()?, source))
}

/// True when `e` is a usage error of `netsentry probe` (not help or version).
pub fn is_probe_usage_error(e: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    let shown = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    !shown && std::env::args().nth(1).as_deref() == Some("probe")
}

/// Runs one verb; the exit code on success (the verb's own, e.g. `probe`'s).
pub fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Run { config } => {
            let (config, source) = load(config.as_deref()).map_err(CliError::StartConfig)?;
            run_agent(config, source)
        }
        Command::CheckConfig { config, quiet } => {
            let (config, source) = load(config.as_deref())?;
            if !quiet {
                print_stdout(&format!(
                    "# {}: OK\n{}\n",
                    source.describe(),
                    config.to_toml()
                ))?;
            }
            Ok(0)
        }
        Command::Replay {
            pcap,
            config,
            json,
            gateways,
        } => replay::command(&pcap, config.as_deref(), json, gateways),
        Command::Probe {
            targets,
            config,
            json,
            warning_days,
            critical_days,
            adhoc,
        } => {
            let mut out = std::io::stdout().lock();
            let thresholds = probe::Thresholds {
                warning_days,
                critical_days,
            };
            // A monitoring plugin: whatever goes wrong is UNKNOWN (3), on stdout.
            let config = match adhoc.address.is_some() {
                true => adhoc.config(config.as_deref()),
                false => load(config.as_deref())
                    .map(|(c, _)| c)
                    .map_err(|e| e.to_string()),
            };
            let code = config
                .and_then(|c| probe::command(&c, &targets, json, &thresholds, &mut out))
                .unwrap_or_else(|e| probe::unknown(&e, json, &mut out));
            Ok(code as u8)
        }
        Command::Fingerprints {
            files,
            config,
            json,
            history,
        } => {
            let mut out = std::io::stdout().lock();
            if history {
                let (config, _) = load(config.as_deref())?;
                fingerprints::history_command(&config, json, &mut out);
                return Ok(0);
            }
            // Files on the command line need no configuration.
            let config = match files.is_empty() {
                true => Some(load(config.as_deref())?.0),
                false => None,
            };
            fingerprints::command(&files, config.as_ref(), json, &mut out)
                .map_err(|e| CliError::verb("fingerprints", e))?;
            Ok(0)
        }
        Command::Baseline {
            action,
            config,
            json,
        } => {
            let (config, _) = load(config.as_deref())?;
            let mut out = std::io::stdout().lock();
            let action = action.unwrap_or(baseline::Action::Show);
            baseline::command(&config, &action, json, &mut out)
                .map_err(|e| CliError::verb("baseline", e))?;
            Ok(0)
        }
        Command::Keygen { output, force } => keygen(&output, force),
        Command::ImportArpwatch {
            file,
            interface,
            config,
        } => {
            let (config, _) = load(config.as_deref())?;
            let text = import_arpwatch::command(&config, &file, interface.as_deref())
                .map_err(|e| CliError::verb("import-arpwatch", e))?;
            print_stdout(&text)?;
            Ok(0)
        }
        Command::TestAlert { config, receiver } => {
            let (config, _) = load(config.as_deref())?;
            let text = test_alert::command(&config, receiver.as_deref())
                .map_err(|e| CliError::verb("test-alert", e))?;
            print_stdout(&text.0)?;
            Ok(text.1)
        }
        Command::Status { config, json } => {
            let (config, _) = load(config.as_deref())?;
            let status =
                status::collect(&config).map_err(|e| CliError::verb("status", format!("{e:#}")))?;
            let text = match json {
                true => serde_json::to_string_pretty(&status).unwrap_or_default() + "\n",
                false => status::render(&status),
            };
            print_stdout(&text)?;
            Ok(0)
        }
    }
}

/// Writes to stdout. A reader that went away (`netsentry check-config | head
/// -1`) is not an error: what it did not read, it did not want.
fn print_stdout(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Plain(format!(
            "netsentry: cannot write to stdout: {e}"
        ))),
        _ => Ok(()),
    }
}

/// `netsentry run`: logging, a single-threaded runtime, the agent until a signal.
fn run_agent(config: Config, source: ConfigSource) -> Result<u8, CliError> {
    crate::agent::init_logging(&config);
    tracing::info!(
        "netsentry {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        source.describe()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Plain(format!("netsentry: cannot start the runtime: {e}")))?;
    runtime
        .block_on(crate::agent::run(config, source))
        .map_err(|e| {
            tracing::error!("{e:#}");
            CliError::Plain(format!("netsentry: {e:#}"))
        })?;
    Ok(0)
}
