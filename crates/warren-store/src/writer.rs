//! The group-commit writer.
//!
//! Every durable write of the node goes through one thread. It blocks for the
//! first request, then drains whatever else is queued (up to a bound) into one
//! `WriteBatch`, writes it with one WAL sync if any request asked for
//! durability, and only then runs the requests' completions (which release
//! publisher confirms and declare-oks). Under load the batch grows by itself;
//! idle, a lone request waits only for its own sync. There is no timer.
//!
//! The request channel is bounded: when the disk is behind, senders wait, and
//! the wait travels back to the socket readers (backpressure, not buffering).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};
use warren_core::{Message, QueueId};

use crate::db::{CF_MESSAGES, CF_META, CF_QUORUM_BODIES, CF_RAFT_LOG, CF_RAFT_STATE, Db};
use crate::{StoreError, codec, keys};

/// Writer threads still running (each holds its database open).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Writer threads of this process that have not finished closing their
/// database. A writer thread ends once every [`Writer`] handle is dropped;
/// tests wait for zero before the process exits, because RocksDB aborts when
/// a database is still closing while the process tears down its statics.
pub fn live_writers() -> usize {
    LIVE.load(Ordering::Acquire)
}

/// Requests waiting for the writer before senders block.
const QUEUE_DEPTH: usize = 1024;
/// Most operations folded into one batch.
const MAX_BATCH_OPS: usize = 16 * 1024;

/// One storage operation.
#[derive(Debug)]
pub enum Op {
    /// Put a metadata record.
    PutMeta(Vec<u8>, Vec<u8>),
    /// Delete a metadata record.
    DeleteMeta(Vec<u8>),
    /// Store a message of a queue (encoded on the writer thread).
    PutMessage {
        /// Queue id.
        queue: QueueId,
        /// Queue-local seq.
        seq: u64,
        /// The message.
        msg: Message,
    },
    /// Delete a message of a queue.
    DeleteMessage {
        /// Queue id.
        queue: QueueId,
        /// Queue-local seq.
        seq: u64,
    },
    /// Delete every message of a queue.
    DeleteQueue(QueueId),
    /// Put a Raft record (log entry, vote, purge point, snapshot).
    RaftPut(RaftCf, Vec<u8>, Vec<u8>),
    /// Delete Raft records in `[from, to)`.
    RaftDeleteRange(RaftCf, Vec<u8>, Vec<u8>),
    /// Delete one Raft record.
    RaftDelete(RaftCf, Vec<u8>),
}

/// The column family of a Raft record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftCf {
    /// Log entries.
    Log,
    /// Vote, purge point, snapshot.
    State,
    /// Bodies of quorum queues' messages, keyed by (group, message id).
    Bodies,
}

/// Completion of a request: runs on the writer thread after the batch is written
/// (and synced, if asked). Must be quick and must not block.
pub type WriteDone = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

struct Request {
    ops: Vec<Op>,
    sync: bool,
    done: Option<WriteDone>,
    /// Last request: the thread exits after it, closing the database.
    stop: bool,
}

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches written.
    pub batches: AtomicU64,
    /// WAL syncs done.
    pub syncs: AtomicU64,
    /// Operations written.
    pub ops: AtomicU64,
    /// Raft log entries written, every group included: with batching, far
    /// fewer than the messages they carry.
    pub raft_entries: AtomicU64,
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    stats: Arc<WriterStats>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stats", &self.stats)
            .finish()
    }
}

impl Writer {
    pub(crate) fn start(db: Arc<Db>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let s = stats.clone();
        LIVE.fetch_add(1, Ordering::AcqRel);
        let thread = std::thread::Builder::new()
            .name("warren-store-writer".into())
            .spawn(move || {
                run(db, rx, s);
                LIVE.fetch_sub(1, Ordering::AcqRel);
            })
            .ok();
        if thread.is_none() {
            LIVE.fetch_sub(1, Ordering::AcqRel);
        }
        Self {
            tx,
            stats,
            thread: Arc::new(std::sync::Mutex::new(thread)),
        }
    }

    /// Queues a request. `sync`: the completion runs only after a WAL sync.
    /// Waits while the writer is `QUEUE_DEPTH` requests behind.
    pub async fn submit(
        &self,
        ops: Vec<Op>,
        sync: bool,
        done: Option<WriteDone>,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Request {
                ops,
                sync,
                done,
                stop: false,
            })
            .await
            .map_err(|_| StoreError::Stopped)
    }

    /// Writes `ops` and waits until they are readable, without a sync of
    /// their own (a later synced write, or the log they derive from, makes
    /// them durable).
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.write_and_wait(ops, false).await
    }

    /// Writes `ops` durably and waits for the sync.
    pub async fn write_sync(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.write_and_wait(ops, true).await
    }

    async fn write_and_wait(&self, ops: Vec<Op>, sync: bool) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(
            ops,
            sync,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        )
        .await?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Writes and syncs everything queued so far, then stops the thread, which
    /// closes the database. Later submits fail with [`StoreError::Stopped`].
    pub async fn close(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request {
                ops: Vec::new(),
                sync: true,
                done: Some(Box::new(move |r| {
                    let _ = tx.send(r);
                })),
                stop: true,
            })
            .await
            .map_err(|_| StoreError::Stopped)?;
        let result = rx.await.map_err(|_| StoreError::Stopped)?;
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        result
    }
}

fn run(db: Arc<Db>, mut rx: mpsc::Receiver<Request>, stats: Arc<WriterStats>) {
    let mut scratch = Vec::with_capacity(4096);
    let mut reqs: Vec<Request> = Vec::new();
    let mut stopping = false;
    while let Some(first) = rx.blocking_recv() {
        let mut n_ops = first.ops.len();
        stopping |= first.stop;
        reqs.push(first);
        while n_ops < MAX_BATCH_OPS && !stopping {
            match rx.try_recv() {
                Ok(r) => {
                    n_ops += r.ops.len();
                    stopping |= r.stop;
                    reqs.push(r);
                }
                Err(_) => break,
            }
        }
        let sync = reqs.iter().any(|r| r.sync);
        let mut entries = 0;
        let result = write(&db, &mut reqs, sync, &mut scratch, &mut entries);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.raft_entries.fetch_add(entries, Ordering::Relaxed);
        stats.ops.fetch_add(n_ops as u64, Ordering::Relaxed);
        if sync {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            tracing::error!(cause = %e, "store write failed");
        }
        for r in reqs.drain(..) {
            if let Some(done) = r.done {
                done(result.clone());
            }
        }
        if stopping {
            break;
        }
    }
    drop(db);
}

fn write(
    db: &Db,
    reqs: &mut [Request],
    sync: bool,
    scratch: &mut Vec<u8>,
    raft_entries: &mut u64,
) -> Result<(), StoreError> {
    let cf = |name: &str| {
        db.cf_handle(name)
            .ok_or_else(|| StoreError::Rocks(format!("no {name} column family")))
    };
    let meta = cf(CF_META)?;
    let msgs = cf(CF_MESSAGES)?;
    let raft_log = cf(CF_RAFT_LOG)?;
    let raft_state = cf(CF_RAFT_STATE)?;
    let bodies = cf(CF_QUORUM_BODIES)?;
    let raft_cf = |cf: RaftCf| match cf {
        RaftCf::Log => raft_log,
        RaftCf::State => raft_state,
        RaftCf::Bodies => bodies,
    };
    let mut batch = WriteBatch::default();
    for r in reqs.iter_mut() {
        for op in r.ops.drain(..) {
            match op {
                Op::PutMeta(k, v) => batch.put_cf(meta, k, v),
                Op::DeleteMeta(k) => batch.delete_cf(meta, k),
                Op::PutMessage { queue, seq, msg } => {
                    codec::encode_message(&msg, scratch);
                    batch.put_cf(msgs, keys::message(queue, seq), &scratch[..]);
                }
                Op::DeleteMessage { queue, seq } => {
                    batch.delete_cf(msgs, keys::message(queue, seq))
                }
                Op::DeleteQueue(queue) => {
                    let (from, to) = keys::queue_range(queue);
                    batch.delete_range_cf(msgs, from, to);
                }
                Op::RaftPut(cf, k, v) => {
                    *raft_entries += u64::from(cf == RaftCf::Log);
                    batch.put_cf(raft_cf(cf), k, v)
                }
                Op::RaftDeleteRange(cf, from, to) => batch.delete_range_cf(raft_cf(cf), from, to),
                Op::RaftDelete(cf, k) => batch.delete_cf(raft_cf(cf), k),
            }
        }
    }
    let mut opts = WriteOptions::default();
    opts.set_sync(sync);
    db.write_opt(batch, &opts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use warren_core::message::MessageFlags;

    use super::*;
    use crate::Store;

    fn msg(body: &str) -> Message {
        Message::new(
            "".into(),
            "q",
            &[0, 0],
            [body.as_bytes()],
            MessageFlags {
                persistent: true,
                priority: 0,
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            let w = store.start_writer();
            // Many concurrent durable writes: fewer syncs than writes.
            let mut waits = vec![];
            for i in 0..200u64 {
                let (tx, rx) = oneshot::channel();
                w.submit(
                    vec![Op::PutMessage {
                        queue: 7,
                        seq: i + 1,
                        msg: msg(&format!("m{i}")),
                    }],
                    true,
                    Some(Box::new(move |r| {
                        let _ = tx.send(r);
                    })),
                )
                .await
                .expect("submit");
                waits.push(rx);
            }
            for rx in waits {
                rx.await.expect("done").expect("ok");
            }
            w.write_sync(vec![Op::DeleteMessage { queue: 7, seq: 1 }])
                .await
                .expect("delete");
            let syncs = w.stats().syncs.load(Ordering::Relaxed);
            assert!(syncs <= 201, "at most one sync per request: {syncs}");
            w.close().await.expect("close");
            assert!(
                w.write_sync(vec![]).await.is_err(),
                "closed writer refuses work"
            );
            drop(store);
        }
        let store = Store::open(dir.path()).expect("reopen");
        let mut seen = vec![];
        store
            .for_each_message(7, |seq, m| seen.push((seq, m.body().to_vec())))
            .expect("scan");
        assert_eq!(seen.len(), 199);
        assert_eq!(seen[0], (2, b"m1".to_vec()));
        assert_eq!(
            store.for_each_message(8, |_, _| {}).expect("scan").messages,
            0
        );
        assert_eq!(store.last_message_seq(7).expect("last"), Some(200));
        assert_eq!(store.last_message_seq(8).expect("last"), None);
        let w = store.start_writer();
        w.write_sync(vec![Op::DeleteQueue(7)])
            .await
            .expect("range delete");
        assert_eq!(
            store.for_each_message(7, |_, _| {}).expect("scan").messages,
            0
        );
        w.close().await.expect("close");
    }
}
