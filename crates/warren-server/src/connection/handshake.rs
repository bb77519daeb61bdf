//! Connection handshake: protocol header, start/start-ok (SASL), tune/tune-ok,
//! open/open-ok.
//!
//! RabbitMQ's rules: a wrong protocol header gets the header we speak and a
//! closed socket; SASL PLAIN and AMQPLAIN against the users group 0 keeps
//! (see `broker::access`); `guest`
//! only from a loopback address; `frame_max` and `channel_max` above ours, or a
//! `frame_max` below the protocol minimum, are refused with 530.

use std::net::SocketAddr;

use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use warren_amqp::methods::{CONNECTION_OPEN, CONNECTION_START_OK, CONNECTION_TUNE_OK, MethodId};
use warren_amqp::{Frame, FrameDecoder, PROTOCOL_HEADER, encode};
use warren_core::{AmqpError, ReplyCode};

use crate::broker::Broker;
use crate::channel::ClientCaps;

/// The outcome of a successful handshake.
#[derive(Debug)]
pub struct Negotiated {
    /// Authenticated user.
    pub user: String,
    /// The vhost opened.
    pub vhost: String,
    /// Largest frame both sides accept.
    pub frame_max: u32,
    /// Most channels.
    pub channel_max: u16,
    /// Heartbeat seconds (0: off).
    pub heartbeat: u16,
    /// Client capabilities.
    pub caps: ClientCaps,
}

/// Why the handshake ended early (the reply, if any, is already written).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not AMQP 0-9-1.
    #[error("bad protocol header")]
    BadHeader,
    /// Refused with a `connection.close`.
    #[error("refused: {0}")]
    Refused(String),
    /// Socket closed or failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame that could not be parsed.
    #[error("frame: {0}")]
    Frame(#[from] warren_amqp::FrameError),
}

struct Io<'a> {
    stream: &'a mut TcpStream,
    rbuf: &'a mut BytesMut,
    decoder: &'a mut FrameDecoder,
    out: &'a mut Vec<u8>,
}

impl Io<'_> {
    /// Writes a connection method and flushes.
    async fn send(&mut self, m: connection::AMQPMethod) -> Result<(), HandshakeError> {
        encode::method(self.out, 0, AMQPClass::Connection(m))
            .map_err(|e| HandshakeError::Refused(e.to_string()))?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), HandshakeError> {
        self.stream.write_all(self.out).await?;
        self.out.clear();
        Ok(())
    }

    async fn next(&mut self) -> Result<Frame, HandshakeError> {
        loop {
            if let Some(f) = self.decoder.decode(self.rbuf)? {
                if matches!(f, Frame::Heartbeat) {
                    continue;
                }
                return Ok(f);
            }
            if self.stream.read_buf(self.rbuf).await? == 0 {
                return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Sends `connection.close` with `e` (answering `method`) and ends the
    /// handshake.
    async fn refuse(&mut self, e: AmqpError, method: MethodId) -> HandshakeError {
        let text = e.reply_text();
        let close = connection::Close {
            reply_code: e.code.code(),
            reply_text: text.as_str().into(),
            class_id: method.0,
            method_id: method.1,
        };
        if encode::method(
            self.out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(close)),
        )
        .is_ok()
        {
            let _ = self.flush().await;
        }
        HandshakeError::Refused(text)
    }

    async fn expect_method(
        &mut self,
        what: &str,
    ) -> Result<connection::AMQPMethod, HandshakeError> {
        match self.next().await? {
            Frame::Method(0, AMQPClass::Connection(m)) => Ok(m),
            _ => Err(self.refuse(command_invalid(what), (0, 0)).await),
        }
    }
}

fn command_invalid(expected: &str) -> AmqpError {
    AmqpError::new(ReplyCode::CommandInvalid, format!("expected {expected}"))
}

fn not_allowed(text: String) -> AmqpError {
    AmqpError::new(ReplyCode::NotAllowed, text)
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut p = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(v.into());
    p.insert("product".into(), s("Warren"));
    p.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    p.insert("platform".into(), s("Rust"));
    p.insert("copyright".into(), s("The Warren authors"));
    p.insert(
        "information".into(),
        s("Licensed under the Apache License 2.0"),
    );
    p.insert("cluster_name".into(), s("warren"));
    p.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    p
}

fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = std::str::from_utf8(parts.next()?).ok()?;
            let pass = std::str::from_utf8(parts.next()?).ok()?;
            Some((user.to_owned(), pass.to_owned()))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, table) = parse_field_table(&framed[..]).ok()?;
            let get = |k: &str| match table.inner().get(k)? {
                AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
                AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                _ => None,
            };
            Some((get("LOGIN")?, get("PASSWORD")?))
        }
        _ => None,
    }
}

/// RabbitMQ's `loopback_users` default: `guest` logs in only from a
/// loopback address.
fn loopback_rule(user: &str, peer: SocketAddr) -> Result<(), &'static str> {
    if user == "guest" && !peer.ip().is_loopback() {
        return Err("user 'guest' can only connect via localhost");
    }
    Ok(())
}

fn capabilities(props: &FieldTable) -> ClientCaps {
    let Some(AMQPValue::FieldTable(c)) = props.inner().get("capabilities") else {
        return ClientCaps::default();
    };
    let on = |k: &str| matches!(c.inner().get(k), Some(AMQPValue::Boolean(true)));
    ClientCaps {
        blocked: on("connection.blocked"),
        consumer_cancel_notify: on("consumer_cancel_notify"),
    }
}

/// Runs the handshake on a fresh connection.
pub async fn run(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    out: &mut Vec<u8>,
    decoder: &mut FrameDecoder,
    broker: &Broker,
    peer: SocketAddr,
) -> Result<Negotiated, HandshakeError> {
    let config = broker.config();
    while rbuf.len() < PROTOCOL_HEADER.len() {
        if stream.read_buf(rbuf).await? == 0 {
            return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    if &rbuf[..PROTOCOL_HEADER.len()] != PROTOCOL_HEADER {
        stream.write_all(PROTOCOL_HEADER).await?;
        return Err(HandshakeError::BadHeader);
    }
    let _ = rbuf.split_to(PROTOCOL_HEADER.len());
    let mut io = Io {
        stream,
        rbuf,
        decoder,
        out,
    };

    let start = connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: "PLAIN AMQPLAIN".into(),
        locales: "en_US".into(),
    };
    io.send(connection::AMQPMethod::Start(start)).await?;

    let connection::AMQPMethod::StartOk(ok) = io.expect_method("connection.start-ok").await? else {
        return Err(io
            .refuse(command_invalid("connection.start-ok"), CONNECTION_START_OK)
            .await);
    };
    let mechanism = ok.mechanism.as_str();
    if mechanism != "PLAIN" && mechanism != "AMQPLAIN" {
        let e = AmqpError::new(
            ReplyCode::CommandInvalid,
            format!("unknown authentication mechanism '{mechanism}'"),
        );
        return Err(io.refuse(e, CONNECTION_START_OK).await);
    }
    let refused = AmqpError::access_refused(format!(
        "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
    ));
    let Some((user, pass)) = credentials(mechanism, ok.response.as_bytes()) else {
        return Err(io.refuse(refused, CONNECTION_START_OK).await);
    };
    if let Err(why) = broker
        .login(&user, &pass)
        .and_then(|()| loopback_rule(&user, peer))
    {
        tracing::warn!(%peer, user, why, "login refused");
        return Err(io.refuse(refused, CONNECTION_START_OK).await);
    }
    let caps = capabilities(&ok.client_properties);

    let tune = connection::Tune {
        channel_max: config.channel_max,
        frame_max: config.frame_max,
        heartbeat: config.heartbeat,
    };
    io.send(connection::AMQPMethod::Tune(tune)).await?;

    let connection::AMQPMethod::TuneOk(t) = io.expect_method("connection.tune-ok").await? else {
        return Err(io
            .refuse(command_invalid("connection.tune-ok"), CONNECTION_TUNE_OK)
            .await);
    };
    let frame_max = if t.frame_max == 0 {
        config.frame_max
    } else {
        t.frame_max
    };
    if frame_max < warren_amqp::FRAME_MIN_SIZE {
        let text = format!(
            "frame_max={frame_max} < {} min",
            warren_amqp::FRAME_MIN_SIZE
        );
        return Err(io.refuse(not_allowed(text), CONNECTION_TUNE_OK).await);
    }
    if frame_max > config.frame_max {
        let text = format!("frame_max={frame_max} > {} max", config.frame_max);
        return Err(io.refuse(not_allowed(text), CONNECTION_TUNE_OK).await);
    }
    let channel_max = if t.channel_max == 0 {
        config.channel_max
    } else {
        t.channel_max
    };
    if channel_max > config.channel_max {
        let text = format!("channel_max={channel_max} > {} max", config.channel_max);
        return Err(io.refuse(not_allowed(text), CONNECTION_TUNE_OK).await);
    }
    io.decoder.set_frame_max(frame_max);

    let connection::AMQPMethod::Open(open) = io.expect_method("connection.open").await? else {
        return Err(io
            .refuse(command_invalid("connection.open"), CONNECTION_OPEN)
            .await);
    };
    if let Err(e) = broker.open_vhost(open.virtual_host.as_str(), &user) {
        tracing::warn!(%peer, user, vhost = open.virtual_host.as_str(), "vhost access refused");
        return Err(io.refuse(e, CONNECTION_OPEN).await);
    }
    io.send(connection::AMQPMethod::OpenOk(connection::OpenOk {}))
        .await?;
    Ok(Negotiated {
        user,
        vhost: open.virtual_host.as_str().to_owned(),
        frame_max,
        channel_max,
        heartbeat: t.heartbeat,
        caps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_only_from_loopback() {
        let local: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let local6: SocketAddr = "[::1]:1".parse().expect("addr");
        let remote: SocketAddr = "10.1.2.3:1".parse().expect("addr");
        assert_eq!(loopback_rule("guest", local), Ok(()));
        assert_eq!(loopback_rule("guest", local6), Ok(()));
        assert!(loopback_rule("guest", remote).is_err());
        assert_eq!(loopback_rule("app", remote), Ok(()));
    }

    #[test]
    fn parses_sasl_responses() {
        assert_eq!(
            credentials("PLAIN", b"\0guest\0pw"),
            Some(("guest".into(), "pw".into()))
        );
        assert_eq!(credentials("PLAIN", b"guest"), None);
        let amqplain = b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest";
        assert_eq!(
            credentials("AMQPLAIN", amqplain),
            Some(("guest".into(), "guest".into()))
        );
        assert_eq!(credentials("AMQPLAIN", b"\xff\xff"), None);
        assert_eq!(credentials("EXTERNAL", b""), None);
    }
}
