use super::*;
use crate::message::MessageFlags;

/// A message routed to `q`; `persistent` is `delivery_mode == 2`.
fn message(body: &str, persistent: bool) -> Message {
    Message::new(
        "".into(),
        "q",
        &[0, 0],
        [body.as_bytes()],
        MessageFlags {
            persistent,
            ..MessageFlags::default()
        },
    )
}

fn msg(body: &str) -> Message {
    message(body, false)
}

fn ch(n: u16) -> ChannelKey {
    ChannelKey { id: 1, channel: n }
}

fn spec(id: ConsumerId, channel: u16, prefetch: u32) -> ConsumerSpec {
    ConsumerSpec {
        id,
        tag: format!("ctag{id}").into(),
        channel: ch(channel),
        prefetch,
        no_ack: false,
        exclusive: false,
        priority: 0,
    }
}

fn drain(q: &mut QueueState) -> Vec<(ConsumerId, String, bool)> {
    let mut out = vec![];
    while let Some(d) = q.next_delivery(&mut |_| true) {
        out.push((
            d.consumer,
            String::from_utf8_lossy(d.entry.msg.body()).into_owned(),
            d.entry.redelivered,
        ));
    }
    out
}

#[test]
fn round_robin_between_consumers() {
    let mut q = QueueState::new();
    q.consume(spec(1, 1, 0), "q", "/").expect("consume");
    q.consume(spec(2, 2, 0), "q", "/").expect("consume");
    for i in 0..4 {
        q.publish(msg(&i.to_string()));
    }
    let got: Vec<ConsumerId> = drain(&mut q).into_iter().map(|d| d.0).collect();
    assert_eq!(got, vec![1, 2, 1, 2]);
}

#[test]
fn prefetch_limits_unacked_and_ack_frees_credit() {
    let mut q = QueueState::new();
    q.consume(spec(1, 1, 1), "q", "/").expect("consume");
    let s1 = q.publish(msg("a"));
    q.publish(msg("b"));
    assert_eq!(drain(&mut q).len(), 1);
    assert_eq!(q.ready_len(), 1);
    assert_eq!(q.settle(ch(1), &[s1]).len(), 1);
    assert_eq!(drain(&mut q), vec![(1, "b".into(), false)]);
}

#[test]
fn busy_consumer_skipped_for_fair_dispatch() {
    let mut q = QueueState::new();
    q.consume(spec(1, 1, 1), "q", "/").expect("consume");
    q.consume(spec(2, 2, 1), "q", "/").expect("consume");
    let s1 = q.publish(msg("a"));
    q.publish(msg("b"));
    q.publish(msg("c"));
    assert_eq!(drain(&mut q).len(), 2);
    q.settle(ch(1), &[s1]);
    assert_eq!(drain(&mut q), vec![(1, "c".into(), false)]);
}

#[test]
fn closed_channel_requeues_in_original_order() {
    let mut q = QueueState::new();
    q.consume(spec(1, 1, 0), "q", "/").expect("consume");
    for b in ["a", "b", "c"] {
        q.publish(msg(b));
    }
    assert_eq!(drain(&mut q).len(), 3);
    q.publish(msg("d"));
    assert_eq!(q.channel_closed(ch(1)), vec![1]);
    assert_eq!(q.consumer_count(), 0);
    q.consume(spec(2, 2, 0), "q", "/").expect("consume");
    let got = drain(&mut q);
    assert_eq!(
        got,
        vec![
            (2, "a".into(), true),
            (2, "b".into(), true),
            (2, "c".into(), true),
            (2, "d".into(), false)
        ]
    );
}

#[test]
fn requeue_of_a_middle_message_restores_its_position() {
    let mut q = QueueState::new();
    q.consume(spec(1, 1, 2), "q", "/").expect("consume");
    let seqs: Vec<Seq> = ["a", "b", "c", "d"]
        .iter()
        .map(|b| q.publish(msg(b)))
        .collect();
    drain(&mut q); // a, b delivered
    q.settle(ch(1), &[seqs[0]]);
    // c delivered now; requeue b: it goes before d.
    drain(&mut q);
    q.requeue(ch(1), &[seqs[1]]);
    q.cancel(1);
    let got: Vec<String> = std::iter::from_fn(|| q.get(ch(1), true))
        .map(|e| String::from_utf8_lossy(e.msg.body()).into_owned())
        .collect();
    assert_eq!(got, vec!["b", "d"]);
}

#[test]
fn exclusive_consumer_rules() {
    let mut q = QueueState::new();
    let mut ex = spec(1, 1, 0);
    ex.exclusive = true;
    q.consume(ex.clone(), "q", "/").expect("first exclusive");
    let e = q.consume(spec(2, 2, 0), "q", "/").expect_err("locked");
    assert_eq!(e.code, crate::ReplyCode::AccessRefused);
    q.cancel(1);
    q.consume(spec(2, 2, 0), "q", "/").expect("free again");
    let e = q.consume(ex, "q", "/").expect_err("not alone");
    assert_eq!(e.code, crate::ReplyCode::AccessRefused);
}

#[test]
fn priority_consumers_first_and_gate_respected() {
    let mut q = QueueState::new();
    q.consume(spec(1, 1, 0), "q", "/").expect("consume");
    let mut high = spec(2, 2, 1);
    high.priority = 10;
    q.consume(high, "q", "/").expect("consume");
    q.publish(msg("a"));
    q.publish(msg("b"));
    q.publish(msg("c"));
    // The high-priority consumer takes one (prefetch 1), the rest go to consumer 1
    // except when the gate vetoes it.
    let d = q.next_delivery(&mut |_| true).expect("delivery");
    assert_eq!(d.consumer, 2);
    assert!(q.next_delivery(&mut |c| c.id != 1).is_none());
    assert_eq!(q.next_delivery(&mut |_| true).map(|d| d.consumer), Some(1));
}

#[test]
fn settle_ignores_other_channels_and_memory_is_tracked() {
    let mut q = QueueState::new();
    q.consume(spec(1, 1, 0), "q", "/").expect("consume");
    let s = q.publish(msg("a"));
    let size = q.memory_bytes();
    assert!(size > 0);
    drain(&mut q);
    assert_eq!(q.memory_bytes(), size);
    assert!(q.settle(ch(2), &[s]).is_empty());
    assert_eq!(q.settle(ch(1), &[s]).len(), 1);
    assert_eq!(q.memory_bytes(), 0);
    assert_eq!(q.unacked_len(), 0);
}

fn persistent(body: &str) -> Message {
    message(body, true)
}

#[test]
fn paging_keeps_order_and_bounds_memory() {
    let mut q = QueueState::new();
    let one = persistent("m0").memory_size();
    q.set_page_budget(one * 2);
    let seqs: Vec<Seq> = (0..10)
        .map(|i| q.publish(persistent(&format!("m{i}"))))
        .collect();
    assert_eq!(q.ready_len(), 10);
    assert!(
        q.paged_len() >= 7,
        "past the budget messages are paged: {}",
        q.paged_len()
    );
    let pinned = q.memory_bytes();
    // Writes up to seq 6 completed: their bodies leave memory.
    q.unpin(seqs[6], |m| m.persistent);
    assert!(q.memory_bytes() < pinned);
    q.consume(spec(1, 1, 0), "q", "/").expect("consume");
    let mut got = vec![];
    loop {
        got.extend(drain(&mut q).into_iter().map(|d| d.1));
        if !q.needs_page_in(4) {
            break;
        }
        // The runtime reads what is not pinned from its store.
        let want = q.paged_to_read(3);
        let read = want
            .iter()
            .map(|s| (*s, persistent(&format!("m{}", s - 1))))
            .collect();
        assert!(q.page_in(3, read).is_empty());
    }
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    assert_eq!(q.ready_len(), 0);
}

#[test]
fn recovery_past_the_budget_keeps_seqs_only_and_purge_returns_them() {
    let mut q = QueueState::new();
    q.set_page_budget(persistent("x").memory_size());
    for s in 1..=5 {
        let keep = !q.over_budget();
        q.recover(s, persistent("x"), keep);
    }
    assert_eq!(q.ready_len(), 5);
    assert_eq!(q.paged_to_read(10), vec![3, 4, 5]);
    let (entries, paged) = q.purge();
    assert_eq!(entries.len(), 2);
    assert_eq!(paged, vec![3, 4, 5]);
    assert_eq!(q.ready_len(), 0);
    assert_eq!(
        q.publish(persistent("y")),
        6,
        "seqs continue after recovery"
    );
}

#[test]
fn drop_head_takes_the_oldest_from_memory_then_from_the_paged_tail() {
    let mut q = QueueState::new();
    q.set_page_budget(persistent("x").memory_size());
    for s in 1..=4 {
        let keep = !q.over_budget();
        q.recover(s, persistent("x"), keep);
    }
    let before = q.memory_bytes();
    match q.drop_head() {
        Some(Dropped::Entry(e)) => assert_eq!(e.seq, 1),
        other => panic!("the in-memory head first: {other:?}"),
    }
    assert!(q.memory_bytes() < before, "its body's bytes are released");
    assert!(matches!(q.drop_head(), Some(Dropped::Entry(e)) if e.seq == 2));
    assert!(matches!(q.drop_head(), Some(Dropped::Paged(3, None))));
    assert_eq!(q.ready_len(), 1);
    assert!(matches!(q.drop_head(), Some(Dropped::Paged(4, None))));
    assert!(q.drop_head().is_none());
    assert_eq!(q.memory_bytes(), 0);
}

/// With thousands of consumers, a delivery asks about one or a few of them
/// (not all, sorted), and round-robin and priorities hold.
#[test]
fn a_pick_among_thousands_of_consumers_asks_one() {
    const N: u64 = 5_000;
    let mut q = QueueState::new();
    for id in 1..=N {
        q.consume(spec(id, 1, 0), "q", "/").expect("consume");
    }
    let mut high = spec(N + 1, 2, 1);
    high.priority = 5;
    q.consume(high, "q", "/").expect("consume");
    for i in 0..3 * N {
        q.publish(msg(&format!("m{i}")));
    }
    let mut asked = 0u64;
    let mut gate = |_: &ConsumerSpec| {
        asked += 1;
        true
    };
    // The priority-5 consumer first, until its prefetch of 1 is used.
    let d = q.next_delivery(&mut gate).expect("delivery");
    assert_eq!(d.consumer, N + 1);
    let mut seen = Vec::new();
    for _ in 0..2 * N {
        seen.push(q.next_delivery(&mut gate).expect("delivery").consumer);
    }
    // Round-robin among the others: each of them twice, in turn.
    let turn: Vec<ConsumerId> = (1..=N).collect();
    assert_eq!(seen[..N as usize], turn[..]);
    assert_eq!(seen[N as usize..], turn[..]);
    assert_eq!(asked, 2 * N + 1, "one gate question per delivery");
}

fn expiring(body: &str, at: u64) -> Message {
    let mut m = persistent(body);
    m.expire_by(at);
    m
}

#[test]
fn expired_messages_leave_from_the_head_only() {
    let mut q = QueueState::new();
    q.publish(expiring("a", 100));
    q.publish(expiring("b", 300));
    q.publish(expiring("c", 200));
    q.publish(msg("d"));
    assert_eq!(q.head_expires(), Some(100));
    assert!(q.expire_head(99).is_none(), "not yet");
    assert!(matches!(q.expire_head(100), Some(Dropped::Entry(e)) if e.seq == 1));
    assert!(
        q.expire_head(250).is_none(),
        "c has expired but waits behind b, as RabbitMQ's per-message TTL does"
    );
    assert!(matches!(q.expire_head(300), Some(Dropped::Entry(e)) if e.seq == 2));
    assert!(matches!(q.expire_head(300), Some(Dropped::Entry(e)) if e.seq == 3));
    assert!(q.expire_head(u64::MAX).is_none(), "d never expires");
    assert_eq!(q.head_expires(), None);
    assert_eq!(q.ready_len(), 1);
}

#[test]
fn a_paged_message_expires_without_its_body() {
    let mut q = QueueState::new();
    q.set_page_budget(0);
    q.recover(1, expiring("a", 100), true);
    q.recover(2, expiring("b", 50), false);
    q.recover(3, expiring("c", 500), false);
    assert_eq!(q.paged_len(), 2);
    assert!(matches!(q.expire_head(100), Some(Dropped::Entry(e)) if e.seq == 1));
    assert_eq!(q.head_expires(), Some(50), "the paged head's deadline");
    assert!(matches!(q.expire_head(100), Some(Dropped::Paged(2, None))));
    assert!(q.expire_head(100).is_none());
    assert_eq!(q.ready_len(), 1);
}

#[test]
fn ready_bytes_count_bodies_in_memory_and_paged() {
    let mut q = QueueState::new();
    q.set_page_budget(persistent("xx").memory_size());
    for s in 1..=4 {
        let keep = !q.over_budget();
        q.recover(s, persistent(&"b".repeat(s as usize)), keep);
    }
    assert!(q.paged_len() > 0, "part of it is paged");
    assert_eq!((q.ready().len, q.ready().bytes), (4, 1 + 2 + 3 + 4));
    q.consume(spec(1, 1, 1), "q", "/").expect("consume");
    let d = q.next_delivery(&mut |_| true).expect("delivery");
    assert_eq!(
        q.ready().bytes,
        2 + 3 + 4,
        "a delivered body leaves the count"
    );
    q.requeue(ch(1), &[d.entry.seq]);
    assert_eq!(q.ready().bytes, 1 + 2 + 3 + 4, "a requeued one comes back");
    q.cancel(1);
    assert!(matches!(q.drop_head(), Some(Dropped::Entry(_))));
    while q.ready().len > q.paged_len() {
        q.drop_head();
    }
    let before = q.ready().bytes;
    assert!(matches!(q.drop_head(), Some(Dropped::Paged(..))));
    assert!(
        q.ready().bytes < before,
        "a paged body leaves the count too"
    );
    q.purge();
    assert_eq!(q.ready().bytes, 0);
}

#[test]
fn a_single_active_consumer_takes_everything_until_it_goes() {
    let mut q = QueueState::new();
    q.set_single_active();
    q.consume(spec(1, 1, 0), "q", "/").expect("consume");
    q.consume(spec(2, 2, 0), "q", "/").expect("consume");
    for i in 0..4 {
        q.publish(msg(&format!("m{i}")));
    }
    let mut to = Vec::new();
    while let Some(d) = q.next_delivery(&mut |_| true) {
        to.push(d.consumer);
    }
    assert_eq!(to, vec![1; 4], "the first consumer gets every message");
    // Its channel closes: its messages come back and the next takes over.
    q.channel_closed(ch(1));
    let mut to = Vec::new();
    while let Some(d) = q.next_delivery(&mut |_| true) {
        to.push((d.consumer, d.entry.redelivered));
    }
    assert_eq!(to, vec![(2, true); 4]);
    // An exclusive consume is refused, as RabbitMQ refuses it.
    let mut ex = spec(3, 3, 0);
    ex.exclusive = true;
    let e = q
        .consume(ex, "q", "/")
        .expect_err("exclusive on a SAC queue");
    assert_eq!(e.code, crate::ReplyCode::AccessRefused);
}
