//! The probe loop: one per datasource, recording each probe's outcome in
//! its [`crate::health::Health`] and announcing when it flips.

use crate::backend::{BackendConn, BackendKey};
use crate::health::{HealthConfig, HealthEvent};
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
        let ok = matches!(result, Ok(Ok(())));
        if !ok {
            // A timed-out or failed connection is in an unknown state.
            conn = None;
        }
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
                let why = match &result {
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {:?}", cfg.timeout),
                    Ok(Ok(())) => String::new(),
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
