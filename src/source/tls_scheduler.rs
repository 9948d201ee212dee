//! When TLS checks run: the agent's scheduler (each target every `interval`,
//! never doubled, bounded concurrency) and one round for `netsentry probe`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};

use crate::config::{Config, TlsTarget};
use crate::detect::tls::{ProbeError, ProbeReport};
use crate::source::Feed;
use crate::source::tls_probe::{TrustStore, probe};

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
    let task = tokio::spawn(async move {
        let mut trust = TrustStore::default();
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
                let (target, tx, limit, busy) =
                    (target.clone(), tx.clone(), limit.clone(), busy[i].clone());
                let roots = trust.get(target.ca_file.as_deref());
                tokio::spawn(async move {
                    let report = {
                        let _permit = limit.acquire_owned().await;
                        probe(&target, roots).await
                    };
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

/// Checks each target once, at most `concurrency` at a time; reports come
/// back in the order of `targets`.
pub async fn probe_round(
    targets: &[TlsTarget],
    concurrency: usize,
    trust: &mut TrustStore,
) -> Vec<ProbeReport> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let roots = trust.get(target.ca_file.as_deref());
        let target = target.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, probe(&target, roots).await)
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
        .map(|(r, t)| {
            r.unwrap_or_else(|| ProbeReport {
                target: t.name.clone(),
                address: t.address.to_string(),
                peer: None,
                local: false,
                time: Utc::now(),
                outcome: Err(ProbeError::Stopped),
            })
        })
        .collect()
}
