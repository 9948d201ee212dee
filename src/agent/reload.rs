//! What a reload (SIGHUP) changes: one pure decision from the old and the new
//! configuration, so that the sections reported in `config_reloaded`, the keys
//! that need a restart and what the agent rebuilds can never disagree.

use crate::config::Config;

/// The parts of the running agent a reload rebuilds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuild {
    /// The receivers (delivery tasks) and the Alertmanager refresh timer.
    pub webhooks: bool,
    /// The coalescer (its limits changed): open windows are summarised first.
    pub coalescer: bool,
    /// The packet detector (stations and routers are saved and reloaded).
    pub packets: bool,
    /// The inbound-path detector (its baselines are saved and reloaded) and
    /// the ports the capture passes SYNs for.
    pub inbound: bool,
    /// The manifest publisher.
    pub publish: bool,
    /// The TLS checks and their comparison (with the served names).
    pub tls: bool,
    /// CT monitoring (its idea of "ours" includes the TLS pins).
    pub ct: bool,
    /// The CAA audit.
    pub caa: bool,
    /// The heartbeat timer.
    pub heartbeat: bool,
    /// The metrics timer.
    pub metrics_interval: bool,
}

/// The one truth about what a reload from `old` to `new` does. Cheap settings
/// (host id, correlation window, the netlink detector's interfaces and
/// ignored links) are always applied; they need no flag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// The sections that differ, as `config_reloaded` reports them.
    pub changed: Vec<&'static str>,
    /// Keys that changed but take effect only at the next restart (threads and
    /// files opened at start).
    pub restart: Vec<&'static str>,
    /// What is rebuilt now.
    pub rebuild: Rebuild,
}

impl ReloadPlan {
    /// Compares two valid configurations.
    pub fn new(old: &Config, new: &Config) -> ReloadPlan {
        let sections: [(&'static str, bool); 12] = [
            ("agent", old.agent != new.agent),
            ("log", old.log != new.log),
            ("webhook", old.webhooks != new.webhooks),
            ("arp", old.arp != new.arp),
            ("inbound", old.inbound != new.inbound),
            ("route", old.route != new.route),
            ("publish", old.publish != new.publish),
            ("tls", old.tls != new.tls),
            ("correlation", old.correlation != new.correlation),
            ("metrics", old.metrics != new.metrics),
            ("ct", old.ct != new.ct),
            ("caa", old.caa != new.caa),
        ];
        let (a, b) = (&old.agent, &new.agent);
        let restart_keys: [(&'static str, bool); 9] = [
            ("agent.state_dir", a.state_dir != b.state_dir),
            (
                "agent.netlink_receive_buffer",
                a.netlink_receive_buffer != b.netlink_receive_buffer,
            ),
            (
                "agent.reconcile_interval",
                a.reconcile_interval != b.reconcile_interval,
            ),
            (
                "agent.max_spool_bytes",
                a.max_spool_bytes != b.max_spool_bytes,
            ),
            ("arp.enabled", old.arp.enabled != new.arp.enabled),
            (
                "arp.receive_buffer",
                old.arp.receive_buffer != new.arp.receive_buffer,
            ),
            (
                "inbound.max_syn_rate",
                old.inbound.max_syn_rate != new.inbound.max_syn_rate,
            ),
            ("log", old.log != new.log),
            ("metrics.listen", old.metrics.listen != new.metrics.listen),
        ];
        let tls = old.tls != new.tls;
        let rebuild = Rebuild {
            webhooks: old.webhooks != new.webhooks,
            coalescer: a.coalesce_burst != b.coalesce_burst
                || a.coalesce_window != b.coalesce_window
                || old.arp.alerts_per_kind != new.arp.alerts_per_kind,
            packets: old.arp != new.arp || a.interfaces != b.interfaces,
            inbound: old.inbound != new.inbound,
            publish: old.publish != new.publish
                || crate::config::publish_files(old) != crate::config::publish_files(new),
            tls,
            ct: old.ct != new.ct || tls,
            caa: old.caa != new.caa,
            heartbeat: old.heartbeat_every() != new.heartbeat_every(),
            metrics_interval: old.metrics.interval != new.metrics.interval,
        };
        let pick = |list: &[(&'static str, bool)]| {
            list.iter()
                .filter(|(_, differs)| *differs)
                .map(|(name, _)| *name)
                .collect()
        };
        ReloadPlan {
            changed: pick(&sections),
            restart: pick(&restart_keys),
            rebuild,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[agent]
host_id = "h"
state_dir = "/tmp/ns-a"

[[webhook]]
url = "https://hooks.example.net/a"

[[tls.target]]
name = "xmpp"
address = "xmpp.example.net:5223"
expect = { spki_sha256 = ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] }
"#;

    fn plan(extra: &str) -> ReloadPlan {
        let old = Config::parse(BASE, "old.toml").unwrap();
        let new = Config::parse(&format!("{BASE}\n{extra}"), "new.toml").unwrap();
        ReloadPlan::new(&old, &new)
    }

    /// A key under `[agent]`, inserted into the existing section.
    fn agent_plan(line: &str) -> ReloadPlan {
        let old = Config::parse(BASE, "old.toml").unwrap();
        let key = line.split(" = ").next().unwrap_or_default();
        let text = match BASE.lines().find(|l| l.starts_with(&format!("{key} = "))) {
            Some(existing) => BASE.replace(existing, line),
            None => BASE.replace("[agent]", &format!("[agent]\n{line}")),
        };
        let new = Config::parse(&text, "n").unwrap();
        ReloadPlan::new(&old, &new)
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        assert_eq!(plan(""), ReloadPlan::default());
    }

    #[test]
    fn agent_keys_key_by_key() {
        let cases: &[(&str, &[&str], Rebuild)] = &[
            (
                "state_dir = \"/tmp/ns-b\"",
                &["agent.state_dir"],
                Rebuild::default(),
            ),
            (
                "netlink_receive_buffer = 65536",
                &["agent.netlink_receive_buffer"],
                Rebuild::default(),
            ),
            (
                "reconcile_interval = \"1m\"",
                &["agent.reconcile_interval"],
                Rebuild::default(),
            ),
            (
                "max_spool_bytes = 4194304",
                &["agent.max_spool_bytes"],
                Rebuild::default(),
            ),
            (
                "coalesce_burst = 9",
                &[],
                Rebuild {
                    coalescer: true,
                    ..Default::default()
                },
            ),
            (
                "coalesce_window = \"5m\"",
                &[],
                Rebuild {
                    coalescer: true,
                    ..Default::default()
                },
            ),
            (
                "heartbeat_interval = \"1m\"",
                &[],
                Rebuild {
                    heartbeat: true,
                    ..Default::default()
                },
            ),
            (
                "interfaces = [\"eth1\"]",
                &[],
                Rebuild {
                    packets: true,
                    ..Default::default()
                },
            ),
            ("ignore_links = [\"x*\"]", &[], Rebuild::default()),
        ];
        for (line, restart, rebuild) in cases {
            let p = agent_plan(line);
            assert_eq!(p.changed, vec!["agent"], "{line}");
            assert_eq!(&p.restart, restart, "{line}");
            assert_eq!(&p.rebuild, rebuild, "{line}");
        }
        // host_id: applied at once, nothing to rebuild.
        let old = Config::parse(BASE, "o").unwrap();
        let new = Config::parse(&BASE.replace("host_id = \"h\"", "host_id = \"g\""), "n").unwrap();
        let p = ReloadPlan::new(&old, &new);
        assert_eq!(
            (p.changed, p.restart, p.rebuild),
            (vec!["agent"], vec![], Rebuild::default())
        );
    }

    #[test]
    fn other_sections_key_by_key() {
        let cases: &[(&str, &[&str], &[&str], Rebuild)] = &[
            (
                "[log]\nlevel = \"debug\"",
                &["log"],
                &["log"],
                Rebuild::default(),
            ),
            (
                "[arp]\nenabled = false",
                &["arp"],
                &["arp.enabled"],
                Rebuild {
                    packets: true,
                    ..Default::default()
                },
            ),
            (
                "[arp]\nreceive_buffer = 131072",
                &["arp"],
                &["arp.receive_buffer"],
                Rebuild {
                    packets: true,
                    ..Default::default()
                },
            ),
            (
                "[inbound]\nwindow = \"1m\"\nmax_syn_rate = 500",
                &["inbound"],
                &["inbound.max_syn_rate"],
                Rebuild {
                    inbound: true,
                    ..Default::default()
                },
            ),
            (
                "[arp]\nalerts_per_kind = 5",
                &["arp"],
                &[],
                Rebuild {
                    packets: true,
                    coalescer: true,
                    ..Default::default()
                },
            ),
            (
                "[arp]\nstorm_pps = 10",
                &["arp"],
                &[],
                Rebuild {
                    packets: true,
                    ..Default::default()
                },
            ),
            (
                "[[webhook]]\nurl = \"https://hooks.example.net/b\"",
                &["webhook"],
                &[],
                Rebuild {
                    webhooks: true,
                    ..Default::default()
                },
            ),
            (
                "[tls]\nconcurrency = 4",
                &["tls"],
                &[],
                Rebuild {
                    tls: true,
                    ct: true,
                    ..Default::default()
                },
            ),
            (
                "[correlation]\nwindow = \"1h\"",
                &["correlation"],
                &[],
                Rebuild::default(),
            ),
            (
                "[metrics]\ninterval = \"30s\"",
                &["metrics"],
                &[],
                Rebuild {
                    metrics_interval: true,
                    ..Default::default()
                },
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1:9469\"",
                &["metrics"],
                &["metrics.listen"],
                Rebuild::default(),
            ),
            (
                "[metrics]\ntextfile = \"/tmp/x.prom\"",
                &["metrics"],
                &[],
                Rebuild::default(),
            ),
            (
                "[ct]\ndomains = [\"example.net\"]",
                &["ct"],
                &[],
                Rebuild {
                    ct: true,
                    ..Default::default()
                },
            ),
            (
                "[caa]\ndomains = [\"example.net\"]",
                &["caa"],
                &[],
                Rebuild {
                    caa: true,
                    ..Default::default()
                },
            ),
        ];
        for (extra, changed, restart, rebuild) in cases {
            let p = plan(extra);
            assert_eq!(&p.changed, changed, "{extra}");
            assert_eq!(&p.restart, restart, "{extra}");
            assert_eq!(&p.rebuild, rebuild, "{extra}");
        }
    }

    #[test]
    fn several_changes_are_all_reported_in_file_order() {
        let p = plan("[metrics]\nlisten = \"127.0.0.1:9469\"\n[log]\nlevel = \"debug\"");
        assert_eq!(p.changed, vec!["log", "metrics"]);
        assert_eq!(p.restart, vec!["log", "metrics.listen"]);
    }
}
