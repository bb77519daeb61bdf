//! Paging of a classic queue's backlog: bodies past the page budget are read
//! back from disk when the in-memory head runs short.

use super::QueueActor;

/// Page in when fewer ready messages than this are in memory...
const PAGE_LOW: usize = 512;
/// ...this many at a time.
const PAGE_BATCH: usize = 2048;

impl QueueActor {
    /// Reads paged message bodies back when the in-memory head runs short.
    /// The reads hit RocksDB's memtable or block cache for a recent backlog;
    /// they run in `block_in_place` so other tasks keep their worker thread.
    pub(super) fn page_in(&mut self) {
        if !self.state.needs_page_in(PAGE_LOW) {
            return;
        }
        let want = self.state.paged_to_read(PAGE_BATCH);
        let read = if want.is_empty() {
            Ok(Default::default())
        } else {
            let (store, id) = (&self.store, self.def.id);
            tokio::task::block_in_place(|| store.read_messages(id, &want))
        };
        match read {
            Ok(read) => {
                let missing = self.state.page_in(PAGE_BATCH, read);
                if !missing.is_empty() {
                    tracing::error!(queue = %self.def.name, count = missing.len(), "paged messages missing from disk");
                }
            }
            Err(e) => {
                tracing::error!(queue = %self.def.name, cause = %e, "could not page messages in")
            }
        }
    }

    /// Dispatches, paging bodies in as the part in memory runs short, for as
    /// long as consumers take messages. Nothing else would wake the queue
    /// when its memory runs dry while consumers still have credit (no-ack
    /// consumers send nothing back), so it goes on until they are full or
    /// the backlog is done. Bounded: every round delivers, within credit.
    pub(super) fn page_in_and_dispatch(&mut self) {
        loop {
            if self.state.consumer_count() > 0 {
                self.page_in();
            }
            let delivered = self.dispatch();
            if delivered == 0 || !self.state.needs_page_in(PAGE_LOW) {
                return;
            }
        }
    }
}
