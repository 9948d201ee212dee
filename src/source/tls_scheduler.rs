//! When TLS checks run: the agent's scheduler (each target every `interval`,
//! never doubled, bounded concurrency) and one round for `netsentry probe`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Semaphore, mpsc};

use crate::config::{Config, TlsTarget};
use crate::detect::tls::ProbeReport;
use crate::source::Feed;
use crate::source::manifest_fetch::Manifests;
use crate::source::tls_probe::{PathHints, TrustStore, measure_path, probe, stopped};

/// Starts the agent's check scheduler when targets are configured. Each target
/// is checked every `interval` (the first time right away); a check still
/// running when the next is due is not doubled; at most `[tls] concurrency`
/// run at once. Reports arrive on the returned channel.
pub fn start(config: &Config) -> Option<Feed<ProbeReport>> {
    let targets = config.tls.targets.clone();
    if targets.is_empty() {
        return None;
    }
    tracing::info!(
        "TLS checks: {} targets ({})",
        targets.len(),
        targets
            .iter()
            .map(|t| format!("{} {} {}", t.name, t.address, t.vantage()))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let (tx, rx) = mpsc::channel::<ProbeReport>(1024);
    let limit = Arc::new(Semaphore::new(config.tls.concurrency.max(1)));
    let (state_dir, manifest_refresh) = (
        config.agent.state_dir.clone(),
        config.tls.manifest_refresh.0,
    );
    let task = tokio::spawn(async move {
        let mut trust = TrustStore::default();
        let hints = PathHints::default();
        let manifests = Manifests::new(&state_dir, manifest_refresh);
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
                let (target, tx, limit, busy, hints, manifests) = (
                    target.clone(),
                    tx.clone(),
                    limit.clone(),
                    busy[i].clone(),
                    hints.clone(),
                    manifests.clone(),
                );
                let roots = trust.get(target.ca_file.as_deref());
                tokio::spawn(async move {
                    let report = {
                        let _permit = limit.acquire_owned().await;
                        let check = target.clone();
                        guarded(&target, async move {
                            check_with_path(&check, roots, &hints, &manifests).await
                        })
                        .await
                    };
                    // Always reached: a check that panicked is a failed check,
                    // and the target is checked again at its next turn.
                    busy.store(false, Ordering::Release);
                    let _ = tx.send(report).await;
                });
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    Some(Feed::new((rx, task)))
}

/// One TLS check: the manifest of its expectation first (when it has one),
/// then the handshake, then the path length of its port (and reference port).
pub async fn check_with_path(
    target: &TlsTarget,
    roots: Result<Arc<rustls::RootCertStore>, String>,
    hints: &PathHints,
    manifests: &Manifests,
) -> ProbeReport {
    let manifest = manifests.for_target(target).await;
    let mut report = probe(target, roots).await;
    report.manifest = manifest;
    report.path = measure_path(target, &report, hints).await;
    report
}

/// Runs one check in its own task, so that a panic in it (a parser bug an
/// interceptor could trigger) ends as a failed check of `target`
/// (`ProbeError::Stopped`, logged with the panic's message) instead of
/// silencing the target.
pub async fn guarded(
    target: &TlsTarget,
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
            stopped(target)
        }
    }
}

/// Checks each target once, at most `concurrency` at a time; reports come
/// back in the order of `targets`.
pub async fn probe_round(
    targets: &[TlsTarget],
    concurrency: usize,
    trust: &mut TrustStore,
    manifests: &Manifests,
) -> Vec<ProbeReport> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let hints = PathHints::default();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let roots = trust.get(target.ca_file.as_deref());
        let target = target.clone();
        let (limit, hints, manifests) = (limit.clone(), hints.clone(), manifests.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let check = target.clone();
            (
                i,
                guarded(&target, async move {
                    check_with_path(&check, roots, &hints, &manifests).await
                })
                .await,
            )
        });
    }
    let mut reports: Vec<Option<ProbeReport>> = vec![None; targets.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, report)) = done {
            reports[i] = Some(report);
        }
    }
    reports
        .into_iter()
        .zip(targets)
        .map(|(r, t)| r.unwrap_or_else(|| stopped(t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tls::ProbeError;

    #[tokio::test]
    async fn a_check_that_panics_is_a_failed_check() {
        let config = crate::config::Config::parse(
            "[[tls.target]]\nname = \"xmpp\"\naddress = \"192.0.2.5:5222\"\nexpect = { spki_sha256 = [\"abababababababababababababababababababababababababababababababab\"] }\n",
            "test.toml",
        )
        .unwrap();
        let target = config.tls.targets[0].clone();
        let report = guarded(&target, async { panic!("byte index 1 is out of range") }).await;
        assert_eq!(report.target, "xmpp");
        assert!(matches!(report.outcome, Err(ProbeError::Stopped)));
        // And a check that ends normally is passed through.
        let fine = stopped(&target);
        let time = fine.time;
        let report = guarded(&target, async move { fine }).await;
        assert_eq!(report.time, time);
    }
}
