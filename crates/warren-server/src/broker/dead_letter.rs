//! The node's dead-letter publisher: messages its queues reject, expire or
//! drop for their length, re-published to their dead-letter exchange with
//! RabbitMQ's `x-death` record (`warren_core::dead_letter`).
//!
//! Routing needs the metadata, which queues do not hold, so queues hand
//! their dead letters here (`warren_queues::api::dead_letters`). For each
//! message: the headers get the death recorded and lose `expiration`; the
//! routing key is `x-dead-letter-routing-key` if the queue has one (the `CC`
//! header then goes, as in RabbitMQ), else the message's own; a target
//! queue that would close an automatic cycle is left out (never after a
//! rejection, as RabbitMQ's `detect_cycles`); the message is
//! published to the rest as a publisher in confirm mode would be.
//!
//! A persistent message of a durable queue still has its copy on that
//! queue's disk: it is deleted once every target accepted the message
//! (written and synced where it is persistent), or at once when nothing
//! took it. A crash before that brings it back to its queue: dead-lettering
//! is at least once, never lost. A quorum queue keeps its dead letters in
//! its replicated state: it is told instead (`DeadLetters::settle`), and
//! its leader proposes their removal. A target that refuses it (a full queue
//! under `reject-publish`) counts as an answer: the message is dropped, as
//! RabbitMQ drops it.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::{SystemTime, UNIX_EPOCH};

use smallvec::SmallVec;
use tokio::sync::mpsc;
use warren_core::dead_letter::{Death, Reason, is_death_cycle, record_death};
use warren_core::message::MessageFlags;
use warren_core::queue::ChannelKey;
use warren_core::queue::state::Seq;
use warren_core::{AMQPValue, FieldTable, Message, QueueId};
use warren_queues::api::{DeadLetters, PublishBatch};
use warren_queues::{ConnEvent, QueueHandle};
use warren_store::{Op, Writer};

use super::Broker;

/// A dead letter waiting for its targets' acceptance.
struct Waiting {
    targets: usize,
    copy: Copy,
}

/// What waits for a dead letter to be accepted.
enum Copy {
    /// A classic queue's copy on disk (queue, seq): deleted.
    Stored(QueueId, Seq),
    /// A quorum queue's leader: told the seq.
    Settle(mpsc::UnboundedSender<Vec<Seq>>, Seq),
}

impl Copy {
    /// Acts on the message's acceptance: a delete for `deletes`, or the
    /// quorum queue told.
    fn done(self, deletes: &mut Vec<Op>) {
        match self {
            Copy::Stored(queue, seq) => deletes.push(Op::DeleteMessage { queue, seq }),
            Copy::Settle(tx, seq) => {
                // A leader gone meanwhile: its successor sends it again.
                let _ = tx.send(vec![seq]);
            }
        }
    }
}

/// Runs until the node's queues are gone (the sender side closes) or the
/// broker is.
pub(super) async fn run(broker: Weak<Broker>, mut rx: mpsc::Receiver<DeadLetters>, writer: Writer) {
    // The publisher's own connection and channel, with ids unique in the
    // cluster like a client's: confirms come back on them, and a quorum
    // queue tells its re-sends apart by channel.
    let Some((conn, channel)) = broker
        .upgrade()
        .map(|b| (b.ids.connection(), b.ids.channel()))
    else {
        return;
    };
    let channel = ChannelKey {
        id: channel,
        channel: 0,
    };
    let (tx, mut answers) = mpsc::unbounded_channel::<ConnEvent>();
    let mut waiting: HashMap<u64, Waiting> = HashMap::new();
    let mut next = 1u64;
    loop {
        let mut deletes = Vec::new();
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { return };
                let Some(b) = broker.upgrade() else { return };
                let mut by_queue: HashMap<QueueId, (QueueHandle, Vec<_>)> = HashMap::new();
                for (seq, msg, stored) in batch.messages.iter().cloned() {
                    let copy = stored.then(|| match &batch.settle {
                        Some(tx) => Copy::Settle(tx.clone(), seq),
                        None => Copy::Stored(batch.queue_id, seq),
                    });
                    let targets = republish(&b, &batch, &msg);
                    let Some((new, targets)) = targets.filter(|(_, t)| !t.is_empty()) else {
                        if let Some(c) = copy {
                            c.done(&mut deletes);
                        }
                        continue;
                    };
                    let confirm = copy.map(|copy| {
                        let n = next;
                        next += 1;
                        waiting.insert(n, Waiting { targets: targets.len(), copy });
                        (channel, n)
                    });
                    for h in targets {
                        by_queue
                            .entry(h.id())
                            .or_insert_with(|| (h.clone(), Vec::new()))
                            .1
                            .push((new.clone(), confirm));
                    }
                }
                drop(b);
                for (_, (h, items)) in by_queue {
                    h.publish(PublishBatch { from: Some((conn, tx.clone())), items, budget: None }).await;
                }
            }
            Some(ev) = answers.recv() => {
                if let ConnEvent::Accepted { confirms, .. } = ev {
                    for (_, n) in confirms {
                        let done = waiting.get_mut(&n).is_some_and(|w| {
                            w.targets = w.targets.saturating_sub(1);
                            w.targets == 0
                        });
                        if done && let Some(w) = waiting.remove(&n) {
                            w.copy.done(&mut deletes);
                        }
                    }
                }
            }
        }
        // The copies go without a sync of their own (as an ack's delete):
        // one lost in a crash is a duplicate, never a loss.
        if !deletes.is_empty() && writer.submit(deletes, false, None).await.is_err() {
            tracing::warn!("store writer unavailable: dead-lettered copies stay until a restart");
        }
    }
}

/// The dead-lettered form of `msg` and the queues it goes to (`None`: its
/// properties did not parse, it is dropped).
fn republish(
    b: &Broker,
    batch: &DeadLetters,
    msg: &Message,
) -> Option<(Message, Vec<QueueHandle>)> {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (props, headers) =
        warren_amqp::properties::dead_lettered(msg.raw_properties(), |h, exp| {
            let mut routing_keys = vec![msg.routing_key().to_owned()];
            routing_keys.extend(cc_keys(h));
            let death = Death {
                reason: batch.reason,
                queue: &batch.queue,
                exchange: &msg.exchange,
                routing_keys,
                time,
                original_expiration: exp,
            };
            let recorded = record_death(h, &death);
            if batch.routing_key.is_some() {
                without_cc(recorded)
            } else {
                recorded
            }
        })?;
    let key = batch.routing_key.as_deref().unwrap_or(msg.routing_key());
    let flags = MessageFlags {
        expires: None,
        ..msg.flags()
    };
    let new = Message::new(
        batch.exchange.as_str().into(),
        key,
        &props,
        [msg.body()],
        flags,
    );
    let st = b.read();
    let mut ids: SmallVec<[QueueId; 4]> = SmallVec::new();
    if st
        .vhost(&batch.vhost)
        .and_then(|v| v.route_internal(&batch.exchange, key, Some(&headers), &mut ids))
        .is_err()
    {
        // No such exchange (any more): RabbitMQ drops the message too.
        return Some((new, Vec::new()));
    }
    // A rejection is a client's choice: RabbitMQ looks for cycles only in
    // automatic dead-lettering.
    let automatic = batch.reason != Reason::Rejected;
    let targets = ids
        .iter()
        .filter_map(|id| st.queue(*id))
        .filter(|h| !(automatic && is_death_cycle(Some(&headers), h.name())))
        .cloned()
        .collect();
    Some((new, targets))
}

/// The `CC` routing keys of a message's headers.
fn cc_keys(h: Option<&FieldTable>) -> Vec<String> {
    match h.and_then(|h| h.inner().get("CC")) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn without_cc(h: FieldTable) -> FieldTable {
    let mut map = h.inner().clone();
    map.remove("CC");
    FieldTable::from(map)
}
