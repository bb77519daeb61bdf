use super::*;

fn msg(body: &[u8]) -> Message {
    Message::new(
        "".into(),
        "q",
        &[],
        [body],
        warren_core::message::MessageFlags::default(),
    )
}

/// The message ids `writes` puts, in order.
fn puts(writes: &[Op]) -> Vec<MsgId> {
    writes
        .iter()
        .map(|op| match op {
            Op::RaftPut(RaftCf::Bodies, k, _) => {
                let mut id = [0; 8];
                id.copy_from_slice(&k[8..16]);
                u64::from_be_bytes(id)
            }
            other => panic!("not a body put: {other:?}"),
        })
        .collect()
}

#[test]
fn kept_bodies_are_read_from_memory_and_never_written_if_removed() {
    let mut u = Unwritten::default();
    u.keep(1, msg(b"a"));
    u.keep(2, msg(b"b"));
    let mut writes = Vec::new();
    u.spill(7, &mut writes);
    assert!(writes.is_empty(), "under the bound nothing is written");
    assert_eq!(u.get(1).map(|m| m.body().to_vec()), Some(b"a".to_vec()));
    assert!(u.remove(1), "kept: never written, nothing to delete");
    assert!(u.get(1).is_none());
    assert_eq!(u.kept_bytes, 1);
    assert!(u.remove(2));
    assert_eq!(u.kept_bytes, 0);
}

#[test]
fn past_the_group_bound_the_oldest_bodies_are_written() {
    let mut u = Unwritten::default();
    let big = vec![7u8; 1 << 20];
    let n = GROUP_KEPT_BYTES / big.len() + 2;
    for id in 1..=n as u64 {
        u.keep(id, msg(&big));
    }
    let mut writes = Vec::new();
    u.spill(7, &mut writes);
    assert_eq!(puts(&writes), vec![1, 2], "oldest first, down to the bound");
    assert!(u.kept_bytes <= GROUP_KEPT_BYTES);
    let done = u.seal();
    u.prune();
    assert!(
        u.get(1).is_some(),
        "spilled and not yet written: still here"
    );
    done(Ok(()));
    u.prune();
    assert!(u.get(1).is_none(), "written: read from the store");
    assert!(u.get(3).is_some(), "still kept");
}

#[test]
fn a_snapshot_spills_everything_kept() {
    let mut u = Unwritten::default();
    for id in [4, 2, 9] {
        u.keep(id, msg(b"x"));
    }
    u.remove(9);
    let mut writes = Vec::new();
    u.spill_all(3, &mut writes);
    assert_eq!(puts(&writes), vec![2, 4]);
    assert_eq!(u.kept_bytes, 0);
    // A message removed after its spill: its stored copy must go.
    assert!(!u.remove(2));
    assert!(u.get(2).is_none());
    assert!(u.get(4).is_some());
}

#[test]
fn a_later_write_done_first_releases_the_earlier_ones() {
    // The writer runs requests in order; a later completion means the
    // earlier ones are written too.
    let mut u = Unwritten::default();
    let mut writes = Vec::new();
    u.keep(1, msg(b"a"));
    u.spill_all(1, &mut writes);
    let _first = u.seal();
    u.keep(2, msg(b"b"));
    u.spill_all(1, &mut writes);
    u.seal()(Ok(()));
    u.prune();
    assert!(u.get(1).is_none() && u.get(2).is_none());
    assert!(u.generations.is_empty() && u.spilled.is_empty());
}

#[test]
fn a_failed_write_is_reported_and_its_bodies_kept() {
    let mut u = Unwritten::default();
    let mut writes = Vec::new();
    u.keep(1, msg(b"a"));
    u.spill_all(1, &mut writes);
    u.seal()(Err(crate::StoreError::Stopped));
    assert!(u.failed());
    u.prune();
    assert!(u.get(1).is_some(), "never written: kept");
}

#[test]
fn clearing_forgets_what_was_kept() {
    let mut u = Unwritten::default();
    u.keep(1, msg(b"abc"));
    u.clear_kept();
    assert!(u.get(1).is_none());
    assert_eq!(u.kept_bytes, 0);
}
