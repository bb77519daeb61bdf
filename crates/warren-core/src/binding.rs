//! A binding: the row of the binding table from which routing indexes are built.

use crate::{FieldTable, Name};

/// What a binding points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DestinationKind {
    /// `queue.bind`
    Queue,
    /// `exchange.bind`
    Exchange,
}

/// One binding, as declared. Two bindings are the same binding when all five
/// fields are equal (RabbitMQ's rule), so binding twice is idempotent.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Binding {
    /// The exchange messages come from.
    pub source: Name,
    /// The queue or exchange they go to.
    pub destination: Name,
    /// Whether `destination` is a queue or an exchange.
    pub kind: DestinationKind,
    /// The binding key.
    pub routing_key: String,
    /// Binding arguments (used by headers exchanges).
    pub arguments: FieldTable,
}
