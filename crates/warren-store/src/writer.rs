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
//!
//! When nothing is queued or being written, [`Writer::write_now`] writes on
//! the caller's thread instead: a lone publisher's confirm then costs its own
//! sync and no thread hand-off in either direction (two wake-ups, which on a
//! virtual machine cost as much as a third of the sync; docs/decisions.md).
//! Under load the writer is busy and callers queue as before, so batches still
//! grow by themselves.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
    /// Batches written on the caller's thread ([`Writer::write_now`]).
    pub inline: AtomicU64,
}

impl WriterStats {
    fn count(&self, ops: usize, sync: bool, raft_entries: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.raft_entries.fetch_add(raft_entries, Ordering::Relaxed);
        self.ops.fetch_add(ops as u64, Ordering::Relaxed);
        if sync {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the writer thread and the callers writing inline share.
struct Shared {
    /// The thread holds the database open; inline writes borrow it while it
    /// is (closing the database stays the thread's job, see [`live_writers`]).
    db: std::sync::Weak<Db>,
    stats: WriterStats,
    /// Requests submitted and not yet completed, plus an inline write in
    /// progress. Zero means idle: nothing a new write could join or overtake.
    pending: AtomicUsize,
    /// Set by [`Writer::close`]: no more inline writes.
    closed: AtomicBool,
    /// Who last asked to write inline (see [`Writer::write_now`]).
    last_caller: AtomicU64,
}

thread_local! {
    /// Encoding buffer of inline writes, one per thread that writes inline.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stats", &self.shared.stats)
            .finish()
    }
}

impl Writer {
    pub(crate) fn start(db: Arc<Db>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let shared = Arc::new(Shared {
            db: Arc::downgrade(&db),
            stats: WriterStats::default(),
            pending: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            last_caller: AtomicU64::new(u64::MAX),
        });
        let s = shared.clone();
        LIVE.fetch_add(1, Ordering::AcqRel);
        let thread = std::thread::Builder::new()
            .name("warren-store-writer".into())
            .spawn(move || {
                run(&db, &s, rx);
                drop(db);
                LIVE.fetch_sub(1, Ordering::AcqRel);
            })
            .ok();
        if thread.is_none() {
            LIVE.fetch_sub(1, Ordering::AcqRel);
        }
        Self {
            tx,
            shared,
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
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        let sent = self
            .tx
            .send(Request {
                ops,
                sync,
                done,
                stop: false,
            })
            .await;
        if sent.is_err() {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
        }
        sent.map_err(|_| StoreError::Stopped)
    }

    /// Writes `ops` on the calling thread, blocking it for the write (and
    /// the sync, if asked), when the writer is idle (nothing queued, nothing
    /// being written, no other inline write) and `caller` (a queue id) was
    /// also the last to ask. Otherwise hands `ops` back, to be
    /// [`submit`](Self::submit)ted behind what is already going on.
    ///
    /// Why the same caller: a worker blocked in an inline sync runs nothing
    /// else, so when it is done every other queue's writes are ready at once;
    /// written inline they would each pay a sync, one after another, where
    /// the writer thread gives them one together (measured: ten confirming
    /// publishers on ten queues fell from 9.5k to 4-8k msg/s). One busy queue
    /// is the case inline writes are for: its next burst gathers while it
    /// syncs, so it batches as the writer thread would, minus two hand-offs.
    ///
    /// Order holds: a caller that submitted earlier writes sees the writer
    /// busy until they are complete, so its later writes never overtake them.
    /// Meant for a tokio worker at low load, where the blocked time is the
    /// time its task would have waited anyway and two thread hand-offs are
    /// saved; under load the writer is busy and nothing blocks a worker.
    pub fn write_now(
        &self,
        caller: u64,
        ops: Vec<Op>,
        sync: bool,
    ) -> Result<Result<(), StoreError>, Vec<Op>> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire)
            || shared.last_caller.swap(caller, Ordering::AcqRel) != caller
            || shared
                .pending
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Err(ops);
        }
        let Some(db) = shared.db.upgrade() else {
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(ops);
        };
        let n_ops = ops.len();
        let mut entries = 0;
        let result = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => write(&db, ops, sync, &mut scratch, &mut entries),
            Err(_) => write(&db, ops, sync, &mut Vec::new(), &mut entries),
        });
        drop(db);
        shared.stats.count(n_ops, sync, entries);
        shared.stats.inline.fetch_add(1, Ordering::Relaxed);
        shared.pending.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = &result {
            tracing::error!(cause = %e, "store write failed");
        }
        Ok(result)
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
        &self.shared.stats
    }

    /// Writes and syncs everything queued so far, then stops the thread, which
    /// closes the database. Later submits fail with [`StoreError::Stopped`].
    pub async fn close(&self) -> Result<(), StoreError> {
        self.shared.closed.store(true, Ordering::Release);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
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

fn run(db: &Db, shared: &Shared, mut rx: mpsc::Receiver<Request>) {
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
        let ops = reqs.iter_mut().flat_map(|r| r.ops.drain(..));
        let result = write(db, ops, sync, &mut scratch, &mut entries);
        shared.stats.count(n_ops, sync, entries);
        if let Err(e) = &result {
            tracing::error!(cause = %e, "store write failed");
        }
        let completed = reqs.len();
        for r in reqs.drain(..) {
            if let Some(done) = r.done {
                done(result.clone());
            }
        }
        // Only once every completion ran: a caller that sees the writer idle
        // has seen its earlier writes complete.
        shared.pending.fetch_sub(completed, Ordering::AcqRel);
        if stopping {
            break;
        }
    }
}

fn write(
    db: &Db,
    ops: impl IntoIterator<Item = Op>,
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
    for op in ops {
        match op {
            Op::PutMeta(k, v) => batch.put_cf(meta, k, v),
            Op::DeleteMeta(k) => batch.delete_cf(meta, k),
            Op::PutMessage { queue, seq, msg } => {
                codec::encode_message(&msg, scratch);
                batch.put_cf(msgs, keys::message(queue, seq), &scratch[..]);
            }
            Op::DeleteMessage { queue, seq } => batch.delete_cf(msgs, keys::message(queue, seq)),
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
    let mut opts = WriteOptions::default();
    opts.set_sync(sync);
    db.write_opt(batch, &opts)?;
    Ok(())
}

#[cfg(test)]
#[path = "writer_test.rs"]
mod tests;
