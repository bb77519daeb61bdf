//! Heap bytes per message of a quorum queue's state, counted by the
//! allocator: issue 12 asks for at most 64 bytes per message in memory, and
//! the state machine is the one place of the runtime that grows with a
//! queue's length (bodies live in the store; the log is purged behind
//! snapshots). Its own test binary, so the counting allocator sees nothing
//! else.

// A global allocator is an `unsafe impl`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use warren_core::quorum::{Command, ConsumerKey, Publisher, QuorumConfig, QuorumState};

/// The system allocator, counting the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to `System` with the caller's layout; the
// counter is only arithmetic beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MESSAGES: u64 = 1_000_000;
/// Issue 12: "≤ 64 B per message in memory".
const BOUND: f64 = 64.0;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn enqueue(state: &mut QuorumState, seq: u64) {
    let publisher = Some(Publisher { channel: 7, seq });
    state.apply(Command::Enqueue {
        publisher,
        size: 1024,
        expires: None,
    });
}

#[test]
fn a_backlog_costs_at_most_64_bytes_per_message() {
    let mut state = QuorumState::new(QuorumConfig::default());
    enqueue(&mut state, 1);
    let before = live();
    for seq in 2..=MESSAGES + 1 {
        enqueue(&mut state, seq);
    }
    let per_message = (live() - before) as f64 / MESSAGES as f64;
    assert_eq!(state.ready_len() as u64, MESSAGES + 1);
    println!("ready backlog: {per_message:.1} heap bytes per message");
    assert!(per_message <= BOUND, "{per_message:.1} B per ready message");
}

#[test]
fn messages_held_by_a_consumer_cost_at_most_64_bytes_each() {
    let mut state = QuorumState::new(QuorumConfig::default());
    let before = live();
    for seq in 1..=MESSAGES {
        enqueue(&mut state, seq);
    }
    // An unlimited consumer takes the whole backlog: every message moves
    // from the ready queue to the consumer's checked-out set.
    state.apply(Command::Checkout {
        consumer: ConsumerKey::new(9, "c"),
        node: 1,
        prefetch: 0,
        no_ack: false,
    });
    assert_eq!(state.checked_len(), MESSAGES);
    let per_message = (live() - before) as f64 / MESSAGES as f64;
    println!("checked out: {per_message:.1} heap bytes per message");
    assert!(per_message <= BOUND, "{per_message:.1} B per held message");
}
