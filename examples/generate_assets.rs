//! Writes the man pages (netsentry(8), one per verb, and netsentry.toml(5)
//! from the commented default configuration), the journal message catalog
//! and the bash, zsh and fish completions into DIR, from the CLI definition.
//! Run by packaging/build: `cargo run --release --example generate_assets --
//! DIR`. An example rather than a verb, so that the agent binary does not
//! carry clap_mangen and clap_complete.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use netsentry::cli::Cli;

/// The sections clap does not know: what an operator looks for in a man page.
const MAIN_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/netsentry/netsentry.toml\fR
The configuration (see \fBnetsentry.toml\fR(5)); without one, built-in defaults.
.TP
\fI/var/lib/netsentry\fR
State: the baseline, the station table, the spool of undelivered alerts, the certificate history.
.TP
\fI/usr/share/doc/netsentry/ALERTS.md\fR
Every alert kind: when it is sent, its severity and its fields.
.TP
\fI/usr/share/netsentry/prometheus/netsentry.rules.yml\fR
Prometheus alerting rules for the metrics, with their promtool tests.
.TP
\fI/usr/lib/systemd/catalog/netsentry.catalog\fR
The journal catalog: \fBjournalctl \-x\fR explains each alert.
.SH EXIT STATUS
.TP
.B 0
Success.
.TP
.B 1
\fBtest\-alert\fR: a receiver did not take the alert. \fBprobe\fR: WARNING.
.TP
.B 2
A usage or configuration error (\fBrun\fR, \fBcheck\-config\fR and the other verbs), or a source that failed. \fBprobe\fR: CRITICAL.
.TP
.B 3
\fBprobe\fR: UNKNOWN (the check failed, or a usage or configuration error: a monitoring plugin says so on stdout).
.TP
.B 78
\fBrun\fR: the configuration does not load (EX_CONFIG); the systemd unit does not restart it.
.SH SIGNALS
.TP
.B SIGHUP
Re\-read the configuration; a valid one takes effect at once without losing the baseline or undelivered alerts (\fBconfig_reloaded\fR), an invalid one is refused (\fBconfig_rejected\fR) and the running one stays. \fBsystemctl reload netsentry\fR checks it first.
.TP
.BR SIGTERM ", " SIGINT
Stop: \fBagent_stopping\fR is sent, state is saved, receivers get a few seconds to take what is pending (the rest waits in the spool).
.SH ENVIRONMENT
.TP
.B NETSENTRY_LOG
A tracing filter for the log (e.g. \fInetsentry=debug\fR); default from [log] level.
.TP
.B NOTIFY_SOCKET
Set by systemd: readiness, watchdog and status are sent there (sd_notify).
.SH SEE ALSO
\fBnetsentry.toml\fR(5), \fBnetsentry\-run\fR(8), \fBnetsentry\-probe\fR(8), \fBnetsentry\-status\fR(8), \fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBarpwatch\fR(8)
"#;

/// A line of text for roff: a leading `.` or `'` would be a request; `\`
/// is the escape character; `-` is a hyphen unless escaped.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    match t.starts_with('.') || t.starts_with('\'') {
        true => format!("\\&{t}"),
        false => t,
    }
}

/// A comment line of the configuration as roff: a commented example
/// (`key = value`, `[section]`, `# ...`) is shown as is, the rest is text.
fn comment_roff(comment: &str) -> String {
    let example = comment.starts_with('[')
        || comment.starts_with("# ")
        || comment.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        });
    match example {
        true => format!(".nf\n{}\n.fi\n", roff(comment)),
        false => format!("{}\n", roff(comment)),
    }
}

/// netsentry.toml(5) from the commented default configuration: each
/// `[section]` a subsection, each key a tagged paragraph with the comment
/// that precedes it in the file; comments followed by a blank line are
/// paragraphs of their own.
fn config_page(text: &str) -> String {
    let mut out = String::from(
        ".TH NETSENTRY.TOML 5 \"\" \"netsentry\" \"File Formats\"\n.SH NAME\nnetsentry.toml \\- configuration of the netsentry agent\n.SH SYNOPSIS\n\\fI/etc/netsentry/netsentry.toml\\fR\n.SH DESCRIPTION\nTOML. Every key is optional; the values shown are the defaults. \\fBnetsentry check\\-config\\fR prints the effective configuration or the first error as \\fIFILE:LINE:COL: message\\fR. Below, the shipped file with its comments.\n",
    );
    let mut pending: Vec<String> = Vec::new();
    let flush = |out: &mut String, pending: &mut Vec<String>| {
        if !pending.is_empty() {
            out.push_str(".PP\n");
            for p in pending.drain(..) {
                out.push_str(&p);
            }
        }
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("# ---") || trimmed.is_empty() {
            flush(&mut out, &mut pending);
        } else if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            if !comment.is_empty() {
                pending.push(comment_roff(comment));
            }
        } else if trimmed.starts_with('[') {
            flush(&mut out, &mut pending);
            out.push_str(&format!(".SS {}\n", roff(trimmed)));
        } else {
            out.push_str(&format!(".TP\n\\fB{}\\fR\n", roff(trimmed)));
            for p in pending.drain(..) {
                out.push_str(&p);
            }
        }
    }
    flush(&mut out, &mut pending);
    out.push_str(".SH SEE ALSO\n\\fBnetsentry\\fR(8)\n");
    out
}

fn generate(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // No `help` verb in the pages (it would name a netsentry-help(8) that is not there).
    let cmd = Cli::command().disable_help_subcommand(true);
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.write_all(MAIN_SECTIONS.as_bytes())?;
    man.render_version_section(&mut page)?;
    std::fs::write(dir.join("netsentry.8"), page)?;
    // One page per verb (netsentry-run(8), ...), as the main page refers to them.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are 'static; this one-shot program can afford the leak.
        let name: &'static str = format!("netsentry-{}", sub.get_name()).leak();
        let bin: &'static str = format!("netsentry {}", sub.get_name()).leak();
        let man = clap_mangen::Man::new(sub.clone().name(name).bin_name(bin)).section("8");
        let mut page = Vec::new();
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        page.write_all(b".SH SEE ALSO\n\\fBnetsentry\\fR(8), \\fBnetsentry.toml\\fR(5)\n")?;
        std::fs::write(dir.join(format!("{name}.8")), page)?;
    }
    let config = include_str!("../config/netsentry.toml");
    std::fs::write(dir.join("netsentry.toml.5"), config_page(config))?;
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
