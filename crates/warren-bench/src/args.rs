//! Command-line options, PerfTest-style.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::error::BenchError;

/// What the run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Producers and consumers at once.
    Both,
    /// Producers only (build a backlog).
    Publish,
    /// Consumers only (drain a backlog).
    Consume,
}

/// A load generator for AMQP 0-9-1 brokers.
#[derive(Clone, Debug, Parser)]
#[command(name = "warren-bench", version, about)]
pub struct Args {
    /// Broker URI; repeat to spread connections over several nodes.
    #[arg(long = "uri", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uris: Vec<String>,
    /// Where queues, exchanges and bindings are declared [default: the first
    /// --uri] (in a cluster: the node a queue lives on).
    #[arg(long)]
    pub topology_uri: Option<String>,
    /// Producers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Message body size in bytes (at least 16: a timestamp and a sequence number).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Publish with delivery_mode 2.
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirms with this many messages in flight per producer (0: off).
    #[arg(long, default_value_t = 0)]
    pub confirm: usize,
    /// Publishes each producer hands to the client library before waiting for
    /// the oldest to be written (1: one at a time, like most applications).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Queue name prefix.
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// Number of queues (`<queue>-0` ...); 1 means the name is used as is.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Declare queues durable.
    #[arg(long)]
    pub durable: bool,
    /// `x-queue-type` of the queues (classic, quorum).
    #[arg(long)]
    pub queue_type: Option<String>,
    /// Extra queue argument `key=value` (integers are sent as integers); repeatable.
    #[arg(long = "queue-arg")]
    pub queue_args: Vec<String>,
    /// Exchange to publish through (default: the default exchange).
    #[arg(long, default_value = "")]
    pub exchange: String,
    /// Type of `--exchange` when it is declared.
    #[arg(long, default_value = "direct")]
    pub exchange_type: String,
    /// Prefetch count per consumer (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub prefetch: u16,
    /// Ack every N messages with multiple=true.
    #[arg(long, default_value_t = 1)]
    pub multi_ack: u32,
    /// Consume with auto-ack.
    #[arg(long)]
    pub auto_ack: bool,
    /// Messages per second per producer (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Run for this many seconds (0: until --count is reached).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Messages per producer (publish), or in all (consume-only); 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Both, publish-only or consume-only.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Write the JSON summary here too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// No per-second progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// Checks combinations clap cannot.
    pub fn validate(&self) -> Result<(), BenchError> {
        let checks = [
            (
                self.size < 16,
                "--size must be at least 16 (timestamp + sequence number)",
            ),
            (self.uris.is_empty(), "at least one --uri"),
            (self.queues == 0, "--queues must be at least 1"),
            (
                self.duration == 0 && self.count == 0,
                "give --duration or --count",
            ),
            (self.pipeline == 0, "--pipeline must be at least 1"),
            (self.multi_ack == 0, "--multi-ack must be at least 1"),
        ];
        if let Some((_, why)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(BenchError::Args(why));
        }
        if let Some(a) = self.queue_args.iter().find(|a| !a.contains('=')) {
            return Err(BenchError::QueueArg(a.clone()));
        }
        Ok(())
    }

    /// The run's time limit, if any.
    pub fn time_limit(&self) -> Option<Duration> {
        (self.duration > 0).then(|| Duration::from_secs(self.duration))
    }

    /// Queue names.
    pub fn queue_names(&self) -> Vec<String> {
        if self.queues == 1 {
            vec![self.queue.clone()]
        } else {
            (0..self.queues)
                .map(|i| format!("{}-{i}", self.queue))
                .collect()
        }
    }

    /// The URI that declares the topology.
    pub fn topology_uri(&self) -> &str {
        self.topology_uri.as_deref().unwrap_or_else(|| self.uri(0))
    }

    /// The URI for the n-th connection (round-robin).
    pub fn uri(&self, n: usize) -> &str {
        &self.uris[n % self.uris.len()]
    }

    /// Producers and consumers that this mode runs.
    pub fn active(&self) -> (usize, usize) {
        match self.mode {
            Mode::Both => (self.producers, self.consumers),
            Mode::Publish => (self.producers, 0),
            Mode::Consume => (0, self.consumers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("warren-bench").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn defaults() {
        let a = parse(&[]);
        assert_eq!(
            (a.producers, a.consumers, a.size, a.confirm),
            (1, 1, 100, 0)
        );
        assert_eq!(a.queue_names(), vec!["bench"]);
        assert_eq!(a.mode, Mode::Both);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn full_set() {
        let a = parse(&[
            "--uri",
            "amqp://a",
            "--uri",
            "amqp://b",
            "--producers",
            "10",
            "--consumers",
            "2",
            "--size",
            "1024",
            "--persistent",
            "--confirm",
            "100",
            "--queues",
            "3",
            "--durable",
            "--queue-type",
            "quorum",
            "--queue-arg",
            "x-max-length=10",
            "--exchange",
            "fan",
            "--exchange-type",
            "fanout",
            "--prefetch",
            "50",
            "--multi-ack",
            "10",
            "--rate",
            "500",
            "--duration",
            "0",
            "--count",
            "1000",
            "--mode",
            "publish",
            "--json",
            "/tmp/x.json",
            "--quiet",
        ]);
        assert!(a.validate().is_ok());
        assert_eq!(a.uri(3), "amqp://b");
        assert_eq!(a.queue_names(), vec!["bench-0", "bench-1", "bench-2"]);
        assert_eq!(a.active(), (10, 0));
        assert_eq!(a.time_limit(), None);
    }

    #[test]
    fn invalid_combinations() {
        assert!(parse(&["--size", "8"]).validate().is_err());
        assert!(parse(&["--duration", "0"]).validate().is_err());
        assert!(parse(&["--queue-arg", "nokey"]).validate().is_err());
        assert!(parse(&["--multi-ack", "0"]).validate().is_err());
        assert!(parse(&["--pipeline", "0"]).validate().is_err());
        assert!(Args::try_parse_from(["warren-bench", "--mode", "sideways"]).is_err());
    }
}
