//! `netsentry status`: one look at what the kernel says and what the baseline holds.

use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::kernel::{Family, KernelView};
use crate::source::netlink;
use crate::state::{
    self,
    baseline::{self, Baseline},
};

/// One default route with its next hops.
#[derive(Debug, Serialize)]
pub struct RouteRow {
    pub family: Family,
    pub metric: u32,
    pub nexthops: Vec<serde_json::Value>,
}

/// A default gateway: its neighbour entry now and the MAC the baseline knows.
#[derive(Debug, Serialize)]
pub struct GatewayRow {
    pub family: Family,
    pub interface: String,
    pub ip: String,
    pub mac: Option<String>,
    pub state: String,
    pub baseline_mac: Option<String>,
}

/// A link as `status` shows it.
#[derive(Debug, Serialize)]
pub struct LinkRow {
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<String>,
    pub state: &'static str,
    pub flags: Vec<&'static str>,
    pub mtu: u32,
    pub watched: bool,
}

/// Everything `netsentry status` shows (also its `--json`).
#[derive(Debug, Serialize)]
pub struct Status {
    pub default_routes: Vec<RouteRow>,
    pub gateways: Vec<GatewayRow>,
    pub links: Vec<LinkRow>,
    pub baseline: Option<Baseline>,
    pub baseline_problem: Option<String>,
    /// Packet capture counters as the running agent last wrote them.
    pub capture: Option<serde_json::Value>,
    pub receivers: Vec<ReceiverRow>,
    /// The last result of each TLS check, as the running agent last wrote them.
    pub tls_checks: Option<serde_json::Value>,
    /// Inbound connections per watched port, as the running agent last wrote them.
    pub inbound: Vec<InboundRow>,
    /// Where the kernel sends each `[route]` destination now (looked up by
    /// this command, as the agent does).
    pub paths: Vec<PathRow>,
}

/// One watched destination and the kernel's path for it.
#[derive(Debug, Serialize)]
pub struct PathRow {
    pub destination: String,
    /// The next hop (`null`: on the link itself, or no path).
    pub next_hop: Option<String>,
    pub interface: Option<String>,
    /// The route that decided, as `ip route` says it.
    pub route: Option<String>,
    pub rule: Option<String>,
    pub redirected_from: Option<String>,
    /// Why there is no path (no route, unreachable, the lookup failed).
    pub error: Option<String>,
}

impl PathRow {
    /// A destination without a path, and why.
    fn failed(destination: String, error: String) -> PathRow {
        PathRow {
            destination,
            next_hop: None,
            interface: None,
            route: None,
            rule: None,
            redirected_from: None,
            error: Some(error),
        }
    }
}

/// The rows of [`Status::paths`] from the kernel's answers.
fn path_rows(lookups: &[crate::kernel::PathLookup], view: &KernelView) -> Vec<PathRow> {
    lookups
        .iter()
        .map(|l| {
            let text = |ip: Option<std::net::IpAddr>| ip.map(|i| i.to_string());
            match &l.path {
                Ok(p) => PathRow {
                    destination: l.destination.to_string(),
                    next_hop: text(p.gateway),
                    interface: Some(view.link_name(p.ifindex)),
                    route: Some(crate::detect::net::route_text(p, view)),
                    rule: p.rule.clone(),
                    redirected_from: text(p.redirected_from),
                    error: None,
                },
                Err(e) => PathRow::failed(l.destination.to_string(), e.clone()),
            }
        })
        .collect()
}

/// One port and family of the inbound-path detector.
#[derive(Debug, Serialize)]
pub struct InboundRow {
    pub port: u16,
    pub family: u8,
    /// In an episode (`inbound_path_changed`) since.
    pub changed_since: Option<String>,
    pub window: Spread,
    pub baseline: Spread,
}

/// A distribution of hop distances and stacks, summed up.
#[derive(Debug, Serialize)]
pub struct Spread {
    pub samples: u32,
    pub median_hops: u8,
    pub p10_hops: u8,
    pub p90_hops: u8,
    pub top_fingerprint: Option<String>,
    pub top_fingerprint_share: f64,
}

impl Spread {
    fn of(t: &crate::detect::inbound::Tally) -> Spread {
        let (fp, share) = t.top_fingerprint().unzip();
        Spread {
            samples: t.samples,
            median_hops: t.hops_at(0.5),
            p10_hops: t.hops_at(0.1),
            p90_hops: t.hops_at(0.9),
            top_fingerprint: fp.map(str::to_string),
            top_fingerprint_share: (share.unwrap_or(0.0) * 100.0).round() / 100.0,
        }
    }

    fn line(&self) -> String {
        match self.samples {
            0 => "no connections".to_string(),
            n => format!(
                "{n} conn, hops median {} (p10-p90 {}-{}), top stack {} ({:.0} %)",
                self.median_hops,
                self.p10_hops,
                self.p90_hops,
                self.top_fingerprint.as_deref().unwrap_or("-"),
                self.top_fingerprint_share * 100.0
            ),
        }
    }
}

/// The rows of `state_dir/inbound.json` (none when it is missing or damaged).
pub fn inbound_rows(text: &str) -> Vec<InboundRow> {
    use crate::detect::inbound::Tally;
    #[derive(serde::Deserialize)]
    struct Entry {
        port: u16,
        family: u8,
        baseline: Tally,
        #[serde(default)]
        window: Tally,
        changed_since: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        ports: Vec<Entry>,
    }
    let Ok(file) = serde_json::from_str::<File>(text) else {
        return Vec::new();
    };
    file.ports
        .into_iter()
        .map(|e| InboundRow {
            port: e.port,
            family: e.family,
            changed_since: e.changed_since,
            window: Spread::of(&e.window),
            baseline: Spread::of(&e.baseline),
        })
        .collect()
}

/// One webhook receiver: what waits for it in the spool, and how it went last.
#[derive(Debug, Serialize)]
pub struct ReceiverRow {
    /// `name`, or the URL without path and query.
    pub name: String,
    /// The URL without path, query or user info (they may hold a token).
    pub url: String,
    pub format: String,
    pub pending: u64,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// Each receiver's backlog and last outcome, from the spool directory.
pub fn receivers(config: &Config) -> Vec<ReceiverRow> {
    let dir = config.agent.state_dir.join("spool");
    config
        .webhooks
        .iter()
        .map(|hook| {
            let id = crate::sink::webhook::receiver_id(hook);
            let cursor = crate::sink::spool::read_cursor(&dir, &id);
            let status: crate::sink::webhook::ReceiverStatus =
                std::fs::read_to_string(dir.join(format!("{id}.status")))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            ReceiverRow {
                name: hook.display_name(),
                url: hook.url.redacted(),
                format: format!("{:?}", hook.format).to_lowercase(),
                pending: crate::sink::spool::count_after_on_disk(&dir, cursor),
                last_success: status.last_success,
                last_error: status.last_error,
                last_error_at: status.last_error_at,
            }
        })
        .collect()
}

/// Builds the status from a fresh netlink dump and the stored baseline.
pub fn collect(config: &Config) -> anyhow::Result<Status> {
    let view = netlink::dump()
        .map_err(|e| anyhow::anyhow!("cannot read the kernel's network state over netlink: {e}"))?;
    let (baseline, baseline_problem) = match baseline::load(&config.agent.state_dir) {
        Ok(b) => (b, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut status = build(config, &view, baseline, baseline_problem);
    status.receivers = receivers(config);
    status.capture = state::read_text(&config.agent.state_dir, state::CAPTURE_FILE)
        .and_then(|t| serde_json::from_str(&t).ok());
    status.inbound = state::read_text(&config.agent.state_dir, state::INBOUND_FILE)
        .map(|t| inbound_rows(&t))
        .unwrap_or_default();
    if !config.tls.targets.is_empty() {
        status.tls_checks = state::read_text(&config.agent.state_dir, state::TLS_CHECKS_FILE)
            .and_then(|t| serde_json::from_str(&t).ok());
    }
    let destinations = crate::agent::setup::route_destinations(config);
    if !destinations.is_empty() {
        let found =
            crate::source::route_lookup::Lookups::open().and_then(|mut l| l.paths(&destinations));
        status.paths = match found {
            Ok(lookups) => path_rows(&lookups, &view),
            Err(e) => vec![PathRow::failed(
                "*".into(),
                format!("the kernel's routes could not be looked up: {e}"),
            )],
        };
    }
    Ok(status)
}

/// Pure part of [`collect`]. Long (~90 lines) on purpose: routes, gateways
/// and links are three passes over one view that share what they found.
pub fn build(
    config: &Config,
    view: &KernelView,
    baseline: Option<Baseline>,
    baseline_problem: Option<String>,
) -> Status {
    let mut default_routes = Vec::new();
    let mut gateways = Vec::new();
    let mut route_links = Vec::new();
    for family in [Family::Inet, Family::Inet6] {
        for (key, hops) in view.default_routes(family) {
            let nexthops = hops
                .iter()
                .map(|h| json!({"gateway": h.gateway.map(|g| g.to_string()), "interface": view.link_name(h.ifindex)}))
                .collect();
            default_routes.push(RouteRow {
                family,
                metric: key.metric,
                nexthops,
            });
            for hop in hops {
                route_links.push(view.link_name(hop.ifindex));
                let Some(ip) = hop.gateway else { continue };
                let interface = view.link_name(hop.ifindex);
                let entry = view.neighbours.get(&(hop.ifindex, ip));
                gateways.push(GatewayRow {
                    family,
                    ip: ip.to_string(),
                    mac: entry.and_then(|n| n.mac.as_ref()).map(|m| m.to_string()),
                    state: entry
                        .map(|n| n.state.as_str())
                        .unwrap_or("no entry")
                        .to_string(),
                    baseline_mac: baseline
                        .as_ref()
                        .and_then(|b| b.gateway_mac(family, &interface, &ip))
                        .map(|m| m.to_string()),
                    interface,
                });
            }
        }
    }
    let explicit: Vec<&str> = config
        .agent
        .interfaces
        .iter()
        .map(|i| i.0.as_str())
        .collect();
    let links = view
        .links
        .values()
        .filter(|l| !l.loopback && !config.is_ignored_link(view, l))
        .map(|l| {
            let mut flags = Vec::new();
            if l.admin_up {
                flags.push("UP");
            }
            if l.carrier {
                flags.push("LOWER_UP");
            }
            if l.promisc {
                flags.push("PROMISC");
            }
            LinkRow {
                name: l.name.clone(),
                kind: l.kind.clone(),
                mac: l.mac.as_ref().map(|m| m.to_string()),
                state: if l.admin_up && l.carrier {
                    "up"
                } else {
                    "down"
                },
                flags,
                mtu: l.mtu,
                watched: if explicit.is_empty() {
                    route_links.contains(&l.name)
                } else {
                    explicit.contains(&l.name.as_str())
                },
            }
        })
        .collect();
    Status {
        default_routes,
        gateways,
        links,
        baseline,
        baseline_problem,
        capture: None,
        receivers: Vec::new(),
        tls_checks: None,
        inbound: Vec::new(),
        paths: Vec::new(),
    }
}

/// The human-readable form. Long (~120 lines) on purpose: the page is written
/// top to bottom, one block per section, so its layout reads in one place.
pub fn render(status: &Status) -> String {
    let mut s = String::new();
    s.push_str("Default routes:\n");
    if status.default_routes.is_empty() {
        s.push_str("  (none)\n");
    }
    for r in &status.default_routes {
        let hops: Vec<String> = r
            .nexthops
            .iter()
            .map(|h| {
                format!(
                    "via {} dev {}",
                    h["gateway"].as_str().unwrap_or("-"),
                    h["interface"].as_str().unwrap_or("?")
                )
            })
            .collect();
        s.push_str(&format!(
            "  {:<5} metric {:<5} {}\n",
            r.family.as_str(),
            r.metric,
            hops.join(", ")
        ));
    }
    s.push_str("Gateways:\n");
    if status.gateways.is_empty() {
        s.push_str("  (none)\n");
    }
    for g in &status.gateways {
        let known = match (&g.baseline_mac, &g.mac) {
            (Some(b), Some(m)) if b != m => format!("  BASELINE {b} DIFFERS"),
            (Some(_), _) => "  (matches baseline)".to_string(),
            (None, _) => "  (not in baseline)".to_string(),
        };
        s.push_str(&format!(
            "  {:<24} dev {:<10} mac {:<17} {:<10}{}\n",
            g.ip,
            g.interface,
            g.mac.as_deref().unwrap_or("-"),
            g.state,
            known
        ));
    }
    s.push_str("Links:\n");
    for l in &status.links {
        s.push_str(&format!(
            "  {}{:<15} {:<5} mac {:<17} mtu {:<6} <{}>{}\n",
            if l.watched { "*" } else { " " },
            l.name,
            l.state,
            l.mac.as_deref().unwrap_or("-"),
            l.mtu,
            l.flags.join(","),
            l.kind.as_ref().map(|k| format!(" {k}")).unwrap_or_default()
        ));
    }
    s.push_str("  (* watched)\nCapture: ");
    match &status.capture {
        None => s.push_str("no figures (the agent has not run with capture, or not for 10 s yet)\n"),
        Some(c) => s.push_str(&format!(
            "{} frames passed the kernel filter, {} dropped by the kernel; {} ARP, {} NDP, {} TCP SYN (sampling {}), {} malformed; {} stations ({} evicted); on {} (as of {})\n",
            c["kernel_packets"], c["kernel_drops"], c["arp"], c["ndp"], c["syns"], c["syn_sampling"], c["malformed"], c["stations"], c["stations_evicted"],
            c["interfaces"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
            c["updated"].as_str().unwrap_or("?")
        )),
    }
    if let Some(groups) = status
        .capture
        .as_ref()
        .and_then(|c| c["vrrp_groups"].as_array())
        .filter(|g| !g.is_empty())
    {
        // What makes a gateway's move a failover (gateway_failover).
        s.push_str("VRRP groups advertising:\n");
        for g in groups {
            let list = |key: &str| {
                g[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            s.push_str(&format!(
                "  {} group {} ({}): {} from {}\n",
                g["interface"].as_str().unwrap_or("?"),
                g["vrid"],
                g["family"].as_str().unwrap_or("?"),
                list("addresses"),
                list("routers")
            ));
        }
    }
    if !status.paths.is_empty() {
        s.push_str("Where traffic goes ([route] destinations):\n");
        for p in &status.paths {
            let hop = match (&p.error, &p.next_hop) {
                (Some(e), _) => format!("no path: {e}"),
                (None, Some(h)) => format!("via {h}"),
                (None, None) => "on the link".to_string(),
            };
            let mut extra = Vec::new();
            if let Some(r) = &p.route {
                extra.push(r.clone());
            }
            if let Some(r) = &p.rule {
                extra.push(format!("rule {r}"));
            }
            if let Some(r) = &p.redirected_from {
                extra.push(format!("redirected from {r}"));
            }
            let extra = match extra.is_empty() {
                true => String::new(),
                false => format!(" ({})", extra.join("; ")),
            };
            s.push_str(&format!("  {} {hop}{extra}\n", p.destination));
        }
    }
    if !status.inbound.is_empty() {
        s.push_str("Inbound connections per port (current window | learned baseline):\n");
        for r in &status.inbound {
            s.push_str(&format!(
                "  {:>5}/IPv{} now: {}\n           baseline: {}{}\n",
                r.port,
                r.family,
                r.window.line(),
                r.baseline.line(),
                r.changed_since
                    .as_ref()
                    .map(|t| format!("\n           PATH CHANGED since {t}"))
                    .unwrap_or_default()
            ));
        }
    }
    s.push_str("Receivers:\n");
    if status.receivers.is_empty() {
        s.push_str("  (none configured)\n");
    }
    for r in &status.receivers {
        s.push_str(&format!(
            "  {} ({}, {}): {} pending; last success {}; last error {}\n",
            r.name,
            r.url,
            r.format,
            r.pending,
            r.last_success.as_deref().unwrap_or("never"),
            match (&r.last_error, &r.last_error_at) {
                (Some(e), Some(t)) => format!("{t}: {e}"),
                _ => "none".to_string(),
            }
        ));
    }
    if let Some(checks) = status.tls_checks.as_ref().and_then(|v| v.as_object()) {
        s.push_str("TLS checks (last result; as of the last change or up to 30 s ago):\n");
        for (name, c) in checks {
            let hops = match (c["hops"].as_u64(), c["reference_hops"]["hops"].as_u64()) {
                (Some(h), Some(r)) => format!(
                    " [hop {h}; port {} at hop {r}]",
                    c["reference_hops"]["port"]
                ),
                (Some(h), None) => format!(" [hop {h}]"),
                _ => String::new(),
            };
            s.push_str(&format!(
                "  {:<16} {:<8} {} {}: {}{hops}\n",
                name,
                c["status"].as_str().unwrap_or("?"),
                c["time"].as_str().unwrap_or("?"),
                c["peer"].as_str().unwrap_or("-"),
                c["message"].as_str().unwrap_or("")
            ));
        }
    }
    s.push_str("Baseline: ");
    match (&status.baseline, &status.baseline_problem) {
        (_, Some(p)) => s.push_str(&format!("unusable: {p}\n")),
        (None, None) => s.push_str("none yet (the agent has not run with this state_dir)\n"),
        (Some(b), None) => {
            s.push_str(&format!(
                "{} gateways, {} links\n",
                b.gateways.len(),
                b.links.len()
            ));
            for g in &b.gateways {
                s.push_str(&format!(
                    "  {:<5} {:<24} dev {:<10} mac {}\n",
                    g.family.as_str(),
                    g.ip,
                    g.interface,
                    g.mac
                ));
                if let Some(suspect) = &g.suspect {
                    s.push_str(&format!(
                        "        suspect {} since {} (see `netsentry baseline`)\n",
                        suspect.mac, suspect.since
                    ));
                }
            }
        }
    }
    s
}
