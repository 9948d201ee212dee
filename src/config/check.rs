//! Checks that span values or sections, run after deserializing. Each names
//! the value it is about by its path, and the parser's spans give the position,
//! so two sections with a key of the same name are never confused.

use std::time::Duration;

use super::Config;
use super::positions::Positions;

/// A failed check: position (when the value is written) and the message.
pub type Failure = (Option<(usize, usize)>, String);

fn fail(at: &Positions<'_>, path: &str, message: impl Into<String>) -> Result<(), Failure> {
    Err((at.at(path), message.into()))
}

/// Every check of a parsed configuration, in the order of the file's sections.
pub fn all(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    agent(config, at)?;
    arp(config, at)?;
    inbound(config, at)?;
    route(config, at)?;
    webhooks(config, at)?;
    metrics(config, at)?;
    ct_caa(config, at)?;
    publish(config, at)?;
    tls(config, at)
}

fn agent(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let agent = &config.agent;
    if agent.state_dir.as_os_str().is_empty() {
        return fail(
            at,
            "agent.state_dir",
            "state_dir is empty: name the directory for the agent's state, e.g. \"/var/lib/netsentry\"",
        );
    }
    if agent.coalesce_burst == 0 {
        return fail(
            at,
            "agent.coalesce_burst",
            "coalesce_burst must be at least 1 (alerts allowed per window before coalescing)",
        );
    }
    if agent.reconcile_interval.0 < Duration::from_secs(1) {
        return fail(
            at,
            "agent.reconcile_interval",
            "reconcile_interval must be at least \"1s\" (a full netlink dump is not free)",
        );
    }
    let flap = agent.link_flap_window.0;
    if flap < Duration::from_secs(1) || flap > Duration::from_secs(86_400) {
        return fail(
            at,
            "agent.link_flap_window",
            "link_flap_window must be between \"1s\" and \"1d\" (three downs within it are one link_flapping episode)",
        );
    }
    if agent.max_spool_bytes < 2 << 20 {
        return fail(
            at,
            "agent.max_spool_bytes",
            "max_spool_bytes must be at least 2097152 (2 MiB: two spool segments)",
        );
    }
    if agent.netlink_receive_buffer < 4096 {
        return fail(
            at,
            "agent.netlink_receive_buffer",
            "netlink_receive_buffer must be at least 4096 (bytes)",
        );
    }
    Ok(())
}

fn arp(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let arp = &config.arp;
    for (key, value) in [
        ("max_stations", arp.max_stations as u64),
        ("storm_pps", arp.storm_pps as u64),
        ("alerts_per_kind", arp.alerts_per_kind as u64),
    ] {
        if value == 0 {
            return fail(
                at,
                &format!("arp.{key}"),
                "[arp] max_stations, storm_pps and alerts_per_kind must be at least 1",
            );
        }
    }
    if arp.receive_buffer < 65536 {
        return fail(
            at,
            "arp.receive_buffer",
            "[arp] receive_buffer must be at least 65536 (bytes)",
        );
    }
    Ok(())
}

/// Destinations a `[route]` section may name (each is two lookups per check).
pub const MAX_WATCH_DESTINATIONS: usize = 256;

fn route(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let n = config.route.watch_destinations.len();
    if n > MAX_WATCH_DESTINATIONS {
        return fail(
            at,
            "route.watch_destinations",
            format!(
                "[route] watch_destinations names {n} addresses; at most {MAX_WATCH_DESTINATIONS} (a few that matter: a backup host, a peer, an API)"
            ),
        );
    }
    Ok(())
}

fn inbound(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let inbound = &config.inbound;
    if inbound.ports.len() > crate::source::capture::MAX_SYN_PORTS {
        return fail(
            at,
            "inbound.ports",
            format!(
                "[inbound] ports names {} ports: at most {} can be watched",
                inbound.ports.len(),
                crate::source::capture::MAX_SYN_PORTS
            ),
        );
    }
    for (key, list) in [
        ("ports", &inbound.ports),
        ("ignore_ports", &inbound.ignore_ports),
    ] {
        if let Some(i) = list.iter().position(|p| *p == 0) {
            return fail(
                at,
                &format!("inbound.{key}.{i}"),
                format!("[inbound] {key}: 0 is not a port (1 to 65535)"),
            );
        }
    }
    if inbound.window.0 < Duration::from_secs(1) {
        return fail(
            at,
            "inbound.window",
            "[inbound] window must be at least \"1s\"",
        );
    }
    if inbound.min_samples == 0 || inbound.max_syn_rate == 0 {
        let key = if inbound.min_samples == 0 {
            "min_samples"
        } else {
            "max_syn_rate"
        };
        return fail(
            at,
            &format!("inbound.{key}"),
            "[inbound] min_samples and max_syn_rate must be at least 1",
        );
    }
    if !(inbound.share > 0.5 && inbound.share <= 1.0) {
        return fail(
            at,
            "inbound.share",
            format!(
                "[inbound] share = {}: give a fraction above 0.5 and at most 1 (0.8: 80 % of a window)",
                inbound.share
            ),
        );
    }
    Ok(())
}

fn publish(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let p = &config.publish;
    match (&p.key_file, &p.path) {
        (Some(_), None) => {
            return fail(
                at,
                "publish.key_file",
                "[publish] has a key_file but no path: name the file the web server serves, e.g. \"/var/www/html/.well-known/netsentry/fingerprints.json\"",
            );
        }
        (None, Some(_)) => {
            return fail(
                at,
                "publish.path",
                "[publish] has a path but no key_file: create a key with `netsentry keygen` and name it here",
            );
        }
        _ => {}
    }
    if p.validity.0 < Duration::from_secs(60) {
        return fail(
            at,
            "publish.validity",
            "[publish] validity must be at least \"1m\" (it is signed again at half of it)",
        );
    }
    if p.enabled() && publish_files(config).is_empty() {
        return fail(
            at,
            "publish.key_file",
            "[publish] has no certificate to publish: set cert_files, or give the TLS targets expect.cert_files",
        );
    }
    for (i, name) in p.tlsa_names.iter().enumerate() {
        if crate::detect::dane::tlsa_host(name).is_none() {
            return fail(
                at,
                &format!("publish.tlsa_names.{i}"),
                format!(
                    "[publish] tlsa_names: {name:?} is not a TLSA name: write _PORT._tcp.HOST, e.g. \"_5222._tcp.xmpp.example.org\""
                ),
            );
        }
    }
    if p.tlsa_refresh.0 < Duration::from_secs(1) {
        return fail(
            at,
            "publish.tlsa_refresh",
            "[publish] tlsa_refresh must be at least \"1s\"",
        );
    }
    Ok(())
}

/// The certificate files `[publish]` reads.
pub fn publish_files(config: &Config) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = match config.publish.cert_files.is_empty() {
        false => config.publish.cert_files.clone(),
        true => config
            .tls
            .targets
            .iter()
            .flat_map(|t| t.expect.cert_files.iter().cloned())
            .chain(config.ct.authorized_cert_files.iter().cloned())
            .collect(),
    };
    files.sort();
    files.dedup();
    files
}

fn webhooks(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let mut names = std::collections::HashSet::new();
    for (i, hook) in config.webhooks.iter().enumerate() {
        let valid = hook.name.len() <= 64
            && hook
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return fail(
                at,
                &format!("webhook.{i}.name"),
                format!(
                    "webhook name {:?}: use up to 64 letters, digits, '-', '_' or '.' (it is a metric label)",
                    hook.name
                ),
            );
        }
        if !hook.name.is_empty() && !names.insert(hook.name.as_str()) {
            return fail(
                at,
                &format!("webhook.{i}.name"),
                format!(
                    "webhook name {:?} is used twice: names must be unique",
                    hook.name
                ),
            );
        }
        if let Some(first) = config.webhooks[..i]
            .iter()
            .position(|h| h.url.0 == hook.url.0)
        {
            return fail(
                at,
                &format!("webhook.{i}.url"),
                format!(
                    "this url is already the one of [[webhook]] number {} ({}): every alert would be sent to it twice",
                    first + 1,
                    config.webhooks[first].display_name()
                ),
            );
        }
        if hook.timeout.0.is_zero() {
            return fail(
                at,
                &format!("webhook.{i}.timeout"),
                format!(
                    "webhook {}: timeout must be greater than zero",
                    hook.display_name()
                ),
            );
        }
    }
    Ok(())
}

fn metrics(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let metrics = &config.metrics;
    if !metrics.listen.is_empty() && metrics.listen.parse::<std::net::SocketAddr>().is_err() {
        return fail(
            at,
            "metrics.listen",
            format!(
                "[metrics] listen {:?} is not an address: write ip:port, e.g. \"127.0.0.1:9469\"",
                metrics.listen
            ),
        );
    }
    if metrics.interval.0 < Duration::from_secs(1) {
        return fail(
            at,
            "metrics.interval",
            "[metrics] interval must be at least \"1s\"",
        );
    }
    if !metrics.textfile.as_os_str().is_empty()
        && metrics.textfile.extension().is_none_or(|e| e != "prom")
    {
        return fail(
            at,
            "metrics.textfile",
            "[metrics] textfile must end in .prom (node_exporter reads only those)",
        );
    }
    Ok(())
}

fn domain_ok(d: &str) -> bool {
    let d = d.trim_end_matches('.');
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

fn ct_caa(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let lists = [("ct", &config.ct.domains), ("caa", &config.caa.domains)];
    for (section, domains) in lists {
        for (i, d) in domains.iter().enumerate() {
            if !domain_ok(d) {
                return fail(
                    at,
                    &format!("{section}.domains.{i}"),
                    format!(
                        "{d:?} is not a domain name: write it like \"example.org\" (subdomains are included)"
                    ),
                );
            }
        }
    }
    let ct = &config.ct;
    match url::Url::parse(&ct.api_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
        _ => {
            return fail(
                at,
                "ct.api_url",
                format!("[ct] api_url {:?} is not an http(s) URL", ct.api_url),
            );
        }
    }
    if ct.interval.0 < Duration::from_secs(1) {
        return fail(
            at,
            "ct.interval",
            "[ct] interval must be at least \"1s\" and timeout greater than zero",
        );
    }
    for (i, m) in ct.authorized_manifests.iter().enumerate() {
        let scheme = url::Url::parse(&m.url).map(|u| u.scheme().to_string());
        let problem = match (scheme.as_deref(), crate::manifest::public_key(&m.key)) {
            (Ok("https" | "http"), Ok(_)) => None,
            (Ok("https" | "http"), Err(e)) => Some(format!("key: {e}")),
            _ => Some(format!("{:?} is not an http(s) URL", m.url)),
        };
        if let Some(p) = problem {
            return fail(
                at,
                &format!("ct.authorized_manifests.{i}"),
                format!("[ct] authorized_manifests: {p}"),
            );
        }
    }
    if ct.timeout.0.is_zero() {
        return fail(
            at,
            "ct.timeout",
            "[ct] interval must be at least \"1s\" and timeout greater than zero",
        );
    }
    if config.caa.interval.0 < Duration::from_secs(1) {
        return fail(at, "caa.interval", "[caa] interval must be at least \"1s\"");
    }
    nameservers(&config.caa.nameservers, "caa", at)
}

/// Each of a section's `nameservers` is an address.
fn nameservers(list: &[String], section: &str, at: &Positions<'_>) -> Result<(), Failure> {
    for (i, ns) in list.iter().enumerate() {
        if crate::source::dns::parse_nameserver(ns).is_none() {
            return fail(
                at,
                &format!("{section}.nameservers.{i}"),
                format!(
                    "[{section}] nameserver {ns:?} is not an address: write \"192.0.2.53\" or \"192.0.2.53:53\""
                ),
            );
        }
    }
    Ok(())
}

fn tls(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    let tls = &config.tls;
    nameservers(&tls.nameservers, "tls", at)?;
    if let Some(path) = &tls.dnssec_trust_anchor
        && let Err(e) = crate::source::dns::check_trust_anchor(path)
    {
        return fail(
            at,
            "tls.dnssec_trust_anchor",
            format!(
                "[tls] dnssec_trust_anchor {}: {e} (a file of DNSKEY records, e.g. \"example.org. 300 IN DNSKEY 257 3 13 ...\")",
                path.display()
            ),
        );
    }
    if tls.concurrency == 0 {
        return fail(
            at,
            "tls.concurrency",
            "[tls] concurrency and failures_before_alert must be at least 1",
        );
    }
    if tls.failures_before_alert == 0 {
        return fail(
            at,
            "tls.failures_before_alert",
            "[tls] concurrency and failures_before_alert must be at least 1",
        );
    }
    if config.correlation.window.0.is_zero() {
        return fail(
            at,
            "correlation.window",
            "[correlation] window must be greater than zero (e.g. \"30m\")",
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, target) in tls.targets.iter().enumerate() {
        let name = &target.name;
        let key = |k: &str| format!("tls.target.{i}.{k}");
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return fail(
                at,
                &key("name"),
                format!(
                    "tls target name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.' (it is used on the command line and in alerts)"
                ),
            );
        }
        if !seen.insert(name.as_str()) {
            return fail(
                at,
                &key("name"),
                format!("tls target name {name:?} is used twice: names must be unique"),
            );
        }
        match (&target.address, &target.srv) {
            (Some(_), Some(_)) | (None, None) => {
                return fail(
                    at,
                    &key("name"),
                    format!(
                        "tls target {name:?}: give exactly one of address (\"host:port\") and srv (\"_xmpp-client._tcp.example.org\")"
                    ),
                );
            }
            (None, Some(srv)) => {
                if let Err(e) = crate::config::tls::check_srv(srv) {
                    return fail(at, &key("srv"), format!("tls target {name:?}: {e}"));
                }
            }
            (Some(_), None) => {}
        }
        match (&target.expect.manifest, &target.expect.manifest_key) {
            (Some(url), Some(k)) => {
                let scheme = url::Url::parse(url).map(|u| u.scheme().to_string());
                if !matches!(scheme.as_deref(), Ok("https" | "http")) {
                    return fail(
                        at,
                        &key("expect"),
                        format!("tls target {name:?}: manifest {url:?} is not an http(s) URL"),
                    );
                }
                if let Err(e) = crate::manifest::public_key(k) {
                    return fail(
                        at,
                        &key("expect"),
                        format!("tls target {name:?}: manifest_key: {e}"),
                    );
                }
            }
            (Some(_), None) => {
                return fail(
                    at,
                    &key("expect"),
                    format!(
                        "tls target {name:?}: a manifest needs its manifest_key (the RW... line `netsentry keygen` printed on the server)"
                    ),
                );
            }
            (None, Some(_)) => {
                return fail(
                    at,
                    &key("expect"),
                    format!("tls target {name:?}: manifest_key without a manifest URL"),
                );
            }
            (None, None) => {}
        }
        let interval_msg = format!(
            "tls target {name:?}: interval must be at least \"1s\" and timeout greater than zero"
        );
        if target.interval.0 < Duration::from_secs(1) {
            return fail(at, &key("interval"), interval_msg);
        }
        if target.timeout.0.is_zero() {
            return fail(at, &key("timeout"), interval_msg);
        }
        if target.server_name().is_empty() {
            return fail(
                at,
                &key("server_name"),
                format!("tls target {name:?}: server_name is empty"),
            );
        }
    }
    Ok(())
}

/// Every certificate file named must hold a readable certificate (checked when
/// loading a file, so `check-config` catches a typo before the agent runs).
pub fn cert_files(config: &Config, at: &Positions<'_>) -> Result<(), Failure> {
    for (i, path) in config.ct.authorized_cert_files.iter().enumerate() {
        if let Err(e) = crate::cert::read_pem_file(path) {
            return fail(
                at,
                &format!("ct.authorized_cert_files.{i}"),
                format!("[ct] authorized_cert_files: {e}"),
            );
        }
    }
    for (t, target) in config.tls.targets.iter().enumerate() {
        for (i, path) in target.expect.cert_files.iter().enumerate() {
            if let Err(e) = crate::cert::read_leaf(path) {
                return fail(
                    at,
                    &format!("tls.target.{t}.expect.cert_files.{i}"),
                    format!("tls target {:?}: {e}", target.name),
                );
            }
        }
    }
    Ok(())
}
