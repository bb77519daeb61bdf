//! Keeping the queue registry in step with the metadata applied on this
//! node, whoever proposed the change.
//!
//! The proposer of a declaration reconciles before answering, so
//! `queue.declare-ok` comes after the queue exists; this task covers changes
//! proposed elsewhere (a `queue.delete` on another node) and the replay at
//! start.

use std::sync::Weak;

use super::Broker;

/// Reconciles the registry whenever the applied index moves (changes made
/// through other nodes). Ends when the broker is gone or Raft stops.
pub async fn follow_applied(broker: Weak<Broker>) {
    let Some(mut rx) = broker.upgrade().map(|b| b.node().raft().metrics()) else {
        return;
    };
    let mut last = None;
    loop {
        let applied = rx.borrow_and_update().last_applied;
        if applied != last {
            last = applied;
            let Some(b) = broker.upgrade() else { return };
            b.reconcile().await;
            b.note_access();
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
