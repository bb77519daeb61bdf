//! openraft's own storage conformance suite, run against the RocksDB log
//! store with the metadata state machine and with a quorum queue's.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

use warren_core::quorum::QuorumConfig;
use warren_store::Store;
use warren_store::raft::{
    META_GROUP, MetaRaft, MetaStateMachine, NodeId, QueueRaft, QueueStateMachine, RaftLogStore,
};
use warren_testkit::meta;

struct Builder;

impl StoreBuilder<MetaRaft, RaftLogStore, MetaStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RaftLogStore, MetaStateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store opens");
        let writer = store.start_writer();
        let log = RaftLogStore::<MetaRaft>::new(&store, writer.clone(), META_GROUP);
        let sm = MetaStateMachine::open(&store, writer, META_GROUP)?;
        Ok((dir, log, sm))
    }
}

struct QueueBuilder;

impl StoreBuilder<QueueRaft, RaftLogStore<QueueRaft>, QueueStateMachine, tempfile::TempDir>
    for QueueBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            RaftLogStore<QueueRaft>,
            QueueStateMachine,
        ),
        StorageError<NodeId>,
    > {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store opens");
        let writer = store.start_writer();
        // A queue's group id is its queue id: never 0.
        let log = RaftLogStore::<QueueRaft>::new(&store, writer.clone(), 17);
        let sm = QueueStateMachine::open(&store, writer, 17, QuorumConfig::default())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_for_a_quorum_queue() {
    let result = Suite::test_all(QueueBuilder);
    warren_testkit::wait_for_blocking("stores closed", || warren_store::live_writers() == 0);
    result.expect("openraft storage suite");
}

#[test]
fn openraft_storage_suite() {
    let result = Suite::test_all(Builder);
    // The process must not exit while RocksDB is still closing a database.
    warren_testkit::wait_for_blocking("stores closed", || warren_store::live_writers() == 0);
    result.expect("openraft storage suite");
}

/// The vote and the last snapshot survive closing and reopening the database,
/// and the state machine starts from that snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vote_and_snapshot_survive_a_restart() {
    use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use warren_core::meta::Outcome;

    let dir = tempfile::tempdir().expect("tempdir");
    let id = |index| LogId::new(CommittedLeaderId::new(3, 1), index);
    let declare = meta::declare_queue("kept", true);
    {
        let store = Store::open(dir.path()).expect("open");
        let writer = store.start_writer();
        let mut log = RaftLogStore::<MetaRaft>::new(&store, writer.clone(), META_GROUP);
        let mut sm = MetaStateMachine::open(&store, writer.clone(), META_GROUP).expect("sm");
        log.save_vote(&Vote::new(3, 1)).await.expect("vote");
        let applied = sm
            .apply([
                Entry::<MetaRaft> {
                    log_id: id(1),
                    payload: EntryPayload::Blank,
                },
                Entry::<MetaRaft> {
                    log_id: id(2),
                    payload: EntryPayload::Normal(declare.clone()),
                },
            ])
            .await
            .expect("apply");
        assert!(matches!(
            &applied[1].0,
            Some(Ok(Outcome::QueueDeclared { created: true, .. }))
        ));
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        assert_eq!(snap.meta.last_log_id, Some(id(2)));
        writer.close().await.expect("close");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let writer = store.start_writer();
    let mut log = RaftLogStore::<MetaRaft>::new(&store, writer.clone(), META_GROUP);
    let mut sm = MetaStateMachine::open(&store, writer.clone(), META_GROUP).expect("sm");
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(id(2)));
    assert!(
        sm.shared()
            .read()
            .expect("lock")
            .default_vhost()
            .queue("kept")
            .is_some()
    );
    assert!(
        sm.get_current_snapshot().await.expect("current").is_some(),
        "the snapshot can be sent to a follower after a restart"
    );
    // Applying the same command again on the restored state is an equivalent
    // redeclare: the state machine did not lose or duplicate the queue.
    let again = sm
        .apply([Entry::<MetaRaft> {
            log_id: id(3),
            payload: EntryPayload::Normal(declare),
        }])
        .await
        .expect("apply");
    assert!(matches!(
        &again[0].0,
        Some(Ok(Outcome::QueueDeclared { created: false, .. }))
    ));
    writer.close().await.expect("close");
}
