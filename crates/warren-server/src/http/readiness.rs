//! Whether a node is ready for clients, as `/ready` reports it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use crate::broker::Broker;

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Opening storage and starting Raft.
    Opening = 0,
    /// Waiting for the cluster to form, or catching up with its metadata.
    Joining = 1,
    /// The AMQP listener is open.
    Serving = 2,
    /// Shutting down: connections are being closed.
    Stopping = 3,
}

/// A ready node's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// This node.
    pub node: u64,
    /// The metadata leader it knows.
    pub leader: u64,
}

/// Shared by the server (which moves the stage on) and the HTTP handlers.
#[derive(Debug)]
pub struct Readiness {
    stage: AtomicU8,
    broker: OnceLock<Weak<Broker>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            stage: AtomicU8::new(Stage::Opening as u8),
            broker: OnceLock::new(),
        }
    }
}

impl Readiness {
    /// Moves to `stage`.
    pub fn set(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Release);
    }

    /// The node, once its storage is open.
    pub fn attach(&self, broker: &Arc<Broker>) {
        let _ = self.broker.set(Arc::downgrade(broker));
    }

    /// The stage now.
    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Acquire) {
            0 => Stage::Opening,
            1 => Stage::Joining,
            2 => Stage::Serving,
            _ => Stage::Stopping,
        }
    }

    /// Ready, or why not.
    pub fn check(&self) -> Result<Ready, &'static str> {
        match self.stage() {
            Stage::Opening => return Err("opening storage"),
            Stage::Joining => {
                return Err("joining the cluster: waiting for a majority of its nodes, \
                            or catching up with its metadata");
            }
            Stage::Stopping => return Err("shutting down"),
            Stage::Serving => {}
        }
        let Some(broker) = self.broker.get().and_then(Weak::upgrade) else {
            return Err("shutting down");
        };
        let status = broker.node().status();
        if !status.members.iter().any(|m| m.id == status.id) {
            return Err("not a member of the cluster");
        }
        if status.leader == 0 {
            return Err("no metadata leader known: an election is under way, \
                        or this node is cut off from a majority");
        }
        Ok(Ready {
            node: status.id,
            leader: status.leader,
        })
    }
}
