//! Rewriting a message's properties. Warren passes what a publisher sent
//! byte for byte; the one exception is a header the broker adds, as
//! RabbitMQ adds `x-delivery-count` to a quorum queue's redelivered
//! messages. Only those pay for a decode and an encode.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::protocol::basic::{gen_properties, parse_properties};
use amq_protocol::types::{AMQPValue, FieldTable};

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

/// The raw properties `raw` with `reply_to` set to `to` (direct reply-to
/// names the requester's channel there); `None` if `raw` does not parse.
pub fn with_reply_to(raw: &[u8], to: &str) -> Option<(Vec<u8>, BasicProperties)> {
    let props = match parse_properties(raw) {
        Ok(([], p)) => p,
        _ => return None,
    };
    let props = props.with_reply_to(to.into());
    let mut out = Vec::with_capacity(raw.len() + to.len());
    run(&mut out, gen_properties(&props)).ok()?;
    Some((out, props))
}

/// The raw properties `raw` as a dead-lettered message carries them: the
/// headers replaced by what `headers` makes of the old ones and of the
/// `expiration` property, which is removed (RabbitMQ keeps it in `x-death`
/// as `original-expiration`). Also returns the new headers (routing and the
/// cycle check read them); `None` if `raw` does not parse.
pub fn dead_lettered(
    raw: &[u8],
    headers: impl FnOnce(Option<&FieldTable>, Option<&str>) -> FieldTable,
) -> Option<(Vec<u8>, FieldTable)> {
    let p = match parse_properties(raw) {
        Ok(([], p)) => p,
        _ => return None,
    };
    let new = headers(
        p.headers().as_ref(),
        p.expiration().as_ref().map(|e| e.as_str()),
    );
    let out = without_expiration(&p).with_headers(new.clone());
    let mut bytes = Vec::with_capacity(raw.len() + 256);
    run(&mut bytes, gen_properties(&out)).ok()?;
    Some((bytes, new))
}

/// `p` without its `expiration` (amq-protocol's builder can only set one).
fn without_expiration(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
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

    #[test]
    fn a_dead_lettered_message_loses_its_expiration_and_keeps_the_rest() {
        let sent = BasicProperties::default()
            .with_delivery_mode(2)
            .with_priority(3)
            .with_expiration("5000".into())
            .with_correlation_id("c1".into())
            .with_app_id("app".into());
        let mut seen = None;
        let (out, headers) = dead_lettered(&raw(&sent), |h, exp| {
            seen = Some((h.is_none(), exp.map(str::to_owned)));
            let mut t = FieldTable::default();
            t.insert("x-death".into(), AMQPValue::LongString("d".into()));
            t
        })
        .expect("rewritten");
        assert_eq!(seen, Some((true, Some("5000".to_owned()))));
        let (_, back) = parse_properties(&out[..]).expect("parses");
        assert_eq!(*back.expiration(), None);
        assert_eq!(*back.delivery_mode(), Some(2));
        assert_eq!(*back.priority(), Some(3));
        assert_eq!(
            back.correlation_id().as_ref().map(|s| s.as_str()),
            Some("c1")
        );
        assert_eq!(back.app_id().as_ref().map(|s| s.as_str()), Some("app"));
        assert_eq!(back.headers().as_ref(), Some(&headers));
        assert!(dead_lettered(b"\xff", |_, _| FieldTable::default()).is_none());
    }
}
