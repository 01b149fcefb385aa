//! `sluice_worker._native`: the worker's FunctionRpc EventStream client in Rust.
//!
//! Python creates one `Connection` (a blocking TCP connect, then HTTP/2 and the EventStream
//! call) and drives it from its event loop: it watches `fileno()` and calls `pump()`, which
//! does the socket I/O that is ready and returns the messages that arrived, as `bytes`;
//! `send_many([bytes])` queues outbound messages for the next `pump()`. See `direct.rs`.
//!
//! Messages stay encoded both ways, except InvocationRequests for the functions Python
//! names with `enable_invocations(Datum, function_id)`: `pump()` returns those decoded, as
//! the runtime's `Datum`s, and `encode_invocation_response` builds the answer
//! (see `invocation.rs`).

mod direct;
mod invocation;
mod wire;
#[allow(clippy::all, missing_docs)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/azure_functions_rpc_messages.rs"));
}

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyConnectionError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use invocation::Invocation;
use wire::{Gather, frame_bytes};

/// The functions whose invocations Python takes as Datums, and the runtime's Datum class.
#[derive(Default)]
struct Native {
    datum: Option<Py<PyAny>>,
    functions: HashSet<String>,
}

impl Native {
    /// Each message as `bytes`, or as a tuple for an invocation of an enabled function
    /// (`Invocation::to_python`).
    fn to_python<'py>(
        &self,
        py: Python<'py>,
        messages: Vec<Bytes>,
    ) -> PyResult<Bound<'py, PyList>> {
        let datum = self.datum.as_ref().map(|d| d.bind(py));
        let list = PyList::empty(py);
        for raw in messages {
            let decoded = match datum {
                Some(datum) => match Invocation::decode(&raw) {
                    Some(invocation) if self.functions.contains(invocation.function_id()) => {
                        invocation.to_python(py, datum)?
                    }
                    _ => None,
                },
                None => None,
            };
            match decoded {
                Some(tuple) => list.append(tuple)?,
                None => list.append(PyBytes::new(py, &raw))?,
            }
        }
        Ok(list)
    }
}

/// The EventStream driven on the calling (event loop) thread; see `direct.rs`. Use it only
/// from the thread that created it.
#[pyclass(unsendable, module = "sluice_worker._native")]
struct Connection {
    direct: direct::Direct,
    native: Native,
}

#[pymethods]
impl Connection {
    #[new]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        first: &[u8],
        max_message_length: usize,
        timeout: f64,
    ) -> PyResult<Self> {
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            PyValueError::new_err("timeout must be a non-negative number of seconds")
        })?;
        let target = target(host, port);
        let first = Bytes::copy_from_slice(first);
        let direct = py
            .detach(move || direct::Direct::connect(&target, first, max_message_length, timeout))
            .map_err(|error| match error {
                direct::ConnectError::Timeout(_) => PyTimeoutError::new_err(error.to_string()),
                direct::ConnectError::Address(_) => PyValueError::new_err(error.to_string()),
                _ => PyConnectionError::new_err(error.to_string()),
            })?;
        Ok(Self {
            direct,
            native: Native::default(),
        })
    }

    /// Watch it for readability (and for writability while `pump` says so).
    fn fileno(&self) -> i32 {
        self.direct.fd()
    }

    /// Queues encoded StreamingMessages, in order, and writes what the socket takes now;
    /// True when the rest waits for the socket to turn writable (then call `pump`).
    /// Each message is encoded `bytes`, or a [`Frame`] (sent without a copy).
    fn send_many(&mut self, messages: Vec<Bound<'_, PyAny>>) -> PyResult<bool> {
        if self.direct.is_ended() {
            return Err(PyConnectionError::new_err(
                "the stream to the host has ended",
            ));
        }
        // Joined where small, so that the batch costs one write (see `wire::Gather`).
        let mut gather = Gather::default();
        for message in messages {
            match message.cast::<Frame>() {
                Ok(frame) => frame.get().0.iter().for_each(|p| gather.push(p.clone())),
                Err(_) => gather.push(frame_bytes(message.cast::<PyBytes>()?.as_bytes())),
            }
        }
        while let Some(chunk) = gather.pop() {
            self.direct
                .send_frame(chunk)
                .map_err(|e| PyConnectionError::new_err(e.to_string()))?;
        }
        // Nothing is read here (see `Direct::pump`): inbound data waits for `pump`.
        Ok(self.direct.pump(false).want_write)
    }

    /// `(messages, end, want_write)`: what arrived (`Native::to_python`), why the stream
    /// ended ("" clean, else the error; None while open), and whether to call again
    /// when the socket turns writable.
    fn pump<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyList>, Option<String>, bool)> {
        let pumped = self.direct.pump(true);
        let list = self.native.to_python(py, pumped.messages)?;
        Ok((
            list,
            pumped.end.map(Option::unwrap_or_default),
            pumped.want_write,
        ))
    }

    fn enable_invocations(&mut self, datum: Py<PyAny>, function_id: String) {
        self.native.datum = Some(datum);
        self.native.functions.insert(function_id);
    }

    fn disable_invocations(&mut self) {
        self.native = Native::default();
    }
}

/// An encoded StreamingMessage in its gRPC frame, in pieces sent in order, held in Rust
/// until `send_many` queues it: a large body is not copied into a Python `bytes` and back.
#[pyclass(frozen)]
struct Frame(Vec<Bytes>);

/// The StreamingMessage answering `request_id` with a successful InvocationResponse
/// carrying `return_datum` (a Datum or None) and `outputs` (`[(name, Datum)]`), as a
/// [`Frame`]. Raises NotImplementedError for a value the runtime's own encoder must handle.
#[pyfunction]
fn encode_invocation_response(
    request_id: String,
    invocation_id: String,
    return_datum: &Bound<'_, PyAny>,
    outputs: &Bound<'_, PyList>,
) -> PyResult<Frame> {
    invocation::encode_success(request_id, invocation_id, return_datum, outputs).map(Frame)
}

/// `host:port`, with an IPv6 address in brackets.
fn target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Connection>()?;
    m.add_function(wrap_pyfunction!(encode_invocation_response, m)?)?;
    Ok(())
}
