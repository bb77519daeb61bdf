//! Starting and stopping a node: listener, connection tasks, graceful shutdown.
//!
//! Shutdown follows DESIGN.md: stop accepting, close every connection with
//! `connection.close` 320, wait (bounded) for the tasks, then flush storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::Config;

/// How long connections get to close before storage is flushed anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running node.
#[derive(Debug)]
pub struct Server {
    /// Where AMQP clients connect (the real port when 0 was asked).
    pub amqp_addr: SocketAddr,
    /// The node's shared state.
    pub broker: Arc<Broker>,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Server {
    /// Opens storage, recovers, binds the listener and starts accepting.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let broker = Broker::open(config)?;
        let listener = TcpListener::bind(broker.config.amqp_listen).await?;
        let amqp_addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(
            listener,
            broker.clone(),
            token.clone(),
            tracker.clone(),
        ));
        tracing::info!(%amqp_addr, data_dir = %broker.config.data_dir.display(), "AMQP listening");
        // Readiness for tools and tests that asked for port 0.
        let _ = std::fs::write(
            broker.config.data_dir.join("amqp.addr"),
            amqp_addr.to_string(),
        );
        Ok(Self {
            amqp_addr,
            broker,
            token,
            tracker,
        })
    }

    /// Graceful shutdown.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not close in time");
        }
        self.broker.stop().await;
        tracing::info!("stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = token.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                tracker.spawn(crate::connection::serve(
                    stream,
                    peer,
                    broker.clone(),
                    token.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(cause = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
