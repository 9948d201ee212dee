//! When TLS checks run: the agent's scheduler (each target every `interval`,
//! never doubled, bounded concurrency) and one round for `netsentry probe`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Semaphore, mpsc};

use crate::config::{Config, TlsTarget};
use crate::detect::dane::DaneVerdict;
use crate::detect::tls::{ProbeError, ProbeReport};
use crate::source::Feed;
use crate::source::dane;
use crate::source::dns::{self, TokioResolver};
use crate::source::endpoints::{self, Dns, Endpoint};
use crate::source::manifest_fetch::Manifests;
use crate::source::tls_probe::{PathHints, TrustStore, measure_path, probe, stopped_at};

/// What every check of a round shares: the trust anchors are per target,
/// the rest is one for all.
#[derive(Clone)]
pub struct Shared {
    /// Checks in flight at once (`[tls] concurrency`).
    pub limit: Arc<Semaphore>,
    pub hints: PathHints,
    pub manifests: Manifests,
    /// SRV and A/AAAA lookups (`[tls] nameservers`, or the system's).
    pub dns: Dns,
    /// The DNSSEC-validating resolver for `expect.dane` (or why there is none).
    pub dane: Option<Result<Arc<TokioResolver>, String>>,
}

impl Shared {
    /// For `config`'s `[tls]`; `manifests` fetch (agent) or only read (probe).
    pub fn new(config: &Config, manifests: Manifests) -> Shared {
        // A hickory resolver is needed for SRV targets, and for host names
        // when name servers are configured (else getaddrinfo serves them).
        let configured = !config.tls.nameservers.is_empty();
        let needed = configured || config.tls.targets.iter().any(|t| t.srv.is_some());
        let resolver = match needed {
            false => None,
            true => match dns::resolver(&config.tls.nameservers, "tls") {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::warn!("TLS checks: no DNS resolver: {e}");
                    None
                }
            },
        };
        let dane = config.tls.targets.iter().any(|t| t.expect.dane).then(|| {
            dns::validating_resolver(
                &config.tls.nameservers,
                "tls",
                config.tls.dnssec_trust_anchor.as_deref(),
            )
            .map(Arc::new)
        });
        Shared {
            dane,
            limit: Arc::new(Semaphore::new(config.tls.concurrency.max(1))),
            hints: PathHints::default(),
            manifests,
            dns: Dns {
                resolver,
                configured,
            },
        }
    }
}

/// Starts the agent's check scheduler when targets are configured. Each target
/// is checked every `interval` (the first time right away); a check still
/// running when the next is due is not doubled; at most `[tls] concurrency`
/// run at once. Reports arrive on the returned channel.
pub fn start(config: &Config) -> Option<Feed<Vec<ProbeReport>>> {
    let targets = config.tls.targets.clone();
    if targets.is_empty() {
        return None;
    }
    tracing::info!(
        "TLS checks: {} targets ({})",
        targets.len(),
        targets
            .iter()
            .map(|t| format!("{} {} {}", t.name, t.service(), t.vantage()))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let (tx, rx) = mpsc::channel::<Vec<ProbeReport>>(1024);
    let manifests = Manifests::new(&config.agent.state_dir, config.tls.manifest_refresh.0);
    let config = config.clone();
    let task = tokio::spawn(async move {
        let mut trust = TrustStore::default();
        let shared = Shared::new(&config, manifests);
        let start = tokio::time::Instant::now();
        let mut due = vec![start; targets.len()];
        let busy: Vec<Arc<AtomicBool>> = targets.iter().map(|_| Arc::default()).collect();
        loop {
            let Some(next) = due.iter().min().copied() else {
                return;
            };
            tokio::time::sleep_until(next).await;
            let now = tokio::time::Instant::now();
            for (i, target) in targets.iter().enumerate() {
                if due[i] > now {
                    continue;
                }
                due[i] = (due[i] + target.interval.0).max(now);
                if busy[i].swap(true, Ordering::AcqRel) {
                    continue;
                }
                let (target, tx, busy, shared) =
                    (target.clone(), tx.clone(), busy[i].clone(), shared.clone());
                let roots = trust.get(target.ca_file.as_deref());
                tokio::spawn(async move {
                    // Its own task: a panic in the lookups (outside data) is a
                    // failed check, not a target silenced for good.
                    let t = target.clone();
                    let round = tokio::spawn(async move { check_target(&t, roots, &shared).await });
                    let reports = match round.await {
                        Ok(reports) => reports,
                        Err(e) => {
                            tracing::error!(target = %target.name, "the TLS check stopped unexpectedly: {e}; counted as a failed check");
                            vec![stopped_at(&target, None)]
                        }
                    };
                    // Always reached: a check that panicked is a failed check,
                    // and the target is checked again at its next turn.
                    busy.store(false, Ordering::Release);
                    let _ = tx.send(reports).await;
                });
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    Some(Feed::new((rx, task)))
}

/// One round of a target: the manifest of its expectation first (when it
/// has one), then its endpoints (SRV records, every address of a host name),
/// then each endpoint's handshake and path length, each holding one permit
/// of `[tls] concurrency`. One report per endpoint, in endpoint order; a
/// target checked as one (or whose endpoints cannot be found) has one.
pub async fn check_target(
    target: &TlsTarget,
    roots: Result<Arc<rustls::RootCertStore>, String>,
    shared: &Shared,
) -> Vec<ProbeReport> {
    let manifest = shared.manifests.for_target(target).await;
    let deadline = target.timeout.0;
    let found = match tokio::time::timeout(deadline, endpoints::resolve(target, &shared.dns)).await
    {
        Ok(found) => found,
        Err(_) => Err(ProbeError::Timeout {
            after: crate::config::Interval(deadline).to_string(),
            step: format!("resolving {}", target.service()),
        }),
    };
    let list: Vec<Option<Endpoint>> = match found {
        Ok(Some(list)) => list.into_iter().map(Some).collect(),
        Ok(None) => vec![None],
        Err(e) => {
            let mut report = stopped_at(target, None);
            report.outcome = Err(e);
            report.manifest = manifest;
            return vec![report];
        }
    };
    let mut checks = tokio::task::JoinSet::new();
    for (i, endpoint) in list.into_iter().enumerate() {
        let (target, roots, shared) = (target.clone(), roots.clone(), shared.clone());
        checks.spawn(async move {
            let _permit = shared.limit.clone().acquire_owned().await;
            let check = target.clone();
            let ep = endpoint.clone();
            let report = guarded(&target, endpoint.as_ref(), async move {
                let mut report = probe(&check, ep.as_ref(), roots).await;
                report.path = measure_path(&check, &report, &shared.hints).await;
                report.dane = dane_check(&check, ep.as_ref(), &report, &shared).await;
                report
            })
            .await;
            (i, report)
        });
    }
    let mut reports = Vec::new();
    while let Some(done) = checks.join_next().await {
        if let Ok(r) = done {
            reports.push(r);
        }
    }
    reports.sort_by_key(|(i, _)| *i);
    reports
        .into_iter()
        .map(|(_, mut r)| {
            r.manifest = manifest.clone();
            r
        })
        .collect()
}

/// The DANE verdict of one check (`expect.dane`): the TLSA records of the
/// endpoint's host name and port (the SRV target's for a service; the
/// server name for an address literal), validated, against the chain.
async fn dane_check(
    target: &TlsTarget,
    endpoint: Option<&Endpoint>,
    report: &ProbeReport,
    shared: &Shared,
) -> Option<(String, DaneVerdict)> {
    if !target.expect.dane {
        return None;
    }
    let seen = report.outcome.as_ref().ok()?;
    let (host, port) = match (endpoint, &target.address) {
        (Some(e), _) => (e.host.clone(), e.addr.port()),
        (None, Some(a)) => (a.host.clone(), a.port),
        (None, None) => return None,
    };
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(_) => target.server_name().to_string(),
        Err(_) => host,
    };
    let name = dane::tlsa_name(&host, port);
    let verdict = match &shared.dane {
        Some(Ok(resolver)) => dane::verdict(resolver, &name, &seen.chain).await,
        Some(Err(e)) => DaneVerdict::Unavailable(format!("no validating resolver: {e}")),
        None => return None,
    };
    Some((name, verdict))
}

/// Runs one check in its own task, so that a panic in it (a parser bug an
/// interceptor could trigger) ends as a failed check of `target`
/// (`ProbeError::Stopped`, logged with the panic's message) instead of
/// silencing the target.
pub async fn guarded(
    target: &TlsTarget,
    endpoint: Option<&Endpoint>,
    check: impl std::future::Future<Output = ProbeReport> + Send + 'static,
) -> ProbeReport {
    match tokio::spawn(check).await {
        Ok(report) => report,
        Err(e) => {
            let why = match e.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into()),
                Err(e) => e.to_string(),
            };
            tracing::error!(target = %target.name, "the TLS check stopped unexpectedly: {why}; counted as a failed check");
            stopped_at(target, endpoint)
        }
    }
}

/// Checks each target once (each of its endpoints), at most `[tls]
/// concurrency` at a time; the reports of each target come back in the
/// order of `targets`.
pub async fn probe_round(
    targets: &[TlsTarget],
    trust: &mut TrustStore,
    shared: &Shared,
) -> Vec<Vec<ProbeReport>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let roots = trust.get(target.ca_file.as_deref());
        let (target, shared) = (target.clone(), shared.clone());
        tasks.spawn(async move { (i, check_target(&target, roots, &shared).await) });
    }
    let mut reports: Vec<Vec<ProbeReport>> = vec![Vec::new(); targets.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, r)) = done {
            reports[i] = r;
        }
    }
    reports
        .into_iter()
        .zip(targets)
        .map(|(r, t)| match r.is_empty() {
            true => vec![stopped_at(t, None)],
            false => r,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_that_panics_is_a_failed_check() {
        let config = crate::config::Config::parse(
            "[[tls.target]]\nname = \"xmpp\"\naddress = \"192.0.2.5:5222\"\nexpect = { spki_sha256 = [\"abababababababababababababababababababababababababababababababab\"] }\n",
            "test.toml",
        )
        .unwrap();
        let target = config.tls.targets[0].clone();
        let report = guarded(&target, None, async {
            panic!("byte index 1 is out of range")
        })
        .await;
        assert_eq!(report.target, "xmpp");
        assert!(matches!(report.outcome, Err(ProbeError::Stopped)));
        // And a check that ends normally is passed through.
        let fine = stopped_at(&target, None);
        let time = fine.time;
        let report = guarded(&target, None, async move { fine }).await;
        assert_eq!(report.time, time);
    }
}
