//! Counters and latency histograms shared by producers, consumers and the reporter.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Shared measurements of one run.
#[derive(Debug)]
pub struct Stats {
    /// Time zero: bodies carry nanoseconds since this instant.
    pub start: Instant,
    /// Offset of the run's start from `start` (see [`Stats::restart_clock`]).
    pub origin_ns: AtomicU64,
    /// Messages published.
    pub sent: AtomicU64,
    /// Messages confirmed (ack).
    pub confirmed: AtomicU64,
    /// Messages nacked by the broker.
    pub nacked: AtomicU64,
    /// Messages received by consumers.
    pub received: AtomicU64,
    last_sent_ns: AtomicU64,
    last_confirm_ns: AtomicU64,
    first_received_ns: AtomicU64,
    last_received_ns: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    confirm_latency: Mutex<Histogram<u64>>,
    window: Mutex<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h with 3 significant digits: valid bounds, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            count: h.len(),
        }
    }
}

/// The JSON summary printed at the end of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Seconds the run took.
    pub duration_s: f64,
    /// Messages published.
    pub sent: u64,
    /// Messages confirmed.
    pub confirmed: u64,
    /// Messages nacked.
    pub nacked: u64,
    /// Messages received.
    pub received: u64,
    /// Publish rate, msg/s, over the publishing period.
    pub publish_rate: f64,
    /// Confirm rate, msg/s.
    pub confirm_rate: f64,
    /// Consume rate, msg/s, from first to last receipt.
    pub consume_rate: f64,
    /// Publish-to-receipt latency.
    pub latency_us: Percentiles,
    /// Publish-to-confirm latency.
    pub confirm_latency_us: Percentiles,
}

impl Stats {
    /// Fresh counters starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            origin_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_sent_ns: AtomicU64::new(0),
            last_confirm_ns: AtomicU64::new(0),
            first_received_ns: AtomicU64::new(u64::MAX),
            last_received_ns: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            confirm_latency: Mutex::new(histogram()),
            window: Mutex::new(histogram()),
        }
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        (self.start.elapsed().as_nanos() as u64)
            .saturating_sub(self.origin_ns.load(Ordering::Relaxed))
    }

    /// Moves the start to now: the run begins once every connection is up,
    /// so that opening a thousand connections does not count as run time.
    pub fn restart_clock(&self) {
        self.origin_ns
            .store(self.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// A message was published.
    pub fn on_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.last_sent_ns
            .fetch_max(self.now_ns(), Ordering::Relaxed);
    }

    /// A confirm arrived for a message published `sent_ns` after the start.
    pub fn on_confirm(&self, sent_ns: u64, ack: bool) {
        let now = self.now_ns();
        if ack {
            self.confirmed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.nacked.fetch_add(1, Ordering::Relaxed);
        }
        self.last_confirm_ns.fetch_max(now, Ordering::Relaxed);
        record(&self.confirm_latency, now.saturating_sub(sent_ns) / 1000);
    }

    /// A message published `sent_ns` after the start was received.
    pub fn on_received(&self, sent_ns: u64) {
        let now = self.now_ns();
        self.received.fetch_add(1, Ordering::Relaxed);
        self.first_received_ns.fetch_min(now, Ordering::Relaxed);
        self.last_received_ns.fetch_max(now, Ordering::Relaxed);
        let us = now.saturating_sub(sent_ns) / 1000;
        record(&self.latency, us);
        record(&self.window, us);
    }

    /// Latency percentiles since the last call (for progress lines).
    pub fn take_window(&self) -> Percentiles {
        match self.window.lock() {
            Ok(mut h) => {
                let p = Percentiles::of(&h);
                h.reset();
                p
            }
            Err(_) => Percentiles::default(),
        }
    }

    /// The summary of the run so far.
    pub fn summary(&self) -> Summary {
        let secs = |ns: u64| Duration::from_nanos(ns).as_secs_f64();
        let rate = |n: u64, span: f64| if span > 0.0 { n as f64 / span } else { 0.0 };
        let sent = self.sent.load(Ordering::Relaxed);
        let confirmed = self.confirmed.load(Ordering::Relaxed);
        let received = self.received.load(Ordering::Relaxed);
        let first_rx = self.first_received_ns.load(Ordering::Relaxed);
        let last_rx = self.last_received_ns.load(Ordering::Relaxed);
        let rx_span = if first_rx == u64::MAX {
            0.0
        } else {
            secs(last_rx.saturating_sub(first_rx))
        };
        let pct =
            |m: &Mutex<Histogram<u64>>| m.lock().map(|h| Percentiles::of(&h)).unwrap_or_default();
        Summary {
            duration_s: secs(self.now_ns()),
            sent,
            confirmed,
            nacked: self.nacked.load(Ordering::Relaxed),
            received,
            publish_rate: rate(sent, secs(self.last_sent_ns.load(Ordering::Relaxed))),
            confirm_rate: rate(
                confirmed,
                secs(self.last_confirm_ns.load(Ordering::Relaxed)),
            ),
            consume_rate: rate(received, rx_span.max(1e-3)),
            latency_us: pct(&self.latency),
            confirm_latency_us: pct(&self.confirm_latency),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

fn record(h: &Mutex<Histogram<u64>>, us: u64) {
    if let Ok(mut h) = h.lock() {
        h.saturating_record(us.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_percentiles() {
        let s = Stats::new();
        // Latencies below are computed back from "now": let the clock pass 2 ms.
        std::thread::sleep(Duration::from_millis(2));
        for i in 0..100 {
            s.on_sent();
            s.on_confirm(s.now_ns().saturating_sub(1_000_000), i % 10 != 0);
            s.on_received(s.now_ns().saturating_sub((i + 1) * 1000));
        }
        let sum = s.summary();
        assert_eq!(
            (sum.sent, sum.confirmed, sum.nacked, sum.received),
            (100, 90, 10, 100)
        );
        assert!(
            sum.latency_us.p50 >= 40 && sum.latency_us.p50 <= 60,
            "{:?}",
            sum.latency_us
        );
        assert!(sum.latency_us.max >= 100);
        assert!(sum.confirm_latency_us.p50 >= 1000);
        assert_eq!(s.take_window().count, 100);
        assert_eq!(s.take_window().count, 0, "window resets");
    }
}
