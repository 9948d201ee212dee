//! `netsentry baseline`: the gateways the agent trusts, the changes it holds
//! as suspect, and the operator's decisions about them.
//!
//! The running agent owns `baseline.json` (it rewrites it whenever it
//! changes), so this command never edits it: `accept` and `forget` are written
//! to `baseline_decisions.json`, which the agent applies after its next full
//! dump (start, `reconcile_interval`) or at SIGHUP (`systemctl reload`).
//! `show` lists the decisions still waiting.

use std::io::Write;
use std::net::IpAddr;

use chrono::Utc;
use serde_json::json;

use crate::config::Config;
use crate::state::baseline::{self, Baseline, Decision};

/// What to do with the baseline.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Action {
    /// List the gateways with their trusted MAC, how and when it was learned, and any suspect change
    Show,
    /// Trust the suspect MAC of a gateway (all gateways with a suspect MAC when no IP is given)
    Accept {
        /// The gateway's address
        ip: Option<IpAddr>,
    },
    /// Drop what is known about a gateway; the agent learns it again at its next sighting
    Forget {
        /// The gateway's address
        ip: IpAddr,
    },
}

/// Runs `netsentry baseline ACTION`; an error is a sentence for stderr (exit 2).
pub fn command(
    config: &Config,
    action: &Action,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let dir = &config.agent.state_dir;
    let stored = baseline::load(dir).map_err(|e| e.to_string())?;
    let pending = baseline::load_decisions(dir).map_err(|e| e.to_string())?;
    let decisions = match action {
        Action::Show => return show(stored.as_ref(), &pending, json, out),
        Action::Accept { ip } => accept(stored.as_ref(), *ip)?,
        Action::Forget { ip } => forget(stored.as_ref(), *ip)?,
    };
    for d in decisions {
        baseline::add_decision(dir, d.clone()).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "recorded: {d}");
    }
    let _ = writeln!(
        out,
        "a running agent applies it after its next full dump ([agent] reconcile_interval) or at once with `systemctl reload netsentry`; a stopped one at its start"
    );
    Ok(())
}

fn no_baseline() -> String {
    "no baseline yet (the agent has not run with this state_dir)".to_string()
}

fn accept(stored: Option<&Baseline>, ip: Option<IpAddr>) -> Result<Vec<Decision>, String> {
    let b = stored.ok_or_else(no_baseline)?;
    let now = Utc::now();
    let mut decisions: Vec<Decision> = Vec::new();
    for g in b.gateways.iter().filter(|g| ip.is_none_or(|ip| g.ip == ip)) {
        if let Some(s) = &g.suspect {
            let d = Decision::Accept {
                ip: g.ip,
                mac: s.mac.clone(),
                at: now,
            };
            if !decisions.contains(&d) {
                decisions.push(d);
            }
        }
    }
    if !decisions.is_empty() {
        return Ok(decisions);
    }
    Err(match ip {
        None => "no gateway has a suspect MAC: nothing to accept".to_string(),
        Some(ip) => match b.gateways.iter().find(|g| g.ip == ip) {
            Some(g) => format!("{ip} has no suspect MAC: it is trusted at {}", g.mac),
            None => format!("{ip} is not in the baseline (see `netsentry baseline show`)"),
        },
    })
}

fn forget(stored: Option<&Baseline>, ip: IpAddr) -> Result<Vec<Decision>, String> {
    let b = stored.ok_or_else(no_baseline)?;
    if !b.gateways.iter().any(|g| g.ip == ip) {
        return Err(format!(
            "{ip} is not in the baseline (see `netsentry baseline show`)"
        ));
    }
    Ok(vec![Decision::Forget { ip, at: Utc::now() }])
}

fn show(
    stored: Option<&Baseline>,
    pending: &[Decision],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let gateways = stored.map(|b| b.gateways.as_slice()).unwrap_or_default();
    if json {
        let doc = json!({"baseline": stored.is_some(), "gateways": gateways, "pending": pending});
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
        return Ok(());
    }
    if stored.is_none() {
        let _ = writeln!(out, "{}", no_baseline());
    }
    for g in gateways {
        let _ = writeln!(
            out,
            "{:<5} {:<26} dev {:<10} trusted {}  {} {}",
            g.family.as_str(),
            g.ip,
            g.interface,
            g.mac,
            g.how.as_deref().unwrap_or("learned"),
            g.seen.format("%Y-%m-%d %H:%M:%S UTC"),
        );
        if let Some(s) = &g.suspect {
            let _ = writeln!(
                out,
                "      SUSPECT: answers from {} since {} (seen by {}); `netsentry baseline accept {}` trusts it",
                s.mac,
                s.since.format("%Y-%m-%d %H:%M:%S UTC"),
                s.source,
                g.ip
            );
        }
    }
    for d in pending {
        let _ = writeln!(out, "pending (not applied by the agent yet): {d}");
    }
    Ok(())
}
