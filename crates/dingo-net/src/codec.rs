//! Frames of `/dingo/msg/2`: `len u32 | id u64 | body` (big-endian), where `body` is an encoded
//! [`Request`](dingo_types::wire::Request) from the stream's opener or a
//! [`Response`](dingo_types::wire::Response) from its acceptor, answering the request with the
//! same `id`. `len` counts the body only and is checked against [`MAX_FRAME_BYTES`] before
//! anything is allocated.

use dingo_types::limits::MAX_FRAME_BYTES;
use futures::{AsyncRead, AsyncReadExt};
use std::io;

/// Bytes before a frame's body.
pub(crate) const FRAME_HEAD: usize = 12;

/// One frame: the header, then the body.
pub(crate) fn encode_frame(id: u64, body: &[u8]) -> io::Result<Vec<u8>> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame exceeds the size limit"));
    }
    let mut frame = Vec::with_capacity(FRAME_HEAD + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(body);
    Ok(frame)
}

/// A frame's length and id, or why the header is refused.
pub(crate) fn decode_head(head: &[u8; FRAME_HEAD]) -> io::Result<(usize, u64)> {
    let [l0, l1, l2, l3, id @ ..] = *head;
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame exceeds the size limit"));
    }
    Ok((len, u64::from_be_bytes(id)))
}

/// Reads the next frame's id and body.
pub(crate) async fn read_frame<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<(u64, Vec<u8>)> {
    let mut head = [0u8; FRAME_HEAD];
    io.read_exact(&mut head).await?;
    let (len, id) = decode_head(&head)?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok((id, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for (id, body) in [(0u64, &b""[..]), (7, b"hello"), (u64::MAX, &[9u8; 1000][..])] {
            let frame = encode_frame(id, body).expect("encode");
            let got = futures::executor::block_on(read_frame(&mut &frame[..])).expect("read");
            assert_eq!(got, (id, body.to_vec()));
        }
    }

    #[test]
    fn the_frame_header_is_pinned() {
        let frame = encode_frame(0x0102_0304_0506_0708, b"ab").expect("encode");
        assert_eq!(frame, [0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, b'a', b'b']);
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        assert!(encode_frame(1, &vec![0u8; MAX_FRAME_BYTES + 1]).is_err());
        let mut head = [0u8; FRAME_HEAD];
        head[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = decode_head(&head).expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A truncated frame is an error, not a short body.
        let mut frame = encode_frame(1, b"abc").expect("encode");
        frame.pop();
        assert!(futures::executor::block_on(read_frame(&mut &frame[..])).is_err());
    }
}
