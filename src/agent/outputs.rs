//! The emit pipeline: every finding goes through coalescing, gets its id,
//! is remembered as a condition (Alertmanager), feeds the correlator, is
//! counted for the metrics, spooled for the receivers (fsynced first) and
//! written to the journal or stderr.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::Utc;

use crate::alert::{Alert, Delivery, Finding};
use crate::detect::coalesce::Coalescer;
use crate::detect::correlate::Correlator;
use crate::detect::lifecycle;
use crate::detect::merge::{Merged, SameChange};
use crate::sink::console_line;
use crate::sink::journald::JournaldSink;
use crate::sink::metrics::Metrics;
use crate::sink::webhook::Outbox;

/// Conditions remembered for Alertmanager (beyond this, the oldest are forgotten).
const MAX_CONDITIONS: usize = 1024;

/// Where alerts go, and the coalescing in front of them.
pub struct Outputs {
    pub host: String,
    pub journal: Option<JournaldSink>,
    pub outbox: Option<Arc<Outbox>>,
    pub coalescer: Coalescer,
    /// Conditions that hold (e.g. an unreachable gateway), by identity: kept
    /// alive in Alertmanager by `refresh_conditions`, resolved when they clear.
    pub conditions: HashMap<String, Arc<Alert>>,
    /// Sees every alert sent; may add an `interception_suspected`.
    pub correlator: Correlator,
    /// Folds the sightings of one gateway MAC change into one alert.
    pub same_change: SameChange,
    pub metrics: Metrics,
    /// The origin of the monotonic clock that coalescing windows run on.
    pub clock: std::time::Instant,
}

/// Alerts made from findings, not yet spooled or printed.
#[derive(Default)]
pub struct Batch {
    /// What goes to the spool (alerts, and resolutions for Alertmanager).
    pub records: Vec<Arc<Alert>>,
    /// What is printed (journal or stderr).
    pub alerts: Vec<Arc<Alert>>,
}

impl Outputs {
    /// Findings through the whole pipeline: admitted, spooled, printed.
    pub fn emit(&mut self, findings: Vec<Finding>) {
        let batch = self.admit(findings);
        self.deliver(batch);
    }

    /// Findings made into alerts (merging, coalescing, correlation, ids).
    pub fn admit(&mut self, findings: Vec<Finding>) -> Batch {
        let mut alerts = Vec::new();
        let mut records = Vec::new();
        let mut queue: VecDeque<Finding> = findings.into();
        while let Some(finding) = queue.pop_front() {
            if finding.clears {
                let key = crate::alert::identity(finding.kind, &finding.details);
                if let Some(original) = self.conditions.remove(&key) {
                    tracing::info!("{} (clears alert {})", finding.summary, original.id);
                    let mut resolve = (*original).clone();
                    resolve.delivery = Delivery::Resolve { at: finding.time };
                    records.push(Arc::new(resolve));
                }
                continue;
            }
            let finding = match self.same_change.admit(finding) {
                Merged::Send(f) => f,
                Merged::Folded { change, source } => {
                    tracing::info!("gateway {change}: also seen by {source} (already reported)");
                    continue;
                }
            };
            for admitted in self.coalescer.admit(finding, self.clock.elapsed()) {
                let alert = Arc::new(Alert::from_finding(admitted, &self.host));
                if alert.kind.is_condition() {
                    if self.conditions.len() >= MAX_CONDITIONS
                        && let Some(oldest) = self
                            .conditions
                            .iter()
                            .min_by_key(|(_, a)| a.time)
                            .map(|(k, _)| k.clone())
                    {
                        self.conditions.remove(&oldest);
                    }
                    self.conditions.insert(
                        crate::alert::identity(alert.kind, &alert.details),
                        alert.clone(),
                    );
                }
                if let Some(suspicion) = self.correlator.observe(&alert) {
                    queue.push_back(suspicion);
                }
                self.metrics.count(&alert);
                records.push(alert.clone());
                alerts.push(alert);
            }
        }
        Batch { records, alerts }
    }

    /// Spools (fsynced) and then prints a batch.
    pub fn deliver(&mut self, batch: Batch) {
        let Batch {
            records,
            mut alerts,
        } = batch;
        if records.is_empty() {
            return;
        }
        // On disk before anything else: the receivers read it from there.
        self.spool(&records, &mut alerts);
        for alert in &alerts {
            self.print(alert);
        }
    }

    /// An alert to the journal, or to stderr without one.
    pub fn print(&self, alert: &Alert) {
        match &self.journal {
            Some(j) => {
                if let Err(e) = j.send(alert) {
                    tracing::warn!("cannot write to the journal at {}: {e}", j.path().display());
                    eprintln!("{}", console_line(alert));
                }
            }
            None => eprintln!("{}", console_line(alert)),
        }
    }

    /// Appends `records` to the spool (fsynced) for the receivers; a loss to
    /// the size cap is reported too, and added to `alerts` for the journal.
    /// While the spool cannot take them (a full disk) they wait in memory
    /// and [`Outputs::retry_spool`] tries again.
    fn spool(&self, records: &[Arc<Alert>], alerts: &mut Vec<Arc<Alert>>) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let waiting = outbox.backlog();
        let result = outbox.append(records);
        self.spooled(outbox, result, waiting, alerts);
    }

    /// Tries again to spool the alerts waiting in memory (on a timer while any wait).
    pub fn retry_spool(&mut self) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        let waiting = outbox.backlog();
        if waiting == 0 {
            return;
        }
        let result = outbox.retry_backlog();
        let mut notices = Vec::new();
        self.spooled(&outbox, result, waiting, &mut notices);
        for n in &notices {
            self.print(n);
        }
    }

    /// Says what an append did: recovered, dropped alerts (with a
    /// `spool_overflow` notice queued behind them), or failed.
    fn spooled(
        &self,
        outbox: &Outbox,
        result: Result<crate::sink::webhook::Dropped, crate::sink::spool::SpoolError>,
        waiting_before: usize,
        alerts: &mut Vec<Arc<Alert>>,
    ) {
        match result {
            Ok(dropped) => {
                if waiting_before > 0 {
                    tracing::info!(
                        "the spool takes alerts again: {waiting_before} alerts kept in memory are spooled"
                    );
                }
                for (count, reason) in [
                    (dropped.cap, "max_spool_bytes"),
                    (dropped.memory, "disk_full"),
                ] {
                    if count == 0 {
                        continue;
                    }
                    tracing::warn!("{count} older undelivered alerts were dropped ({reason})");
                    // Queued behind everything still spooled: receivers learn
                    // of the loss as soon as delivery works again.
                    let notice = Arc::new(Alert::from_finding(
                        lifecycle::spool_overflow(Utc::now(), count, reason),
                        &self.host,
                    ));
                    if let Err(e) = outbox.append(std::slice::from_ref(&notice)) {
                        tracing::error!("{e}");
                    }
                    alerts.push(notice);
                }
            }
            // Said once per episode, not for every alert while the disk is full.
            Err(e) if waiting_before == 0 => tracing::error!(
                "alerts cannot be spooled ({e}); they wait in memory (up to {}) and are spooled when it works again",
                crate::sink::webhook::MAX_BACKLOG
            ),
            Err(_) => {}
        }
    }

    /// Re-sends the conditions that still hold (Alertmanager receivers extend them).
    pub fn refresh_conditions(&mut self, now: chrono::DateTime<Utc>) {
        let (Some(outbox), false) = (&self.outbox, self.conditions.is_empty()) else {
            return;
        };
        let records: Vec<Arc<Alert>> = self
            .conditions
            .values()
            .map(|a| {
                let mut refresh = (**a).clone();
                refresh.delivery = Delivery::Refresh { at: now };
                Arc::new(refresh)
            })
            .collect();
        if let Err(e) = outbox.append(&records) {
            tracing::error!("{e}");
        }
    }
}
