//! gRPC message framing for the EventStream, one file shared by both ends: the worker's
//! native transport (`native/src/direct.rs`) and Sluice's FunctionRpc server
//! (`src/rpc/mod.rs` includes it by path). Both crates generate the same `proto` module.
//!
//! Outbound, a message with a large HTTP body is encoded as a small head followed by the
//! body's own bytes, never copied ([`Spliced`]): the body's field is written last at every
//! level, so the encoding is the head's bytes and then the body's. Protobuf readers accept
//! fields in any order, and a field written once reads the same wherever it stands.
//! Before they go to h2, small frames queued together are joined into one chunk
//! ([`Gather`]), so that a batch of messages costs one write. Inbound, [`take_frames`] cuts
//! a stream of DATA chunks into messages.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::proto::parameter_binding::RpcData;
use crate::proto::typed_data::Data;
use crate::proto::{ParameterBinding, TypedData};

/// gRPC frame header: compressed flag (1 byte) and length (4 bytes, big-endian).
pub const FRAME_HEADER: usize = 5;

/// HTTP bodies at least this large are spliced; a smaller one costs less to copy than a
/// second piece to send.
pub const SPLICE_MIN: usize = 64 * 1024;

/// A gRPC frame's header for a message of `len` bytes, with room for `room` bytes of it.
pub fn frame_buffer(len: usize, room: usize) -> BytesMut {
    let mut frame = BytesMut::with_capacity(FRAME_HEADER + room);
    frame.put_u8(0);
    frame.put_u32(len as u32);
    frame
}

/// `payload` (an encoded message) copied into its gRPC frame.
#[allow(dead_code)] // the worker's; the host encodes with `frame`
pub fn frame_bytes(payload: &[u8]) -> Bytes {
    let mut frame = frame_buffer(payload.len(), payload.len());
    frame.extend_from_slice(payload);
    frame.freeze()
}

#[cfg(test)]
pub fn framed(payload: &[u8]) -> Vec<u8> {
    frame_bytes(payload).to_vec()
}

/// `message` encoded once, straight into its gRPC frame.
pub fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut frame = frame_buffer(len, len);
    // Cannot fail: the buffer has room for the whole message.
    let _ = message.encode(&mut frame);
    frame.freeze()
}

/// Pieces smaller than this are joined with their neighbours by [`Gather`]; a larger one
/// is worth a write of its own and goes to h2 as it is.
pub const GATHER_MAX: usize = 16 * 1024;
/// The most [`Gather`] joins into one chunk.
const GATHER_CHUNK: usize = 64 * 1024;

/// Outbound pieces in order, with runs of small ones joined into one chunk. h2 writes every
/// DATA chunk of 256 bytes or more to the socket before it takes the next one, so a chunk
/// per message would cost a write per message; joined, a batch of invocations (or of
/// responses) costs one. A piece that has no small neighbour is passed on uncopied.
#[derive(Default)]
pub struct Gather {
    ready: VecDeque<Bytes>,
    run: Vec<Bytes>,
    run_len: usize,
}

impl Gather {
    pub fn push(&mut self, piece: Bytes) {
        if piece.len() >= GATHER_MAX {
            self.seal();
            self.ready.push_back(piece);
            return;
        }
        if self.run_len + piece.len() > GATHER_CHUNK {
            self.seal();
        }
        self.run_len += piece.len();
        self.run.push(piece);
    }

    /// The next chunk to send; the run being gathered counts as complete.
    pub fn pop(&mut self) -> Option<Bytes> {
        if self.ready.is_empty() {
            self.seal();
        }
        self.ready.pop_front()
    }

    #[allow(dead_code)] // the host's (its EventBody); the worker sends all it gathered
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.run.is_empty()
    }

    /// A chunk is complete (a run was cut off by a large piece or by its size).
    #[allow(dead_code)] // the host's, as `is_empty`
    pub fn has_chunk(&self) -> bool {
        !self.ready.is_empty()
    }

    fn seal(&mut self) {
        let joined = match self.run.len() {
            0 => return,
            1 => self.run.pop().expect("one piece"),
            _ => {
                let mut joined = BytesMut::with_capacity(self.run_len);
                for piece in self.run.drain(..) {
                    joined.extend_from_slice(&piece);
                }
                joined.freeze()
            }
        };
        self.ready.push_back(joined);
        self.run_len = 0;
    }
}

/// A message encoded as a head and then one large value, built from the inside out:
/// [`Spliced::bytes_field`] for the value's own field, then [`Spliced::nest`] once per
/// enclosing message, given that message without the field.
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
        let mut head = frame_buffer(self.len(), self.head.len());
        head.extend_from_slice(&self.head);
        [head.freeze(), self.tail]
    }
}

/// An HTTP value whose body is large, taken out of `data` (left None) as a [`Spliced`]
/// TypedData; None, leaving `data` as it was, for anything else.
pub fn splice_http_body(data: &mut Option<TypedData>) -> Option<Spliced> {
    let Some(TypedData {
        data: Some(Data::Http(http)),
    }) = data
    else {
        return None;
    };
    let large = matches!(http.body.as_deref(),
        Some(TypedData { data: Some(Data::Bytes(b)) }) if b.len() >= SPLICE_MIN);
    if !large {
        return None;
    }
    let Some(Data::Bytes(body)) = http.body.take().and_then(|b| b.data) else {
        unreachable!("checked above");
    };
    // Tags: TypedData.bytes 3, RpcHttp.body 4, TypedData.http 5.
    let spliced = Spliced::nest(&**http, 4, Spliced::bytes_field(3, body));
    *data = None;
    Some(Spliced::nest(&TypedData::default(), 5, spliced))
}

/// The first binding holding an HTTP value with a large body, removed from `bindings` and
/// spliced (its enclosing message then writes it after the others); None if there is none.
pub fn splice_binding(bindings: &mut Vec<ParameterBinding>) -> Option<Spliced> {
    let (index, inner) = bindings.iter_mut().enumerate().find_map(|(i, binding)| {
        let mut data = binding.rpc_data.take().map(|RpcData::Data(data)| data);
        let inner = splice_http_body(&mut data);
        binding.rpc_data = data.map(RpcData::Data);
        inner.map(|inner| (i, inner))
    })?;
    // Tag: ParameterBinding.data 2.
    Some(Spliced::nest(&bindings.remove(index), 2, inner))
}

/// Appends the whole gRPC frames in `partial` + `chunk` to `messages`, keeping the rest in
/// `partial`. While nothing is pending, frames are sliced out of the chunk without a copy.
pub fn take_frames(
    mut chunk: Bytes,
    partial: &mut BytesMut,
    max: usize,
    messages: &mut Vec<Bytes>,
) -> Result<(), String> {
    if partial.is_empty() {
        while let Some(len) = frame_len(&chunk, max)? {
            if chunk.len() < FRAME_HEADER + len {
                break;
            }
            chunk.advance(FRAME_HEADER);
            messages.push(chunk.split_to(len));
        }
        if chunk.is_empty() {
            return Ok(());
        }
    }
    partial.extend_from_slice(&chunk);
    while let Some(len) = frame_len(partial, max)? {
        if partial.len() < FRAME_HEADER + len {
            // Room for the rest of it, once, instead of growing chunk by chunk.
            partial.reserve(FRAME_HEADER + len - partial.len());
            break;
        }
        partial.advance(FRAME_HEADER);
        messages.push(partial.split_to(len).freeze());
    }
    Ok(())
}

/// The length of the frame starting `buf`, once its header is there.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, String> {
    let Some(header) = buf.get(..FRAME_HEADER) else {
        return Ok(None);
    };
    if header[0] != 0 {
        return Err("compressed message (none was negotiated)".into());
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > max {
        return Err(format!("message of {len} bytes exceeds the limit of {max}"));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::streaming_message::Content;
    use crate::proto::{InvocationRequest, RpcHttp, StreamingMessage};
    use std::collections::HashMap;

    fn feed(chunks: &[&[u8]], max: usize) -> Result<(Vec<Bytes>, usize), String> {
        let mut partial = BytesMut::new();
        let mut messages = Vec::new();
        for chunk in chunks {
            take_frames(
                Bytes::copy_from_slice(chunk),
                &mut partial,
                max,
                &mut messages,
            )?;
        }
        Ok((messages, partial.len()))
    }

    fn gathered(pieces: &[Bytes]) -> Vec<Bytes> {
        let mut gather = Gather::default();
        for piece in pieces {
            gather.push(piece.clone());
        }
        std::iter::from_fn(|| gather.pop()).collect()
    }

    #[test]
    fn small_pieces_are_joined_in_order_and_large_ones_pass_uncopied() {
        let small = |n: usize, b: u8| Bytes::from(vec![b; n]);
        let large = Bytes::from(vec![9u8; GATHER_MAX]);
        let pieces = [
            small(300, 1),
            small(500, 2),
            large.clone(),
            small(10, 3),
            small(20, 4),
        ];
        let chunks = gathered(&pieces);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.concat(), pieces.concat());
        assert_eq!(chunks[0].len(), 800);
        assert_eq!(
            chunks[1].as_ptr(),
            large.as_ptr(),
            "a large piece is not copied"
        );
        assert_eq!(chunks[2].len(), 30);
    }

    #[test]
    fn a_lone_small_piece_is_not_copied_and_joined_chunks_stay_bounded() {
        let lone = Bytes::from(vec![1u8; 700]);
        assert_eq!(
            gathered(std::slice::from_ref(&lone))[0].as_ptr(),
            lone.as_ptr()
        );
        let many: Vec<Bytes> = (0..40).map(|i| Bytes::from(vec![i as u8; 4000])).collect();
        let chunks = gathered(&many);
        assert!(chunks.iter().all(|c| c.len() <= GATHER_CHUNK));
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.concat(), many.concat());
    }

    #[test]
    fn whole_frames_in_one_chunk_are_all_taken() {
        let data = [framed(b"a"), framed(b""), framed(b"ccc")].concat();
        let (messages, left) = feed(&[&data], 16).unwrap();
        assert_eq!(
            messages,
            vec![Bytes::from("a"), Bytes::new(), Bytes::from("ccc")]
        );
        assert_eq!(left, 0);
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let data = [framed(b"hello"), framed(b"world!")].concat();
        for cut in 0..=data.len() {
            for cut2 in cut..=data.len() {
                let (messages, left) =
                    feed(&[&data[..cut], &data[cut..cut2], &data[cut2..]], 16).unwrap();
                assert_eq!(messages, vec![Bytes::from("hello"), Bytes::from("world!")]);
                assert_eq!(left, 0, "cuts {cut} {cut2}");
            }
        }
    }

    #[test]
    fn an_incomplete_frame_waits() {
        let data = framed(b"pending");
        let (messages, left) = feed(&[&data[..7]], 16).unwrap();
        assert!(messages.is_empty());
        assert_eq!(left, 7);
    }

    #[test]
    fn oversized_and_compressed_frames_end_the_stream() {
        let too_big = feed(&[&framed(&[0; 17])], 16).unwrap_err();
        assert!(too_big.contains("exceeds the limit of 16"), "{too_big}");
        let mut compressed = framed(b"x");
        compressed[0] = 1;
        assert!(feed(&[&compressed], 16).unwrap_err().contains("compressed"));
    }

    fn http_binding(name: &str, body: Bytes) -> ParameterBinding {
        ParameterBinding {
            name: name.into(),
            rpc_data: Some(RpcData::Data(TypedData {
                data: Some(Data::Http(Box::new(RpcHttp {
                    method: "POST".into(),
                    headers: HashMap::from([("a".into(), "b".into())]),
                    body: Some(Box::new(TypedData {
                        data: Some(Data::Bytes(body)),
                    })),
                    query: HashMap::from([("q".into(), "1".into())]),
                    ..Default::default()
                }))),
            })),
        }
    }

    #[test]
    fn a_spliced_request_decodes_to_the_same_message_with_the_body_uncopied() {
        let body = Bytes::from(vec![7u8; SPLICE_MIN]);
        let message = StreamingMessage {
            request_id: "r1".into(),
            content: Some(Content::InvocationRequest(InvocationRequest {
                invocation_id: "i1".into(),
                input_data: vec![
                    http_binding("req", body.clone()),
                    http_binding("small", Bytes::from_static(b"s")),
                ],
                ..Default::default()
            })),
        };
        let Some(Content::InvocationRequest(mut request)) = message.content.clone() else {
            unreachable!()
        };
        let binding = splice_binding(&mut request.input_data).expect("a large body");
        assert_eq!(
            request.input_data.len(),
            1,
            "the spliced binding is taken out"
        );
        let top = StreamingMessage {
            request_id: "r1".into(),
            content: None,
        };
        // Tags: InvocationRequest.input_data 3, StreamingMessage.invocation_request 4.
        let [head, tail] = Spliced::nest(&top, 4, Spliced::nest(&request, 3, binding)).framed();
        assert_eq!(tail.as_ptr(), body.as_ptr(), "the body is not copied");
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        assert_eq!(
            len,
            message.encoded_len(),
            "as long as prost's own encoding"
        );
        let (decoded, left) = feed(&[&head, &tail], usize::MAX).unwrap();
        assert_eq!(left, 0);
        let mut expected = message;
        if let Some(Content::InvocationRequest(r)) = &mut expected.content {
            r.input_data.rotate_left(1);
        }
        assert_eq!(
            StreamingMessage::decode(decoded[0].clone()).unwrap(),
            expected
        );
    }

    #[test]
    fn a_small_body_is_not_spliced() {
        let mut bindings = vec![http_binding("req", Bytes::from(vec![1u8; SPLICE_MIN - 1]))];
        let before = bindings.clone();
        assert!(splice_binding(&mut bindings).is_none());
        assert_eq!(bindings, before);
    }
}
