use warren_core::quorum::{Command, QuorumConfig, QuorumState};

use super::*;

/// A state with ready messages, consumers holding some (one cancelled, one
/// auto-ack, one `basic.get` holder), a delivery limit, a length limit and
/// publishers, a TTL, the log's clock and dead letters waiting.
fn busy_state() -> QuorumSnapshot {
    let mut s = QuorumState::new(QuorumConfig {
        delivery_limit: Some(5),
        limits: warren_core::queue::Limits {
            max_length: Some(1000),
            overflow: warren_core::queue::Overflow::RejectPublish,
            max_bytes: Some(1 << 20),
        },
        message_ttl: Some(60_000),
        single_active: true,
        dead_letters: true,
        expires: Some(1_800_000),
    });
    s.apply(Command::Clock {
        now: 1_700_000_000_000,
    });
    for seq in 1..=40 {
        s.apply(Command::Enqueue {
            publisher: Some(warren_core::quorum::Publisher {
                channel: seq % 3,
                seq,
            }),
            size: 100 + seq as u32,
            expires: (seq % 2 == 0).then_some(1_700_000_030_000 + seq),
        });
    }
    for (channel, tag, prefetch, no_ack) in
        [(7, "a", 3, false), (8, "é", 5, true), (9, "c", 2, false)]
    {
        s.apply(Command::Checkout {
            consumer: ConsumerKey::new(channel, tag),
            node: channel,
            prefetch,
            no_ack,
        });
    }
    s.apply(Command::Cancel {
        consumer: ConsumerKey::new(9, "c"),
    });
    s.apply(Command::Dequeue {
        channel: 11,
        node: 2,
        no_ack: false,
    });
    s.apply(Command::Return {
        channel: 7,
        ids: vec![1],
    });
    // Two rejected, not yet re-published.
    s.apply(Command::Discard {
        channel: 7,
        ids: vec![2, 3],
    });
    let snap = s.snapshot();
    assert_eq!(snap.dead_letters.len(), 2, "dead letters pending");
    snap
}

#[test]
fn the_binary_state_reads_back_as_it_was() {
    let snap = busy_state();
    assert!(
        !snap.ready.is_empty() && snap.consumers.len() >= 3,
        "{snap:?}"
    );
    let bytes = encode_state(&snap);
    assert_eq!(decode_state(&bytes).expect("decode"), snap);
    assert_eq!(snap.now, 1_700_000_000_000);
    assert!(!snap.deadlines.is_empty());
    // 16 bytes a message, whatever the queue holds, and 16 per deadline.
    let held: usize = snap.consumers.iter().map(|c| c.checked.len()).sum();
    // Plus the settings (JSON), the consumers and the clock.
    assert!(
        bytes.len() < 300 + (snap.ready.len() + held) * 16 + snap.deadlines.len() * 16 + 3 * 48
    );
    // The JSON of format 1 is still read.
    let v1 = super::super::encode(&snap).expect("json");
    assert_eq!(decode_state(&v1).expect("decode v1"), snap);
}

#[test]
fn a_damaged_state_is_refused_not_misread() {
    let bytes = encode_state(&busy_state());
    for cut in 1..bytes.len() {
        assert!(decode_state(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode_state(&longer).is_err());
    // A count far past the end allocates nothing and fails.
    let mut huge = vec![STATE_V2];
    Enc(&mut huge).str("{}").u64(1).u64(u64::MAX);
    assert!(decode_state(&huge).is_err());
}

#[test]
fn live_ids_are_ready_held_and_dead_letters_ascending() {
    let snap = busy_state();
    let ids = live_ids(&snap);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let held: usize = snap.consumers.iter().map(|c| c.checked.len()).sum();
    assert_eq!(ids.len(), snap.ready.len() + held + snap.dead_letters.len());
    for (id, _) in &snap.dead_letters {
        assert!(ids.contains(id), "dead letter {id} keeps its body");
    }
}
