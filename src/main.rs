//! `netsentry`: parses the arguments and runs the verb (see `cli`).

use std::process::ExitCode;

use clap::Parser;
use netsentry::cli::{self, Cli};

fn main() -> ExitCode {
    let parsed = match Cli::try_parse() {
        Ok(cli) => cli,
        // `probe` is a monitoring plugin: a usage error is UNKNOWN (3), on stdout.
        Err(e) if cli::is_probe_usage_error(&e) => {
            let first = e.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            println!("NETSENTRY UNKNOWN - netsentry probe: {first}");
            return ExitCode::from(3);
        }
        Err(e) => e.exit(),
    };
    match cli::run(parsed) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
