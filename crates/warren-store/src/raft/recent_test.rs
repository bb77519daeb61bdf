use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

use super::super::MetaRaft;
use super::{GROUP_BYTES, NODE_BYTES, RecentLog, Tailed};

fn entry(index: u64) -> Entry<MetaRaft> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Blank,
    }
}

fn sized(range: std::ops::RangeInclusive<u64>, size: usize) -> Vec<(Entry<MetaRaft>, usize)> {
    range.map(|i| (entry(i), size)).collect()
}

fn indexes(entries: &[Entry<MetaRaft>]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn all(t: Tailed<MetaRaft>) -> Vec<u64> {
    match t {
        Tailed::All(e) => indexes(&e),
        _ => panic!("expected the whole read from the tail"),
    }
}

#[test]
fn reads_inside_the_tail_are_answered_whole() {
    let log = RecentLog::new(Arc::default());
    log.admit(sized(5..=9, 10));
    assert_eq!(all(log.read(5, None)), vec![5, 6, 7, 8, 9]);
    assert_eq!(all(log.read(6, Some(8))), vec![6, 7]);
    // Past the end: nothing there, as the log itself would answer.
    assert_eq!(all(log.read(12, None)), Vec::<u64>::new());
}

#[test]
fn reads_below_the_tail_name_its_first_index() {
    let log = RecentLog::new(Arc::default());
    assert!(matches!(log.read(1, None), Tailed::Nothing));
    log.admit(sized(5..=9, 10));
    match log.read(2, Some(7)) {
        Tailed::From { first, entries } => {
            assert_eq!(first, 5);
            assert_eq!(indexes(&entries), vec![5, 6]);
        }
        _ => panic!("expected a split read"),
    }
}

#[test]
fn only_written_entries_leave_for_the_bound() {
    let node = Arc::new(AtomicUsize::new(0));
    let log = RecentLog::new(node.clone());
    let half = GROUP_BYTES / 2;
    log.admit(sized(1..=3, half));
    // Over the group's bound, but nothing is written: all three stay, as a
    // reader could not find them in RocksDB yet.
    assert_eq!(all(log.read(1, None)), vec![1, 2, 3]);
    log.written(1);
    assert_eq!(all(log.read(2, None)), vec![2, 3]);
    assert!(matches!(log.read(1, None), Tailed::From { first: 2, .. }));
    log.written(3);
    assert_eq!(all(log.read(2, None)), vec![2, 3]);
    assert_eq!(node.load(Ordering::Relaxed), 2 * half);
}

#[test]
fn the_node_budget_is_shared_and_released_on_drop() {
    let node = Arc::new(AtomicUsize::new(0));
    // Each group holds its own bound, two written entries; together they
    // would hold more than the node's budget.
    let groups = NODE_BYTES / GROUP_BYTES + 2;
    let tails: Vec<RecentLog<MetaRaft>> = (0..groups)
        .map(|_| {
            let t = RecentLog::new(node.clone());
            t.admit(sized(1..=2, GROUP_BYTES / 2));
            t.written(2);
            t
        })
        .collect();
    assert_eq!(node.load(Ordering::Relaxed), NODE_BYTES);
    // The first groups kept theirs; the last ones let written entries go.
    assert_eq!(all(tails[0].read(1, None)), vec![1, 2]);
    assert!(matches!(tails[groups - 1].read(1, None), Tailed::Nothing));
    drop(tails);
    assert_eq!(node.load(Ordering::Relaxed), 0);
}

#[test]
fn truncate_and_purge_cut_the_tail() {
    let log = RecentLog::new(Arc::default());
    log.admit(sized(1..=6, 10));
    log.written(6);
    log.truncate(5);
    assert_eq!(all(log.read(1, None)), vec![1, 2, 3, 4]);
    // The entries appended after the truncation are not written yet.
    log.admit(sized(5..=5, 10));
    log.purge(2);
    assert_eq!(all(log.read(3, None)), vec![3, 4, 5]);
    assert!(matches!(log.read(1, None), Tailed::From { first: 3, .. }));
}

#[test]
fn entries_that_do_not_follow_replace_the_tail() {
    let log = RecentLog::new(Arc::default());
    log.admit(sized(1..=3, 10));
    log.admit(sized(7..=8, 10));
    assert_eq!(all(log.read(7, None)), vec![7, 8]);
    assert!(matches!(log.read(1, None), Tailed::From { first: 7, .. }));
}
