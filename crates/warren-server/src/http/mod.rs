//! The node's HTTP listener (`--http-listen`, 15672 as RabbitMQ's
//! management port): `/health` and `/ready` for container probes today; the
//! management API and `/metrics` will live here too.
//!
//! - `GET /health`: 200 while the process serves requests at all (a
//!   liveness probe restarts a node only when this stops answering).
//! - `GET /ready`: 200 once the node has joined the cluster, caught up with
//!   its metadata and opened its AMQP listener, and while it knows a
//!   metadata leader; 503 otherwise, with the reason as JSON. A readiness
//!   probe takes a node out of the client Service while it is not ready.
//!
//! The listener opens first thing at start, before storage and the cluster,
//! so that a node waiting for its peers is alive (and says why it is not
//! ready) rather than unreachable.

pub mod probe;
mod readiness;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use readiness::{Readiness, Stage};

/// The routes, on a node's readiness.
pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(readiness)
}

/// Serves until the token is cancelled (requests in progress finish).
pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>, token: CancellationToken) {
    let r = axum::serve(listener, router(readiness))
        .with_graceful_shutdown(token.cancelled_owned())
        .await;
    if let Err(e) = r {
        tracing::error!(cause = %e, "HTTP listener failed");
    }
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> (StatusCode, Json<Value>) {
    match readiness.check() {
        Ok(r) => (
            StatusCode::OK,
            Json(json!({ "ready": true, "node": r.node, "leader": r.leader })),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        ),
    }
}
