//! One benchmark run: topology, producers, consumers, progress, summary.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::args::{Args, Mode};
use crate::error::{BenchError, Doing};
use crate::stats::{Stats, Summary};

/// How long consumers keep going after the producers stop, waiting for the
/// messages still in flight, once nothing arrives for this long.
const SETTLE_IDLE: Duration = Duration::from_secs(2);
/// Upper bound on that wait.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Connections being opened at once. Opening a thousand lapin connections at
/// the same moment stalled the client (its I/O threads and DNS helper pool), so
/// they are opened a few at a time.
static CONNECTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);
type Result<T> = std::result::Result<T, BenchError>;

/// Bound on opening one connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(uri: &str) -> Result<Connection> {
    // The semaphore is a static that is never closed.
    let _slot = CONNECTING.acquire().await.ok();
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| BenchError::Timeout {
        what: format!("connecting to {uri}"),
        after: CONNECT_TIMEOUT,
    })?
    .doing(|| format!("connecting to {uri}"))
}

fn queue_arguments(args: &Args) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(qt) = &args.queue_type {
        t.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(qt.as_str().into()),
        );
    }
    for kv in &args.queue_args {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let value = if let Ok(i) = v.parse::<i64>() {
            AMQPValue::LongLongInt(i)
        } else if let Ok(b) = v.parse::<bool>() {
            AMQPValue::Boolean(b)
        } else {
            AMQPValue::LongString(v.into())
        };
        t.insert(k.into(), value);
    }
    t
}

fn routing_key(args: &Args, queue: &str) -> String {
    match (args.exchange.as_str(), args.exchange_type.as_str()) {
        (_, "fanout") => String::new(),
        _ => queue.to_owned(),
    }
}

/// Declares the queues (and the exchange with its bindings).
async fn topology(args: &Args) -> Result<()> {
    let conn = connect(args.topology_uri()).await?;
    let ch = conn.create_channel().await?;
    for q in args.queue_names() {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: args.durable,
                ..Default::default()
            },
            queue_arguments(args),
        )
        .await
        .doing(|| format!("declaring queue {q}"))?;
    }
    if !args.exchange.is_empty() {
        if !args.exchange.starts_with("amq.") {
            let kind = match args.exchange_type.as_str() {
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                "headers" => ExchangeKind::Headers,
                _ => ExchangeKind::Direct,
            };
            ch.exchange_declare(
                args.exchange.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    durable: args.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .doing(|| "declaring the exchange".into())?;
        }
        for q in args.queue_names() {
            ch.queue_bind(
                q.as_str().into(),
                args.exchange.as_str().into(),
                routing_key(args, &q).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .doing(|| "binding".into())?;
        }
    }
    conn.close(200, "topology done".into()).await?;
    Ok(())
}

type Publishing = Pin<Box<dyn Future<Output = lapin::Result<lapin::PublisherConfirm>> + Send>>;

/// A publish handed to lapin: either already written or still being written.
enum InFlight {
    Written(lapin::Result<lapin::PublisherConfirm>),
    Writing(Publishing),
}

async fn producer(
    n: usize,
    args: Arc<Args>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let conn = connect(args.uri(n)).await?;
    let ch = conn.create_channel().await?;
    if args.confirm > 0 {
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    let queues = args.queue_names();
    let key = routing_key(&args, &queues[n % queues.len()]);
    let props = if args.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut pending = VecDeque::with_capacity(args.confirm);
    // Publishes handed to lapin but not yet written (with their publish time).
    let mut writing: VecDeque<(u64, InFlight)> = VecDeque::with_capacity(args.pipeline);
    let waker = futures::task::noop_waker();
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let mut next_at = tokio::time::Instant::now();
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) && (args.count == 0 || seq < args.count) {
        if let Some(i) = interval {
            tokio::time::sleep_until(next_at).await;
            next_at += i;
        }
        let sent_ns = stats.now_ns();
        let mut body = vec![0u8; args.size];
        body[..8].copy_from_slice(&sent_ns.to_be_bytes());
        body[8..16].copy_from_slice(&seq.to_be_bytes());
        let (ch2, exchange, key2, props2) = (
            ch.clone(),
            args.exchange.clone(),
            key.clone(),
            props.clone(),
        );
        let mut publishing: Publishing = Box::pin(async move {
            ch2.basic_publish(
                exchange.as_str().into(),
                key2.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props2,
            )
            .await
        });
        // The first poll hands the frames to lapin, in order; waiting for the
        // write happens later, so up to --pipeline publishes share a syscall.
        let state = match publishing
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
        {
            std::task::Poll::Ready(r) => InFlight::Written(r),
            std::task::Poll::Pending => InFlight::Writing(publishing),
        };
        writing.push_back((sent_ns, state));
        seq += 1;
        // At most --pipeline unwritten, and at most --confirm unconfirmed in all.
        loop {
            if writing.len() >= args.pipeline {
                written(&mut writing, &mut pending, &args, &stats).await?;
            } else if args.confirm > 0 && writing.len() + pending.len() >= args.confirm {
                if pending.is_empty() {
                    written(&mut writing, &mut pending, &args, &stats).await?;
                } else {
                    settle(&mut pending, &stats).await?;
                }
            } else {
                break;
            }
        }
    }
    while !writing.is_empty() {
        written(&mut writing, &mut pending, &args, &stats).await?;
    }
    while !pending.is_empty() {
        settle(&mut pending, &stats).await?;
    }
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// Waits for the oldest publish to be written; tracks its confirm.
async fn written(
    writing: &mut VecDeque<(u64, InFlight)>,
    pending: &mut VecDeque<(u64, lapin::PublisherConfirm)>,
    args: &Args,
    stats: &Stats,
) -> Result<()> {
    if let Some((sent_ns, state)) = writing.pop_front() {
        let confirm = match state {
            InFlight::Written(r) => r?,
            InFlight::Writing(publishing) => publishing.await?,
        };
        stats.on_sent();
        if args.confirm > 0 {
            pending.push_back((sent_ns, confirm));
        }
    }
    Ok(())
}

async fn settle(
    pending: &mut VecDeque<(u64, lapin::PublisherConfirm)>,
    stats: &Stats,
) -> Result<()> {
    if let Some((sent_ns, c)) = pending.pop_front() {
        let confirmation = c.await?;
        stats.on_confirm(sent_ns, confirmation.is_ack());
    }
    Ok(())
}

async fn consumer(
    n: usize,
    args: Arc<Args>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<()> {
    let conn = connect(args.uri(n + args.producers)).await?;
    let ch = conn.create_channel().await?;
    if args.prefetch > 0 {
        ch.basic_qos(args.prefetch, BasicQosOptions::default())
            .await?;
    }
    let queues = args.queue_names();
    let mut consumer = ch
        .basic_consume(
            queues[n % queues.len()].as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: args.auto_ack,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = ready.send(()).await;
    drop(ready);
    let mut unacked = 0u32;
    let mut last_tag = 0;
    while !stop.load(Ordering::Relaxed) {
        let next = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await;
        let delivery = match next {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(d)) => d?,
        };
        let sent_ns = delivery
            .data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        stats.on_received(sent_ns);
        if !args.auto_ack {
            unacked += 1;
            last_tag = delivery.delivery_tag;
            if unacked >= args.multi_ack {
                ack(&ch, last_tag).await?;
                unacked = 0;
            }
        }
    }
    if unacked > 0 {
        ack(&ch, last_tag).await?;
    }
    conn.close(200, "done".into()).await?;
    Ok(())
}

async fn ack(ch: &Channel, tag: u64) -> Result<()> {
    ch.basic_ack(tag, BasicAckOptions { multiple: true })
        .await?;
    Ok(())
}

/// The outcome of a producer or consumer task.
async fn joined(what: &'static str, t: tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    t.await
        .map_err(|source| BenchError::Task { what, source })?
}

/// Runs the benchmark described by `args` and returns its summary.
pub async fn run(args: Args) -> Result<Summary> {
    args.validate()?;
    topology(&args).await?;
    let args = Arc::new(args);
    let stats = Arc::new(Stats::new());
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let (producers, consumers) = args.active();

    // Every consumer is subscribed before the first publish and the clock
    // starts then (a consumer that fails drops its sender without a signal).
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(consumers.max(1));
    let mut consumer_tasks = Vec::new();
    for n in 0..consumers {
        consumer_tasks.push(tokio::spawn(consumer(
            n,
            args.clone(),
            stats.clone(),
            stop_consumers.clone(),
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    while ready_rx.recv().await.is_some() {}
    if let Some(failed) = consumer_tasks.iter().position(|t| t.is_finished()) {
        joined("consumer", consumer_tasks.swap_remove(failed)).await?;
    }
    stats.restart_clock();
    let mut producer_tasks = Vec::new();
    for n in 0..producers {
        producer_tasks.push(tokio::spawn(producer(
            n,
            args.clone(),
            stats.clone(),
            stop_producers.clone(),
        )));
    }

    let started = Instant::now();
    let deadline = args.time_limit().map(|d| started + d);
    let reporter = {
        let (stats, quiet) = (stats.clone(), args.quiet);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let (mut s0, mut c0, mut r0) = (0, 0, 0);
            loop {
                tick.tick().await;
                let (s, c, r) = (
                    stats.sent.load(Ordering::Relaxed),
                    stats.confirmed.load(Ordering::Relaxed),
                    stats.received.load(Ordering::Relaxed),
                );
                let w = stats.take_window();
                if !quiet {
                    eprintln!(
                        "time {:>4}s  sent {:>8} msg/s  confirmed {:>8} msg/s  received {:>8} msg/s  latency p50 {:.2} ms p99 {:.2} ms",
                        stats.now_ns() / 1_000_000_000,
                        s - s0,
                        c - c0,
                        r - r0,
                        w.p50 as f64 / 1000.0,
                        w.p99 as f64 / 1000.0
                    );
                }
                (s0, c0, r0) = (s, c, r);
            }
        })
    };

    // Producers run until their count or the deadline.
    let past_deadline = || deadline.is_some_and(|d| Instant::now() >= d);
    while !producer_tasks.iter().all(|t| t.is_finished()) && !past_deadline() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_producers.store(true, Ordering::Relaxed);
    for t in producer_tasks {
        joined("producer", t).await?;
    }

    // Consumers run until what was published arrived (or, consume-only, until
    // the count is reached), then until nothing more arrives.
    if consumers > 0 {
        let settle_start = Instant::now();
        let mut last = stats.received.load(Ordering::Relaxed);
        let mut idle_since = Instant::now();
        loop {
            let received = stats.received.load(Ordering::Relaxed);
            let sent = stats.sent.load(Ordering::Relaxed);
            if received != last {
                last = received;
                idle_since = Instant::now();
            }
            let done = match args.mode {
                Mode::Consume => (args.count > 0 && received >= args.count) || past_deadline(),
                _ => received >= sent && producers > 0 && args.exchange_type != "fanout",
            };
            let idle = idle_since.elapsed() >= SETTLE_IDLE
                && (args.mode != Mode::Consume || received > 0 || past_deadline());
            if done || idle || (args.mode != Mode::Consume && settle_start.elapsed() >= SETTLE_MAX)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_consumers.store(true, Ordering::Relaxed);
        for t in consumer_tasks {
            joined("consumer", t).await?;
        }
    }
    reporter.abort();
    let summary = stats.summary();
    if let Some(path) = &args.json {
        let json =
            serde_json::to_string(&summary).map_err(|e| BenchError::Output(e.to_string()))?;
        std::fs::write(path, &json)
            .map_err(|e| BenchError::Output(format!("{}: {e}", path.display())))?;
    }
    Ok(summary)
}
