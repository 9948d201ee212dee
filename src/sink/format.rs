//! Request bodies for the webhook formats, and Standard Webhooks signatures.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};

use crate::alert::{Alert, Delivery, IDENTIFYING, Kind, format_time};
use crate::config::WebhookFormat;

/// The JSON body of one alert in the given format.
pub fn body(
    alert: &Alert,
    format: WebhookFormat,
    resolve_after: std::time::Duration,
    runbook_base: &str,
) -> String {
    match format {
        WebhookFormat::Netsentry => alert.to_json(),
        WebhookFormat::Slack => json!({
            "text": format!("[{}] {}: {}", alert.severity.as_str(), alert.host, alert.summary),
        })
        .to_string(),
        WebhookFormat::Alertmanager => {
            let mut labels = Map::new();
            labels.insert("alertname".into(), json!(alert.kind.as_str()));
            labels.insert("severity".into(), json!(alert.severity.as_str()));
            labels.insert("host".into(), json!(alert.host));
            for key in IDENTIFYING {
                if let Some(Value::String(v)) = alert.details.get(*key) {
                    labels.insert((*key).into(), json!(v));
                }
            }
            // A heartbeat stays firing for three beats: when beats stop, it
            // resolves, and an Alertmanager route on its absence (or on
            // `alertname="agent_heartbeat"` resolving) is the dead-man's switch.
            // A condition is extended by each refresh and ends when it clears.
            let keep =
                chrono::Duration::from_std(resolve_after).unwrap_or(chrono::Duration::hours(1));
            let ends = match (
                alert.delivery,
                alert.kind,
                alert.details.get("interval_s").and_then(Value::as_u64),
            ) {
                (Delivery::Resolve { at }, _, _) => at,
                (Delivery::Refresh { at }, _, _) => at + keep,
                (_, Kind::AgentHeartbeat, Some(s)) if s > 0 => {
                    alert.time + chrono::Duration::seconds(3 * s as i64)
                }
                _ => alert.time + keep,
            };
            json!([{
                "labels": labels,
                "annotations": {
                    "summary": alert.summary,
                    "description": alert.kind.description(),
                    "runbook_url": format!("{runbook_base}#{}", alert.kind.as_str()),
                    "details": Value::Object(alert.details.clone()).to_string(),
                    "id": alert.id,
                },
                "startsAt": format_time(&alert.time),
                "endsAt": format_time(&ends),
            }])
            .to_string()
        }
    }
}

/// Errors in a webhook secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the webhook secret must look like whsec_<base64>")]
    Format,
}

/// The key of a `whsec_...` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let b64 = secret
        .trim()
        .strip_prefix("whsec_")
        .ok_or(SecretError::Format)?;
    let key = B64.decode(b64).map_err(|_| SecretError::Format)?;
    if key.is_empty() {
        return Err(SecretError::Format);
    }
    Ok(key)
}

/// `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Finding, Kind};

    #[test]
    fn standard_webhooks_test_vector() {
        let key = secret_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let sig = sign(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn bad_secrets() {
        assert_eq!(secret_key("C2FVsBQI"), Err(SecretError::Format));
        assert_eq!(secret_key("whsec_!!!"), Err(SecretError::Format));
        assert_eq!(secret_key("whsec_"), Err(SecretError::Format));
    }

    #[test]
    fn formats() {
        let f = Finding::new(
            Kind::LinkDown,
            chrono::Utc::now(),
            "link eth0 is down",
            json!({"interface": "eth0", "reason": "carrier"}),
        );
        let a = Alert::from_finding(f, "web1");
        let ns: Value =
            serde_json::from_str(&body(&a, WebhookFormat::Netsentry, Default::default(), ""))
                .unwrap();
        assert_eq!(ns["kind"], "link_down");
        let slack: Value =
            serde_json::from_str(&body(&a, WebhookFormat::Slack, Default::default(), "")).unwrap();
        assert_eq!(slack["text"], "[warning] web1: link eth0 is down");
        let am: Value = serde_json::from_str(&body(
            &a,
            WebhookFormat::Alertmanager,
            std::time::Duration::from_secs(3600),
            "https://wiki.example.org/netsentry/ALERTS.md",
        ))
        .unwrap();
        assert_eq!(am[0]["labels"]["alertname"], "link_down");
        assert_eq!(am[0]["labels"]["interface"], "eth0");
        assert_eq!(am[0]["labels"]["severity"], "warning");
        assert_eq!(am[0]["annotations"]["summary"], "link eth0 is down");
        assert!(am[0]["labels"].get("reason").is_none());
        assert_eq!(
            am[0]["annotations"]["runbook_url"],
            "https://wiki.example.org/netsentry/ALERTS.md#link_down"
        );
        assert!(
            am[0]["annotations"]["description"]
                .as_str()
                .unwrap()
                .starts_with("a link lost carrier or was set down; a condition")
        );
    }
}
