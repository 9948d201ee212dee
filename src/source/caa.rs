//! CAA lookups (hickory-resolver): for each domain, the first non-empty CAA
//! record set walking up the tree (RFC 8659 3), from the configured name
//! servers or the system's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::sync::mpsc;

use crate::config::CaaConfig;
use crate::detect::caa::{CaaRecord, lookup_order};

/// Why the CAA records of a domain could not be looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaaError {
    /// No resolver could be made (system configuration, name servers).
    #[error("{0}")]
    Resolver(String),
    /// The lookup of a name failed (not NXDOMAIN/NODATA, which climb the tree).
    #[error("{0}")]
    Lookup(String),
}

/// The CAA policy found for one domain: `Ok(None)` when no name up the tree
/// has CAA records, `Ok(Some((owner, records)))` for the relevant set.
#[derive(Debug)]
pub struct CaaReport {
    pub domain: String,
    pub found: Result<Option<(String, Vec<CaaRecord>)>, CaaError>,
}

type TokioResolver = Resolver<TokioRuntimeProvider>;

fn resolver(config: &CaaConfig) -> Result<TokioResolver, CaaError> {
    resolver_inner(config).map_err(CaaError::Resolver)
}

fn resolver_inner(config: &CaaConfig) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    // Every answer is wanted fresh: a changed policy shows at the next round.
    opts.cache_size = 0;
    if config.nameservers.is_empty() {
        return Resolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
            .with_options(opts)
            .build()
            .map_err(|e| e.to_string());
    }
    let mut servers = Vec::new();
    for ns in &config.nameservers {
        let addr: SocketAddr = ns
            .parse()
            .or_else(|_| ns.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| format!("[caa] nameserver {ns:?} is not an address"))?;
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

/// The CAA records at exactly `name` (empty when there are none).
async fn caa_at(resolver: &TokioResolver, name: &str) -> Result<Vec<CaaRecord>, CaaError> {
    let fqdn = format!("{name}.");
    match resolver.lookup(fqdn.as_str(), RecordType::CAA).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::CAA(caa) => Some(CaaRecord {
                    flags: caa.flags(),
                    tag: caa.tag.clone(),
                    value: String::from_utf8_lossy(&caa.value).into_owned(),
                }),
                _ => None,
            })
            .collect()),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(CaaError::Lookup(format!("CAA lookup of {name}: {e}"))),
    }
}

/// The relevant CAA record set of `domain`.
pub async fn lookup(
    resolver: &TokioResolver,
    domain: &str,
) -> Result<Option<(String, Vec<CaaRecord>)>, CaaError> {
    for name in lookup_order(domain) {
        let records = caa_at(resolver, &name).await?;
        if !records.is_empty() {
            return Ok(Some((name, records)));
        }
    }
    Ok(None)
}

/// The audit task: every `interval` (the first time at start), one report per domain.
pub fn start(config: CaaConfig) -> (mpsc::Receiver<CaaReport>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        let resolver = match resolver(&config) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx
                    .send(CaaReport {
                        domain: config.domains.join(", "),
                        found: Err(e),
                    })
                    .await;
                return;
            }
        };
        let mut tick = tokio::time::interval(config.interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for domain in &config.domains {
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                let found = lookup(&resolver, &domain).await;
                if tx.send(CaaReport { domain, found }).await.is_err() {
                    return;
                }
            }
        }
    });
    (rx, task)
}
