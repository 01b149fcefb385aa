//! A connection's watchdog: tracks requests in flight and socket activity on one
//! connection so the front end can close idle connections, bound the wait before the
//! first request, and drop a connection that stays silent after being asked to close.
//! It only observes and decides; the connection task acts on its [`Watch`].

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::HttpLimits;

/// Request and I/O activity on one connection, for its watchdog.
#[derive(Debug)]
pub(super) struct Activity {
    opened: Instant,
    state: Mutex<ActivityState>,
    /// When a byte was last read or written, in nanoseconds since `opened`.
    last_io: AtomicU64,
    /// Wakes the watchdog when its deadline moves earlier: at the first request, which
    /// switches the limit from `header_read_timeout` to `idle_timeout`. (Every other
    /// change only moves it later, and the watchdog looks again when it fires.)
    pub(super) first_request: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    /// When `in_flight` last dropped to zero (or the connection opened).
    idle_since: Instant,
    /// Whether any request has started: before the first, a client only gets
    /// `header_read_timeout` (this also covers the HTTP/2 preface detection, which
    /// hyper's own header timeout does not).
    served: bool,
}

/// One request in flight on a connection; dropping it marks the request done.
pub(super) struct InFlight(Arc<Activity>);

/// What a connection's watchdog does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Watch {
    /// Nothing yet; look again then.
    Until(Instant),
    /// Idle too long: ask the connection to close gracefully.
    Close,
    /// Asked to close, yet silent and still open: drop it.
    Drop,
}

/// The connection's socket, noting every byte read or written in its [`Activity`].
pub(super) struct Watched<T> {
    pub(super) io: T,
    pub(super) activity: Arc<Activity>,
}

impl Activity {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            opened: now,
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: now,
                served: false,
            }),
            last_io: AtomicU64::new(0),
            first_request: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a request started; the returned guard marks it done.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        if !state.served {
            state.served = true;
            self.first_request.notify_one();
        }
        InFlight(self.clone())
    }

    fn end(&self, now: Instant) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = now;
        }
    }

    fn touch(&self, now: Instant) {
        let nanos = u64::try_from((now - self.opened).as_nanos()).unwrap_or(u64::MAX);
        self.last_io.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last_io(&self) -> Instant {
        self.opened + Duration::from_nanos(self.last_io.load(Ordering::Relaxed))
    }

    /// The watchdog's decision at `now`. Before the first request a connection gets
    /// `header_read_timeout`, after it `idle_timeout` with no request in flight; once
    /// asked to close (`closing_since`), it gets `header_read_timeout` of silence.
    /// Requests in flight are never cut: while there are any, it only looks again later.
    pub(super) fn watch(
        &self,
        now: Instant,
        closing_since: Option<Instant>,
        limits: &HttpLimits,
    ) -> Watch {
        let state = self.state();
        if state.in_flight > 0 {
            let again = match closing_since {
                Some(_) => limits.header_read_timeout,
                None => limits.idle_timeout,
            };
            return Watch::Until(now + again);
        }
        let (deadline, action) = match closing_since {
            None if state.served => (state.idle_since + limits.idle_timeout, Watch::Close),
            None => (state.idle_since + limits.header_read_timeout, Watch::Close),
            Some(since) => {
                let quiet_since = since.max(state.idle_since).max(self.last_io());
                (quiet_since + limits.header_read_timeout, Watch::Drop)
            }
        };
        if now >= deadline {
            action
        } else {
            Watch::Until(deadline)
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end(Instant::now());
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch(Instant::now());
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch(Instant::now());
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch(Instant::now());
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            ..HttpLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_gets_the_header_timeout() {
        let limits = limits();
        let opened = Instant::now();
        let activity = Arc::new(Activity::new(opened));
        let deadline = opened + limits.header_read_timeout;
        // Bytes without a complete request do not extend it.
        activity.touch(opened + Duration::from_secs(9));
        assert_eq!(
            activity.watch(opened, None, &limits),
            Watch::Until(deadline)
        );
        assert_eq!(activity.watch(deadline, None, &limits), Watch::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_end_of_the_last_request() {
        let limits = limits();
        let activity = Arc::new(Activity::new(Instant::now()));

        let first = activity.begin();
        let second = activity.begin();
        let now = Instant::now();
        assert_eq!(
            activity.watch(now, None, &limits),
            Watch::Until(now + limits.idle_timeout),
            "requests in flight are never closed"
        );

        tokio::time::advance(Duration::from_secs(300)).await;
        drop(first);
        let now = Instant::now();
        assert!(matches!(
            activity.watch(now, None, &limits),
            Watch::Until(_)
        ));

        tokio::time::advance(Duration::from_secs(5)).await;
        drop(second);
        let done = Instant::now();
        let deadline = done + limits.idle_timeout;
        assert_eq!(activity.watch(done, None, &limits), Watch::Until(deadline));
        assert_eq!(activity.watch(deadline, None, &limits), Watch::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_connection_is_dropped_only_after_silence_with_nothing_in_flight() {
        let limits = limits();
        let hrt = limits.header_read_timeout;
        let activity = Arc::new(Activity::new(Instant::now()));
        drop(activity.begin());
        let since = Instant::now();
        assert_eq!(
            activity.watch(since, Some(since), &limits),
            Watch::Until(since + hrt)
        );

        // A response still being written keeps it alive.
        let written = since + Duration::from_secs(8);
        activity.touch(written);
        assert_eq!(
            activity.watch(since + hrt, Some(since), &limits),
            Watch::Until(written + hrt)
        );
        assert_eq!(
            activity.watch(written + hrt, Some(since), &limits),
            Watch::Drop
        );

        // So does a request in flight, however long it is silent.
        let in_flight = activity.begin();
        let late = written + hrt * 100;
        assert_eq!(
            activity.watch(late, Some(since), &limits),
            Watch::Until(late + hrt)
        );
        drop(in_flight);
    }
}
