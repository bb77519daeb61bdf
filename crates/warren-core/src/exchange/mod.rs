//! Exchanges: their definition and, per type, the routing index built from the
//! bindings whose source they are.
//!
//! The binding table in [`crate::vhost`] is the source of truth; each exchange
//! keeps a derived index shaped for its type so that routing a message costs a
//! hash lookup (direct), a list walk (fanout), a trie walk (topic) or a scan of
//! header bindings (headers), and never a scan of every binding.

mod direct;
mod fanout;
mod headers;
mod topic;

use smallvec::SmallVec;

use crate::{AmqpError, FieldTable, Name, QueueId};

pub use headers::XMatch;
pub(crate) use headers::equivalent_arg;

/// The four exchange types of AMQP 0-9-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExchangeKind {
    /// Routing key equals binding key.
    Direct,
    /// Every bound destination.
    Fanout,
    /// Dot-separated words; `*` one word, `#` zero or more.
    Topic,
    /// Message headers against binding arguments (`x-match`).
    Headers,
}

impl ExchangeKind {
    /// Parses the `type` field of `exchange.declare`. An unknown type is a 406,
    /// as in RabbitMQ 3.13 and later (earlier versions closed the connection).
    pub fn parse(kind: &str) -> Result<Self, AmqpError> {
        match kind {
            "direct" => Ok(Self::Direct),
            "fanout" => Ok(Self::Fanout),
            "topic" => Ok(Self::Topic),
            "headers" => Ok(Self::Headers),
            other => Err(AmqpError::precondition(format!(
                "invalid exchange type '{other}'"
            ))),
        }
    }

    /// The type's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// An exchange as declared.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExchangeDef {
    /// Its name (empty for the default exchange).
    pub name: Name,
    /// Its type.
    pub kind: ExchangeKind,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding (as a source) goes.
    pub auto_delete: bool,
    /// Clients may not publish to it directly.
    pub internal: bool,
    /// Declared arguments (`alternate-exchange`, ...).
    pub arguments: FieldTable,
}

impl ExchangeDef {
    /// The `alternate-exchange` argument, if it is a string.
    pub fn alternate_exchange(&self) -> Option<&str> {
        match self.arguments.inner().get("alternate-exchange") {
            Some(crate::AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
            Some(crate::AMQPValue::ShortString(s)) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// Where a binding delivers: a queue (by id, for a direct hand-off) or another
/// exchange (by name, routed again).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A queue.
    Queue(QueueId),
    /// An exchange-to-exchange binding.
    Exchange(Name),
}

/// Targets found for one message; most messages have one or a few.
pub type Targets = SmallVec<[Target; 4]>;

/// The routing index of one exchange.
#[derive(Debug)]
pub(crate) enum RoutingIndex {
    Direct(direct::DirectIndex),
    Fanout(fanout::FanoutIndex),
    Topic(topic::TopicTrie),
    Headers(headers::HeadersIndex),
}

impl RoutingIndex {
    pub(crate) fn new(kind: ExchangeKind) -> Self {
        match kind {
            ExchangeKind::Direct => Self::Direct(Default::default()),
            ExchangeKind::Fanout => Self::Fanout(Default::default()),
            ExchangeKind::Topic => Self::Topic(Default::default()),
            ExchangeKind::Headers => Self::Headers(Default::default()),
        }
    }

    /// Adds one binding. Each (key, arguments, target) is counted, so the same
    /// target bound twice under different arguments is removed only by the second unbind.
    pub(crate) fn add(&mut self, key: &str, args: &FieldTable, target: Target) {
        match self {
            Self::Direct(i) => i.add(key, target),
            Self::Fanout(i) => i.add(target),
            Self::Topic(i) => i.add(key, target),
            Self::Headers(i) => i.add(args, target),
        }
    }

    /// Removes one binding added with the same key, arguments and target.
    pub(crate) fn remove(&mut self, key: &str, args: &FieldTable, target: &Target) {
        match self {
            Self::Direct(i) => i.remove(key, target),
            Self::Fanout(i) => i.remove(target),
            Self::Topic(i) => i.remove(key, target),
            Self::Headers(i) => i.remove(args, target),
        }
    }

    /// Appends the targets matching a message to `out` (possibly with duplicates).
    pub(crate) fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Targets) {
        match self {
            Self::Direct(i) => i.route(routing_key, out),
            Self::Fanout(i) => i.route(out),
            Self::Topic(i) => i.route(routing_key, out),
            Self::Headers(i) => i.route(headers, out),
        }
    }
}

/// A target with the number of bindings that lead to it from one index entry.
pub(crate) type Counted = SmallVec<[(Target, u32); 2]>;

pub(crate) fn counted_add(list: &mut Counted, target: Target) {
    match list.iter_mut().find(|(t, _)| *t == target) {
        Some((_, n)) => *n += 1,
        None => list.push((target, 1)),
    }
}

/// Returns true when the list became empty.
pub(crate) fn counted_remove(list: &mut Counted, target: &Target) -> bool {
    if let Some(pos) = list.iter().position(|(t, _)| t == target) {
        list[pos].1 -= 1;
        if list[pos].1 == 0 {
            list.swap_remove(pos);
        }
    }
    list.is_empty()
}
