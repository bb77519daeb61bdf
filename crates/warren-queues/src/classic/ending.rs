//! How a classic queue ends: auto-deleted when its last consumer leaves,
//! deleted, or stopped with its node; what is still in its mailbox then is
//! answered, never dropped unanswered.

use warren_core::AmqpError;
use warren_store::Op;

use super::{AutoDeleted, QueueActor};
use crate::api::{Absent, ConnEvent, Ending};

impl QueueActor {
    /// An auto-delete queue whose last consumer left asks the node to delete
    /// it. It keeps serving until the metadata change is applied (then the
    /// registry deletes it): if the change never commits, it lives on.
    pub(super) fn maybe_auto_delete(&mut self) {
        if self.def.auto_delete && self.had_consumers && self.state.consumer_count() == 0 {
            self.had_consumers = false;
            let _ = self.auto_deleted.send(AutoDeleted {
                name: self.def.name.clone(),
                id: self.def.id,
            });
        }
    }

    /// Stops the queue: consumers are told, messages and their disk copies go.
    pub(super) fn delete(&mut self) {
        self.deleted = true;
        self.mark(Ending::Deleted);
        for spec in self.state.consumers() {
            if let Some(link) = self.links.get(&spec.id) {
                let _ = link.out.send(ConnEvent::Cancelled {
                    channel: spec.channel,
                    tag: spec.tag.clone(),
                });
            }
        }
        self.links.clear();
        self.state.drain_all();
        if self.def.durable {
            self.ops.push(Op::DeleteQueue(self.def.id));
        }
        self.rx.close();
    }

    /// Records why the mailbox closes, for the handles that still point here.
    pub(super) fn mark(&self, why: Ending) {
        self.end.mark(why);
    }

    /// After a stop: what is still in the mailbox is refused (publishes
    /// nacked), never dropped unanswered or confirmed.
    pub(super) fn refuse_after_stop(&mut self) {
        self.rx.close();
        let why = Absent::Unreachable(AmqpError::new(
            warren_core::ReplyCode::InternalError,
            format!(
                "queue '{}' in vhost '{}' stopped",
                self.def.name, self.vhost
            ),
        ));
        while let Ok(m) = self.rx.try_recv() {
            m.answer_absent(&why);
        }
    }

    /// After deletion: answer what is still in the mailbox as a missing queue would.
    pub(super) async fn drain_after_delete(&mut self) {
        let why = Absent::Deleted(AmqpError::not_found("queue", &self.def.name, &self.vhost));
        while let Ok(m) = self.rx.try_recv() {
            m.answer_absent(&why);
        }
    }
}
