//! Reading `/dingo/msg/2` frames off a stream (the format is [`dingo_types::wire`]'s:
//! `len u32 | id u64 | body`, the length checked before the body is allocated).

use dingo_types::wire::{decode_frame_head, FRAME_HEAD};
use futures::{AsyncRead, AsyncReadExt};
use std::io;

/// Reads the next frame's id and body.
pub(crate) async fn read_frame<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<(u64, Vec<u8>)> {
    let mut head = [0u8; FRAME_HEAD];
    io.read_exact(&mut head).await?;
    let (len, id) =
        decode_frame_head(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok((id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dingo_types::wire::encode_frame;

    #[test]
    fn frames_round_trip() {
        for (id, body) in [(0u64, &b""[..]), (7, b"hello"), (u64::MAX, &[9u8; 1000][..])] {
            let frame = encode_frame(id, body).expect("encode");
            let got = futures::executor::block_on(read_frame(&mut &frame[..])).expect("read");
            assert_eq!(got, (id, body.to_vec()));
        }
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut head = [0u8; FRAME_HEAD];
        head[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = futures::executor::block_on(read_frame(&mut &head[..])).expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut frame = encode_frame(1, b"abc").expect("encode");
        frame.pop();
        assert!(futures::executor::block_on(read_frame(&mut &frame[..])).is_err());
    }
}
