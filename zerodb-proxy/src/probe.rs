//! The probe loop: one per datasource, recording each probe's outcome in
//! its [`crate::health::Health`] and announcing when it flips.

use crate::backend::{BackendConn, BackendKey};
use crate::health::{HealthConfig, HealthEvent, ProbeOutcome};
use crate::topology::Datasource;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

/// Probes one datasource until the sender side of `stop` is dropped.
pub async fn probe_loop(
    ds: Arc<Datasource>,
    cfg: HealthConfig,
    events: broadcast::Sender<HealthEvent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut conn: Option<BackendConn> = None;
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let params = ds.pool.params().clone();
    let mut last_ok = Instant::now();
    // The error code of the refusals going on, if any.
    let mut refused = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let started = Instant::now();
        let result = tokio::time::timeout(cfg.timeout, async {
            if conn.is_none() {
                conn = Some(BackendConn::connect(&params, BackendKey::default()).await?);
            }
            match conn.as_mut() {
                Some(c) => c.ping().await,
                None => Ok(()),
            }
        })
        .await;
        let outcome = match result {
            Ok(r) => ProbeOutcome::of(r),
            Err(_) => ProbeOutcome::Failed(format!("no answer within {:?}", cfg.timeout)),
        };
        if outcome != ProbeOutcome::Answered {
            // A timed-out, failed or refused connection is in an unknown
            // state.
            conn = None;
        }
        refused = alert_if_refused(&ds, &outcome, refused);
        let ok = !outcome.failed();
        if ok {
            last_ok = Instant::now();
        }
        let label = if ok { "ok" } else { "fail" };
        metrics::counter!("zerodb_probes_total", "datasource" => ds.name.clone(), "result" => label).increment(1);
        if let Some(up) = ds.health.record(ok, started.elapsed(), &cfg) {
            let (value, to) = if up { (1.0, "up") } else { (0.0, "down") };
            metrics::gauge!("zerodb_datasource_up", "datasource" => ds.name.clone()).set(value);
            metrics::counter!("zerodb_datasource_state_changes_total", "datasource" => ds.name.clone(), "to" => to)
                .increment(1);
            let failures = ds.health.consecutive_failures();
            if up {
                tracing::info!(datasource = %ds.name, addr = %ds.addr, "datasource is up");
            } else {
                // From the last probe that answered to the verdict.
                metrics::histogram!("zerodb_detection_seconds", "datasource" => ds.name.clone())
                    .record(last_ok.elapsed().as_secs_f64());
                let why = match &outcome {
                    ProbeOutcome::Failed(why) => why.clone(),
                    _ => String::new(),
                };
                tracing::warn!(datasource = %ds.name, addr = %ds.addr, failures, error = %why, "datasource is down");
            }
            let _ = events.send(HealthEvent {
                datasource: ds.name.clone(),
                up,
                consecutive_failures: failures,
            });
        }
    }
}

/// Counts a probe the server answered with an error, and says so when such
/// refusals start, change code or stop (an alert: the server is alive, and
/// a switch would not cure it). Returns the code going on.
fn alert_if_refused(ds: &Datasource, outcome: &ProbeOutcome, before: Option<u16>) -> Option<u16> {
    let now = match outcome {
        ProbeOutcome::Refused { code, message } => {
            metrics::counter!("zerodb_probe_refusals_total", "datasource" => ds.name.clone(), "code" => code.to_string())
                .increment(1);
            if before != Some(*code) {
                tracing::warn!(datasource = %ds.name, addr = %ds.addr, code, %message,
                    "the datasource answers probes with an error: an alert, not a reason to switch");
            }
            Some(*code)
        }
        _ => None,
    };
    if before.is_some() && now.is_none() {
        tracing::info!(datasource = %ds.name, "the datasource no longer refuses probes");
    }
    now
}
