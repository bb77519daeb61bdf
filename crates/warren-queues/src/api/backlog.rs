//! How much backlog a consumed queue lets its publishers build.
//!
//! A queue whose consumers take messages slower than they arrive grows a
//! backlog, and every message in it waits longer. RabbitMQ's credit flow
//! keeps publisher and consumers in step; Warren's equivalent is time-based:
//! a queue with consumers is *busy* ([`super::QueueFlow`]) once its ready
//! messages would take its consumers more than [`Backlog::TARGET`] to take,
//! at the rate they have been taking them, and free again at half of that.
//! Publishing connections pause reading while a queue they publish to is
//! busy (for at most `QueueFlow::MAX_PAUSE` per signal).
//!
//! The limit never goes below [`Backlog::FLOOR`] messages (a queue whose
//! consumers keep up holds a few in-flight messages between deliveries, and
//! a publisher's confirm window arrives as one burst) nor above
//! [`Backlog::CEILING`]. A queue without consumers is never busy: building a
//! backlog is then the point, and the memory watermark and paging bound it.
//!
//! Pure: the queue's task feeds it counts and the time; nothing here reads
//! a clock or touches a task.

use std::time::Duration;

use tokio::time::Instant;

/// The rate estimate of one queue's consumers and the limit it implies.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Deliveries counted at the last sample, and when.
    sampled: Option<(Instant, u64)>,
    /// Deliveries per second, smoothed.
    rate: f64,
}

impl Backlog {
    /// Waiting time in the backlog past which publishers are slowed. With
    /// a plain client (scenario 2, one ack per message) 25 ms gave a p99 of
    /// 35-44 ms, 10 ms one of 23-25 ms at the same rate.
    pub const TARGET: Duration = Duration::from_millis(10);
    /// Fewest ready messages that make a queue busy.
    pub const FLOOR: usize = 128;
    /// Most ready messages a consumed queue holds before it is busy,
    /// however fast its consumers.
    pub const CEILING: usize = 20_000;
    /// Shortest time between two rate samples (shorter ones are noise).
    const SAMPLE: Duration = Duration::from_millis(20);
    /// Weight of a new sample in the smoothed rate.
    const WEIGHT: f64 = 0.25;

    /// Takes the queue's count of deliveries so far (monotonic) at `now`.
    pub fn observe(&mut self, delivered: u64, now: Instant) {
        let Some((at, count)) = self.sampled else {
            self.sampled = Some((now, delivered));
            return;
        };
        let dt = now.saturating_duration_since(at);
        if dt < Self::SAMPLE {
            return;
        }
        let sample = delivered.saturating_sub(count) as f64 / dt.as_secs_f64();
        // A long quiet spell says nothing of the next burst's consumers:
        // the sample replaces the estimate instead of diluting it.
        self.rate = if dt > Self::SAMPLE * 10 {
            sample
        } else {
            self.rate + Self::WEIGHT * (sample - self.rate)
        };
        self.sampled = Some((now, delivered));
    }

    /// Deliveries per second, as last estimated.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Ready messages past which the queue is busy.
    pub fn limit(&self) -> usize {
        let by_time = (self.rate * Self::TARGET.as_secs_f64()).round() as usize;
        by_time.clamp(Self::FLOOR, Self::CEILING)
    }

    /// Whether the queue should be busy now, given whether it was: busy
    /// above the limit, free again at half of it (hysteresis, so a
    /// publisher is not woken for every message taken).
    pub fn busy(&self, was: bool, ready: usize, consumers: usize) -> bool {
        if consumers == 0 {
            return false;
        }
        let limit = self.limit();
        if was {
            ready > limit / 2
        } else {
            ready > limit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slow_consumers_get_a_short_backlog_fast_ones_a_longer_one() {
        let t0 = Instant::now();
        let mut b = Backlog::default();
        // 2,000 deliveries a second for a second.
        for i in 0..=50u64 {
            b.observe(i * 40, t0 + ms(i * 20));
        }
        assert!((b.rate() - 2000.0).abs() < 1.0, "rate {}", b.rate());
        // 10 ms at 2k/s is 20 messages: the floor decides.
        assert_eq!(b.limit(), Backlog::FLOOR);
        let mut fast = Backlog::default();
        for i in 0..=50u64 {
            fast.observe(i * 2_000, t0 + ms(i * 20));
        }
        // 100k/s: 10 ms is 1,000 messages.
        assert_eq!(fast.limit(), 1_000);
        let mut huge = Backlog::default();
        for i in 0..=50u64 {
            huge.observe(i * 100_000, t0 + ms(i * 20));
        }
        // 5M/s would be 50,000.
        assert_eq!(huge.limit(), Backlog::CEILING);
    }

    #[test]
    fn busy_has_hysteresis_and_never_without_consumers() {
        let b = Backlog::default();
        let limit = b.limit();
        assert!(!b.busy(false, limit, 1));
        assert!(b.busy(false, limit + 1, 1));
        assert!(b.busy(true, limit / 2 + 1, 1), "stays busy above half");
        assert!(!b.busy(true, limit / 2, 1), "free at half");
        assert!(!b.busy(false, 1_000_000, 0), "no consumers: never busy");
        assert!(!b.busy(true, 1_000_000, 0));
    }

    #[test]
    fn samples_closer_than_the_window_are_ignored_and_a_quiet_spell_resets() {
        let t0 = Instant::now();
        let mut b = Backlog::default();
        b.observe(0, t0);
        b.observe(1_000, t0 + ms(5));
        assert_eq!(b.rate(), 0.0, "5 ms is below the sampling window");
        b.observe(1_000, t0 + ms(20));
        assert!((b.rate() - 12_500.0).abs() < 1.0, "a quarter of 50k/s");
        // A second of nothing: the estimate starts over from that sample
        // (0), not from three quarters of the old one.
        b.observe(1_000, t0 + ms(1_020));
        assert_eq!(b.rate(), 0.0);
        b.observe(1_010, t0 + ms(1_040));
        assert!((b.rate() - 125.0).abs() < 1.0, "rate {}", b.rate());
    }
}
