//! A message encoded as a small head followed by one large `bytes` value that is never
//! copied: the value's field is written last at every level, so the encoding is the head's
//! bytes and then the value's. Protobuf readers accept fields in any order (the host's prost
//! decoder included), and a field written once reads the same wherever it stands.
//!
//! Built from the inside out: [`Spliced::bytes_field`] for the value's own field, then
//! [`Spliced::nest`] once per enclosing message, given that message without the field.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// gRPC frame header: compressed flag (1 byte) and length (4 bytes, big-endian).
const FRAME_HEADER: usize = 5;

pub struct Spliced {
    head: BytesMut,
    tail: Bytes,
}

impl Spliced {
    /// A message whose only field is `bytes` field `tag` holding `value`.
    pub fn bytes_field(tag: u32, value: Bytes) -> Self {
        let mut head =
            BytesMut::with_capacity(key_len(tag) + encoded_len_varint(value.len() as u64));
        encode_key(tag, WireType::LengthDelimited, &mut head);
        encode_varint(value.len() as u64, &mut head);
        Self { head, tail: value }
    }

    /// The message `rest` (its other fields) with message field `tag` holding `inner`.
    pub fn nest(rest: &impl Message, tag: u32, inner: Spliced) -> Self {
        let inner_len = inner.len();
        let mut head = BytesMut::with_capacity(
            rest.encoded_len()
                + key_len(tag)
                + encoded_len_varint(inner_len as u64)
                + inner.head.len(),
        );
        // Cannot fail: the buffer has room for `rest`.
        let _ = rest.encode(&mut head);
        encode_key(tag, WireType::LengthDelimited, &mut head);
        encode_varint(inner_len as u64, &mut head);
        head.extend_from_slice(&inner.head);
        Self {
            head,
            tail: inner.tail,
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The gRPC frame, in two pieces: the frame header with the head, then the value.
    pub fn framed(self) -> [Bytes; 2] {
        let mut head = BytesMut::with_capacity(FRAME_HEADER + self.head.len());
        head.put_u8(0);
        head.put_u32(self.len() as u32);
        head.extend_from_slice(&self.head);
        [head.freeze(), self.tail]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::streaming_message::Content;
    use crate::proto::typed_data::Data;
    use crate::proto::{InvocationResponse, RpcHttp, StreamingMessage, TypedData};
    use std::collections::HashMap;

    fn response(body: Bytes) -> StreamingMessage {
        StreamingMessage {
            request_id: "r1".into(),
            content: Some(Content::InvocationResponse(InvocationResponse {
                invocation_id: "i1".into(),
                return_value: Some(TypedData {
                    data: Some(Data::Http(Box::new(RpcHttp {
                        status_code: "200".into(),
                        headers: HashMap::from([("a".into(), "b".into())]),
                        body: Some(Box::new(TypedData {
                            data: Some(Data::Bytes(body)),
                        })),
                        ..Default::default()
                    }))),
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_spliced_message_decodes_to_the_same_message_and_keeps_the_value_uncopied() {
        let body = Bytes::from(vec![7u8; 300_000]);
        let whole = response(body.clone());
        let Some(Content::InvocationResponse(mut rest)) = whole.content.clone() else {
            unreachable!()
        };
        let Some(Data::Http(mut http)) = rest.return_value.take().and_then(|t| t.data) else {
            unreachable!()
        };
        http.body = None;
        let spliced = Spliced::bytes_field(3, body.clone());
        let spliced = Spliced::nest(&*http, 4, spliced);
        let spliced = Spliced::nest(&TypedData::default(), 5, spliced);
        let spliced = Spliced::nest(&rest, 4, spliced);
        let top = StreamingMessage {
            request_id: "r1".into(),
            content: None,
        };
        let [head, tail] = Spliced::nest(&top, 5, spliced).framed();
        assert_eq!(tail.as_ptr(), body.as_ptr(), "the value is not copied");
        assert_eq!(head[0], 0);
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, head.len() - 5 + tail.len());
        assert_eq!(
            len,
            whole.encoded_len(),
            "same size as prost's own encoding"
        );
        let encoded = [&head[5..], &tail[..]].concat();
        assert_eq!(StreamingMessage::decode(&encoded[..]).unwrap(), whole);
    }
}
