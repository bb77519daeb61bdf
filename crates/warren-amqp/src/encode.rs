//! Frames out: written into the connection's single write buffer.
//!
//! Rare methods go through amq-protocol's `gen_frame`. The per-message frames
//! (`basic.deliver`, `basic.get-ok`, `basic.ack` for confirms, content header and
//! body) are composed from amq-protocol's field generators directly: the
//! generated `gen_deliver` builds a flags vector and owned strings per call, and
//! these run once per message. Their output is checked against `gen_frame` in
//! the tests below. Content headers carry the publisher's raw property bytes.

use amq_protocol::frame::{AMQPFrame, GenError, WriteContext, gen_frame};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::generation::{
    gen_boolean, gen_id, gen_long_long_uint, gen_long_uint, gen_short_short_uint, gen_short_string,
    gen_short_uint, gen_with_len,
};
use cookie_factory::SerializeFn;
use cookie_factory::combinator::slice;
use cookie_factory::sequence::tuple;

use crate::FRAME_OVERHEAD;

const FRAME_END: u8 = 0xCE;

/// Generation failed (only possible for values the protocol cannot carry).
#[derive(Debug, thiserror::Error)]
#[error("frame generation failed: {0:?}")]
pub struct EncodeError(String);

impl From<GenError> for EncodeError {
    fn from(e: GenError) -> Self {
        Self(format!("{e:?}"))
    }
}

pub(crate) fn run(out: &mut Vec<u8>, f: impl SerializeFn<Vec<u8>>) -> Result<(), EncodeError> {
    let ctx = WriteContext::from(std::mem::take(out));
    *out = f(ctx)?.write;
    Ok(())
}

/// Any method frame.
pub fn method(out: &mut Vec<u8>, channel: u16, class: AMQPClass) -> Result<(), EncodeError> {
    let frame = AMQPFrame::Method(channel, class);
    run(out, gen_frame(&frame))
}

/// A heartbeat frame.
pub fn heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

fn method_frame<'a>(
    channel: u16,
    class: u16,
    method: u16,
    args: impl SerializeFn<Vec<u8>> + 'a,
) -> impl SerializeFn<Vec<u8>> + 'a {
    tuple((
        gen_short_short_uint(1),
        gen_id(channel),
        gen_with_len(tuple((gen_id(class), gen_id(method), args))),
        gen_short_short_uint(FRAME_END),
    ))
}

/// `basic.deliver`.
pub fn deliver(
    out: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) -> Result<(), EncodeError> {
    run(
        out,
        method_frame(
            channel,
            60,
            60,
            tuple((
                gen_short_string(consumer_tag),
                gen_long_long_uint(delivery_tag),
                gen_boolean(redelivered),
                gen_short_string(exchange),
                gen_short_string(routing_key),
            )),
        ),
    )
}

/// `basic.get-ok`.
#[allow(clippy::too_many_arguments)]
pub fn get_ok(
    out: &mut Vec<u8>,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
) -> Result<(), EncodeError> {
    run(
        out,
        method_frame(
            channel,
            60,
            71,
            tuple((
                gen_long_long_uint(delivery_tag),
                gen_boolean(redelivered),
                gen_short_string(exchange),
                gen_short_string(routing_key),
                gen_long_uint(message_count),
            )),
        ),
    )
}

/// A publisher confirm from the server: `basic.ack` (`ack`) or
/// `basic.nack` (never with `requeue`, which a server does not set).
pub fn confirm(
    out: &mut Vec<u8>,
    channel: u16,
    delivery_tag: u64,
    multiple: bool,
    ack: bool,
) -> Result<(), EncodeError> {
    // Both carry the tag, then a bits octet: `multiple` is bit 0 (nack's
    // `requeue` would be bit 1).
    let method = if ack { 80 } else { 120 };
    run(
        out,
        method_frame(
            channel,
            60,
            method,
            tuple((
                gen_long_long_uint(delivery_tag),
                gen_short_short_uint(u8::from(multiple)),
            )),
        ),
    )
}

/// Content header and body frames, the body split to fit `frame_max`.
pub fn content(
    out: &mut Vec<u8>,
    channel: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) -> Result<(), EncodeError> {
    run(
        out,
        tuple((
            gen_short_short_uint(2),
            gen_id(channel),
            gen_with_len(tuple((
                gen_id(60),
                gen_short_uint(0),
                gen_long_long_uint(body.len() as u64),
                slice(raw_properties),
            ))),
            gen_short_short_uint(FRAME_END),
        )),
    )?;
    let chunk = (frame_max.saturating_sub(FRAME_OVERHEAD)).max(1) as usize;
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD as usize);
    for part in body.chunks(chunk) {
        out.push(3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
        out.push(FRAME_END);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use amq_protocol::frame::{AMQPContentHeader, parse_frame};
    use amq_protocol::protocol::basic;

    use super::*;

    fn generated(f: AMQPFrame) -> Vec<u8> {
        gen_frame(&f)(WriteContext::from(Vec::new()))
            .expect("gen")
            .write
    }

    #[test]
    fn fast_paths_match_amq_protocol() {
        let mut out = vec![];
        deliver(&mut out, 7, "ctag", 42, true, "ex", "rk").expect("deliver");
        assert_eq!(
            out,
            generated(AMQPFrame::Method(
                7,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: "ctag".into(),
                    delivery_tag: 42,
                    redelivered: true,
                    exchange: "ex".into(),
                    routing_key: "rk".into(),
                }))
            ))
        );
        let mut out = vec![];
        get_ok(&mut out, 1, 3, false, "", "q", 9).expect("get-ok");
        assert_eq!(
            out,
            generated(AMQPFrame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                    delivery_tag: 3,
                    redelivered: false,
                    exchange: "".into(),
                    routing_key: "q".into(),
                    message_count: 9,
                }))
            ))
        );
        let ack = basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 5,
            multiple: true,
        });
        let nack = basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 5,
            multiple: false,
            requeue: false,
        });
        for (is_ack, multiple, expected) in [(true, true, ack), (false, false, nack)] {
            let mut out = vec![];
            confirm(&mut out, 2, 5, multiple, is_ack).expect("confirm");
            let frame = AMQPFrame::Method(2, AMQPClass::Basic(expected));
            assert_eq!(out, generated(frame));
        }
    }

    #[test]
    fn content_is_split_at_frame_max() {
        let props = basic::AMQPProperties::default().with_delivery_mode(2);
        let mut raw = generated(AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 10_000,
                properties: props.clone(),
            },
        ));
        let raw_props = raw.split_off(7 + 12);
        let raw_props = &raw_props[..raw_props.len() - 1];
        let body = vec![7u8; 10_000];
        let mut out = vec![];
        content(&mut out, 1, raw_props, &body, 4096).expect("content");
        let mut rest = &out[..];
        let mut frames = vec![];
        while !rest.is_empty() {
            let (r, f) = parse_frame(rest).expect("parse");
            rest = r;
            frames.push(f);
        }
        assert_eq!(frames.len(), 4, "header + 3 bodies of at most 4088 bytes");
        match &frames[0] {
            AMQPFrame::Header(1, h) => {
                assert_eq!(h.body_size, 10_000);
                assert_eq!(h.properties, props);
            }
            other => panic!("unexpected {other:?}"),
        }
        let total: usize = frames[1..]
            .iter()
            .map(|f| match f {
                AMQPFrame::Body(_, b) => {
                    assert!(b.len() <= 4088);
                    b.len()
                }
                _ => 0,
            })
            .sum();
        assert_eq!(total, 10_000);
    }
}
