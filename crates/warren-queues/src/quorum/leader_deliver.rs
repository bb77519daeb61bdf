//! How a quorum queue's leader sends the deliveries the state machine
//! made: to consumers attached here, once per channel that does not hold
//! the message already, and held back while a channel's shared prefetch
//! has no credit left (`delivery::Stalled`).

use std::collections::HashMap;

use warren_core::Message;
use warren_core::queue::connection_node;
use warren_core::quorum::{Delivery, MsgId};

use super::super::delivery::{Waiting, counted};
use super::super::held::Held;
use super::Leading;
use crate::api::{ConnEvent, DeliverEvent};

impl Leading {
    /// Sends one delivery the state machine made to its consumer, if it is
    /// attached here (else the consumer's node attaches it soon, and it is
    /// sent again then), or holds it back while its channel has no credit.
    pub(super) fn deliver(
        &mut self,
        d: Delivery,
        redelivered: bool,
        bodies: &HashMap<MsgId, Message>,
        held: &mut Held,
    ) {
        let key = (d.consumer.channel, d.consumer.tag.clone());
        let (Some(a), Some(msg)) = (self.consumers.get(&key), bodies.get(&d.msg.id)) else {
            tracing::debug!(
                queue = %self.def.name,
                channel = d.consumer.channel,
                tag = %d.consumer.tag,
                id = d.msg.id,
                attached = self.consumers.contains_key(&key),
                "quorum delivery not sent: consumer not attached here or no body"
            );
            return;
        };
        let channel = d.consumer.channel;
        // A channel of this node that still holds it gets it once (other
        // nodes' fronts do the same for theirs).
        if !d.no_ack && connection_node(channel) == self.me && held.holds(channel, d.msg.id) {
            tracing::debug!(queue = %self.def.name, channel, id = d.msg.id, "quorum delivery dropped: the channel holds it");
            return;
        }
        // Mirrors the classic queue: the channel releases its credit on ack.
        if !d.no_ack && (self.stalled.has(channel) || !a.link.credit.try_acquire()) {
            let msg = msg.clone();
            self.stalled.push(Waiting {
                d,
                redelivered,
                msg,
            });
            return;
        }
        let msg = msg.clone();
        self.send(d, redelivered, &msg, held);
    }

    /// Sends a delivery whose credit is taken.
    fn send(&mut self, d: Delivery, redelivered: bool, msg: &Message, held: &mut Held) {
        let key = (d.consumer.channel, d.consumer.tag.clone());
        let Some(a) = self.consumers.get(&key) else {
            return;
        };
        if !d.no_ack && connection_node(d.consumer.channel) == self.me {
            held.deliver(d.consumer.channel, d.msg.id);
        }
        let _ = a.link.flow.try_acquire();
        let ev = ConnEvent::Deliver(DeliverEvent {
            channel: a.spec.channel,
            tag: a.spec.tag.clone(),
            queue: self.def.id,
            seq: d.msg.id,
            needs_ack: !d.no_ack,
            redelivered,
            msg: counted(msg, d.msg.delivery_count),
            flow: a.link.flow.clone(),
        });
        let _ = a.link.out.send(ev);
        if d.no_ack {
            self.sent_no_ack
                .entry(d.consumer.channel)
                .or_default()
                .push(d.msg.id);
        }
    }

    /// A channel's credit was released (an ack, a larger limit): sends
    /// what waited for it, in order, while it lasts.
    pub(in crate::quorum) fn resume(&mut self, held: &mut Held) {
        for channel in self.stalled.channels() {
            while let Some(w) = self.stalled.pop(channel) {
                let key = (channel, w.d.consumer.tag.clone());
                let Some(a) = self.consumers.get(&key) else {
                    // Cancelled or gone: returned when that was handled.
                    continue;
                };
                if !a.link.credit.try_acquire() {
                    self.stalled.push_front(w);
                    break;
                }
                self.send(w.d, w.redelivered, &w.msg, held);
            }
        }
    }
}
