//! A quorum queue's group settings, from the queue's arguments: set when
//! the group is created, carried in its state machine and snapshots, and
//! put in the log again by every new leader (`Command::Configure`), so a
//! group created by a version that ignored an argument takes it up.

use warren_core::queue::QueueDef;
use warren_core::quorum::QuorumConfig;

/// The quorum settings a queue's arguments give.
pub(super) fn config_of(def: &QueueDef) -> QuorumConfig {
    QuorumConfig {
        delivery_limit: def
            .args
            .delivery_limit
            .map(|l| u32::try_from(l).unwrap_or(u32::MAX)),
        limits: warren_core::queue::Limits::of(&def.args),
        message_ttl: def.args.message_ttl,
        single_active: def.args.single_active_consumer,
        dead_letters: def.args.dead_letter_exchange.is_some(),
        expires: def.args.expires,
    }
}
