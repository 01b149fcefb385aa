//! InvocationRequests decoded in Rust and handed to Python as the runtime's own `Datum`s,
//! and InvocationResponses encoded here from the `Datum`s it returns: the worker's Python
//! thread then never parses or builds a protobuf message on the invocation path.
//!
//! The conversions mirror the runtime's `Datum.from_typed_data` and `datum_as_proto`. Where
//! they cannot be mirrored exactly (a TypedData kind the runtime rejects, a response with
//! cookies, a value of an unexpected Python type), nothing is converted here: the request
//! goes to Python as bytes and the response is raised back as NotImplementedError, so the
//! runtime's own protobuf code decides, errors included.

use bytes::Bytes;
use prost::Message;
use pyo3::exceptions::PyNotImplementedError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::proto::streaming_message::Content;
use crate::proto::typed_data::Data;
use crate::proto::{
    InvocationRequest, InvocationResponse, ParameterBinding, RpcHttp, StatusResult,
    StreamingMessage, TypedData, parameter_binding::RpcData, status_result::Status,
};
use crate::wire::{self, Spliced};

/// An inbound InvocationRequest, decoded with prost.
pub struct Invocation {
    request_id: String,
    request: InvocationRequest,
}

impl Invocation {
    /// The invocation in `message`, if it is one this path can carry (no retry exception:
    /// the runtime's context reads that from the protobuf).
    pub fn decode(message: &Bytes) -> Option<Self> {
        let message = StreamingMessage::decode(message.clone()).ok()?;
        match message.content? {
            Content::InvocationRequest(request)
                if request
                    .retry_context
                    .as_ref()
                    .is_none_or(|r| r.exception.is_none()) =>
            {
                Some(Self {
                    request_id: message.request_id,
                    request,
                })
            }
            _ => None,
        }
    }

    pub fn function_id(&self) -> &str {
        &self.request.function_id
    }

    /// `(request_id, invocation_id, function_id, inputs, trigger_metadata, trace_parent,
    /// trace_state, trace_attributes, retry_count, max_retry_count)` with `inputs` a list of
    /// `(name, Datum)`, or None when a value has a kind the runtime would not decode.
    pub fn to_python<'py>(
        &self,
        py: Python<'py>,
        datum: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let request = &self.request;
        let inputs = PyList::empty(py);
        for binding in &request.input_data {
            let Some(value) = from_typed_data(py, datum, binding_data(binding))? else {
                return Ok(None);
            };
            inputs.append((binding.name.as_str(), value))?;
        }
        let metadata = PyDict::new(py);
        for (key, value) in &request.trigger_metadata {
            let Some(value) = from_typed_data(py, datum, Some(value))? else {
                return Ok(None);
            };
            metadata.set_item(key, value)?;
        }
        let trace = request.trace_context.as_ref();
        let attributes = PyDict::new(py);
        for (key, value) in trace.iter().flat_map(|t| &t.attributes) {
            attributes.set_item(key, value)?;
        }
        let retry = request.retry_context.as_ref();
        let items = (
            self.request_id.as_str(),
            request.invocation_id.as_str(),
            request.function_id.as_str(),
            inputs,
            metadata,
            trace.map_or("", |t| t.trace_parent.as_str()),
            trace.map_or("", |t| t.trace_state.as_str()),
            attributes,
            retry.map_or(0, |r| r.retry_count),
            retry.map_or(0, |r| r.max_retry_count),
        );
        Ok(Some(items.into_pyobject(py)?))
    }
}

fn binding_data(binding: &ParameterBinding) -> Option<&TypedData> {
    match &binding.rpc_data {
        Some(RpcData::Data(data)) => Some(data),
        None => None,
    }
}

/// `Datum.from_typed_data`: Some(None) for an empty TypedData (the runtime returns None),
/// None for a kind it does not decode.
fn from_typed_data<'py>(
    py: Python<'py>,
    datum: &Bound<'py, PyAny>,
    data: Option<&TypedData>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let (value, kind) = match data.and_then(|d| d.data.as_ref()) {
        None => return Ok(Some(py.None().into_bound(py))),
        Some(Data::String(s)) => (PyString::new(py, s).into_any(), intern!(py, "string")),
        Some(Data::Json(s)) => (PyString::new(py, s).into_any(), intern!(py, "json")),
        Some(Data::Bytes(b)) => (PyBytes::new(py, b).into_any(), intern!(py, "bytes")),
        Some(Data::Http(http)) => match http_value(py, datum, http)? {
            Some(value) => (value.into_any(), intern!(py, "http")),
            None => return Ok(None),
        },
        Some(_) => return Ok(None),
    };
    Ok(Some(datum.call1((value, kind))?))
}

fn http_value<'py>(
    py: Python<'py>,
    datum: &Bound<'py, PyAny>,
    http: &RpcHttp,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let string = |s: &str| datum.call1((s, intern!(py, "string")));
    let strings = |map: &std::collections::HashMap<String, String>| -> PyResult<_> {
        let dict = PyDict::new(py);
        for (k, v) in map {
            dict.set_item(k, string(v)?)?;
        }
        Ok(dict)
    };
    // An absent body reads as empty bytes, as the runtime substitutes.
    let body = match http.body.as_deref() {
        None | Some(TypedData { data: None }) => datum.call1((PyBytes::new(py, b""), "bytes"))?,
        body => match from_typed_data(py, datum, body)? {
            Some(body) => body,
            None => return Ok(None),
        },
    };
    let value = PyDict::new(py);
    value.set_item(intern!(py, "method"), string(&http.method)?)?;
    value.set_item(intern!(py, "url"), string(&http.url)?)?;
    value.set_item(intern!(py, "headers"), strings(&http.headers)?)?;
    value.set_item(intern!(py, "body"), body)?;
    value.set_item(intern!(py, "params"), strings(&http.params)?)?;
    value.set_item(intern!(py, "query"), strings(&http.query)?)?;
    Ok(Some(value))
}

/// Raised for anything `datum_as_proto` would treat differently from this encoder.
fn unsupported(what: &str) -> PyErr {
    PyNotImplementedError::new_err(format!("not encoded natively: {what}"))
}

/// The successful InvocationResponse for `return_datum` and `outputs` (`[(name, Datum)]`),
/// as a StreamingMessage in its gRPC frame, in pieces to send in order: a large HTTP body
/// is its own piece, the Python `bytes` itself; anything else is copied once, into the frame.
pub fn encode_success(
    request_id: String,
    invocation_id: String,
    return_datum: &Bound<'_, PyAny>,
    outputs: &Bound<'_, PyList>,
) -> PyResult<Vec<Bytes>> {
    let mut output_data = Vec::with_capacity(outputs.len());
    for item in outputs.iter() {
        let (name, datum): (String, Bound<'_, PyAny>) =
            item.extract().map_err(|_| unsupported("output item"))?;
        output_data.push(ParameterBinding {
            name,
            rpc_data: as_typed_data(&datum)?.map(RpcData::Data),
        });
    }
    let response = InvocationResponse {
        invocation_id,
        output_data,
        result: Some(StatusResult {
            status: Status::Success as i32,
            ..Default::default()
        }),
        return_value: as_typed_data(return_datum)?,
    };
    Ok(framed(request_id, response))
}

fn framed(request_id: String, mut response: InvocationResponse) -> Vec<Bytes> {
    let top = StreamingMessage {
        request_id,
        content: None,
    };
    // Tags: InvocationResponse.return_value 4, .output_data 2,
    // StreamingMessage.invocation_response 5.
    let spliced = match wire::splice_http_body(&mut response.return_value) {
        Some(inner) => Some(Spliced::nest(&response, 4, inner)),
        None => wire::splice_binding(&mut response.output_data)
            .map(|binding| Spliced::nest(&response, 2, binding)),
    };
    match spliced {
        Some(inner) => Spliced::nest(&top, 5, inner).framed().into(),
        None => vec![wire::frame(&StreamingMessage {
            content: Some(Content::InvocationResponse(response)),
            ..top
        })],
    }
}

/// `datum_as_proto`. A Python None (no return binding) is no value.
fn as_typed_data(datum: &Bound<'_, PyAny>) -> PyResult<Option<TypedData>> {
    if datum.is_none() {
        return Ok(None);
    }
    let py = datum.py();
    let kind = datum.getattr(intern!(py, "type"))?;
    if kind.is_none() {
        return Ok(None);
    }
    let kind: String = kind.extract().map_err(|_| unsupported("datum type"))?;
    let value = datum.getattr(intern!(py, "value"))?;
    let data = match kind.as_str() {
        "string" => Data::String(exact_str(&value)?),
        "json" => Data::Json(exact_str(&value)?),
        "bytes" => Data::Bytes(exact_bytes(&value)?),
        "int" if value.is_exact_instance_of::<PyInt>() => {
            Data::Int(value.extract().map_err(|_| unsupported("int"))?)
        }
        "double" if value.is_exact_instance_of::<PyFloat>() => Data::Double(value.extract()?),
        "bool" if value.is_exact_instance_of::<pyo3::types::PyBool>() => {
            Data::Int(value.extract::<bool>()?.into())
        }
        // TypedData has no dict or list: the runtime sends them as JSON text.
        "dict" | "list" => {
            let dumps = py
                .import(intern!(py, "json"))?
                .getattr(intern!(py, "dumps"))?;
            Data::Json(dumps.call1((value,))?.extract()?)
        }
        "http" => Data::Http(Box::new(http_response(&value)?)),
        other => return Err(unsupported(other)),
    };
    Ok(Some(TypedData { data: Some(data) }))
}

fn http_response(value: &Bound<'_, PyAny>) -> PyResult<RpcHttp> {
    let py = value.py();
    let value = value
        .cast::<PyDict>()
        .map_err(|_| unsupported("http value"))?;
    let item = |key: &str| {
        value
            .get_item(key)?
            .ok_or_else(|| unsupported("http field"))
    };
    let cookies = value.get_item(intern!(py, "cookies"))?;
    if cookies.is_some_and(|c| !c.is_none() && c.len().map_or(true, |n| n > 0)) {
        return Err(unsupported("cookies"));
    }
    let status = item("status_code")?.getattr(intern!(py, "value"))?;
    let headers = item("headers")?;
    let headers = headers
        .cast::<PyDict>()
        .map_err(|_| unsupported("headers"))?;
    let mut map = std::collections::HashMap::with_capacity(headers.len());
    for (name, header) in headers.iter() {
        let name = exact_str(&name)?;
        map.insert(name, exact_str(&header.getattr(intern!(py, "value"))?)?);
    }
    let body = item("body")?;
    if body.is_none() {
        return Err(unsupported("no body"));
    }
    Ok(RpcHttp {
        status_code: exact_str(&status)?,
        headers: map,
        body: as_typed_data(&body)?.map(Box::new),
        ..Default::default()
    })
}

fn exact_str(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if !value.is_exact_instance_of::<PyString>() {
        return Err(unsupported("a value that is not str"));
    }
    value.extract()
}

/// The `bytes` object's own buffer, not a copy: the message holding it is encoded (the
/// one copy) and dropped while the GIL is held.
fn exact_bytes(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let bytes = value
        .cast::<PyBytes>()
        .map_err(|_| unsupported("a value that is not bytes"))?;
    Ok(Bytes::from_owner(PyBackedBytes::from(bytes.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(body: Bytes) -> TypedData {
        TypedData {
            data: Some(Data::Http(Box::new(RpcHttp {
                status_code: "200".into(),
                body: Some(Box::new(TypedData {
                    data: Some(Data::Bytes(body)),
                })),
                ..Default::default()
            }))),
        }
    }

    fn binding(name: &str, data: TypedData) -> ParameterBinding {
        ParameterBinding {
            name: name.into(),
            rpc_data: Some(RpcData::Data(data)),
        }
    }

    /// The pieces' concatenation decoded, and whether the body went out as its own piece.
    fn send(response: InvocationResponse, body: &Bytes) -> (InvocationResponse, bool) {
        let pieces = framed("r".into(), response);
        let uncopied = pieces.iter().any(|p| p.as_ptr() == body.as_ptr());
        let whole = pieces.concat();
        let len = u32::from_be_bytes(whole[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, whole.len() - 5);
        let message = StreamingMessage::decode(&whole[5..]).unwrap();
        assert_eq!(message.request_id, "r");
        let Some(Content::InvocationResponse(response)) = message.content else {
            panic!("not a response: {message:?}");
        };
        (response, uncopied)
    }

    #[test]
    fn a_large_return_body_is_its_own_piece_and_decodes_unchanged() {
        let body = Bytes::from(vec![1u8; wire::SPLICE_MIN]);
        let response = InvocationResponse {
            invocation_id: "i".into(),
            output_data: vec![binding("other", TypedData::default())],
            return_value: Some(http(body.clone())),
            ..Default::default()
        };
        assert_eq!(send(response.clone(), &body), (response, true));
    }

    #[test]
    fn a_large_output_binding_body_is_its_own_piece_and_the_binding_goes_last() {
        let body = Bytes::from(vec![2u8; wire::SPLICE_MIN + 1]);
        let response = InvocationResponse {
            invocation_id: "i".into(),
            output_data: vec![
                binding("res", http(body.clone())),
                binding("x", http("s".into())),
            ],
            ..Default::default()
        };
        let (decoded, uncopied) = send(response.clone(), &body);
        assert!(uncopied);
        let mut expected = response;
        expected.output_data.rotate_left(1);
        assert_eq!(decoded, expected);
    }

    #[test]
    fn a_small_body_is_copied_into_one_frame() {
        let body = Bytes::from(vec![3u8; wire::SPLICE_MIN - 1]);
        let response = InvocationResponse {
            return_value: Some(http(body.clone())),
            ..Default::default()
        };
        assert_eq!(send(response.clone(), &body), (response, false));
    }
}
