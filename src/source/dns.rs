//! DNS for the sources (hickory-resolver): one way to build a resolver from
//! a section's `nameservers` (or the system's), shared by the CAA audit and
//! the TLS checks (SRV targets and every address of a host name).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::{Resolver, ResolverBuilder};

pub type TokioResolver = Resolver<TokioRuntimeProvider>;

/// A resolver asking `nameservers` ("ip" or "ip:port"; empty: the system's
/// /etc/resolv.conf). No cache: every answer is wanted fresh, so that a
/// changed record shows at the next check. `section` names the
/// configuration in messages.
pub fn resolver(nameservers: &[String], section: &str) -> Result<TokioResolver, String> {
    builder(nameservers, section)?
        .build()
        .map_err(|e| e.to_string())
}

/// The same, validating DNSSEC from `anchor` (a file of DNSKEY records;
/// None: the root zone's KSKs built into hickory). Each record of an answer
/// then carries its proof (secure, insecure, bogus).
pub fn validating_resolver(
    nameservers: &[String],
    section: &str,
    anchor: Option<&Path>,
) -> Result<TokioResolver, String> {
    let anchors = match anchor {
        Some(path) => TrustAnchors::from_file(path)
            .map_err(|e| format!("DNSSEC trust anchor {}: {e}", path.display()))?,
        None => TrustAnchors::default(),
    };
    let mut b = builder(nameservers, section)?.with_trust_anchor(Arc::new(anchors));
    b.options_mut().validate = true;
    b.build().map_err(|e| e.to_string())
}

fn builder(
    nameservers: &[String],
    section: &str,
) -> Result<ResolverBuilder<TokioRuntimeProvider>, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    opts.cache_size = 0;
    if nameservers.is_empty() {
        return Ok(Resolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
            .with_options(opts));
    }
    let mut servers = Vec::new();
    for ns in nameservers {
        let addr = parse_nameserver(ns)
            .ok_or_else(|| format!("[{section}] nameserver {ns:?} is not an address"))?;
        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
        for c in &mut server.connections {
            c.port = addr.port();
        }
        servers.push(server);
    }
    Ok(Resolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts))
}

/// "192.0.2.53", "192.0.2.53:5353" or "[2001:db8::53]:53".
pub fn parse_nameserver(ns: &str) -> Option<SocketAddr> {
    ns.parse()
        .ok()
        .or_else(|| ns.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// A DNSSEC trust anchor file must load (checked with the configuration).
pub fn check_trust_anchor(path: &Path) -> Result<(), String> {
    TrustAnchors::from_file(path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
