//! Writes the man pages (netsentry(8) and one per verb), the journal message
//! catalog and the bash, zsh and fish completions into DIR, from the CLI definition. Run by packaging/build:
//! `cargo run --release --example generate_assets -- DIR`. An example rather
//! than a verb, so that the agent binary does not carry clap_mangen and
//! clap_complete.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use netsentry::cli::Cli;

fn generate(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut page)?;
    std::fs::write(dir.join("netsentry.8"), page)?;
    // One page per verb (netsentry-run(8), ...), as the main page refers to them.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are 'static; this one-shot program can afford the leak.
        let name: &'static str = format!("netsentry-{}", sub.get_name()).leak();
        let bin: &'static str = format!("netsentry {}", sub.get_name()).leak();
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name).bin_name(bin))
            .section("8")
            .render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.8")), page)?;
    }
    // The journal catalog of the alert kinds (`journalctl -x`).
    std::fs::write(
        dir.join("netsentry.catalog"),
        netsentry::alert::journal_catalog(),
    )?;
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

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: generate_assets DIR");
        return std::process::ExitCode::from(2);
    };
    match generate(Path::new(&dir)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate_assets: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
