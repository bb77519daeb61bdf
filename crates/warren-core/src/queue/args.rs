//! Queue arguments: type-checked as RabbitMQ does at `queue.declare`.
//!
//! The arguments are stored whatever later issues enforce, so a redeclare with
//! different values fails its equivalence check (406) exactly as in RabbitMQ.
//! Which ones are enforced today is listed in the README.

use crate::{AMQPValue, AmqpError, FieldTable};

/// The interpreted arguments of a queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueArgs {
    /// `x-message-ttl` in milliseconds.
    pub message_ttl: Option<u64>,
    /// `x-expires` in milliseconds (> 0).
    pub expires: Option<u64>,
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-priority` (0..=255).
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-queue-type`.
    pub queue_type: Option<String>,
    /// `x-overflow`.
    pub overflow: Option<String>,
}

/// The arguments whose values take part in the equivalence check of a redeclare.
/// RabbitMQ ignores unknown arguments there, and so do we.
pub const EQUIVALENCE_KEYS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-single-active-consumer",
    "x-queue-type",
    "x-overflow",
];

impl QueueArgs {
    /// Parses and type-checks the arguments of `queue.declare`.
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> Result<Self, AmqpError> {
        let invalid = |key: &str, why: String| {
            AmqpError::precondition(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
            ))
        };
        let mut out = QueueArgs::default();
        for (key, value) in args.inner() {
            let key = key.as_str();
            match key {
                "x-message-ttl" => out.message_ttl = Some(non_negative(key, value, invalid)?),
                "x-expires" => {
                    let v = non_negative(key, value, invalid)?;
                    if v == 0 {
                        return Err(invalid(key, "{value_zero,0}".into()));
                    }
                    out.expires = Some(v);
                }
                "x-max-length" => out.max_length = Some(non_negative(key, value, invalid)?),
                "x-max-length-bytes" => {
                    out.max_length_bytes = Some(non_negative(key, value, invalid)?)
                }
                "x-dead-letter-exchange" => {
                    out.dead_letter_exchange = Some(string(key, value, invalid)?)
                }
                "x-dead-letter-routing-key" => {
                    out.dead_letter_routing_key = Some(string(key, value, invalid)?)
                }
                "x-max-priority" => {
                    let v = non_negative(key, value, invalid)?;
                    if v > 255 {
                        return Err(invalid(key, format!("{{value_too_large,{v},255}}")));
                    }
                    out.max_priority = Some(v as u8);
                }
                "x-single-active-consumer" => match value {
                    AMQPValue::Boolean(b) => out.single_active_consumer = *b,
                    other => return Err(invalid(key, unacceptable(other))),
                },
                "x-queue-type" => {
                    let v = string(key, value, invalid)?;
                    if !matches!(v.as_str(), "classic" | "quorum" | "stream") {
                        return Err(invalid(key, format!("{{unsupported_queue_type,{v}}}")));
                    }
                    out.queue_type = Some(v);
                }
                "x-overflow" => {
                    let v = string(key, value, invalid)?;
                    if !matches!(
                        v.as_str(),
                        "drop-head" | "reject-publish" | "reject-publish-dlx"
                    ) {
                        return Err(invalid(key, format!("{{unknown_overflow_value,{v}}}")));
                    }
                    out.overflow = Some(v);
                }
                _ => {}
            }
        }
        if out.dead_letter_routing_key.is_some() && out.dead_letter_exchange.is_none() {
            return Err(invalid(
                "x-dead-letter-routing-key",
                "Key x-dead-letter-routing-key should be specified together with x-dead-letter-exchange".into(),
            ));
        }
        Ok(out)
    }
}

fn unacceptable(v: &AMQPValue) -> String {
    let t = match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::Float(_) | AMQPValue::Double(_) => "double",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Void => "void",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ByteArray(_) => "binary",
        _ => "signedint",
    };
    format!("{{unacceptable_type,{t}}}")
}

/// An integer argument of any width that must not be negative.
fn non_negative(
    key: &str,
    v: &AMQPValue,
    invalid: impl Fn(&str, String) -> AmqpError,
) -> Result<u64, AmqpError> {
    let i: i128 = match *v {
        AMQPValue::ShortShortInt(i) => i.into(),
        AMQPValue::ShortShortUInt(i) => i.into(),
        AMQPValue::ShortInt(i) => i.into(),
        AMQPValue::ShortUInt(i) => i.into(),
        AMQPValue::LongInt(i) => i.into(),
        AMQPValue::LongUInt(i) => i.into(),
        AMQPValue::LongLongInt(i) => i.into(),
        ref other => return Err(invalid(key, unacceptable(other))),
    };
    u64::try_from(i).map_err(|_| invalid(key, format!("{{value_negative,{i}}}")))
}

fn string(
    key: &str,
    v: &AMQPValue,
    invalid: impl Fn(&str, String) -> AmqpError,
) -> Result<String, AmqpError> {
    match v {
        AMQPValue::LongString(s) => Ok(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Ok(s.as_str().to_owned()),
        other => Err(invalid(key, unacceptable(other))),
    }
}

/// Checks that a redeclare's arguments are equivalent to the stored ones:
/// every key in [`EQUIVALENCE_KEYS`] must be absent in both or loosely equal.
pub fn check_equivalent(
    stored: &FieldTable,
    received: &FieldTable,
    queue: &str,
    vhost: &str,
) -> Result<(), AmqpError> {
    for key in EQUIVALENCE_KEYS {
        let a = stored.inner().get(*key);
        let b = received.inner().get(*key);
        if !crate::exchange::equivalent_arg(a, b) {
            return Err(AmqpError::precondition(format!(
                "inequivalent arg '{key}' for queue '{queue}' in vhost '{vhost}': received {} but current is {}",
                show(b),
                show(a)
            )));
        }
    }
    Ok(())
}

fn show(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".into(),
        Some(AMQPValue::LongString(s)) => format!(
            "the value '{}' of type 'longstr'",
            String::from_utf8_lossy(s.as_bytes())
        ),
        Some(other) => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, v: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(key.into(), v);
        t
    }

    #[test]
    fn type_checks_like_rabbitmq() {
        assert_eq!(
            QueueArgs::parse(&one("x-message-ttl", AMQPValue::LongInt(500)), "q", "/")
                .expect("valid")
                .message_ttl,
            Some(500)
        );
        let e = QueueArgs::parse(
            &one("x-message-ttl", AMQPValue::LongString("5".into())),
            "q",
            "/",
        )
        .expect_err("string ttl");
        assert_eq!(e.code, crate::ReplyCode::PreconditionFailed);
        assert!(QueueArgs::parse(&one("x-expires", AMQPValue::LongInt(0)), "q", "/").is_err());
        assert!(QueueArgs::parse(&one("x-max-length", AMQPValue::LongInt(-1)), "q", "/").is_err());
        assert!(
            QueueArgs::parse(&one("x-max-priority", AMQPValue::LongInt(256)), "q", "/").is_err()
        );
        assert!(
            QueueArgs::parse(
                &one("x-single-active-consumer", AMQPValue::LongInt(1)),
                "q",
                "/"
            )
            .is_err()
        );
        assert!(
            QueueArgs::parse(
                &one(
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString("k".into())
                ),
                "q",
                "/"
            )
            .is_err()
        );
        assert!(QueueArgs::parse(&one("x-unknown", AMQPValue::Boolean(true)), "q", "/").is_ok());
    }

    #[test]
    fn equivalence_ignores_unknown_and_width() {
        let a = one("x-message-ttl", AMQPValue::LongInt(5));
        let b = one("x-message-ttl", AMQPValue::ShortShortUInt(5));
        assert!(check_equivalent(&a, &b, "q", "/").is_ok());
        assert!(check_equivalent(&a, &FieldTable::default(), "q", "/").is_err());
        assert!(
            check_equivalent(
                &FieldTable::default(),
                &one("x-other", AMQPValue::Void),
                "q",
                "/"
            )
            .is_ok()
        );
    }
}
