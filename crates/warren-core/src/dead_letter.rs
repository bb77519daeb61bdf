//! Dead-lettering's record in a message: the `x-death` header and its
//! companions, written as RabbitMQ writes them, and RabbitMQ's rule for
//! dropping a message that would go round a dead-letter cycle for ever.
//!
//! Pure: the runtime decodes the message's headers, calls
//! [`record_death`], and re-encodes them (dropping the `expiration`
//! property, which [`Death::original_expiration`] keeps).
//!
//! `x-death` is an array of tables, newest event first, one table per
//! (queue, reason): a message dead-lettered again from the same queue for
//! the same reason has that table's `count` raised and moved to the front,
//! its other fields left as they were first written. The first event also
//! sets `x-first-death-reason`, `-queue` and `-exchange`, which never change
//! afterwards; every event sets `x-last-death-*` (RabbitMQ 3.13 and later).

use std::collections::BTreeMap;

use amq_protocol_types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reason {
    /// `basic.reject` or `basic.nack` without requeue.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// A length limit dropped or refused it.
    Maxlen,
    /// A quorum queue's `x-delivery-limit` was passed.
    DeliveryLimit,
}

impl Reason {
    /// The name RabbitMQ writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// One dead-lettering of a message.
#[derive(Clone, Debug)]
pub struct Death<'a> {
    /// Why.
    pub reason: Reason,
    /// The queue it left.
    pub queue: &'a str,
    /// The exchange it had been published to.
    pub exchange: &'a str,
    /// The routing key it was published with, then its `CC` keys.
    pub routing_keys: Vec<String>,
    /// When, in Unix seconds.
    pub time: u64,
    /// Its `expiration` property, if it had one (the property is removed).
    pub original_expiration: Option<&'a str>,
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn text(v: Option<&AMQPValue>) -> Option<&[u8]> {
    match v {
        Some(AMQPValue::LongString(s)) => Some(s.as_bytes()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

fn entry_is(t: &FieldTable, queue: &str, reason: &str) -> bool {
    text(t.inner().get("queue")) == Some(queue.as_bytes())
        && text(t.inner().get("reason")) == Some(reason.as_bytes())
}

/// Adds `death` to `headers` (absent headers are an empty table).
pub fn record_death(headers: Option<&FieldTable>, death: &Death<'_>) -> FieldTable {
    let mut h: BTreeMap<ShortString, AMQPValue> =
        headers.map(|t| t.inner().clone()).unwrap_or_default();
    let reason = death.reason.as_str();
    // A header that is not an array (a client re-published the message and
    // changed its type) is reset, as RabbitMQ resets it.
    let old: Vec<AMQPValue> = match h.get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    if !matches!(h.get("x-death"), Some(AMQPValue::FieldArray(_))) {
        h.insert("x-first-death-reason".into(), long_str(reason));
        h.insert("x-first-death-queue".into(), long_str(death.queue));
        h.insert("x-first-death-exchange".into(), long_str(death.exchange));
    }
    h.insert("x-last-death-reason".into(), long_str(reason));
    h.insert("x-last-death-queue".into(), long_str(death.queue));
    h.insert("x-last-death-exchange".into(), long_str(death.exchange));

    let mut matched = None;
    let mut others = Vec::with_capacity(old.len() + 1);
    for v in old {
        match v {
            AMQPValue::FieldTable(t) if matched.is_none() && entry_is(&t, death.queue, reason) => {
                matched = Some(t);
            }
            other => others.push(other),
        }
    }
    let first = match matched {
        Some(t) => {
            let mut t = t.inner().clone();
            let count = match t.get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                Some(AMQPValue::LongInt(n)) => i64::from(*n),
                _ => 0,
            };
            t.insert(
                "count".into(),
                AMQPValue::LongLongInt(count.saturating_add(1)),
            );
            FieldTable::from(t)
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long_str(reason));
            t.insert("queue".into(), long_str(death.queue));
            t.insert("time".into(), AMQPValue::Timestamp(death.time));
            t.insert("exchange".into(), long_str(death.exchange));
            let keys: Vec<AMQPValue> = death.routing_keys.iter().map(|k| long_str(k)).collect();
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(keys)),
            );
            if let Some(e) = death.original_expiration {
                t.insert("original-expiration".into(), long_str(e));
            }
            t
        }
    };
    let mut deaths = vec![AMQPValue::FieldTable(first)];
    deaths.extend(others);
    h.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    FieldTable::from(h)
}

/// True when dead-lettering a message from `queue` would close a cycle
/// with no rejection in it: it died in `queue` before, and every death
/// since (and that one) was automatic. RabbitMQ drops such a message
/// rather than let it circle for ever; a cycle through a rejection is a
/// client's choice and goes on.
pub fn is_death_cycle(headers: Option<&FieldTable>, queue: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = headers.and_then(|h| h.inner().get("x-death")) else {
        return false;
    };
    let deaths = deaths.as_slice();
    let Some(at) = deaths.iter().position(|d| {
        matches!(d, AMQPValue::FieldTable(t) if text(t.inner().get("queue")) == Some(queue.as_bytes()))
    }) else {
        return false;
    };
    deaths[..=at].iter().all(|d| match d {
        AMQPValue::FieldTable(t) => text(t.inner().get("reason")) != Some(b"rejected"),
        // Something a client put there: not a fully automatic cycle.
        _ => false,
    })
}

#[cfg(test)]
#[path = "dead_letter_test.rs"]
mod tests;
