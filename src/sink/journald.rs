//! journald sink: one journal entry per alert, with the fields of docs/ALERTS.md,
//! sent over journald's native datagram protocol (no libsystemd needed).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::alert::Alert;

/// journald's native protocol socket.
pub const SOCKET_PATH: &str = "/run/systemd/journal/socket";

/// Writes alerts to journald as structured entries (`NETSENTRY_*` fields).
pub struct JournaldSink {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournaldSink {
    /// A datagram socket to journald at `path`.
    pub fn connect(path: &Path) -> io::Result<JournaldSink> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(JournaldSink {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// The journal socket written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One alert as one journal entry.
    pub fn send(&self, alert: &Alert) -> io::Result<()> {
        self.socket.send(&entry(alert)).map(|_| ())
    }
}

/// Encodes the journal entry of an alert (journald native protocol).
pub fn entry(alert: &Alert) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    field(&mut out, "MESSAGE", &alert.summary);
    field(
        &mut out,
        "PRIORITY",
        &alert.severity.syslog_priority().to_string(),
    );
    field(&mut out, "SYSLOG_IDENTIFIER", "netsentry");
    field(&mut out, "MESSAGE_ID", &alert.kind.message_id());
    field(&mut out, "NETSENTRY_ALERT_ID", &alert.id);
    field(&mut out, "NETSENTRY_KIND", alert.kind.as_str());
    field(&mut out, "NETSENTRY_SEVERITY", alert.severity.as_str());
    field(&mut out, "NETSENTRY_HOST", &alert.host);
    for (key, value) in &alert.details {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Some(name) = field_name(key) {
            field(&mut out, &name, &text);
        }
    }
    out
}

/// `NETSENTRY_<KEY>` with the characters journald allows (A-Z, 0-9, _).
fn field_name(key: &str) -> Option<String> {
    let upper: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if upper.is_empty() || upper.len() > 48 {
        return None;
    }
    Some(format!("NETSENTRY_{upper}"))
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        // Binary-safe form: name, newline, little-endian length, value, newline.
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Finding, Kind};
    use serde_json::json;

    #[test]
    fn entry_has_the_spec_fields() {
        let f = Finding::new(
            Kind::GatewayMacChanged,
            chrono::Utc::now(),
            "gw moved",
            json!({"interface": "eth0", "new_mac": "02:de:ad:be:ef:01", "down_ms": null, "old": {"ip": "x"}}),
        );
        let a = Alert::from_finding(f, "web1");
        let text = String::from_utf8(entry(&a)).unwrap();
        assert!(text.contains("MESSAGE=gw moved\n"));
        assert!(text.contains("PRIORITY=2\n"));
        assert!(text.contains("SYSLOG_IDENTIFIER=netsentry\n"));
        assert!(text.contains(&format!("NETSENTRY_ALERT_ID={}\n", a.id)));
        assert!(text.contains("NETSENTRY_KIND=gateway_mac_changed\n"));
        assert!(text.contains("NETSENTRY_NEW_MAC=02:de:ad:be:ef:01\n"));
        assert!(text.contains("NETSENTRY_OLD={\"ip\":\"x\"}\n"));
        assert!(!text.contains("DOWN_MS"));
    }

    #[test]
    fn multiline_values_use_the_binary_form() {
        let mut out = Vec::new();
        field(&mut out, "MESSAGE", "a\nb");
        assert_eq!(out, b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\n");
    }
}
