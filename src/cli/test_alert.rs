//! `netsentry test-alert`: one `test` alert to every configured receiver,
//! now, without the spool — to see that a new receiver works (URL, token,
//! signature secret, Alertmanager route) before an incident does it.

use std::fmt::Write;

use serde_json::json;

use crate::alert::{Alert, Finding, Kind};
use crate::config::Config;
use crate::sink::webhook::deliver_once;

/// Sends the test alert; the text to print and the exit code (0 when every
/// receiver took it, 1 otherwise).
pub fn command(config: &Config, only: Option<&str>) -> Result<(String, u8), String> {
    let hooks: Vec<_> = config
        .webhooks
        .iter()
        .filter(|h| only.is_none_or(|n| h.display_name() == n))
        .collect();
    if hooks.is_empty() {
        let known: Vec<String> = config.webhooks.iter().map(|h| h.display_name()).collect();
        return Err(match (only, known.is_empty()) {
            (Some(n), false) => {
                format!("no receiver named {n:?} (configured: {})", known.join(", "))
            }
            _ => "no [[webhook]] in the configuration: add one (see config/netsentry.toml)".into(),
        });
    }
    let host = config.host_id();
    let finding = Finding::new(
        Kind::Test,
        chrono::Utc::now(),
        format!("test alert from {host} (netsentry test-alert): this receiver works"),
        json!({"requested_by": "netsentry test-alert"}),
    );
    let alert = Alert::from_finding(finding, &host);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut text = String::new();
    let mut failed = 0;
    for hook in hooks {
        let key = match &hook.secret_file {
            Some(path) => {
                Some(crate::agent::setup::read_secret(path).map_err(|e| format!("{e:#}"))?)
            }
            None => None,
        };
        let signed = match key {
            Some(_) => {
                "signed (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature v1)"
            }
            None => "unsigned (no secret_file)",
        };
        let result = runtime.block_on(deliver_once(hook, key.as_deref(), &alert));
        let _ = match &result {
            Ok(status) => writeln!(
                text,
                "{}: delivered ({status}), {signed}, format {}",
                hook.display_name(),
                format!("{:?}", hook.format).to_lowercase()
            ),
            Err(why) => {
                failed += 1;
                writeln!(text, "{}: FAILED: {why} ({signed})", hook.display_name())
            }
        };
    }
    let _ = writeln!(text, "alert id {} (kind test)", alert.id);
    Ok((text, u8::from(failed > 0)))
}
