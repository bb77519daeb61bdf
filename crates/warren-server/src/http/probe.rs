//! `warren probe health|ready`: one GET of a node's `/health` or `/ready`,
//! for the image's HEALTHCHECK (the image carries no HTTP client) and for
//! scripts. Speaks HTTP through hyper's client connection.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest reply body read (the probes answer a few dozen bytes).
const MAX_BODY: usize = 64 << 10;

/// The address `warren probe` asks when none is given: the node's own
/// HTTP listener (WARREN_HTTP_LISTEN, its wildcard host made loopback),
/// or 127.0.0.1:15672.
pub fn default_addr(http_listen: Option<&str>) -> String {
    let Some(listen) = http_listen.filter(|l| !l.trim().is_empty()) else {
        return "127.0.0.1:15672".to_owned();
    };
    match listen.trim().rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.trim().to_owned(),
    }
}

/// GETs `path` from `addr`: the status code and the body.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    tokio::time::timeout(timeout, get_unbounded(addr, path))
        .await
        .map_err(|_| format!("no answer from {addr} within {timeout:?}"))?
}

async fn get_unbounded(addr: &str, path: &str) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let status = res.status().as_u16();
    let body = Limited::new(res.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("{addr}{path}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::default_addr;

    #[test]
    fn the_default_address_is_the_nodes_own_listener_on_loopback() {
        assert_eq!(default_addr(None), "127.0.0.1:15672");
        assert_eq!(default_addr(Some("0.0.0.0:15999")), "127.0.0.1:15999");
        assert_eq!(default_addr(Some("[::]:15672")), "[::1]:15672");
        assert_eq!(default_addr(Some("10.1.2.3:80")), "10.1.2.3:80");
    }
}
