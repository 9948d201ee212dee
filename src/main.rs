//! `netsentry`: parses the arguments and runs the verb (see `cli`).

use std::process::ExitCode;

use clap::Parser;
use netsentry::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
