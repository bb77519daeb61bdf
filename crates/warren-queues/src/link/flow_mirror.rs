//! A queue's flow signal across a link: publishers on another node are
//! slowed to the queue's consumers as the queue's local publishers are.
//!
//! A channel pauses on the [`QueueFlow`] of the handle it publishes through;
//! for a queue homed elsewhere that handle is a proxy's, which nothing on
//! this node updates. So the home reports the queue's signal down the link
//! ([`Reports`], home side) and this side copies it into the proxies'
//! flows ([`Mirrors`]).
//!
//! The home reports "busy" when it hands the link's publishes to a busy
//! queue, and "drained" as soon as the queue drains (a watcher waits for
//! it): a paused publisher sends nothing, so the next publish could not
//! carry the news, and waiting for the pause to time out would leave the
//! consumers idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use warren_cluster::pb::queues as pb;
use warren_core::QueueId;

use crate::api::{Ending, QueueFlow, QueueHandle};

/// Longest wait of a drain watcher between checks of its link and queue.
const WATCH_STEP: Duration = Duration::from_secs(1);

/// This side: the flows of the proxies of one link's queues.
#[derive(Clone, Debug, Default)]
pub(crate) struct Mirrors(Arc<Mutex<HashMap<QueueId, Weak<QueueFlow>>>>);

impl Mirrors {
    /// Queue `q` is used through `flow` (a proxy's handle's).
    pub(crate) fn register(&self, q: QueueId, flow: &Arc<QueueFlow>) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Proxies of deleted queues go with their handles.
        m.retain(|_, f| f.strong_count() > 0);
        m.insert(q, Arc::downgrade(flow));
    }

    /// The home's report for queue `q`.
    pub(crate) fn set(&self, q: QueueId, busy: bool) {
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = m.get(&q).and_then(Weak::upgrade) {
            f.set_busy(busy);
        }
    }

    /// The link broke: nothing holds publishers back any more (what they
    /// send is answered at once while the home is unreachable).
    pub(crate) fn clear_all(&self) {
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for f in m.values().filter_map(Weak::upgrade) {
            f.set_busy(false);
        }
    }
}

/// The home side: what one link was last told of each queue's signal.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    told: HashMap<QueueId, Arc<Mutex<bool>>>,
    /// Dropped with the link: its watchers stop.
    alive: Arc<()>,
}

impl Reports {
    /// The link has just handed publishes to queue `h`: if it is busy and
    /// the other node was not told, tell it, and watch for the drain.
    /// Reports go out under the queue's lock so that the watcher's "drained"
    /// and a new "busy" reach the other node in the order they were decided.
    pub(crate) fn after_publish(
        &mut self,
        h: &QueueHandle,
        out: &mpsc::UnboundedSender<pb::down_item::Op>,
    ) {
        let flow = h.flow().clone();
        if !flow.busy() {
            return;
        }
        let told = self.told.entry(h.id()).or_default().clone();
        {
            let mut t = told.lock().unwrap_or_else(PoisonError::into_inner);
            if *t {
                return;
            }
            *t = true;
            let _ = out.send(busy(h.id(), true));
        }
        let (h, out, alive) = (h.clone(), out.clone(), Arc::downgrade(&self.alive));
        tokio::spawn(async move {
            // Ends with the drain, the link, or the queue; the check is made
            // under the lock, so a queue busy again meanwhile stays watched.
            loop {
                flow.wait(tokio::time::Instant::now() + WATCH_STEP).await;
                if alive.strong_count() == 0 || out.is_closed() {
                    return;
                }
                let mut t = told.lock().unwrap_or_else(PoisonError::into_inner);
                if h.ending() != Ending::Running || !flow.busy() {
                    *t = false;
                    let _ = out.send(busy(h.id(), false));
                    return;
                }
            }
        });
    }
}

fn busy(queue: QueueId, busy: bool) -> pb::down_item::Op {
    pb::down_item::Op::Busy(pb::QueueBusy { queue, busy })
}
