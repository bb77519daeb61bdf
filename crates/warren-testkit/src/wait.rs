//! Bounded waits for named conditions: poll, never sleep in place of a
//! condition, fail with the condition's name at the deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// Bound on every wait of the kit.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Pause between polls.
const POLL: Duration = Duration::from_millis(50);

/// Polls `f` until it holds; panics naming `what` after [`DEADLINE`].
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the async `f` until it gives a value; panics naming `what` after
/// [`DEADLINE`].
pub async fn wait_for_async<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(POLL).await;
    }
}
