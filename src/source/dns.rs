//! DNS for the sources (hickory-resolver): one way to build a resolver from
//! a section's `nameservers` (or the system's), shared by the CAA audit and
//! the TLS checks (SRV targets and every address of a host name).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

pub type TokioResolver = Resolver<TokioRuntimeProvider>;

/// A resolver asking `nameservers` ("ip" or "ip:port"; empty: the system's
/// /etc/resolv.conf). No cache: every answer is wanted fresh, so that a
/// changed record shows at the next check. `section` names the
/// configuration in messages.
pub fn resolver(nameservers: &[String], section: &str) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    opts.cache_size = 0;
    if nameservers.is_empty() {
        return Resolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
            .with_options(opts)
            .build()
            .map_err(|e| e.to_string());
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
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .map_err(|e| e.to_string())
}

/// "192.0.2.53", "192.0.2.53:5353" or "[2001:db8::53]:53".
pub fn parse_nameserver(ns: &str) -> Option<SocketAddr> {
    ns.parse()
        .ok()
        .or_else(|| ns.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}
