//! A raw AMQP client for wire-level tests: sends exact bytes, reads frames.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_testkit::DEADLINE;

pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub fn bytes(f: &AMQPFrame) -> Vec<u8> {
    gen_frame(f)(WriteContext::from(Vec::new()))
        .expect("gen")
        .write
}

pub fn method(ch: u16, m: AMQPClass) -> Vec<u8> {
    bytes(&AMQPFrame::Method(ch, m))
}

/// Pre-encoded publish frames of `n` messages of `size` bytes to `queue`.
pub fn publishes(queue: &str, n: usize, size: usize) -> Vec<u8> {
    let one = [
        method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: queue.into(),
                mandatory: false,
                immediate: false,
            })),
        ),
        bytes(&AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: size as u64,
                properties: Default::default(),
            },
        )),
        bytes(&AMQPFrame::Body(1, vec![b'x'; size])),
    ]
    .concat();
    one.repeat(n)
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("tcp"),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.expect("write");
    }

    /// Next frame, or None when the server closed the socket.
    pub async fn frame(&mut self) -> Option<AMQPFrame> {
        loop {
            match parse_frame(&self.buf[..]) {
                Ok((rest, f)) => {
                    let used = self.buf.len() - rest.len();
                    self.buf.drain(..used);
                    return Some(f);
                }
                Err(e) if e.is_incomplete() => {}
                Err(e) => panic!("server sent garbage: {e:?}"),
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
                .await
                .expect("server answers in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads raw bytes until the socket closes (bounded).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        let _ = tokio::time::timeout(DEADLINE, self.stream.read_to_end(&mut out)).await;
        out
    }

    /// Sends `m` on channel `ch`; the next frame the server sends.
    pub async fn call(&mut self, ch: u16, m: AMQPClass) -> Option<AMQPFrame> {
        self.send(&method(ch, m)).await;
        self.frame().await
    }

    /// Sends a connection method on channel 0; the connection method the
    /// server answers with (`None` for anything else).
    pub async fn connection_call(
        &mut self,
        m: connection::AMQPMethod,
    ) -> Option<connection::AMQPMethod> {
        match self.call(0, AMQPClass::Connection(m)).await {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(answer))) => Some(answer),
            _ => None,
        }
    }

    /// The protocol header, then start-ok as guest: what the server answers
    /// to each (start, then tune).
    pub async fn login(&mut self) -> (Option<AMQPFrame>, Option<AMQPFrame>) {
        self.send(b"AMQP\x00\x00\x09\x01").await;
        let start = self.frame().await;
        let tune = self
            .call(
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: Default::default(),
                    mechanism: "PLAIN".into(),
                    response: "\0guest\0guest".into(),
                    locale: "en_US".into(),
                })),
            )
            .await;
        (start, tune)
    }

    /// Handshake as guest, heartbeat as given; opens channel 1.
    pub async fn open(addr: std::net::SocketAddr, heartbeat: u16) -> Self {
        let mut r = Self::connect(addr).await;
        let (start, tune) = r.login().await;
        assert!(matches!(
            start,
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Start(_))
            ))
        ));
        let tune = match tune {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t)))) => t,
            other => panic!("expected tune, got {other:?}"),
        };
        r.send(&method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat,
            })),
        ))
        .await;
        let open = connection::Open {
            virtual_host: "/".into(),
        };
        let open_ok = r.connection_call(connection::AMQPMethod::Open(open)).await;
        assert!(matches!(open_ok, Some(connection::AMQPMethod::OpenOk(_))));
        let channel_open_ok = r
            .call(
                1,
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            )
            .await;
        assert!(matches!(
            channel_open_ok,
            Some(AMQPFrame::Method(
                1,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
            ))
        ));
        r
    }

    /// Waits for `connection.close` (skipping other frames) and returns its code.
    pub async fn expect_connection_close(&mut self) -> (u16, String) {
        loop {
            match self.frame().await {
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => {
                    self.send(&method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    ))
                    .await;
                    return (c.reply_code, c.reply_text.to_string());
                }
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        }
    }

    /// Waits for `channel.close` on `ch` and returns its code.
    pub async fn expect_channel_close(&mut self, ch: u16) -> (u16, String) {
        loop {
            match self.frame().await {
                Some(AMQPFrame::Method(
                    c,
                    AMQPClass::Channel(channel::AMQPMethod::Close(close)),
                )) if c == ch => {
                    self.send(&method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    ))
                    .await;
                    return (close.reply_code, close.reply_text.to_string());
                }
                Some(_) => continue,
                None => panic!("socket closed without channel.close"),
            }
        }
    }
}
