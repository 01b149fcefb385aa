//! Inbound messages waiting for Python, and the wake-up signal for its event loop.
//!
//! The loop watches the read end of a socket pair (`loop.add_reader`). At most one byte is
//! ever pending: the first message after a drain writes it, later ones only queue, so a busy
//! worker takes a whole batch per wake-up and pays no syscall per message.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

/// Why the stream ended: `None` for a clean end by the host.
pub type End = Option<String>;

pub struct Inbox<T> {
    state: Mutex<State<T>>,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
}

struct State<T> {
    messages: Vec<T>,
    ended: Option<End>,
    signalled: bool,
}

impl<T> Inbox<T> {
    pub fn new() -> io::Result<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Self {
            state: Mutex::new(State {
                messages: Vec::new(),
                ended: None,
                signalled: false,
            }),
            wake_tx,
            wake_rx,
        })
    }

    /// The descriptor that turns readable when there is something to drain.
    pub fn fd(&self) -> RawFd {
        self.wake_rx.as_raw_fd()
    }

    pub fn push(&self, message: T) {
        let mut state = self.lock();
        state.messages.push(message);
        self.signal(&mut state);
    }

    pub fn end(&self, end: End) {
        let mut state = self.lock();
        state.ended.get_or_insert(end);
        self.signal(&mut state);
    }

    /// Everything queued so far, and the end of the stream once it has ended and nothing
    /// is left to read. Clears the wake-up signal.
    pub fn drain(&self) -> (Vec<T>, Option<End>) {
        let mut state = self.lock();
        if state.signalled {
            let mut byte = [0u8; 8];
            // Nonblocking: WouldBlock only if the byte was already consumed, which is fine.
            let _ = (&self.wake_rx).read(&mut byte);
            state.signalled = false;
        }
        let messages = std::mem::take(&mut state.messages);
        let ended = if messages.is_empty() {
            state.ended.clone()
        } else {
            if state.ended.is_some() {
                // The end is still to be reported: wake the loop once more after this batch.
                self.signal(&mut state);
            }
            None
        };
        (messages, ended)
    }

    pub fn is_ended(&self) -> bool {
        self.lock().ended.is_some()
    }

    fn signal(&self, state: &mut State<T>) {
        if !state.signalled {
            state.signalled = true;
            // One byte in an empty socket buffer cannot block; a failure would mean the
            // process is tearing down, when nobody is left to wake.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Bytes waiting on the wake-up socket (consumed, then the flag says what drain() sees).
    fn pending(inbox: &Inbox<Bytes>) -> usize {
        let mut buf = [0u8; 16];
        let n = (&inbox.wake_rx).read(&mut buf).unwrap_or(0);
        if n > 0 {
            (&inbox.wake_tx).write_all(&buf[..n]).unwrap();
        }
        n
    }

    #[test]
    fn one_signal_per_batch_and_end_after_last_message() {
        let inbox = Inbox::new().unwrap();
        assert_eq!(pending(&inbox), 0);
        inbox.push(Bytes::from_static(b"a"));
        inbox.push(Bytes::from_static(b"b"));
        assert_eq!(pending(&inbox), 1);
        inbox.end(Some("reset".into()));
        let (batch, ended) = inbox.drain();
        assert_eq!(
            batch,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        assert_eq!(ended, None);
        assert_eq!(pending(&inbox), 1, "the end still has to wake the loop");
        let (batch, ended) = inbox.drain();
        assert!(batch.is_empty());
        assert_eq!(ended, Some(Some("reset".into())));
    }

    #[test]
    fn drain_clears_the_signal() {
        let inbox = Inbox::new().unwrap();
        inbox.push(Bytes::from_static(b"a"));
        let (batch, _) = inbox.drain();
        assert_eq!(batch.len(), 1);
        assert_eq!(pending(&inbox), 0);
        inbox.push(Bytes::from_static(b"b"));
        assert_eq!(pending(&inbox), 1);
    }
}
