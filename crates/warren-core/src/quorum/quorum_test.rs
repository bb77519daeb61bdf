use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::queue::{Limits, Overflow};

pub(super) fn enqueue(s: &mut QuorumState, channel: u64, seq: u64) -> Option<MsgId> {
    match s
        .apply(Command::Enqueue {
            publisher: Some(Publisher { channel, seq }),
            size: 10,
            expires: None,
        })
        .reply
    {
        Reply::Enqueued(id) => id,
        other => panic!("enqueue answered {other:?}"),
    }
}

pub(super) fn consume(s: &mut QuorumState, channel: u64, tag: &str, prefetch: u32) -> Applied {
    s.apply(Command::Checkout {
        consumer: ConsumerKey::new(channel, tag),
        node: 1,
        prefetch,
        no_ack: false,
    })
}

pub(super) fn ids(a: &Applied) -> Vec<MsgId> {
    a.deliveries.iter().map(|d| d.msg.id).collect()
}

#[test]
fn a_resent_enqueue_is_dropped_but_answered() {
    let mut s = QuorumState::new(QuorumConfig::default());
    assert_eq!(enqueue(&mut s, 7, 1), Some(1));
    assert_eq!(enqueue(&mut s, 7, 2), Some(2));
    // The leader changed and the channel's node sends 2 again.
    assert_eq!(enqueue(&mut s, 7, 2), None);
    assert_eq!(enqueue(&mut s, 8, 1), Some(3));
    assert_eq!(s.ready_len(), 3);
    // A closed channel is forgotten: its numbers start again.
    s.apply(Command::ChannelDown { channel: 7 });
    assert_eq!(enqueue(&mut s, 7, 1), Some(4));
}

#[test]
fn consumers_take_turns_within_their_prefetch() {
    let mut s = QuorumState::new(QuorumConfig::default());
    for seq in 1..=5 {
        enqueue(&mut s, 1, seq);
    }
    assert_eq!(ids(&consume(&mut s, 2, "a", 2)), vec![1, 2]);
    assert_eq!(ids(&consume(&mut s, 3, "b", 2)), vec![3, 4]);
    assert_eq!(s.ready_len(), 1);
    // An ack frees credit: the next message goes to the one that acked.
    let a = s.apply(Command::Settle {
        channel: 3,
        ids: vec![3],
    });
    assert_eq!(a.removed, vec![3]);
    assert_eq!(ids(&a), vec![5]);
    assert_eq!(a.deliveries[0].consumer, ConsumerKey::new(3, "b"));
    // An ack of a message the consumer does not hold changes nothing.
    let again = s.apply(Command::Settle {
        channel: 2,
        ids: vec![3, 99],
    });
    assert!(again.removed.is_empty());
    assert_eq!(s.checked_len(), 4);
}

#[test]
fn returned_messages_go_back_to_their_places_counted() {
    let mut s = QuorumState::new(QuorumConfig::default());
    for seq in 1..=3 {
        enqueue(&mut s, 1, seq);
    }
    consume(&mut s, 2, "a", 2);
    s.apply(Command::Cancel {
        consumer: ConsumerKey::new(2, "a"),
    });
    assert_eq!(s.consumer_count(), 0);
    // Acks after a cancel still count; the rest is returned ahead of 3.
    s.apply(Command::Settle {
        channel: 2,
        ids: vec![1],
    });
    s.apply(Command::Return {
        channel: 2,
        ids: vec![2],
    });
    let got = s.apply(Command::Dequeue {
        channel: 5,
        node: 1,
        no_ack: true,
    });
    let Reply::Got(Some((m, left))) = got.reply else {
        panic!("{got:?}")
    };
    assert_eq!((m.id, m.redelivered(), left), (2, true, 1));
    assert_eq!(got.removed, vec![2]);
}

#[test]
fn the_delivery_limit_drops_a_message_returned_too_often() {
    let mut s = QuorumState::new(QuorumConfig {
        delivery_limit: Some(1),
        ..QuorumConfig::default()
    });
    enqueue(&mut s, 1, 1);
    let key = ConsumerKey::new(2, "a");
    consume(&mut s, 2, "a", 1);
    let first = s.apply(Command::Return {
        channel: key.channel,
        ids: vec![1],
    });
    assert_eq!(ids(&first), vec![1], "returned once: delivered again");
    let second = s.apply(Command::Return {
        channel: key.channel,
        ids: vec![1],
    });
    assert_eq!(second.removed, vec![1]);
    assert!(second.deliveries.is_empty());
    assert_eq!(s.ready_len() as u64 + s.checked_len(), 0);
}

#[test]
fn a_channel_or_node_that_goes_returns_what_its_consumers_held() {
    let mut s = QuorumState::new(QuorumConfig::default());
    for seq in 1..=4 {
        enqueue(&mut s, 1, seq);
    }
    consume(&mut s, 2, "a", 2);
    s.apply(Command::Dequeue {
        channel: 2,
        node: 1,
        no_ack: false,
    });
    s.apply(Command::Checkout {
        consumer: ConsumerKey::new(3, "b"),
        node: 9,
        prefetch: 0,
        no_ack: false,
    });
    // Three delivered; the one taken by basic.get is not sent again.
    assert_eq!(s.in_flight().count(), 3);
    let down = s.apply(Command::NodeDown { node: 9 });
    assert!(down.deliveries.is_empty(), "nobody else has credit");
    assert_eq!(s.ready_len(), 1);
    // The channel's consumer and its basic.get hold go together.
    let closed = s.apply(Command::ChannelDown { channel: 2 });
    assert!(closed.removed.is_empty());
    assert_eq!(s.ready_len(), 4);
    assert_eq!(s.checked_len(), 0);
    assert_eq!(s.consumer_count(), 0);
}

#[test]
fn purge_takes_ready_messages_only() {
    let mut s = QuorumState::new(QuorumConfig::default());
    for seq in 1..=3 {
        enqueue(&mut s, 1, seq);
    }
    consume(&mut s, 2, "a", 1);
    let p = s.apply(Command::Purge);
    assert_eq!(p.reply, Reply::Purged(2));
    assert_eq!(p.removed, vec![2, 3]);
    assert_eq!(s.checked_len(), 1);
}

/// A message's own deadline, near the clocks the log sees (0..40).
fn expires() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(0u64..50)
}

/// Commands over a few channels, consumers and ids, so that sequences hit
/// every rule, including ids that do not exist and repeated seqs.
fn command() -> impl Strategy<Value = Command> {
    let key = (1u64..4, prop_oneof![Just(""), Just("a"), Just("b")])
        .prop_map(|(c, t)| ConsumerKey::new(c, t));
    let some_ids = proptest::collection::vec(1u64..30, 0..4);
    prop_oneof![
        4 => ((1u64..4), (1u64..12), (1u32..100), expires()).prop_map(|(c, s, size, expires)| Command::Enqueue {
            publisher: Some(Publisher { channel: c, seq: s }),
            size,
            expires,
        }),
        1 => (1u32..100, expires()).prop_map(|(size, expires)| Command::Enqueue { publisher: None, size, expires }),
        1 => (0u64..40).prop_map(|now| Command::Clock { now }),
        2 => (key.clone(), 1u64..3, 0u32..3, any::<bool>()).prop_map(
            |(consumer, node, prefetch, no_ack)| Command::Checkout { consumer, node, prefetch, no_ack }
        ),
        1 => key.clone().prop_map(|consumer| Command::Cancel { consumer }),
        3 => (1u64..4, some_ids.clone()).prop_map(|(channel, ids)| Command::Settle { channel, ids }),
        2 => (1u64..4, some_ids.clone()).prop_map(|(channel, ids)| Command::Return { channel, ids }),
        1 => (1u64..4, some_ids).prop_map(|(channel, ids)| Command::Discard { channel, ids }),
        2 => (1u64..4, 1u64..3, any::<bool>()).prop_map(|(channel, node, no_ack)| Command::Dequeue { channel, node, no_ack }),
        1 => Just(Command::Purge),
        1 => (1u64..4).prop_map(|channel| Command::ChannelDown { channel }),
        1 => (1u64..3).prop_map(|node| Command::NodeDown { node }),
        1 => proptest::collection::vec(1u64..30, 0..4).prop_map(|ids| Command::DeadLettered { ids }),
        1 => Just(Command::DeadLetterAgain),
    ]
}

/// Where every message is, checked against the state after each command.
#[derive(Default)]
struct Ledger {
    enqueued: BTreeSet<MsgId>,
    removed: BTreeSet<MsgId>,
    holder: BTreeMap<MsgId, ConsumerKey>,
}

impl Ledger {
    fn check(&mut self, s: &QuorumState, cmd: &Command, a: &Applied) {
        if let Reply::Enqueued(Some(id)) = a.reply {
            assert!(self.enqueued.insert(id), "id {id} given twice");
        }
        // The length limits hold after every enqueue, by dropping or refusing.
        let limits = s.config().limits;
        if let Command::Enqueue { size, .. } = cmd {
            let max = limits.max_length.unwrap_or(u64::MAX);
            let max_bytes = limits.max_bytes.unwrap_or(u64::MAX);
            match a.reply {
                Reply::Rejected => {
                    assert_eq!(limits.overflow, Overflow::RejectPublish);
                    assert!(
                        s.ready.len() as u64 >= max || s.ready_bytes + u64::from(*size) > max_bytes
                    );
                }
                Reply::Enqueued(Some(_)) => {
                    assert!(s.ready.len() as u64 <= max && s.ready_bytes <= max_bytes);
                }
                _ => {}
            }
        }
        if let (Reply::Got(Some((m, _))), Command::Dequeue { channel, .. }) = (&a.reply, cmd) {
            self.holder.insert(m.id, ConsumerKey::get(*channel));
        }
        // Nothing expired is delivered or fetched, but a message that arrived
        // expired may go to a consumer by the command that brought it.
        let arrived = match a.reply {
            Reply::Enqueued(Some(id)) => Some(id),
            _ => None,
        };
        for m in a
            .deliveries
            .iter()
            .map(|d| &d.msg)
            .filter(|m| Some(m.id) != arrived)
        {
            assert!(!s.has_expired(m), "delivered {m:?} expired at {}", s.now);
        }
        if let Reply::Got(Some((m, _))) = &a.reply {
            assert!(!s.has_expired(m), "fetched {m:?} expired at {}", s.now);
        }
        // And after every command, the head has not expired.
        if let Some(m) = s.ready.front() {
            assert!(!s.has_expired(m), "expired head {m:?} at {}", s.now);
        }
        for d in &a.deliveries {
            let c = &s.consumers[&d.consumer];
            assert!(!c.cancelled, "delivery to a cancelled consumer");
            // A lowered prefetch may leave a consumer holding more than it;
            // a delivery never takes it over.
            assert!(c.prefetch == 0 || c.checked.len() <= c.prefetch as usize);
            self.holder.insert(d.msg.id, d.consumer.clone());
        }
        // What is dead-lettered waits aside until it is re-published (not
        // removed yet), and only a queue that dead-letters names any.
        assert!(s.config().dead_letters || a.dead.is_empty());
        for (id, why) in &a.dead {
            assert!(
                !a.removed.contains(id),
                "dead-lettered {id} removed at once"
            );
            assert_eq!(
                s.dead_letters.get(id),
                Some(why),
                "dead letter {id} not kept"
            );
            self.holder.remove(id);
        }
        if let Command::DeadLettered { ids } = cmd {
            for id in &a.removed {
                assert!(ids.contains(id), "removed {id} it did not name");
            }
        }
        // An ack dead-letters nothing of its own; the delivery it frees may
        // bring an expired message to the head, which expires then.
        match cmd {
            Command::Settle { .. } => {
                for (id, why) in &a.dead {
                    assert_eq!(*why, crate::dead_letter::Reason::Expired, "{id}");
                }
            }
            Command::Purge => assert!(a.dead.is_empty(), "a purge dead-letters nothing"),
            _ => {}
        }
        for id in &a.removed {
            assert!(self.enqueued.contains(id), "removed {id}, never enqueued");
            assert!(self.removed.insert(*id), "removed {id} twice");
            self.holder.remove(id);
        }
        // Every message enqueued and not removed is in exactly one place.
        let mut seen = BTreeSet::new();
        let mut last = 0;
        let mut bytes = 0u64;
        for m in &s.ready {
            assert!(m.id > last, "ready out of order");
            last = m.id;
            bytes += u64::from(m.size);
            assert!(seen.insert(m.id));
        }
        assert_eq!(bytes, s.ready_bytes);
        let mut checked = 0u64;
        for (k, c) in &s.consumers {
            assert_eq!(c.in_service, s.service.contains(k));
            for id in c.checked.keys() {
                assert!(seen.insert(*id), "message {id} in two places");
                checked += 1;
            }
        }
        assert_eq!(checked, s.checked);
        for id in s.dead_letters.keys() {
            assert!(seen.insert(*id), "dead letter {id} also elsewhere");
        }
        let live: BTreeSet<MsgId> = self.enqueued.difference(&self.removed).copied().collect();
        assert_eq!(seen, live, "a message was lost or invented");
        let mut service = s.service.clone();
        service.make_contiguous().sort();
        assert!(
            service
                .iter()
                .zip(service.iter().skip(1))
                .all(|(a, b)| a != b)
        );
        // Nobody with credit waits while messages are ready (with a single
        // active consumer, nobody but that one gets any).
        let sac = s.config().single_active;
        if !s.ready.is_empty() {
            assert!(
                s.consumers
                    .iter()
                    .all(|(k, c)| !c.can_take(k) || (sac && !s.is_active(k)))
            );
        }
        if sac {
            for d in &a.deliveries {
                assert!(s.is_active(&d.consumer), "delivery to a waiting consumer");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Replicas applying the same log reach the same state and produce the
    /// same effects; a snapshot at any point plus the rest of the log equals
    /// the whole log; and no message is ever lost, duplicated or invented.
    #[test]
    fn replicas_converge_and_snapshots_replace_the_log_prefix(
        log in proptest::collection::vec(command(), 0..120),
        cut in any::<proptest::sample::Index>(),
        limit in proptest::option::of(0u32..3),
        max_length in proptest::option::of(0u64..4),
        max_bytes in proptest::option::of(0u64..250),
        reject in any::<bool>(),
        message_ttl in proptest::option::of(0u64..20),
        single_active in any::<bool>(),
        dead_letters in any::<bool>(),
        expires in proptest::option::of(0u64..30),
    ) {
        let overflow = if reject { Overflow::RejectPublish } else { Overflow::DropHead };
        let config = QuorumConfig {
            delivery_limit: limit,
            limits: Limits { max_length, overflow, max_bytes },
            message_ttl,
            single_active,
            dead_letters,
            expires,
        };
        let mut a = QuorumState::new(config.clone());
        let mut b = QuorumState::new(config);
        let mut ledger = Ledger::default();
        let cut = if log.is_empty() { 0 } else { cut.index(log.len()) };
        let mut restored: Option<QuorumState> = None;
        for (i, cmd) in log.iter().enumerate() {
            if i == cut {
                let bytes = serde_json::to_vec(&a.snapshot()).expect("snapshot");
                let snap = serde_json::from_slice(&bytes).expect("restore");
                restored = Some(QuorumState::restore(snap));
            }
            let ea = a.apply(cmd.clone());
            let eb = b.apply(cmd.clone());
            prop_assert_eq!(&ea, &eb);
            if let Some(r) = restored.as_mut() {
                prop_assert_eq!(&r.apply(cmd.clone()), &ea);
            }
            ledger.check(&a, cmd, &ea);
        }
        prop_assert_eq!(&a, &b);
        if let Some(r) = restored {
            prop_assert_eq!(&r, &a);
        }
    }
}

#[test]
fn channels_names_each_channel_with_consumers_or_held_gets_once() {
    let mut s = QuorumState::new(QuorumConfig::default());
    enqueue(&mut s, 1, 1);
    enqueue(&mut s, 1, 2);
    consume(&mut s, 5, "a", 0);
    consume(&mut s, 5, "b", 0);
    consume(&mut s, 3, "c", 0);
    // A publisher's channel is not named: it holds nothing.
    assert_eq!(s.channels().collect::<Vec<_>>(), vec![3, 5]);
    s.apply(Command::ChannelDown { channel: 3 });
    s.apply(Command::ChannelDown { channel: 5 });
    enqueue(&mut s, 1, 3);
    s.apply(Command::Dequeue {
        channel: 9,
        node: 1,
        no_ack: false,
    });
    // A `basic.get` holder's channel is named until it settles.
    assert_eq!(s.channels().collect::<Vec<_>>(), vec![9]);
}
