//! Value encodings, version 1.
//!
//! Every value starts with a format version byte. Strings are length-prefixed,
//! integers big-endian, field tables in their AMQP wire form (amq-protocol's
//! own generator and parser), so no second table format is invented.

use amq_protocol_types::generation::gen_field_table;
use amq_protocol_types::parsing::parse_field_table;
use bytes::Bytes;
use cookie_factory::gen_simple;
use warren_core::binding::{Binding, DestinationKind};
use warren_core::exchange::{ExchangeDef, ExchangeKind};
use warren_core::message::MessageFlags;
use warren_core::queue::{Home, QueueArgs, QueueDef};
use warren_core::{FieldTable, Message, Name};

use crate::StoreError;

const V1: u8 = 1;
/// A message with an expiry (V1 plus its deadline); messages without one
/// are still written as V1.
const V2_MESSAGE: u8 = 2;

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// Appends values to a buffer.
pub(crate) struct Enc<'a>(pub(crate) &'a mut Vec<u8>);

impl Enc<'_> {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn table(&mut self, t: &FieldTable) -> &mut Self {
        let buf = std::mem::take(self.0);
        // Generation into a Vec cannot fail.
        *self.0 = gen_simple(gen_field_table(t), buf).unwrap_or_default();
        self
    }
}

/// Reads values from a buffer.
pub(crate) struct Dec<'a>(pub(crate) &'a [u8]);

impl<'a> Dec<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, StoreError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    pub(crate) fn str(&mut self) -> Result<&'a str, StoreError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| corrupt("utf8"))
    }
    fn table(&mut self) -> Result<FieldTable, StoreError> {
        let (rest, t) = parse_field_table(self.0).map_err(|_| corrupt("field table"))?;
        self.0 = rest;
        Ok(t)
    }
    fn version(&mut self) -> Result<(), StoreError> {
        match self.u8()? {
            V1 => Ok(()),
            v => Err(StoreError::Corrupt(format!("unknown format version {v}"))),
        }
    }
}

fn kind_code(k: ExchangeKind) -> u8 {
    match k {
        ExchangeKind::Direct => 0,
        ExchangeKind::Fanout => 1,
        ExchangeKind::Topic => 2,
        ExchangeKind::Headers => 3,
    }
}

/// Encodes an exchange record.
pub fn encode_exchange(e: &ExchangeDef) -> Vec<u8> {
    let mut v = Vec::new();
    let flags = u8::from(e.durable) | u8::from(e.auto_delete) << 1 | u8::from(e.internal) << 2;
    Enc(&mut v)
        .u8(V1)
        .str(&e.name)
        .u8(kind_code(e.kind))
        .u8(flags)
        .table(&e.arguments);
    v
}

/// Decodes an exchange record.
pub fn decode_exchange(b: &[u8]) -> Result<ExchangeDef, StoreError> {
    let mut d = Dec(b);
    d.version()?;
    let name: Name = d.str()?.into();
    let kind = match d.u8()? {
        0 => ExchangeKind::Direct,
        1 => ExchangeKind::Fanout,
        2 => ExchangeKind::Topic,
        3 => ExchangeKind::Headers,
        _ => return Err(corrupt("exchange kind")),
    };
    let flags = d.u8()?;
    Ok(ExchangeDef {
        name,
        kind,
        durable: flags & 1 != 0,
        auto_delete: flags & 2 != 0,
        internal: flags & 4 != 0,
        arguments: d.table()?,
    })
}

/// Encodes a queue record.
pub fn encode_queue(q: &QueueDef) -> Vec<u8> {
    let mut v = Vec::new();
    let flags = u8::from(q.durable) | u8::from(q.auto_delete) << 1;
    Enc(&mut v)
        .u8(V1)
        .str(&q.name)
        .u64(q.id)
        .u8(flags)
        .table(&q.arguments);
    v
}

/// Decodes a queue record.
pub fn decode_queue(b: &[u8], vhost: &str) -> Result<QueueDef, StoreError> {
    let mut d = Dec(b);
    d.version()?;
    let name: Name = d.str()?.into();
    let id = d.u64()?;
    let flags = d.u8()?;
    let arguments = d.table()?;
    let args = QueueArgs::parse(&arguments, &name, vhost).unwrap_or_default();
    Ok(QueueDef {
        name,
        id,
        durable: flags & 1 != 0,
        exclusive_owner: None,
        auto_delete: flags & 2 != 0,
        arguments,
        args,
        // Records predate clusters: the node that reads them is their home.
        home: Home::default(),
        replicas: Vec::new(),
        formed: false,
    })
}

/// The key of a binding record: every field, so equal bindings share a key.
pub fn binding_key(vhost: &str, b: &Binding) -> Vec<u8> {
    let mut v = vec![crate::keys::BINDING];
    let kind = match b.kind {
        DestinationKind::Queue => 0,
        DestinationKind::Exchange => 1,
    };
    Enc(&mut v)
        .str(vhost)
        .u8(V1)
        .str(&b.source)
        .u8(kind)
        .str(&b.destination)
        .str(&b.routing_key)
        .table(&b.arguments);
    v
}

/// Decodes a binding key back into (vhost, binding).
pub fn decode_binding_key(k: &[u8]) -> Result<(String, Binding), StoreError> {
    let mut d = Dec(k.get(1..).ok_or_else(|| corrupt("binding key"))?);
    let vhost = d.str()?.to_owned();
    d.version()?;
    let source: Name = d.str()?.into();
    let kind = match d.u8()? {
        0 => DestinationKind::Queue,
        1 => DestinationKind::Exchange,
        _ => return Err(corrupt("binding kind")),
    };
    let destination: Name = d.str()?.into();
    let routing_key = d.str()?.to_owned();
    let arguments = d.table()?;
    Ok((
        vhost,
        Binding {
            source,
            destination,
            kind,
            routing_key,
            arguments,
        },
    ))
}

/// Encodes a message into `out` (cleared first).
pub fn encode_message(m: &Message, out: &mut Vec<u8>) {
    out.clear();
    let (data, rk_len, props_len) = m.packed();
    out.reserve(data.len() + m.exchange.len() + 24);
    let mut e = Enc(out);
    match m.expires() {
        None => e.u8(V1).u8(u8::from(m.persistent)).u8(m.priority),
        Some(at) => e
            .u8(V2_MESSAGE)
            .u8(u8::from(m.persistent))
            .u8(m.priority)
            .u64(at),
    }
    .str(&m.exchange)
    .u8(rk_len)
    .u32(props_len);
    out.extend_from_slice(data);
}

/// Decodes a message.
pub fn decode_message(b: &[u8]) -> Result<Message, StoreError> {
    let mut d = Dec(b);
    let version = d.u8()?;
    if version != V1 && version != V2_MESSAGE {
        return Err(StoreError::Corrupt(format!(
            "unknown message format version {version}"
        )));
    }
    let persistent = d.u8()? != 0;
    let priority = d.u8()?;
    let expires = if version == V2_MESSAGE {
        std::num::NonZeroU64::new(d.u64()?)
    } else {
        None
    };
    let exchange: Name = d.str()?.into();
    let rk_len = d.u8()?;
    let props_len = d.u32()?;
    let data = Bytes::copy_from_slice(d.0);
    Message::from_packed(
        exchange,
        data,
        rk_len,
        props_len,
        MessageFlags {
            persistent,
            priority,
            expires,
        },
    )
    .ok_or_else(|| corrupt("message lengths"))
}

#[cfg(test)]
mod tests {
    use warren_core::AMQPValue;

    use super::*;

    #[test]
    fn round_trips() {
        let mut args = FieldTable::default();
        args.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString("ae".into()),
        );
        let e = ExchangeDef {
            name: "logs".into(),
            kind: ExchangeKind::Topic,
            durable: true,
            auto_delete: false,
            internal: true,
            arguments: args.clone(),
        };
        assert_eq!(decode_exchange(&encode_exchange(&e)).expect("decode"), e);

        let mut qargs = FieldTable::default();
        qargs.insert("x-max-length".into(), AMQPValue::LongInt(10));
        let q = QueueDef {
            name: "task_queue".into(),
            id: 42,
            durable: true,
            exclusive_owner: None,
            auto_delete: true,
            args: QueueArgs::parse(&qargs, "task_queue", "/").expect("args"),
            arguments: qargs,
            home: Home::default(),
            replicas: Vec::new(),
            formed: false,
        };
        assert_eq!(decode_queue(&encode_queue(&q), "/").expect("decode"), q);

        let b = Binding {
            source: "logs".into(),
            destination: "q".into(),
            kind: DestinationKind::Queue,
            routing_key: "a.*".into(),
            arguments: args,
        };
        let (vhost, back) = decode_binding_key(&binding_key("/", &b)).expect("decode");
        assert_eq!((vhost.as_str(), back), ("/", b));

        let m = Message::new(
            "ex".into(),
            "rk",
            &[0x10, 0, 2],
            [&b"body"[..]],
            MessageFlags {
                persistent: true,
                priority: 4,
                expires: None,
            },
        );
        let mut buf = Vec::new();
        encode_message(&m, &mut buf);
        let back = decode_message(&buf).expect("decode");
        assert_eq!(
            (
                back.routing_key(),
                back.raw_properties(),
                back.body(),
                back.priority,
                &*back.exchange
            ),
            ("rk", &[0x10u8, 0, 2][..], &b"body"[..], 4, "ex")
        );
        assert!(decode_message(&buf[..5]).is_err());
        assert_eq!(buf[0], V1, "a message without expiry keeps the V1 format");
        let mut m = m;
        m.expire_by(1_700_000_000_123);
        encode_message(&m, &mut buf);
        let back = decode_message(&buf).expect("decode");
        assert_eq!(back.expires(), Some(1_700_000_000_123));
        assert_eq!(back.body(), b"body");
        assert!(decode_exchange(&[9, 0]).is_err());
    }
}
