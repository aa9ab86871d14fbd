//! What every statement records, batched per thread.

use std::time::{Duration, Instant};

/// What every statement records, kept per thread for the sessions on it:
/// the handles are looked up once, and the counts and latencies are passed
/// on now and then (every [`StatementMetrics::BATCH`] commands, after a
/// second, when a session on the thread goes idle or ends), so statements
/// on different cores do not fight over the shared counters' cache lines.
/// (The Prometheus recorder appends every sample to one queue all threads
/// share; handing it a batch at once keeps that queue's line on one core
/// for the batch.) One per thread rather than per session: the batch stays
/// in the core's cache from one session's statement to the next, and a
/// session is 600 bytes smaller.
pub(super) struct StatementMetrics {
    statements: metrics::Counter,
    backend_errors: metrics::Counter,
    seconds: metrics::Histogram,
    pending_statements: u64,
    pending_errors: u64,
    /// Latencies of the commands since the last flush, in seconds.
    pending_seconds: [f64; Self::BATCH],
    pending_latencies: usize,
    /// The registry tick of the last flush.
    flushed: u64,
}

impl StatementMetrics {
    const BATCH: usize = 64;
    /// Registry ticks after which a busy session passes its counts on even
    /// if its batch is not full: about a second.
    const FLUSH_TICKS: u64 =
        (Duration::from_secs(1).as_millis() / crate::registry::TICK.as_millis()) as u64;

    pub(super) fn new() -> Self {
        Self {
            statements: metrics::counter!("zerodb_statements_total"),
            backend_errors: metrics::counter!("zerodb_backend_errors_total"),
            seconds: metrics::histogram!("zerodb_statement_seconds"),
            pending_statements: 0,
            pending_errors: 0,
            pending_seconds: [0.0; Self::BATCH],
            pending_latencies: 0,
            flushed: 0,
        }
    }

    pub(super) fn statement(&mut self, error: bool) {
        self.pending_statements += 1;
        self.pending_errors += u64::from(error);
    }

    /// A command took from `started` to `done`, which was at the registry
    /// tick `tick`.
    pub(super) fn command(&mut self, started: Instant, done: Instant, tick: u64) {
        self.pending_seconds[self.pending_latencies] =
            done.saturating_duration_since(started).as_secs_f64();
        self.pending_latencies += 1;
        if self.pending_latencies == Self::BATCH || tick >= self.flushed + Self::FLUSH_TICKS {
            self.flush(tick);
        }
    }

    pub(super) fn flush(&mut self, tick: u64) {
        if self.pending_statements > 0 {
            self.statements.increment(self.pending_statements);
        }
        if self.pending_errors > 0 {
            self.backend_errors.increment(self.pending_errors);
        }
        for s in &self.pending_seconds[..self.pending_latencies] {
            self.seconds.record(*s);
        }
        self.pending_statements = 0;
        self.pending_errors = 0;
        self.pending_latencies = 0;
        self.flushed = tick;
    }
}

thread_local! {
    static STATEMENT_METRICS: std::cell::RefCell<Option<StatementMetrics>> =
        const { std::cell::RefCell::new(None) };
}

impl StatementMetrics {
    /// Runs `f` on this thread's counts (made at the first use, with the
    /// recorder installed by then).
    pub(super) fn with<R>(f: impl FnOnce(&mut StatementMetrics) -> R) -> R {
        STATEMENT_METRICS.with(|m| f(m.borrow_mut().get_or_insert_with(StatementMetrics::new)))
    }
}

impl Drop for StatementMetrics {
    fn drop(&mut self) {
        self.flush(self.flushed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Every latency reaches the recorder, in batches, and nothing is lost
    /// when the session ends between batches.
    #[test]
    fn statement_latencies_reach_the_histogram_in_batches() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.01])
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let count = || -> Option<u64> {
            handle
                .render()
                .lines()
                .find(|l| l.starts_with("zerodb_statement_seconds_count"))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        };
        let mut m = metrics::with_local_recorder(&recorder, StatementMetrics::new);
        let t0 = Instant::now();
        for i in 0..StatementMetrics::BATCH + 6 {
            // 2 to 5 ms, between 1 and 10 ms: all in the second bucket.
            let took = Duration::from_millis(2 + (i % 4) as u64);
            m.statement(false);
            m.command(t0, t0 + took, 0);
        }
        assert_eq!(
            count(),
            Some(StatementMetrics::BATCH as u64),
            "a full batch is passed on"
        );
        m.statement(false);
        m.command(
            t0,
            t0 + Duration::from_millis(2),
            StatementMetrics::FLUSH_TICKS,
        );
        assert_eq!(
            count(),
            Some(StatementMetrics::BATCH as u64 + 7),
            "a second later, a batch that is not full is passed on too"
        );
        m.statement(false);
        m.command(
            t0,
            t0 + Duration::from_millis(2),
            StatementMetrics::FLUSH_TICKS,
        );
        drop(m);
        let text = handle.render();
        assert_eq!(count(), Some(StatementMetrics::BATCH as u64 + 8), "{text}");
        assert!(
            text.contains("zerodb_statement_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("zerodb_statement_seconds_bucket{le=\"0.01\"} 72"),
            "{text}"
        );
        assert!(text.contains("zerodb_statements_total 72"), "{text}");
    }
}
