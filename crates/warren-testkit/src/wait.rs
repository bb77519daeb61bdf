//! Bounded waits for named conditions: poll, never sleep in place of a
//! condition, fail with the condition's name at the deadline.
//!
//! A condition is `bool` (holds or not) or `Option<T>` (the value once it
//! holds, which the wait returns). [`wait_for`] polls a plain closure,
//! [`wait_for_async`] one that gives a future, [`wait_for_blocking`] a plain
//! closure on a thread with no runtime.
//!
//! Every test of the workspace waits this way (warren-store's and
//! warren-cluster's integration tests through a dev-dependency on the kit).

use std::future::Future;
use std::time::{Duration, Instant};

/// Bound on every wait of the tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// First pause between polls; it doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(5);

/// Longest pause between polls.
const MAX_POLL: Duration = Duration::from_millis(50);

/// What a polled condition gives: `true` or `Some(value)` once it holds.
pub trait Ready {
    /// What the wait returns.
    type Value;
    /// `Some` once the condition holds.
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Pauses between polls, and the deadline of one wait.
struct Polls {
    what: String,
    limit: Duration,
    end: Instant,
    pause: Duration,
}

impl Polls {
    fn new(what: &str) -> Self {
        Self::within(what, DEADLINE)
    }

    fn within(what: &str, limit: Duration) -> Self {
        Self {
            what: what.to_owned(),
            limit,
            end: Instant::now() + limit,
            pause: FIRST_POLL,
        }
    }

    /// The next pause; panics naming the condition past the deadline.
    fn next(&mut self) -> Duration {
        assert!(
            Instant::now() < self.end,
            "timed out after {:?} waiting for: {}",
            self.limit,
            self.what
        );
        let pause = self.pause;
        self.pause = (self.pause * 2).min(MAX_POLL);
        pause
    }
}

/// Polls `f` until it holds; panics naming `what` after [`DEADLINE`].
pub async fn wait_for<R: Ready>(what: &str, mut f: impl FnMut() -> R) -> R::Value {
    let mut polls = Polls::new(what);
    loop {
        if let Some(v) = f().ready() {
            return v;
        }
        tokio::time::sleep(polls.next()).await;
    }
}

/// Polls the async `f` until it holds; panics naming `what` after
/// [`DEADLINE`].
pub async fn wait_for_async<R, F, Fut>(what: &str, f: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    wait_for_async_within(what, DEADLINE, f).await
}

/// [`wait_for_async`] with a bound of its own, for a condition whose time
/// is what a test measures (it reports it; the bound only ends a hang).
pub async fn wait_for_async_within<R, F, Fut>(what: &str, limit: Duration, mut f: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let mut polls = Polls::within(what, limit);
    loop {
        if let Some(v) = f().await.ready() {
            return v;
        }
        tokio::time::sleep(polls.next()).await;
    }
}

/// [`wait_for`] on a thread with no async runtime.
pub fn wait_for_blocking<R: Ready>(what: &str, mut f: impl FnMut() -> R) -> R::Value {
    let mut polls = Polls::new(what);
    loop {
        if let Some(v) = f().ready() {
            return v;
        }
        std::thread::sleep(polls.next());
    }
}
