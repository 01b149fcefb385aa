//! `sluice_worker._native`: the worker's FunctionRpc EventStream client in Rust.
//!
//! Python calls `connect(...)` once and gets a `Stream`. Inbound messages are queued by a
//! tokio thread and announced through `Stream.fileno()` (watch it with `loop.add_reader`);
//! `Stream.drain()` returns every queued message as `bytes`. `Stream.send(bytes)` queues an
//! outbound message from any thread and never blocks.
//!
//! Messages stay encoded both ways, except InvocationRequests for the functions Python
//! names with `Stream.enable_invocations(Datum, function_id)`: `drain()` returns those
//! decoded, as the runtime's `Datum`s, and `encode_invocation_response` builds the answer
//! (see `invocation.rs`).

mod client;
mod codec;
mod inbox;
mod invocation;
#[allow(clippy::all, missing_docs)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/azure_functions_rpc_messages.rs"));
}

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyConnectionError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::sync::mpsc::UnboundedSender;

use client::{ConnectError, Settings};
use inbox::Inbox;
use invocation::Invocation;

/// One inbound message: its bytes, and the invocation in it when it is one.
pub struct Inbound {
    raw: Bytes,
    invocation: Option<Invocation>,
}

impl Inbound {
    /// Decoded here, on the stream thread, so the Python thread does not.
    fn new(raw: Bytes) -> Self {
        let invocation = Invocation::decode(&raw);
        Self { raw, invocation }
    }
}

/// The functions whose invocations Python takes as Datums, and the runtime's Datum class.
#[derive(Default)]
struct Native {
    datum: Option<Py<PyAny>>,
    functions: HashSet<String>,
}

#[pyclass(frozen, module = "sluice_worker._native")]
struct Stream {
    inbox: Arc<Inbox<Inbound>>,
    outbox: UnboundedSender<Bytes>,
    native: Mutex<Native>,
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
    /// None while the stream is open. A message is `bytes`, or a tuple for an invocation of
    /// an enabled function (`invocation.rs`: `Invocation::to_python`).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, Option<String>)> {
        let (messages, end) = self.inbox.drain();
        let native = self.native();
        let datum = native.datum.as_ref().map(|d| d.bind(py));
        let list = PyList::empty(py);
        for message in messages {
            let decoded = match (&message.invocation, datum) {
                (Some(invocation), Some(datum))
                    if native.functions.contains(invocation.function_id()) =>
                {
                    invocation.to_python(py, datum)?
                }
                _ => None,
            };
            match decoded {
                Some(tuple) => list.append(tuple)?,
                None => list.append(PyBytes::new(py, &message.raw))?,
            }
        }
        Ok((list, end.map(Option::unwrap_or_default)))
    }

    /// From now on `drain()` returns invocations of `function_id` decoded, as `datum`s
    /// (the runtime's Datum class).
    fn enable_invocations(&self, datum: Py<PyAny>, function_id: String) {
        let mut native = self.native();
        native.datum = Some(datum);
        native.functions.insert(function_id);
    }

    /// Every invocation arrives as bytes again (the app is being replaced).
    fn disable_invocations(&self) {
        *self.native() = Native::default();
    }
}

impl Stream {
    fn native(&self) -> std::sync::MutexGuard<'_, Native> {
        // Only the Python thread takes it; a panic leaves plain data behind.
        self.native.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The encoded StreamingMessage answering `request_id` with a successful InvocationResponse
/// carrying `return_datum` (a Datum or None) and `outputs` (`[(name, Datum)]`). Raises
/// NotImplementedError for a value the runtime's own encoder must handle.
#[pyfunction]
fn encode_invocation_response<'py>(
    py: Python<'py>,
    request_id: String,
    invocation_id: String,
    return_datum: &Bound<'py, PyAny>,
    outputs: &Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyBytes>> {
    let encoded = invocation::encode_success(request_id, invocation_id, return_datum, outputs)?;
    Ok(PyBytes::new(py, &encoded))
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
    Ok(Stream {
        inbox,
        outbox,
        native: Mutex::default(),
    })
}

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Stream>()?;
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(encode_invocation_response, m)?)?;
    Ok(())
}
