//! A request body read for an InvocationRequest: within the body limit (413), within the
//! body budget of bodies held at once (503), without stalling (408), in one buffer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{Dispatcher, InvokeError};
use crate::body::{IdleTimeout, Stalled};
use crate::budget::Reservation;

/// A request body that stalls this long between chunks is abandoned (slow client).
pub(super) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A chunked body (size unknown) reserves budget in steps of at least this much.
const BUDGET_STEP: u64 = 1 << 20;

impl Dispatcher {
    pub(super) fn too_large(&self) -> InvokeError {
        InvokeError::PayloadTooLarge {
            limit: self.body_limit,
        }
    }

    /// The whole body in one buffer, with its place in the body budget. Refuses at once
    /// when `Content-Length` announces more than the limit and stops as soon as a
    /// chunked body crosses it. A body that arrives as one chunk is passed on as is;
    /// otherwise it is gathered into one buffer sized from `Content-Length` (its one copy:
    /// it goes to the worker from there, see `rpc/stream.rs`).
    pub(super) async fn read_body(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
    ) -> Result<(Bytes, Reservation), InvokeError> {
        let declared = declared_length(parts);
        let mut reservation = self.body_budget.reserve(declared.unwrap_or(0))?;
        let limit = usize::try_from(self.body_limit).unwrap_or(usize::MAX);
        let mut body = IdleTimeout::new(Limited::new(body, limit), BODY_IDLE_TIMEOUT);
        let mut first: Option<Bytes> = None;
        let mut gathered: Option<BytesMut> = None;
        let mut received: u64 = 0;
        loop {
            let data = match body.frame().await {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(self.too_large());
                }
                Some(Err(e)) if e.is::<Stalled>() => {
                    return Err(InvokeError::BodyTimeout(BODY_IDLE_TIMEOUT));
                }
                Some(Err(e)) => return Err(InvokeError::BadBody(e.to_string())),
            };
            received += data.len() as u64;
            if received > reservation.bytes() {
                // Only a chunked body (or one longer than announced) gets here.
                let step = received.max(reservation.bytes() + BUDGET_STEP);
                self.body_budget
                    .grow(&mut reservation, step.min(self.body_limit))?;
            }
            match (&mut first, &mut gathered) {
                (None, None) => first = Some(data),
                (Some(head), None) => {
                    let capacity = declared.unwrap_or(received) as usize;
                    let mut buffer = BytesMut::with_capacity(capacity.max(head.len() + data.len()));
                    buffer.extend_from_slice(head);
                    buffer.extend_from_slice(&data);
                    first = None;
                    gathered = Some(buffer);
                }
                (_, Some(buffer)) => buffer.extend_from_slice(&data),
            }
        }
        let bytes = match (first, gathered) {
            (Some(one), _) => one,
            (None, Some(buffer)) => buffer.freeze(),
            (None, None) => Bytes::new(),
        };
        Ok((bytes, reservation))
    }
}

/// The body length the client announced, if any.
pub(super) fn declared_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}
