//! Requests and responses of the `/dingo/msg/2` protocol. The net crate carries them in frames
//! on one long-lived stream per peer and direction (`len u32 | id u64 | body`, the length
//! bounded by [`MAX_FRAME_BYTES`]); a response answers the request with the same id. (`/dingo/msg/1`
//! sent the same bodies on a libp2p request-response stream per request.)
//!
//! ```text
//! request  = 1u8 (deliver) | envelopes
//!          | 2u8 (sync)    | groups u16 | (group [32] | authors u16 | (author [32] | seq u64)*authors)*groups
//!          | 3u8 (carry)   | envelopes
//! envelopes = count u16 | (len u32 | envelope)*count
//! response = 1u8 (results) | count u16 | (status u8 | at u64)*count
//!          | 2u8 (envelopes) | more u8 | envelopes
//! ```
//! `Deliver` and `Carry` are answered with one status per envelope, in order. For `Deliver`,
//! `Stored` means the recipient's node has durably stored it (this is "delivered"); for `Carry`
//! it means the carrier holds it for its recipient. `Sync` sends the asker's "have" vector (per
//! group and author, the highest sequence number below which it has everything); the answer is
//! envelopes the asker lacks, and mail the answerer carries for the asker, with `more` set when
//! the answer was cut short by the size limits. Groups and authors are sorted and unique, so
//! every request has one encoding.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{ConvId, DeviceKey};
use crate::limits::{
    MAX_ENVELOPES_PER_REQUEST, MAX_ENVELOPE_BYTES, MAX_FRAME_BYTES, MAX_SYNC_AUTHORS, MAX_SYNC_GROUPS,
};

/// The protocol name negotiated by libp2p for a node's request stream.
pub const MSG_PROTOCOL: &str = "/dingo/msg/2";

/// Bytes before a frame's body on a request stream: `len u32 | id u64`, big-endian.
pub const FRAME_HEAD: usize = 12;

/// One frame of a request stream: the header (the body's length, then the id that pairs a
/// response with its request), then the body (an encoded [`Request`] or [`Response`]).
pub fn encode_frame(id: u64, body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge("frame"));
    }
    let mut frame = Vec::with_capacity(FRAME_HEAD + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(body);
    Ok(frame)
}

/// A frame header's body length and id; the length is checked against [`MAX_FRAME_BYTES`], so
/// a reader allocates the body only after this.
pub fn decode_frame_head(head: &[u8; FRAME_HEAD]) -> Result<(usize, u64), DecodeError> {
    let [l0, l1, l2, l3, id @ ..] = *head;
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge("frame"));
    }
    Ok((len, u64::from_be_bytes(id)))
}

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store these encoded envelopes.
    Deliver(Vec<Vec<u8>>),
    /// Send me what I lack of these groups, and any mail you carry for me.
    Sync(Vec<GroupHave>),
    /// Keep these envelopes (1:1 mail for someone else) and hand them on when you meet the
    /// recipient.
    Carry(Vec<Vec<u8>>),
}

/// What a node has of one group's log: per author device, the highest sequence number up to
/// which it has every envelope (authors it has nothing from are absent, meaning 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHave {
    /// The group.
    pub group: ConvId,
    /// (author device, contiguous sequence number), sorted by author, unique.
    pub have: Vec<(DeviceKey, u64)>,
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
    /// Envelopes answering a [`Request::Sync`]; `more` when there is more to ask for.
    Envelopes {
        /// Encoded envelopes.
        envs: Vec<Vec<u8>>,
        /// Whether the answer was cut short.
        more: bool,
    },
}

fn write_envelopes(w: &mut Writer, envs: &[Vec<u8>]) {
    w.u16(envs.len() as u16);
    for e in envs {
        w.long_bytes(e);
    }
}

fn read_envelopes(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = r.u16("envelope count")? as usize;
    if n > MAX_ENVELOPES_PER_REQUEST {
        return Err(DecodeError::TooLarge("envelope count"));
    }
    (0..n).map(|_| r.long_bytes(MAX_ENVELOPE_BYTES, "envelope").map(<[u8]>::to_vec)).collect()
}

impl Request {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Deliver(envs) => write_envelopes(w.u8(1), envs),
            Request::Sync(groups) => {
                w.u8(2).u16(groups.len() as u16);
                for g in groups {
                    w.bytes(&g.group.0).u16(g.have.len() as u16);
                    for (author, seq) in &g.have {
                        w.bytes(&author.0).u64(*seq);
                    }
                }
            }
            Request::Carry(envs) => write_envelopes(w.u8(3), envs),
        }
        w.into_bytes()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge("request"));
        }
        let mut r = Reader::new(bytes);
        let req = match r.u8("request tag")? {
            1 => Request::Deliver(read_envelopes(&mut r)?),
            2 => {
                let n = r.u16("group count")? as usize;
                if n > MAX_SYNC_GROUPS {
                    return Err(DecodeError::TooLarge("group count"));
                }
                let mut groups: Vec<GroupHave> = Vec::with_capacity(n);
                for _ in 0..n {
                    let group = ConvId(r.array("group")?);
                    if groups.last().is_some_and(|g| g.group >= group) {
                        return Err(DecodeError::Invalid("groups not sorted"));
                    }
                    let m = r.u16("author count")? as usize;
                    if m > MAX_SYNC_AUTHORS {
                        return Err(DecodeError::TooLarge("author count"));
                    }
                    let mut have: Vec<(DeviceKey, u64)> = Vec::with_capacity(m);
                    for _ in 0..m {
                        let author = DeviceKey(r.array("author")?);
                        if have.last().is_some_and(|(a, _)| a.0 >= author.0) {
                            return Err(DecodeError::Invalid("authors not sorted"));
                        }
                        have.push((author, r.u64("sequence number")?));
                    }
                    groups.push(GroupHave { group, have });
                }
                Request::Sync(groups)
            }
            3 => Request::Carry(read_envelopes(&mut r)?),
            _ => return Err(DecodeError::Invalid("request tag")),
        };
        r.finish("request")?;
        Ok(req)
    }
}

impl Response {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Response::Results(results) => {
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
            }
            Response::Envelopes { envs, more } => write_envelopes(w.u8(2).u8(u8::from(*more)), envs),
        }
        w.into_bytes()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge("response"));
        }
        let mut r = Reader::new(bytes);
        let resp = match r.u8("response tag")? {
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
                Response::Results(out)
            }
            2 => {
                let more = match r.u8("more")? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("more")),
                };
                Response::Envelopes { envs: read_envelopes(&mut r)?, more }
            }
            _ => return Err(DecodeError::Invalid("response tag")),
        };
        r.finish("response")?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames_carry_length_and_id_and_refuse_oversized_bodies() {
        let frame = encode_frame(0x0102_0304_0506_0708, b"ab").expect("encode");
        assert_eq!(frame, [0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, b'a', b'b']);
        let head: [u8; FRAME_HEAD] = frame[..FRAME_HEAD].try_into().expect("head");
        assert_eq!(decode_frame_head(&head), Ok((2, 0x0102_0304_0506_0708)));
        assert!(encode_frame(1, &vec![0u8; MAX_FRAME_BYTES + 1]).is_err());
        let mut huge = [0u8; FRAME_HEAD];
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_frame_head(&huge), Err(DecodeError::TooLarge("frame")));
    }

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
        let sync = Request::Sync(vec![
            GroupHave {
                group: ConvId([1; 32]),
                have: vec![(DeviceKey([2; 32]), 7), (DeviceKey([3; 32]), 0)],
            },
            GroupHave { group: ConvId([4; 32]), have: vec![] },
        ]);
        assert_eq!(Request::decode(&sync.encode()), Ok(sync));
        let carry = Request::Carry(vec![vec![9; 10]]);
        assert_eq!(Request::decode(&carry.encode()), Ok(carry));
        let envs = Response::Envelopes { envs: vec![vec![5; 3]], more: true };
        assert_eq!(Response::decode(&envs.encode()), Ok(envs));
    }

    #[test]
    fn unsorted_have_vectors_are_refused() {
        let sync = Request::Sync(vec![GroupHave {
            group: ConvId([1; 32]),
            have: vec![(DeviceKey([3; 32]), 1), (DeviceKey([2; 32]), 1)],
        }]);
        assert_eq!(Request::decode(&sync.encode()), Err(DecodeError::Invalid("authors not sorted")));
        let twice = Request::Sync(vec![
            GroupHave { group: ConvId([1; 32]), have: vec![] },
            GroupHave { group: ConvId([1; 32]), have: vec![] },
        ]);
        assert_eq!(Request::decode(&twice.encode()), Err(DecodeError::Invalid("groups not sorted")));
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
