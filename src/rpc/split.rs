//! A large InvocationResponse answered before its HTTP body has arrived. Sluice's worker
//! writes a large body as the last field at every level of the message (`wire.rs`), so the
//! message's first bytes hold everything else: [`split_response`] decodes them, and the
//! body, the rest of the message, can go to the client as it comes in.
//!
//! Any other layout (say, the grpcio transport's, where fields follow the body) is simply
//! not split: the message is then gathered whole, as before.

use std::ops::Range;

use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};

use crate::proto::parameter_binding::RpcData;
use crate::proto::streaming_message::Content;
use crate::proto::typed_data::Data;
use crate::proto::{InvocationResponse, ParameterBinding, RpcHttp, StreamingMessage, TypedData};

/// A response message without its HTTP body, and where that body sits.
#[derive(Debug, PartialEq)]
pub struct Split {
    /// The message, its HTTP body an empty placeholder.
    pub message: StreamingMessage,
    /// The output binding the HTTP value belongs to; None for the return value.
    pub binding: Option<String>,
    /// Where the body starts within the message; it runs to the message's end.
    pub body_start: usize,
}

/// `head`: the first bytes of a message `len` bytes long. Some when the message is an
/// InvocationResponse whose HTTP body (in its return value or an output binding) is the
/// last field of every message on its path and `head` holds all that comes before it.
pub fn split_response(head: &[u8], len: usize) -> Option<Split> {
    // Tags: StreamingMessage.invocation_response 5; InvocationResponse.return_value 4,
    // .output_data 2; ParameterBinding.data 2; TypedData.http 5; RpcHttp.body 4;
    // TypedData.bytes 3.
    let field =
        |start: usize, tag: u32| last_field(head, start, len).filter(|(found, ..)| *found == tag);
    let (_, top, at) = field(0, 5)?;
    let (tag, response, at) = last_field(head, at.start, len)?;
    let (binding, at) = match tag {
        4 => (None, at),
        2 => {
            let (_, rest, at) = field(at.start, 2)?;
            (Some(ParameterBinding::decode(rest).ok()?), at)
        }
        _ => return None,
    };
    let (_, typed, at) = field(at.start, 5)?;
    let (_, http, at) = field(at.start, 4)?;
    let (_, body_typed, at) = field(at.start, 3)?;

    let mut http = RpcHttp::decode(http).ok()?;
    let mut body = TypedData::decode(body_typed).ok()?;
    body.data = Some(Data::Bytes(Default::default()));
    http.body = Some(Box::new(body));
    let mut typed = TypedData::decode(typed).ok()?;
    typed.data = Some(Data::Http(Box::new(http)));
    let mut response = InvocationResponse::decode(response).ok()?;
    let name = match binding {
        Some(mut binding) => {
            binding.rpc_data = Some(RpcData::Data(typed));
            let name = binding.name.clone();
            response.output_data.push(binding);
            Some(name)
        }
        None => {
            response.return_value = Some(typed);
            None
        }
    };
    let mut message = StreamingMessage::decode(top).ok()?;
    message.content = Some(Content::InvocationResponse(response));
    Some(Split {
        message,
        binding: name,
        body_start: at.start,
    })
}

/// In the message occupying `head[start..]` up to `end` (which may lie beyond `head`):
/// when its last field is length-delimited and reaches exactly `end`, that field's tag,
/// the bytes of the other fields (all in `head`) and the span of the field's value.
fn last_field(head: &[u8], start: usize, end: usize) -> Option<(u32, &[u8], Range<usize>)> {
    let mut pos = start;
    while pos < end {
        let field_start = pos;
        let mut buf = head.get(pos..)?;
        let before = buf.len();
        let (field, wire_type) = decode_key(&mut buf).ok()?;
        let value_len = match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => usize::try_from(decode_varint(&mut buf).ok()?).ok()?,
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        let value_start = pos + (before - buf.len());
        let value_end = value_start.checked_add(value_len)?;
        if value_end > end {
            return None;
        }
        if value_end == end {
            return (wire_type == WireType::LengthDelimited)
                .then(|| (field, &head[start..field_start], value_start..end));
        }
        if value_end > head.len() {
            return None;
        }
        pos = value_end;
    }
    None
}

/// `response` encoded (gRPC frame header left out) as Sluice's worker encodes one with a
/// large HTTP body.
#[cfg(test)]
pub(super) fn encode_spliced(mut response: InvocationResponse) -> Vec<u8> {
    use super::wire::{self, Spliced};
    let inner = match wire::splice_http_body(&mut response.return_value) {
        Some(inner) => Spliced::nest(&response, 4, inner),
        None => {
            let binding = wire::splice_binding(&mut response.output_data).expect("a large body");
            Spliced::nest(&response, 2, binding)
        }
    };
    let top = StreamingMessage {
        request_id: "r".into(),
        content: None,
    };
    let [head, body] = Spliced::nest(&top, 5, inner).framed();
    [&head[wire::FRAME_HEADER..], &body[..]].concat()
}

#[cfg(test)]
mod tests {
    use super::super::wire;
    use super::*;
    use bytes::Bytes;
    use std::collections::HashMap;

    fn http(body: &[u8]) -> TypedData {
        TypedData {
            data: Some(Data::Http(Box::new(RpcHttp {
                status_code: "201".into(),
                headers: HashMap::from([("content-type".into(), "application/x".into())]),
                body: Some(Box::new(TypedData {
                    data: Some(Data::Bytes(Bytes::copy_from_slice(body))),
                })),
                ..Default::default()
            }))),
        }
    }

    fn response(
        return_value: Option<TypedData>,
        outputs: Vec<(&str, TypedData)>,
    ) -> InvocationResponse {
        InvocationResponse {
            invocation_id: "i1".into(),
            output_data: outputs
                .into_iter()
                .map(|(name, data)| ParameterBinding {
                    name: name.into(),
                    rpc_data: Some(RpcData::Data(data)),
                })
                .collect(),
            result: Some(Default::default()),
            return_value,
        }
    }

    fn without_body(mut response: InvocationResponse) -> StreamingMessage {
        let blank = |t: &mut TypedData| {
            if let Some(Data::Http(http)) = &mut t.data {
                http.body = Some(Box::new(TypedData {
                    data: Some(Data::Bytes(Bytes::new())),
                }));
            }
        };
        response.return_value.iter_mut().for_each(blank);
        for binding in &mut response.output_data {
            if let Some(RpcData::Data(data)) = &mut binding.rpc_data {
                blank(data);
            }
        }
        StreamingMessage {
            request_id: "r".into(),
            content: Some(Content::InvocationResponse(response)),
        }
    }

    #[test]
    fn a_spliced_return_value_splits_from_its_head_alone() {
        let body = vec![9u8; wire::SPLICE_MIN];
        let original = response(Some(http(&body)), vec![("other", TypedData::default())]);
        let encoded = encode_spliced(original.clone());
        let body_start = encoded.len() - body.len();
        let split = split_response(&encoded[..body_start], encoded.len()).expect("splits");
        assert_eq!(split.body_start, body_start);
        assert_eq!(split.binding, None);
        assert_eq!(split.message, without_body(original));
    }

    #[test]
    fn a_spliced_output_binding_splits_and_is_named() {
        let body = vec![8u8; wire::SPLICE_MIN];
        let original = response(
            None,
            vec![("res", http(&body)), ("log", TypedData::default())],
        );
        let encoded = encode_spliced(original.clone());
        let split = split_response(&encoded[..100], encoded.len()).expect("splits");
        assert_eq!(split.binding.as_deref(), Some("res"));
        assert_eq!(&encoded[split.body_start..], &body[..]);
        let mut expected = original;
        expected.output_data.rotate_left(1);
        assert_eq!(split.message, without_body(expected));
    }

    #[test]
    fn prost_s_own_layout_or_a_short_head_is_not_split() {
        let body = vec![7u8; wire::SPLICE_MIN];
        let message = without_body(response(Some(http(&body)), vec![]));
        // Fields after the body (RpcHttp.status_code, 12, follows body, 4): not the last.
        let mut normal = message.clone();
        if let Some(Content::InvocationResponse(r)) = &mut normal.content
            && let Some(TypedData {
                data: Some(Data::Http(h)),
            }) = &mut r.return_value
        {
            h.body = Some(Box::new(TypedData {
                data: Some(Data::Bytes(Bytes::from(body.clone()))),
            }));
        }
        let encoded = normal.encode_to_vec();
        assert_eq!(split_response(&encoded, encoded.len()), None);
        let encoded = encode_spliced(response(Some(http(&body)), vec![]));
        assert_eq!(
            split_response(&encoded[..10], encoded.len()),
            None,
            "head cut short"
        );
    }
}
