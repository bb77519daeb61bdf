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
    /// `x-delivery-limit` (quorum queues).
    #[serde(default)]
    pub delivery_limit: Option<u64>,
    /// `x-quorum-initial-group-size` (> 0; quorum queues).
    #[serde(default)]
    pub quorum_initial_group_size: Option<u64>,
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
    "x-delivery-limit",
    "x-quorum-initial-group-size",
];

/// Arguments a quorum queue refuses (RabbitMQ 3.10's list).
const NOT_FOR_QUORUM: &[&str] = &["x-max-priority", "x-queue-mode"];

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
                "x-delivery-limit" => out.delivery_limit = Some(non_negative(key, value, invalid)?),
                "x-quorum-initial-group-size" => {
                    let v = non_negative(key, value, invalid)?;
                    if v == 0 {
                        return Err(invalid(key, "{value_zero,0}".into()));
                    }
                    out.quorum_initial_group_size = Some(v);
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

/// The properties of a `queue.declare`, as the quorum checks see them.
#[derive(Clone, Copy, Debug)]
pub struct DeclareFlags {
    /// Durable.
    pub durable: bool,
    /// Exclusive.
    pub exclusive: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// The server chose the name.
    pub server_named: bool,
}

impl QueueArgs {
    /// `x-queue-type: quorum` was asked for.
    pub fn is_quorum(&self) -> bool {
        self.queue_type.as_deref() == Some("quorum")
    }

    /// What RabbitMQ refuses in the declaration of a quorum queue, in its
    /// order and with its texts: a server-chosen name, then auto-delete,
    /// exclusive, non-durable, then the arguments it does not support.
    pub fn check_quorum(
        &self,
        args: &FieldTable,
        flags: DeclareFlags,
        queue: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        if !self.is_quorum() {
            return Ok(());
        }
        if flags.server_named {
            return Err(AmqpError::precondition(
                "Cannot declare a server-named queue for type rabbit_quorum_queue".to_owned(),
            ));
        }
        let q = format!("queue '{queue}' in vhost '{vhost}'");
        let property = |p: &str| AmqpError::precondition(format!("invalid property '{p}' for {q}"));
        if flags.auto_delete {
            return Err(property("auto-delete"));
        }
        if flags.exclusive {
            return Err(property("exclusive-owner"));
        }
        if !flags.durable {
            return Err(property("non-durable"));
        }
        if let Some(key) = NOT_FOR_QUORUM
            .iter()
            .find(|k| args.inner().contains_key(**k))
        {
            return Err(AmqpError::precondition(format!(
                "invalid arg '{key}' for {q}"
            )));
        }
        if self.overflow.as_deref() == Some("reject-publish-dlx") {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'x-overflow' with value 'reject-publish-dlx' for {q}"
            )));
        }
        Ok(())
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
    fn quorum_declarations_are_refused_as_rabbitmq_refuses_them() {
        let quorum = one("x-queue-type", AMQPValue::LongString("quorum".into()));
        let args = QueueArgs::parse(&quorum, "q", "/").expect("valid");
        let ok = DeclareFlags {
            durable: true,
            exclusive: false,
            auto_delete: false,
            server_named: false,
        };
        assert!(args.check_quorum(&quorum, ok, "q", "/").is_ok());
        let refused = |flags: DeclareFlags, table: &FieldTable| {
            let args = QueueArgs::parse(table, "q", "/").expect("valid");
            let e = args
                .check_quorum(table, flags, "q", "/")
                .expect_err("refused");
            assert_eq!(e.code, crate::ReplyCode::PreconditionFailed);
            e.text
        };
        let auto_delete = DeclareFlags {
            auto_delete: true,
            exclusive: true,
            ..ok
        };
        assert_eq!(
            refused(auto_delete, &quorum),
            "invalid property 'auto-delete' for queue 'q' in vhost '/'"
        );
        let exclusive = DeclareFlags {
            exclusive: true,
            durable: false,
            ..ok
        };
        assert_eq!(
            refused(exclusive, &quorum),
            "invalid property 'exclusive-owner' for queue 'q' in vhost '/'"
        );
        let transient = DeclareFlags {
            durable: false,
            ..ok
        };
        assert_eq!(
            refused(transient, &quorum),
            "invalid property 'non-durable' for queue 'q' in vhost '/'"
        );
        let server_named = DeclareFlags {
            server_named: true,
            ..ok
        };
        assert!(refused(server_named, &quorum).starts_with("Cannot declare a server-named queue"));
        let mut priority = quorum.clone();
        priority.insert("x-max-priority".into(), AMQPValue::LongInt(5));
        assert_eq!(
            refused(ok, &priority),
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/'"
        );
        let mut dlx = quorum.clone();
        dlx.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish-dlx".into()),
        );
        assert!(refused(ok, &dlx).contains("'reject-publish-dlx'"));
        // The same flags are fine for a classic queue.
        let classic = FieldTable::default();
        let args = QueueArgs::parse(&classic, "q", "/").expect("valid");
        assert!(args.check_quorum(&classic, exclusive, "q", "/").is_ok());
        // Quorum arguments are type-checked for every queue.
        let zero = one("x-quorum-initial-group-size", AMQPValue::LongInt(0));
        assert!(QueueArgs::parse(&zero, "q", "/").is_err());
        let limit = one("x-delivery-limit", AMQPValue::ShortInt(3));
        assert_eq!(
            QueueArgs::parse(&limit, "q", "/")
                .expect("valid")
                .delivery_limit,
            Some(3)
        );
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
