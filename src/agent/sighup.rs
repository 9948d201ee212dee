//! Applying a reload (SIGHUP): the new configuration is loaded and everything
//! that can fail (secrets, spool) is prepared first; then the [`ReloadPlan`]
//! says what is rebuilt, and `config_reloaded` or `config_rejected` reports it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::Agent;
use super::ct::CtWatch;
use super::inbound::InboundWatch;
use super::packets::PacketWatch;
use super::reload::{Rebuild, ReloadPlan};
use super::setup::*;
use super::tls::TlsWatch;
use crate::config::Config;
use crate::detect::lifecycle;
use crate::detect::merge::SameChange;
use crate::sink::webhook::Outbox;
use crate::source::tls_scheduler;

/// What a reload could prepare without changing anything.
struct Prepared {
    new: Config,
    secrets: Vec<Option<Vec<u8>>>,
    outbox: Option<Arc<Outbox>>,
}

impl Agent {
    /// SIGHUP: everything that can fail is done before anything changes.
    pub(super) async fn reload(&mut self) {
        self.notifier
            .notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        let file = self.source.name();
        match self.prepare_reload() {
            Err(why) => {
                tracing::error!("SIGHUP: {why}; the running configuration stays");
                self.out
                    .emit(vec![lifecycle::config_rejected(Utc::now(), &file, &why)]);
            }
            Ok(prepared) => self.apply(prepared, &file).await,
        }
        self.apply_decisions();
        self.notifier.notify("READY=1");
    }

    fn prepare_reload(&self) -> Result<Prepared, String> {
        let new = self.source.load().map_err(|e| e.to_string())?;
        let secrets = read_secrets(&new).map_err(|e| format!("{e:#}"))?;
        let outbox = match (&self.outbox, new.webhooks.is_empty()) {
            (Some(o), _) => Some(o.clone()),
            (None, true) => None,
            (None, false) => Some(
                open_outbox(&self.state_dir, self.config.agent.max_spool_bytes)
                    .map_err(|e| format!("{e:#}"))?,
            ),
        };
        Ok(Prepared {
            new,
            secrets,
            outbox,
        })
    }

    /// Applies a valid new configuration as the [`ReloadPlan`] says.
    async fn apply(&mut self, prepared: Prepared, file: &str) {
        let Prepared {
            new,
            secrets,
            outbox,
        } = prepared;
        let plan = ReloadPlan::new(&self.config, &new);
        let rebuild = plan.rebuild;
        if rebuild.webhooks {
            stop_webhooks(
                std::mem::take(&mut self.webhooks),
                Duration::from_millis(500),
            )
            .await;
            self.outbox = outbox;
            self.out.outbox = self.outbox.clone();
            if let Some(o) = &self.outbox {
                match start_webhooks(&new, secrets, o) {
                    Ok(w) => self.webhooks = w,
                    Err(e) => tracing::error!("{e:#}"),
                }
            }
            self.timers.refresh = timer(refresh_every(&new));
        }
        if rebuild.coalescer {
            let summaries = self.out.coalescer.close_all(Utc::now());
            self.out.emit(summaries);
            self.out.coalescer = new_coalescer(&new);
        }
        self.out.host = new.host_id();
        self.out.correlator.set_window(new.correlation.window.0);
        self.out
            .correlator
            .set_ct_window(new.correlation.ct_window.0);
        self.detector.set_settings(net_settings(&new));
        *self
            .route_destinations
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = super::setup::route_destinations(&new);
        self.rebuild_sources(rebuild, &new);
        for key in &plan.restart {
            tracing::warn!("SIGHUP: {key} changed; it takes effect at the next restart");
        }
        let changed = match plan.changed.is_empty() {
            true => "nothing".to_string(),
            false => plan.changed.join(", "),
        };
        tracing::info!("SIGHUP: configuration {file} reloaded (changed: {changed})");
        self.out.emit(vec![lifecycle::config_reloaded(
            Utc::now(),
            file,
            &plan.changed,
            &plan.restart,
        )]);
        self.config = new;
    }

    /// The detectors and feeds a reload replaces, and their timers.
    fn rebuild_sources(&mut self, rebuild: Rebuild, new: &Config) {
        if rebuild.packets {
            // The same-change window is [arp] conflict_window.
            self.out.same_change = SameChange::new(new.arp.conflict_window.0);
            self.packets.save(&self.state_dir);
            self.packets = PacketWatch::load(new);
            self.packets.sync(&self.detector);
        }
        if rebuild.inbound {
            // Baselines are kept (saved, then read back); the window restarts.
            self.inbound.save(&self.state_dir);
            self.inbound = InboundWatch::load(new);
            self.inbound.sync(&self.detector);
            self.timers.inbound_window = timer(Some(new.inbound.window.0));
            let ports = match new.inbound.enabled && self.capture_on {
                true => self.inbound.refresh_ports(),
                false => Some(Vec::new()),
            };
            if new.inbound.enabled && !self.capture_on {
                tracing::warn!(
                    "SIGHUP: [inbound] needs the capture socket, which is not running (no CAP_NET_RAW, or [arp] and [inbound] were off at start)"
                );
            }
            if let (Some(control), Some(ports)) = (&self.capture_control, ports) {
                let _ = control.send(crate::source::capture::CaptureControl::SynPorts(ports));
            }
        }
        if rebuild.publish {
            self.publish = super::publish::PublishWatch::load(new);
            self.tlsa_feed = super::publish::PublishWatch::tlsa_feed(new);
        }
        if rebuild.tls {
            self.tls.save();
            self.tls = TlsWatch::load(new);
            self.tls_checks = tls_scheduler::start(new);
            self.out.correlator.set_served_names(served_names(new));
        }
        if rebuild.ct {
            self.ct.save();
            self.ct = CtWatch::load(new);
            self.ct_feed = start_ct(new, &self.ct);
        }
        if rebuild.caa {
            self.caa_feed = start_caa(new);
        }
        if rebuild.heartbeat {
            self.timers.heartbeat = timer(new.heartbeat_every());
        }
        if rebuild.metrics_interval {
            self.timers.metrics = timer(Some(new.metrics.interval.0));
        }
    }
}
