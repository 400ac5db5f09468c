//! Frames of the `/dingo/msg/1` request-response protocol (inside libp2p's length-delimited
//! stream, which the net crate bounds by [`MAX_FRAME_BYTES`]).
//!
//! ```text
//! request  = 1u8 (deliver) | count u16 | (len u32 | envelope)*count
//! response = 1u8 (results) | count u16 | (status u8 | at u64)*count
//! ```
//! A response answers each envelope of the request in order. `Stored` means the recipient's node
//! has durably stored it (this is "delivered"); `Duplicate` means it already had it.

use crate::codec::{DecodeError, Reader, Writer};
use crate::limits::{MAX_ENVELOPES_PER_REQUEST, MAX_ENVELOPE_BYTES, MAX_FRAME_BYTES};

/// The protocol name negotiated by libp2p.
pub const MSG_PROTOCOL: &str = "/dingo/msg/1";

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store these encoded envelopes.
    Deliver(Vec<Vec<u8>>),
}

/// What happened to one delivered envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Durably stored now, at the recipient's time `at`.
    Stored(u64),
    /// Already stored earlier (a retry whose first answer was lost).
    Duplicate(u64),
    /// Refused (forged, tampered, replayed out of window, blocked or unknown sender); the sender
    /// should not retry the same bytes.
    Rejected,
    /// The recipient could not process it now (overloaded, store busy); retry later.
    Retry,
}

/// A response to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// One status per delivered envelope, in request order.
    Results(Vec<DeliveryStatus>),
}

impl Request {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let Request::Deliver(envs) = self;
        let mut w = Writer::new();
        w.u8(1).u16(envs.len() as u16);
        for e in envs {
            w.long_bytes(e);
        }
        w.into_bytes()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge("request"));
        }
        let mut r = Reader::new(bytes);
        match r.u8("request tag")? {
            1 => {
                let n = r.u16("envelope count")? as usize;
                if n > MAX_ENVELOPES_PER_REQUEST {
                    return Err(DecodeError::TooLarge("envelope count"));
                }
                let envs = (0..n)
                    .map(|_| r.long_bytes(MAX_ENVELOPE_BYTES, "envelope").map(<[u8]>::to_vec))
                    .collect::<Result<Vec<_>, _>>()?;
                r.finish("request")?;
                Ok(Request::Deliver(envs))
            }
            _ => Err(DecodeError::Invalid("request tag")),
        }
    }
}

impl Response {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        let Response::Results(results) = self;
        let mut w = Writer::new();
        w.u8(1).u16(results.len() as u16);
        for s in results {
            let (tag, at) = match *s {
                DeliveryStatus::Stored(at) => (0, at),
                DeliveryStatus::Duplicate(at) => (1, at),
                DeliveryStatus::Rejected => (2, 0),
                DeliveryStatus::Retry => (3, 0),
            };
            w.u8(tag).u64(at);
        }
        w.into_bytes()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        match r.u8("response tag")? {
            1 => {
                let n = r.u16("result count")? as usize;
                if n > MAX_ENVELOPES_PER_REQUEST {
                    return Err(DecodeError::TooLarge("result count"));
                }
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    let tag = r.u8("status")?;
                    let at = r.u64("status time")?;
                    out.push(match tag {
                        0 => DeliveryStatus::Stored(at),
                        1 => DeliveryStatus::Duplicate(at),
                        // Statuses without a time must carry zero: one encoding per value.
                        2 if at == 0 => DeliveryStatus::Rejected,
                        3 if at == 0 => DeliveryStatus::Retry,
                        _ => return Err(DecodeError::Invalid("status")),
                    });
                }
                r.finish("response")?;
                Ok(Response::Results(out))
            }
            _ => Err(DecodeError::Invalid("response tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request::Deliver(vec![vec![1, 2, 3], vec![]]);
        assert_eq!(Request::decode(&req.encode()), Ok(req));
        let resp = Response::Results(vec![
            DeliveryStatus::Stored(5),
            DeliveryStatus::Duplicate(6),
            DeliveryStatus::Rejected,
            DeliveryStatus::Retry,
        ]);
        assert_eq!(Response::decode(&resp.encode()), Ok(resp));
    }

    /// Found by the `wire` fuzz target: a `Retry` with a non-zero time decoded, so two byte
    /// strings meant the same response.
    #[test]
    fn regression_fuzz_retry_with_time_is_not_canonical() {
        let crash = [0x1, 0x0, 0x1, 0x3, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0, 0x8];
        assert_eq!(Response::decode(&crash), Err(DecodeError::Invalid("status")));
    }

    #[test]
    fn oversized_counts_are_refused_before_allocation() {
        let mut w = Writer::new();
        w.u8(1).u16(u16::MAX);
        assert_eq!(Request::decode(&w.into_bytes()), Err(DecodeError::TooLarge("envelope count")));
    }
}
