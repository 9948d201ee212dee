//! CAA lookups (hickory-resolver): for each domain, the first non-empty CAA
//! record set walking up the tree (RFC 8659 3), from the configured name
//! servers or the system's.

use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::sync::mpsc;

use super::dns::TokioResolver;
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

fn resolver(config: &CaaConfig) -> Result<TokioResolver, CaaError> {
    super::dns::resolver(&config.nameservers, "caa").map_err(CaaError::Resolver)
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
