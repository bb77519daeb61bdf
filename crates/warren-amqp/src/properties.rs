//! Rewriting a message's properties. Warren passes what a publisher sent
//! byte for byte; the one exception is a header the broker adds, as
//! RabbitMQ adds `x-delivery-count` to a quorum queue's redelivered
//! messages. Only those pay for a decode and an encode.

use amq_protocol::protocol::basic::{gen_properties, parse_properties};
use amq_protocol::types::AMQPValue;

use crate::encode::run;

/// The raw properties `raw` (flags and property list, as a content header
/// carries them) with header `key` set to `value`; `None` if `raw` does not
/// parse (the caller keeps the message as it was).
pub fn with_header(raw: &[u8], key: &str, value: AMQPValue) -> Option<Vec<u8>> {
    let props = match parse_properties(raw) {
        Ok(([], p)) => p,
        _ => return None,
    };
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(key.into(), value);
    let props = props.with_headers(headers);
    let mut out = Vec::with_capacity(raw.len() + key.len() + 16);
    run(&mut out, gen_properties(&props)).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::FieldTable;

    use super::*;

    fn raw(props: &BasicProperties) -> Vec<u8> {
        let mut out = Vec::new();
        run(&mut out, gen_properties(props)).expect("gen");
        out
    }

    #[test]
    fn a_header_is_added_beside_what_the_publisher_sent() {
        let mut headers = FieldTable::default();
        headers.insert("app".into(), AMQPValue::LongString("x".into()));
        let sent = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        let out = with_header(&raw(&sent), "x-delivery-count", AMQPValue::LongLongInt(2))
            .expect("rewritten");
        let (rest, back) = parse_properties(&out[..]).expect("parses");
        assert!(rest.is_empty());
        assert_eq!(*back.delivery_mode(), Some(2));
        let h = back.headers().clone().expect("headers");
        assert_eq!(
            h.inner().get("x-delivery-count"),
            Some(&AMQPValue::LongLongInt(2))
        );
        assert!(h.inner().contains_key("app"));
        // No properties at all, and bytes that do not parse.
        assert!(
            with_header(
                &raw(&BasicProperties::default()),
                "k",
                AMQPValue::Boolean(true)
            )
            .is_some()
        );
        assert!(with_header(&[0xff], "k", AMQPValue::Boolean(true)).is_none());
    }
}
