//! `sluice_worker._native`: the worker's FunctionRpc EventStream client in Rust.
//!
//! Python calls `connect(...)` once and gets a `Stream`. Inbound messages are queued by a
//! tokio thread and announced through `Stream.fileno()` (watch it with `loop.add_reader`);
//! `Stream.drain()` returns every queued message as `bytes`. `Stream.send(bytes)` queues an
//! outbound message from any thread and never blocks. Messages stay encoded both ways.

mod client;
mod codec;
mod inbox;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyConnectionError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::sync::mpsc::UnboundedSender;

use client::{ConnectError, Settings};
use inbox::Inbox;

#[pyclass(frozen, module = "sluice_worker._native")]
struct Stream {
    inbox: Arc<Inbox>,
    outbox: UnboundedSender<Bytes>,
}

#[pymethods]
impl Stream {
    /// Readable when `drain()` has something to return.
    fn fileno(&self) -> i32 {
        self.inbox.fd()
    }

    /// Queues one encoded StreamingMessage. Raises ConnectionError once the stream is gone.
    fn send(&self, message: &[u8]) -> PyResult<()> {
        if self.inbox.is_ended() || self.outbox.send(Bytes::copy_from_slice(message)).is_err() {
            return Err(PyConnectionError::new_err(
                "the stream to the host has ended",
            ));
        }
        Ok(())
    }

    /// Queues several encoded StreamingMessages in order, waking the stream thread once.
    fn send_many(&self, messages: Vec<Vec<u8>>) -> PyResult<()> {
        let ended = || PyConnectionError::new_err("the stream to the host has ended");
        if self.inbox.is_ended() {
            return Err(ended());
        }
        for message in messages {
            self.outbox
                .send(Bytes::from(message))
                .map_err(|_| ended())?;
        }
        Ok(())
    }

    /// `(messages, end)`: the queued messages, oldest first, and — once the stream has ended
    /// and every message was returned — why: "" for a clean end, else the error. `end` is
    /// None while the stream is open.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, Option<String>)> {
        let (messages, end) = self.inbox.drain();
        let list = PyList::new(py, messages.iter().map(|m| PyBytes::new(py, m)))?;
        Ok((list, end.map(Option::unwrap_or_default)))
    }
}

/// Opens the EventStream to `host:port` with `first` (the encoded StartStream) as its first
/// message. Blocks (without the GIL) until the call is up, at most `timeout` seconds.
#[pyfunction]
fn connect(
    py: Python<'_>,
    host: &str,
    port: u16,
    first: &[u8],
    max_message_length: usize,
    timeout: f64,
) -> PyResult<Stream> {
    let timeout = Duration::try_from_secs_f64(timeout)
        .map_err(|_| PyValueError::new_err("timeout must be a non-negative number of seconds"))?;
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let settings = Settings {
        target,
        max_message_length,
        timeout,
    };
    let first = Bytes::copy_from_slice(first);
    let inbox = Arc::new(Inbox::new()?);
    let shared = inbox.clone();
    let outbox = py
        .detach(move || client::connect(settings, first, shared))
        .map_err(|error| match error {
            ConnectError::Timeout(_) => PyTimeoutError::new_err(error.to_string()),
            ConnectError::Address(_) => PyValueError::new_err(error.to_string()),
            _ => PyConnectionError::new_err(error.to_string()),
        })?;
    Ok(Stream { inbox, outbox })
}

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Stream>()?;
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    Ok(())
}
