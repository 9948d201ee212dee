//! Command line of netsentry. Parsing only; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use netsentry::agent::ConfigSource;
use netsentry::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "netsentry",
    version,
    about = "Host-level network integrity agent: gateway, routes, links, and who answers for them",
    long_about = "Host-level network integrity agent. Watches the default gateway's MAC, the default routes and the links through netlink, ARP and IPv6 neighbour discovery on the wire, and the TLS certificates of your services from the outside; reports to webhooks (and Alertmanager), journald and metrics.\n\nConfiguration: /etc/netsentry/netsentry.toml. State: /var/lib/netsentry."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    },
    /// Run the TLS checks once; exit 0 ok, 1 warning, 2 critical, 3 unknown (a Nagios/Icinga check)
    Probe {
        /// Targets to check by name [default: all]
        targets: Vec<String>,
        /// Configuration file [default: /etc/netsentry/netsentry.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print JSON instead of one line per target
        #[arg(long)]
        json: bool,
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
    /// Write the man page (netsentry.8) and shell completions into DIR (for packaging)
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory
        dir: PathBuf,
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

/// Loads `-c FILE`, else the default file, else the built-in defaults (and says which).
fn load(explicit: Option<&Path>) -> Result<(Config, String), config::ConfigError> {
    match explicit {
        Some(path) => Ok((
            Config::load(path)?,
            format!("configuration {}", path.display()),
        )),
        None if Path::new(config::DEFAULT_PATH).exists() => Ok((
            Config::load(Path::new(config::DEFAULT_PATH))?,
            format!("configuration {}", config::DEFAULT_PATH),
        )),
        None => Ok((
            Config::default(),
            format!(
                "built-in defaults ({} does not exist)",
                config::DEFAULT_PATH
            ),
        )),
    }
}

/// [`load`] for verbs that only need the config: the error is printed here.
fn load_or_report(explicit: Option<&Path>) -> Option<Config> {
    match load(explicit) {
        Ok((c, _)) => Some(c),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// The man page and bash/zsh/fish completions, generated from this CLI.
fn generate_assets(dir: &Path) -> std::io::Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut page)?;
    std::fs::write(dir.join("netsentry.8"), page)?;
    // One page per verb (netsentry-run(8), ...), as the main page refers to them.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are 'static; this one-shot command can afford the leak.
        let name: &'static str = format!("netsentry-{}", sub.get_name()).leak();
        let bin: &'static str = format!("netsentry {}", sub.get_name()).leak();
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name).bin_name(bin))
            .section("8")
            .render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.8")), page)?;
    }
    for (shell, file) in [
        (Shell::Bash, "netsentry.bash"),
        (Shell::Zsh, "_netsentry"),
        (Shell::Fish, "netsentry.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "netsentry", &mut out);
        std::fs::write(dir.join(file), out)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateAssets { dir } => match generate_assets(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netsentry generate-assets: {e}");
                ExitCode::from(2)
            }
        },
        Command::CheckConfig { config } => match load(config.as_deref()) {
            Ok((c, source)) => {
                println!("# {source}: OK\n{}", c.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Replay { pcap, config, json } => {
            let (c, with_config) = match config.as_deref() {
                Some(path) => match Config::load(path) {
                    Ok(c) => (c, true),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                None => (Config::default(), false),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match netsentry::replay::replay(&pcap, &c, with_config, json, &mut out) {
                Ok(s) => {
                    let c = &s.counters;
                    eprintln!(
                        "{}: {} frames ({} ARP, {} NDP, {} malformed, {} other{}); {} alerts",
                        pcap.display(),
                        c.frames,
                        c.arp,
                        c.ndp,
                        c.malformed,
                        c.other,
                        if s.skipped_link_type > 0 {
                            format!(", {} not Ethernet", s.skipped_link_type)
                        } else {
                            String::new()
                        },
                        s.alerts
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Probe {
            targets,
            config,
            json,
        } => {
            let c = match load_or_report(config.as_deref()) {
                Some(c) => c,
                None => return ExitCode::from(2),
            };
            let mut out = std::io::stdout().lock();
            match netsentry::tlscheck::probe_command(&c, &targets, json, &mut out) {
                Ok(code) => ExitCode::from(code as u8),
                Err(e) => {
                    eprintln!("netsentry probe: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Fingerprints {
            files,
            config,
            json,
            history,
        } => {
            if history {
                let c = match load_or_report(config.as_deref()) {
                    Some(c) => c,
                    None => return ExitCode::from(2),
                };
                let mut out = std::io::stdout().lock();
                netsentry::tlscheck::history_command(&c, json, &mut out);
                return ExitCode::SUCCESS;
            }
            let c = if files.is_empty() {
                let Some(c) = load_or_report(config.as_deref()) else {
                    return ExitCode::from(2);
                };
                Some(c)
            } else {
                None
            };
            let mut out = std::io::stdout().lock();
            match netsentry::tlscheck::fingerprints_command(&files, c.as_ref(), json, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("netsentry fingerprints: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status { config, json } => {
            let c = match load_or_report(config.as_deref()) {
                Some(c) => c,
                None => return ExitCode::from(2),
            };
            match netsentry::status::collect(&c) {
                Ok(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    print!("{}", netsentry::status::render(&s));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("netsentry status: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config } => {
            let (c, source) = match load(config.as_deref()) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            netsentry::agent::init_logging(&c);
            tracing::info!(
                "netsentry {} starting with {source}",
                env!("CARGO_PKG_VERSION")
            );
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("netsentry: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            let reload_from = match config {
                Some(path) => ConfigSource::File(path),
                None if Path::new(config::DEFAULT_PATH).exists() => {
                    ConfigSource::File(config::DEFAULT_PATH.into())
                }
                None => ConfigSource::Defaults,
            };
            match runtime.block_on(netsentry::agent::run(c, reload_from)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("netsentry: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
