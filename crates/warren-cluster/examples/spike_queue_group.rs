//! Spike of issue 12: how many entries a second one quorum queue's Raft
//! group commits on this machine, with 1 and with 64 messages per entry.
//!
//! One voter, the real RocksDB log (each append waits for its WAL sync
//! through the group-commit writer) and the real state machine; one
//! proposal in flight, as openraft 0.9 commits them one append at a time.
//! Replication to followers comes on top of this, so it is the ceiling of a
//! group, not a measurement of a replicated queue.
//!
//! `cargo run --release -p warren-cluster --example spike_queue_group -- [SECONDS]`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft};
use warren_cluster::{Network, Security};
use warren_core::Message;
use warren_core::message::MessageFlags;
use warren_core::quorum::{Publisher, QuorumConfig};
use warren_store::Store;
use warren_store::raft::queue::{QueueBatch, QueueOp};
use warren_store::raft::{QueueRaft, QueueStateMachine, RaftLogStore};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let body = vec![b'x'; 1024];
    println!("messages/entry  entries/s  messages/s  (1 KiB persistent, {secs} s each)");
    for per_entry in [1usize, 64] {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let writer = store.start_writer();
        let group = 1;
        let log = RaftLogStore::<QueueRaft>::new(&store, writer.clone(), group);
        let sm = QueueStateMachine::open(&store, writer.clone(), group, QuorumConfig::default())?;
        let config = openraft::Config {
            heartbeat_interval: 1000,
            election_timeout_min: 3000,
            election_timeout_max: 6000,
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::<QueueRaft>::new(
            1,
            Arc::new(config),
            Network::new(None, Security::default()),
            log,
            sm,
        )
        .await?;
        raft.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]))
            .await?;
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(1, "single voter leads")
            .await?;
        let start = Instant::now();
        let mut entries = 0u64;
        let mut seq = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            let ops = (0..per_entry)
                .map(|_| {
                    seq += 1;
                    QueueOp::Enqueue {
                        publisher: Some(Publisher { channel: 1, seq }),
                        message: Message::new(
                            "".into(),
                            "spike",
                            &[],
                            [&body[..]],
                            MessageFlags {
                                persistent: true,
                                priority: 0,
                                expires: None,
                            },
                        ),
                    }
                })
                .collect();
            raft.client_write(QueueBatch(ops)).await?;
            entries += 1;
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "{per_entry:>14}  {:>9.0}  {:>10.0}",
            entries as f64 / elapsed,
            (entries * per_entry as u64) as f64 / elapsed
        );
        raft.shutdown().await?;
        writer.close().await?;
    }
    Ok(())
}
