//! What a quorum queue's front does with its mailbox while no leader is
//! known (an election): it parks the messages, in order, and hands them to
//! the next leader; what waits too long is refused (a publish nacked), and
//! past [`PARK_MAX`] messages the mailbox is not read.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Front, Role, unreachable};
use crate::api::{Absent, QueueMsg};

/// Messages kept while no leader is known; past this the mailbox waits.
pub(super) const PARK_MAX: usize = 4096;
/// How long a message waits for a leader before it is refused (a publish
/// nacked): a group without a majority does not hold its publishers forever.
const PARK_LIMIT: Duration = Duration::from_secs(15);

impl Front {
    /// Hands `msg` to the current leader.
    pub(super) async fn send_on(&mut self, msg: QueueMsg) {
        match &mut self.role {
            Role::Leader(l) => l.handle(msg),
            // Publishes take their bytes from the link's budget first.
            Role::Forward { proxy, .. } => match msg {
                QueueMsg::Publish(batch) => proxy.publish(batch).await,
                msg => {
                    if let Err(mpsc::error::SendError(m)) = proxy.mailbox().send(msg).await {
                        m.answer_absent(&Absent::Unreachable(unreachable(&self.def.name)));
                    }
                }
            },
            Role::Waiting => self.parked.push_back((Instant::now(), msg)),
        }
    }

    /// Hands what waited for a leader to the one now known.
    pub(super) async fn unpark(&mut self) {
        while !matches!(self.role, Role::Waiting) {
            let Some((_, msg)) = self.parked.pop_front() else {
                return;
            };
            // A consumer of this node gets the link the new role wants (its
            // own on the leader): one delivery path, so no reordering.
            let msg = match msg {
                QueueMsg::Consume { spec, link, reply } => {
                    let link = match self.own.get(&(spec.channel.id, spec.tag.clone())) {
                        Some(o) => self.route_link(&o.link),
                        None => link,
                    };
                    QueueMsg::Consume { spec, link, reply }
                }
                other => other,
            };
            self.send_on(msg).await;
        }
    }

    /// Refuses what waited for a leader too long.
    pub(super) fn expire_parked(&mut self) {
        let now = Instant::now();
        while self
            .parked
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= PARK_LIMIT)
        {
            if let Some((_, msg)) = self.parked.pop_front() {
                msg.answer_absent(&Absent::Unreachable(unreachable(&self.def.name)));
            }
        }
    }
}
