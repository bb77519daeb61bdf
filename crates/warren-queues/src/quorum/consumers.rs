//! The consumers of this node's channels: attached to each new leader
//! again (with the answers checked, a refused attachment tried again), and
//! the events of those forwarded through a proxy passing through the front,
//! which delivers them once and swallows the cancellations of broken links.

use tokio::sync::oneshot;
use warren_core::queue::ConsumerSpec;
use warren_core::{AmqpError, Name};

use super::{Front, Role};
use crate::api::{ConnEvent, ConsumerLink, QueueMsg};

/// A consumer of one of this node's channels.
pub(super) struct Own {
    pub(super) spec: ConsumerSpec,
    /// The link to the client's connection.
    pub(super) link: ConsumerLink,
    /// Attached to the current leader (a broken link clears it).
    pub(super) attached: bool,
}

/// A consumer's (channel id, tag) and the answer to its re-attachment.
pub(super) type Attaching = ((u64, Name), oneshot::Receiver<Result<(), AmqpError>>);

impl Front {
    /// Attaches this node's consumers to the current leader where they are
    /// not (a new leader, or a link that broke).
    pub(super) async fn reattach(&mut self) {
        // A re-attachment that was refused (it went to a leader that had
        // just died, say) is tried again now.
        let mut waiting = Vec::new();
        for (key, mut rx) in std::mem::take(&mut self.attaching) {
            match rx.try_recv() {
                Ok(Ok(())) => {}
                Err(oneshot::error::TryRecvError::Empty) => waiting.push((key, rx)),
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {
                    if let Some(o) = self.own.get_mut(&key) {
                        o.attached = false;
                    }
                }
            }
        }
        self.attaching = waiting;
        if matches!(self.role, Role::Waiting) {
            return;
        }
        let detached: Vec<(u64, Name)> = self
            .own
            .iter()
            .filter(|(_, o)| !o.attached)
            .map(|(k, _)| k.clone())
            .collect();
        for key in detached {
            let Some(o) = self.own.get_mut(&key) else {
                continue;
            };
            o.attached = true;
            let (spec, link) = (o.spec.clone(), o.link.clone());
            let link = self.route_link(&link);
            let (reply, rx) = oneshot::channel();
            let msg = QueueMsg::Consume { spec, link, reply };
            self.send_on(msg).await;
            self.attaching.push((key, rx));
        }
    }

    /// The link a consumer of this node is attached with: its own when this
    /// node leads, else one whose events pass through the front.
    pub(super) fn route_link(&self, link: &ConsumerLink) -> ConsumerLink {
        match self.role {
            Role::Leader(_) => link.clone(),
            _ => ConsumerLink {
                out: self.events_tx.clone(),
                flow: link.flow.clone(),
                credit: link.credit.clone(),
            },
        }
    }

    /// An event for a consumer of this node that came through a proxy.
    pub(super) fn passed_through(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Deliver(d) => {
                // A consumer cancelled meanwhile: the leader gets the
                // message back when the channel settles or closes.
                let Some(o) = self.own.get(&(d.channel.id, d.tag.clone())) else {
                    tracing::debug!(channel = d.channel.id, tag = %d.tag, id = d.seq, "quorum delivery for a consumer gone");
                    return;
                };
                if d.needs_ack && !self.held.deliver(d.channel.id, d.seq) {
                    tracing::debug!(
                        channel = d.channel.id,
                        id = d.seq,
                        "quorum delivery dropped: the channel holds it"
                    );
                    // Sent again by a new leader; the channel has it.
                    d.flow.release();
                    return;
                }
                let _ = o.link.out.send(ConnEvent::Deliver(d));
            }
            ConnEvent::Cancelled { channel, tag } => {
                // A link broke (the queue is not deleted: that cancels
                // through `finish`): attach again at the next round.
                if let Some(o) = self.own.get_mut(&(channel.id, tag)) {
                    o.attached = false;
                }
            }
            ConnEvent::Accepted { .. } => {}
        }
    }
}
