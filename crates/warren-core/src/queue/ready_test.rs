use super::*;
use crate::Message;
use crate::message::MessageFlags;

fn message(priority: u8) -> Message {
    Message::new(
        "".into(),
        "q",
        &[0, 0],
        [&b"x"[..]],
        MessageFlags {
            priority,
            persistent: true,
            ..MessageFlags::default()
        },
    )
}

fn entry(seq: u64, priority: u8) -> Entry {
    Entry {
        seq,
        msg: message(priority),
        redelivered: false,
    }
}

fn order(r: &mut ReadyList) -> Vec<u64> {
    std::iter::from_fn(|| r.pop_front())
        .map(|e| e.seq)
        .collect()
}

#[test]
fn the_highest_level_first_publish_order_within_one() {
    let mut r = ReadyList::with_priorities(5);
    for (seq, p) in [(1, 0), (2, 5), (3, 1), (4, 5), (5, 9), (6, 0)] {
        assert!(r.publish(seq, message(p), false));
    }
    assert_eq!(r.len(), 6);
    assert_eq!(r.front().map(|e| e.seq), Some(2));
    // Priority 9 counts as the maximum, 5: after 2 and 4, which came first.
    assert_eq!(order(&mut r), vec![2, 4, 5, 3, 1, 6]);
    assert_eq!(r.len(), 0);
}

#[test]
fn a_requeued_message_goes_back_to_its_place_in_its_level() {
    let mut r = ReadyList::with_priorities(3);
    for (seq, p) in [(1, 2), (2, 2), (3, 0), (4, 2)] {
        r.publish(seq, message(p), false);
    }
    let first = r.pop_front().expect("1");
    let second = r.pop_front().expect("2");
    r.restore(second);
    r.restore(first);
    assert_eq!(order(&mut r), vec![1, 2, 4, 3]);
    let mut fifo = ReadyList::default();
    for seq in [1, 2, 3] {
        fifo.restore(entry(seq, 9));
    }
    let one = fifo.pop_front().expect("1");
    fifo.restore(one);
    assert_eq!(
        order(&mut fifo),
        vec![1, 2, 3],
        "no levels without x-max-priority"
    );
}

/// Pages in what the level served next needs, as the runtime does, with
/// bodies "read from disk".
fn page_in_all(r: &mut ReadyList) {
    while r.needs_page_in(usize::MAX) {
        let read = r.to_read(2).into_iter().map(|s| (s, message(0))).collect();
        let (_, _, missing) = r.page_in(2, read);
        assert!(missing.is_empty());
    }
}

#[test]
fn a_paged_higher_level_is_served_before_a_lower_one_in_memory() {
    let mut r = ReadyList::with_priorities(9);
    // Level 1 in memory; then memory is spent: level 5 and more of level 1
    // are paged.
    r.publish(1, message(1), false);
    r.publish(2, message(1), false);
    assert!(!r.publish(3, message(5), true));
    assert!(!r.publish(4, message(1), true));
    // A level that pages keeps paging, even with memory free again (its
    // tail's seqs must stay after its head's).
    assert!(!r.publish(5, message(5), false));
    assert_eq!((r.len(), r.paged_len()), (2, 3));
    r.unpin(5, |m| m.persistent);
    assert!(
        r.front().is_none(),
        "level 5 is all paged: nothing below it goes first"
    );
    assert!(r.pop_front().is_none());
    assert_eq!(r.front_expires(), None);
    assert!(r.needs_page_in(1));
    assert_eq!(r.to_read(10), vec![3, 5], "the level served next");
    let read = [(3, message(5)), (5, message(5))].into_iter().collect();
    let (memory, body, missing) = r.page_in(10, read);
    assert!(missing.is_empty());
    assert_eq!((memory, body), (2 * message(5).memory_size(), 2));
    assert_eq!(order(&mut r), vec![3, 5, 1, 2]);
    // Level 1's tail is next now.
    assert!(r.needs_page_in(1));
    page_in_all(&mut r);
    assert_eq!(order(&mut r), vec![4]);
    assert_eq!((r.len(), r.paged_len()), (0, 0));
}

#[test]
fn drop_front_and_drain_see_the_tails() {
    let mut r = ReadyList::with_priorities(9);
    r.publish(1, message(0), false);
    r.publish(2, message(3), true);
    r.publish(3, message(3), false);
    r.publish(4, message(0), true);
    assert_eq!(r.paged_body_bytes(), 3);
    assert!(r.paged_memory_bytes() > 0, "pinned until on disk");
    // The highest level's paged messages go first, pinned bodies with them.
    assert!(matches!(r.drop_front(), Some(Dropped::Paged(2, Some(_)))));
    r.unpin(4, |_| true);
    assert!(matches!(r.drop_front(), Some(Dropped::Paged(3, None))));
    assert!(matches!(r.drop_front(), Some(Dropped::Entry(e)) if e.seq == 1));
    assert_eq!(r.len(), 0);
    let (entries, paged) = r.drain();
    assert!(entries.is_empty());
    assert_eq!(paged, vec![4]);
    assert_eq!(r.paged_len(), 0);
    assert!(r.drop_front().is_none());
}
