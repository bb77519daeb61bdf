//! A quorum queue's RabbitMQ features in its state machine: length limits,
//! message expiry by the log's clock, the single active consumer, what is
//! named for dead-lettering, and `x-expires`. The rules they share with
//! every command (no loss, convergence) are in `quorum_test`'s property test.

use super::tests::{consume, enqueue, ids};
use super::*;
use crate::queue::{Limits, Overflow};

fn limited(max: u64, overflow: Overflow) -> QuorumState {
    QuorumState::new(QuorumConfig {
        limits: Limits {
            max_length: Some(max),
            overflow,
            max_bytes: None,
        },
        ..QuorumConfig::default()
    })
}

#[test]
fn a_bytes_limit_drops_or_refuses_by_body_size() {
    let bytes = |overflow| {
        QuorumState::new(QuorumConfig {
            limits: Limits {
                max_length: None,
                overflow,
                max_bytes: Some(25),
            },
            ..QuorumConfig::default()
        })
    };
    let mut s = bytes(Overflow::DropHead);
    for _ in 0..3 {
        enqueue_expiring(&mut s, None);
    }
    assert_eq!(
        (s.ready_len(), s.ready_bytes()),
        (2, 20),
        "30 bytes: one went"
    );
    let mut s = bytes(Overflow::RejectPublish);
    for _ in 0..2 {
        enqueue_expiring(&mut s, None);
    }
    let big = s.apply(Command::Enqueue {
        publisher: None,
        size: 6,
        expires: None,
    });
    assert_eq!(big.reply, Reply::Rejected, "20 + 6 > 25");
    let small = s.apply(Command::Enqueue {
        publisher: None,
        size: 5,
        expires: None,
    });
    assert!(
        matches!(small.reply, Reply::Enqueued(Some(_))),
        "20 + 5 fits"
    );
}

#[test]
fn drop_head_removes_the_oldest_ready_after_a_waiting_consumer_took_its_share() {
    let mut s = limited(2, Overflow::DropHead);
    for seq in 1..=4 {
        let a = s.apply(Command::Enqueue {
            publisher: Some(Publisher { channel: 1, seq }),
            size: 10,
            expires: None,
        });
        assert_eq!(a.reply, Reply::Enqueued(Some(seq)));
        assert_eq!(a.removed, if seq > 2 { vec![seq - 2] } else { vec![] });
    }
    assert_eq!(s.ready_len(), 2);
    assert_eq!(s.ready_bytes(), 20);
    // A consumer with room takes the next one before the limit counts it.
    let s0 = limited(0, Overflow::DropHead);
    let mut s = s0;
    consume(&mut s, 2, "a", 1);
    let a = s.apply(Command::Enqueue {
        publisher: None,
        size: 10,
        expires: None,
    });
    assert_eq!((ids(&a), a.removed.clone()), (vec![1], vec![]));
    let a = s.apply(Command::Enqueue {
        publisher: None,
        size: 10,
        expires: None,
    });
    assert_eq!((ids(&a), a.removed), (vec![], vec![2]), "no room: dropped");
}

#[test]
fn reject_publish_refuses_without_a_trace_until_there_is_room() {
    let mut s = limited(1, Overflow::RejectPublish);
    assert_eq!(enqueue(&mut s, 7, 1), Some(1));
    let refused = s.apply(Command::Enqueue {
        publisher: Some(Publisher { channel: 7, seq: 2 }),
        size: 10,
        expires: None,
    });
    assert_eq!(refused.reply, Reply::Rejected);
    assert!(refused.removed.is_empty() && refused.deliveries.is_empty());
    assert_eq!(s.ready_len(), 1);
    // Room again: the same sequence number, sent again, is judged again.
    s.apply(Command::Dequeue {
        channel: 9,
        node: 1,
        no_ack: true,
    });
    assert_eq!(enqueue(&mut s, 7, 2), Some(2));
}

fn clock(s: &mut QuorumState, now: u64) -> Applied {
    s.apply(Command::Clock { now })
}

fn enqueue_expiring(s: &mut QuorumState, expires: Option<u64>) -> Applied {
    s.apply(Command::Enqueue {
        publisher: None,
        size: 10,
        expires,
    })
}

#[test]
fn messages_expire_at_the_head_by_the_logs_clock() {
    let mut s = QuorumState::new(QuorumConfig {
        message_ttl: Some(100),
        ..QuorumConfig::default()
    });
    clock(&mut s, 1000);
    enqueue_expiring(&mut s, None); // 1: the TTL's 1100
    enqueue_expiring(&mut s, Some(1050)); // 2: its own, earlier
    clock(&mut s, 1200);
    enqueue_expiring(&mut s, Some(5000)); // 3: the TTL's 1300
    assert_eq!(s.ready_len(), 1, "1 and 2 expired when 3 arrived");
    assert_eq!(s.head_expires(), Some(1300));
    let a = clock(&mut s, 1299);
    assert!(a.removed.is_empty());
    let a = clock(&mut s, 1300);
    assert_eq!(a.removed, vec![3], "a clock alone expires the head");
    // The log's clock never goes back.
    let a = clock(&mut s, 10);
    assert!(a.removed.is_empty());
    assert_eq!(s.now, 1300);
    // A dequeue never answers with an expired message.
    enqueue_expiring(&mut s, Some(1350));
    s.now = 1400; // as a clock would, without its own expiry pass
    let a = s.apply(Command::Dequeue {
        channel: 9,
        node: 1,
        no_ack: false,
    });
    assert_eq!(a.reply, Reply::Got(None));
    assert_eq!(a.removed, vec![4]);
}

#[test]
fn a_message_that_arrives_expired_reaches_a_consumer_at_once_or_nobody() {
    let mut s = QuorumState::new(QuorumConfig {
        message_ttl: Some(0),
        ..QuorumConfig::default()
    });
    clock(&mut s, 1000);
    let a = enqueue_expiring(&mut s, None);
    assert_eq!(a.removed, vec![1], "no consumer: expired");
    consume(&mut s, 2, "a", 1);
    let a = enqueue_expiring(&mut s, None);
    assert_eq!((ids(&a), a.removed.clone()), (vec![2], vec![]));
    let a = enqueue_expiring(&mut s, None);
    assert_eq!((ids(&a), a.removed), (vec![], vec![3]), "no credit left");
    // Before any clock (an old log), nothing expires.
    let mut old = QuorumState::new(QuorumConfig {
        message_ttl: Some(0),
        ..QuorumConfig::default()
    });
    let a = enqueue_expiring(&mut old, Some(1));
    assert!(a.removed.is_empty());
    assert_eq!(old.ready_len(), 1);
}

#[test]
fn a_single_active_consumer_takes_everything_and_the_next_takes_over() {
    let mut s = QuorumState::new(QuorumConfig {
        single_active: true,
        ..QuorumConfig::default()
    });
    consume(&mut s, 1, "a", 0);
    consume(&mut s, 2, "b", 0);
    let mut to = Vec::new();
    for seq in 1..=3 {
        let a = s.apply(Command::Enqueue {
            publisher: Some(Publisher { channel: 9, seq }),
            size: 10,
            expires: None,
        });
        to.extend(a.deliveries.iter().map(|d| d.consumer.tag.to_string()));
    }
    assert_eq!(to, vec!["a"; 3]);
    // `a` re-attaches (a new leader): it keeps its place.
    consume(&mut s, 1, "a", 0);
    enqueue(&mut s, 9, 4);
    assert!(s.is_active(&ConsumerKey::new(1, "a")));
    // Its channel goes: what it held comes back, and `b` gets it all.
    let a = s.apply(Command::ChannelDown { channel: 1 });
    let got: Vec<(String, bool)> = a
        .deliveries
        .iter()
        .map(|d| (d.consumer.tag.to_string(), d.msg.redelivered()))
        .collect();
    assert_eq!(got, vec![("b".to_string(), true); 4]);
    // A consumer that cancels and comes back queues behind the others.
    consume(&mut s, 3, "c", 0);
    s.apply(Command::Cancel {
        consumer: ConsumerKey::new(2, "b"),
    });
    consume(&mut s, 2, "b", 0);
    assert!(s.is_active(&ConsumerKey::new(3, "c")));
}

#[test]
fn a_dead_lettering_queue_names_what_it_drops_and_why() {
    use crate::dead_letter::Reason;
    let mut s = QuorumState::new(QuorumConfig {
        dead_letters: true,
        delivery_limit: Some(0),
        message_ttl: Some(100),
        limits: Limits {
            max_length: Some(2),
            overflow: Overflow::DropHead,
            max_bytes: None,
        },
        ..QuorumConfig::default()
    });
    clock(&mut s, 1000);
    for seq in 1..=3 {
        enqueue(&mut s, 1, seq);
    }
    // The third pushed the first out.
    consume(&mut s, 5, "a", 2);
    let a = s.apply(Command::Discard {
        channel: 5,
        ids: vec![2],
    });
    assert_eq!(a.dead, vec![(2, Reason::Rejected)]);
    let a = s.apply(Command::Return {
        channel: 5,
        ids: vec![3],
    });
    assert_eq!(
        a.dead,
        vec![(3, Reason::DeliveryLimit)],
        "limit 0: no second try"
    );
    enqueue(&mut s, 1, 4);
    s.apply(Command::Cancel {
        consumer: ConsumerKey::new(5, "a"),
    });
    enqueue(&mut s, 1, 5);
    let a = clock(&mut s, 1100);
    assert_eq!(a.dead, vec![(5, Reason::Expired)]);
    let a = s.apply(Command::Settle {
        channel: 5,
        ids: vec![4],
    });
    assert!(a.dead.is_empty(), "an ack is no death");
}

#[test]
fn an_unused_queue_expires_by_the_logs_clock() {
    let mut s = QuorumState::new(QuorumConfig {
        expires: Some(100),
        ..QuorumConfig::default()
    });
    assert_eq!(s.queue_expires(), None, "no clock yet");
    clock(&mut s, 1000);
    assert_eq!(s.queue_expires(), Some(1100));
    enqueue(&mut s, 1, 1);
    clock(&mut s, 1050);
    consume(&mut s, 2, "a", 1);
    assert_eq!(s.queue_expires(), None, "a consumer keeps it");
    clock(&mut s, 5000);
    assert!(!s.is_expired());
    s.apply(Command::Cancel {
        consumer: ConsumerKey::new(2, "a"),
    });
    assert_eq!(
        s.queue_expires(),
        Some(5100),
        "unused from its last consumer"
    );
    clock(&mut s, 5099);
    assert!(!s.is_expired());
    clock(&mut s, 5100);
    assert!(s.is_expired());
    // The setting and the time it counts from survive a snapshot.
    let back = QuorumState::restore(s.snapshot());
    assert!(back.is_expired());
}

#[test]
fn dead_letters_stay_until_re_published_and_a_new_leader_asks_again() {
    use crate::dead_letter::Reason;
    let mut s = QuorumState::new(QuorumConfig {
        dead_letters: true,
        ..QuorumConfig::default()
    });
    for seq in 1..=3 {
        enqueue(&mut s, 1, seq);
    }
    consume(&mut s, 5, "a", 0);
    let a = s.apply(Command::Discard {
        channel: 5,
        ids: vec![1, 2],
    });
    assert_eq!(a.dead, vec![(1, Reason::Rejected), (2, Reason::Rejected)]);
    assert!(a.removed.is_empty(), "kept until re-published");
    assert_eq!(s.dead_letters_len(), 2);
    let mut held: Vec<MsgId> = s.ids().collect();
    held.sort_unstable();
    assert_eq!(held, vec![1, 2, 3], "their bodies are kept");
    // A new leader (here: a restored replica) asks for them again.
    let mut back = QuorumState::restore(s.snapshot());
    assert_eq!(back, s, "they survive a snapshot");
    let a = back.apply(Command::DeadLetterAgain);
    assert_eq!(a.dead, vec![(1, Reason::Rejected), (2, Reason::Rejected)]);
    assert!(a.removed.is_empty());
    // Re-published: they go, once (a repeated report changes nothing).
    let a = s.apply(Command::DeadLettered { ids: vec![2, 9] });
    assert_eq!(a.removed, vec![2]);
    let a = s.apply(Command::DeadLettered { ids: vec![2] });
    assert!(a.removed.is_empty());
    assert_eq!(
        s.apply(Command::DeadLetterAgain).dead,
        vec![(1, Reason::Rejected)]
    );
    // A queue that does not dead-letter removes at once.
    let mut plain = QuorumState::new(QuorumConfig::default());
    enqueue(&mut plain, 1, 1);
    consume(&mut plain, 5, "a", 0);
    let a = plain.apply(Command::Discard {
        channel: 5,
        ids: vec![1],
    });
    assert_eq!((a.removed, a.dead), (vec![1], vec![]));
    assert_eq!(plain.dead_letters_len(), 0);
}

/// A group created before its queue's arguments were understood takes
/// them up when a leader puts them in the log: from then on, new messages
/// expire and drops are dead-lettered; what was queued before keeps no
/// deadline. The same settings again change nothing.
#[test]
fn a_group_takes_up_its_settings_from_a_configure() {
    use crate::dead_letter::Reason;
    let mut s = QuorumState::new(QuorumConfig::default());
    clock(&mut s, 1000);
    enqueue_expiring(&mut s, None);
    let config = QuorumConfig {
        message_ttl: Some(100),
        dead_letters: true,
        ..QuorumConfig::default()
    };
    s.apply(Command::Configure {
        config: config.clone(),
    });
    assert_eq!(s.config(), &config);
    let before = s.clone();
    s.apply(Command::Configure {
        config: config.clone(),
    });
    assert_eq!(s, before, "the same settings again change nothing");
    enqueue_expiring(&mut s, None);
    let a = clock(&mut s, 1200);
    assert!(
        a.dead.is_empty(),
        "the old one, at the head, has no deadline"
    );
    let got = s.apply(Command::Dequeue {
        channel: 9,
        node: 1,
        no_ack: true,
    });
    assert!(matches!(got.reply, Reply::Got(Some((m, _))) if m.id == 1));
    // The new message reached the head past its deadline.
    assert_eq!(got.dead, vec![(2, Reason::Expired)], "dead-lettered");
    assert_eq!(s.ready_len(), 0);
    assert_eq!(QuorumState::restore(s.snapshot()), s, "kept in snapshots");
}
