//! Shared files: the manifest that travels in a message, and the frames of the `/dingo/file/1`
//! stream protocol that moves chunks between nodes.
//!
//! A file is split into chunks of [`FileManifest::chunk_size`] bytes, each sealed once with the
//! file's own key (ChaCha20-Poly1305, nonce = chunk index) and named by the BLAKE3 hash of the
//! sealed bytes. Any node holding a chunk can serve it; the fetcher checks the hash before it
//! keeps a byte, so a peer that serves garbage is caught at once, and only holders of the
//! manifest (sent end-to-end encrypted) can open the chunks.

use crate::codec::{DecodeError, Reader};
use crate::ids::FileId;
use serde::{Deserialize, Serialize};

/// The stream protocol that serves chunks.
pub const FILE_PROTOCOL: &str = "/dingo/file/1";
/// Version byte of a chunk request.
pub const FILE_FRAME_VERSION: u8 = 1;
/// Smallest chunk (files up to [`MAX_FILE_CHUNKS`] of these use it).
pub const MIN_CHUNK_BYTES: u32 = 1 << 20;
/// Largest chunk, before sealing.
pub const MAX_CHUNK_BYTES: u32 = 16 << 20;
/// What sealing adds to a chunk (the AEAD tag).
pub const CHUNK_TAG_BYTES: u32 = 16;
/// Most chunks a file may have (so a manifest fits in one message).
pub const MAX_FILE_CHUNKS: usize = 1536;
/// Largest file that can be shared.
pub const MAX_FILE_BYTES: u64 = MAX_FILE_CHUNKS as u64 * MAX_CHUNK_BYTES as u64;
/// Most chunks one request may ask for.
pub const MAX_CHUNKS_PER_REQUEST: usize = 64;
/// Longest file name, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// The BLAKE3 hash of a sealed chunk.
pub type ChunkHash = [u8; 32];

/// Everything needed to fetch, check and open one version of a file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileManifest {
    /// The file's name (no directories).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Plaintext bytes per chunk (the last one may be shorter).
    pub chunk_size: u32,
    /// BLAKE3 of each sealed chunk, in order.
    pub chunks: Vec<ChunkHash>,
    /// The file's ChaCha20-Poly1305 key (random per share).
    pub key: [u8; 32],
}

impl std::fmt::Debug for FileManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileManifest")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl FileManifest {
    /// The chunk size for a file of `size` bytes: 1 MiB, doubled until the file fits in
    /// [`MAX_FILE_CHUNKS`] chunks; `None` if the file is too large to share.
    pub fn chunk_size_for(size: u64) -> Option<u32> {
        let mut chunk = MIN_CHUNK_BYTES;
        while size.div_ceil(u64::from(chunk)) > MAX_FILE_CHUNKS as u64 {
            chunk = chunk.checked_mul(2).filter(|c| *c <= MAX_CHUNK_BYTES)?;
        }
        Some(chunk)
    }

    /// How many chunks a file of `size` bytes has in chunks of `chunk_size`.
    pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
        size.div_ceil(u64::from(chunk_size.max(1)))
    }

    /// The version's id: it names the exact bytes (through the chunk hashes, which depend on
    /// the random key too, so two shares of the same bytes are two versions).
    pub fn id(&self) -> FileId {
        let mut h = blake3::Hasher::new_derive_key("dingo file id v1");
        h.update(&self.size.to_le_bytes());
        h.update(&self.chunk_size.to_le_bytes());
        for c in &self.chunks {
            h.update(c);
        }
        FileId(*h.finalize().as_bytes())
    }

    /// Plaintext length of chunk `index`.
    pub fn chunk_len(&self, index: usize) -> u64 {
        self.size.saturating_sub(self.chunk_offset(index)).min(u64::from(self.chunk_size))
    }

    /// Where chunk `index` starts in the file.
    pub fn chunk_offset(&self, index: usize) -> u64 {
        index as u64 * u64::from(self.chunk_size)
    }

    /// Checks the manifest's fields agree with each other and the limits.
    pub fn check(&self) -> Result<(), DecodeError> {
        check_file_name(&self.name)?;
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&self.chunk_size)
            || !self.chunk_size.is_power_of_two()
        {
            return Err(DecodeError::Invalid("chunk size"));
        }
        if self.chunks.len() > MAX_FILE_CHUNKS {
            return Err(DecodeError::TooLarge("file"));
        }
        if Self::chunk_count(self.size, self.chunk_size) != self.chunks.len() as u64 {
            return Err(DecodeError::Invalid("chunk count"));
        }
        Ok(())
    }
}

/// A file name must be a plain name: 1 to 255 bytes, no path separators, no control
/// characters, not `.` or `..`.
pub fn check_file_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty()
        || name.len() > MAX_FILE_NAME_BYTES
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(DecodeError::Invalid("file name"));
    }
    Ok(())
}

/// Encodes a request for chunks: version, count (u16 BE), hashes.
pub fn encode_chunk_request(hashes: &[ChunkHash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + hashes.len() * 32);
    out.push(FILE_FRAME_VERSION);
    out.extend((hashes.len().min(MAX_CHUNKS_PER_REQUEST) as u16).to_be_bytes());
    for h in hashes.iter().take(MAX_CHUNKS_PER_REQUEST) {
        out.extend(h);
    }
    out
}

/// The fixed part of a chunk request: its version and how many hashes follow.
pub const CHUNK_REQUEST_HEAD: usize = 3;

/// Reads the head of a chunk request: how many hashes follow (1 to [`MAX_CHUNKS_PER_REQUEST`]).
pub fn decode_chunk_request_head(head: &[u8; CHUNK_REQUEST_HEAD]) -> Result<usize, DecodeError> {
    if head[0] != FILE_FRAME_VERSION {
        return Err(DecodeError::UnsupportedVersion { what: "chunk request", version: head[0] });
    }
    let n = usize::from(u16::from_be_bytes([head[1], head[2]]));
    if n == 0 || n > MAX_CHUNKS_PER_REQUEST {
        return Err(DecodeError::TooLarge("chunk request"));
    }
    Ok(n)
}

/// Decodes a whole chunk request.
pub fn decode_chunk_request(bytes: &[u8]) -> Result<Vec<ChunkHash>, DecodeError> {
    let mut r = Reader::new(bytes);
    let head: [u8; CHUNK_REQUEST_HEAD] = r.array("chunk request head")?;
    let n = decode_chunk_request_head(&head)?;
    let hashes = (0..n).map(|_| r.array::<32>("chunk hash")).collect::<Result<Vec<_>, _>>()?;
    r.finish("chunk request")?;
    Ok(hashes)
}

/// The head of one answer in a chunk response: the chunk follows when `Some(len)`.
pub const CHUNK_ANSWER_HEAD: usize = 5;

/// Encodes the head of an answer: 1 and the length when the chunk follows, else 0.
pub fn encode_chunk_answer_head(len: Option<u32>) -> [u8; CHUNK_ANSWER_HEAD] {
    let mut out = [0u8; CHUNK_ANSWER_HEAD];
    if let Some(len) = len {
        out[0] = 1;
        out[1..].copy_from_slice(&len.to_be_bytes());
    }
    out
}

/// Reads the head of an answer; a present chunk is at most a sealed [`MAX_CHUNK_BYTES`].
pub fn decode_chunk_answer_head(head: &[u8; CHUNK_ANSWER_HEAD]) -> Result<Option<u32>, DecodeError> {
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    match head[0] {
        0 if len == 0 => Ok(None),
        1 if len <= MAX_CHUNK_BYTES + CHUNK_TAG_BYTES => Ok(Some(len)),
        1 => Err(DecodeError::TooLarge("chunk")),
        _ => Err(DecodeError::Invalid("chunk answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_grow_only_for_files_that_need_it() {
        assert_eq!(FileManifest::chunk_size_for(0), Some(MIN_CHUNK_BYTES));
        assert_eq!(FileManifest::chunk_size_for(100 << 20), Some(MIN_CHUNK_BYTES));
        assert_eq!(FileManifest::chunk_size_for(MAX_FILE_CHUNKS as u64 * (1 << 20) + 1), Some(2 << 20));
        assert_eq!(FileManifest::chunk_size_for(MAX_FILE_BYTES), Some(MAX_CHUNK_BYTES));
        assert_eq!(FileManifest::chunk_size_for(MAX_FILE_BYTES + 1), None);
    }

    #[test]
    fn manifests_check_their_fields() {
        let ok = FileManifest {
            name: "a.txt".into(),
            size: (1 << 20) + 1,
            chunk_size: 1 << 20,
            chunks: vec![[1; 32], [2; 32]],
            key: [0; 32],
        };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.chunk_len(0), 1 << 20);
        assert_eq!(ok.chunk_len(1), 1);
        assert_eq!(
            FileManifest { chunks: vec![[1; 32]], ..ok.clone() }.check(),
            Err(DecodeError::Invalid("chunk count"))
        );
        assert!(FileManifest { name: "../x".into(), ..ok.clone() }.check().is_err());
        assert!(FileManifest { chunk_size: 3 << 20, ..ok.clone() }.check().is_err());
        assert_ne!(ok.id(), FileManifest { chunks: vec![[1; 32], [3; 32]], ..ok.clone() }.id());
    }

    #[test]
    fn chunk_frames_round_trip_and_refuse_bad_heads() {
        let hashes = vec![[7; 32], [8; 32]];
        assert_eq!(decode_chunk_request(&encode_chunk_request(&hashes)), Ok(hashes));
        assert!(decode_chunk_request(&[1, 0, 0]).is_err());
        assert!(decode_chunk_request(&[2, 0, 1]).is_err());
        assert!(decode_chunk_request(&[1, 0, 2, 0]).is_err());
        assert_eq!(decode_chunk_answer_head(&encode_chunk_answer_head(Some(5))), Ok(Some(5)));
        assert_eq!(decode_chunk_answer_head(&encode_chunk_answer_head(None)), Ok(None));
        assert!(decode_chunk_answer_head(&encode_chunk_answer_head(Some(u32::MAX))).is_err());
        assert!(decode_chunk_answer_head(&[0, 0, 0, 0, 1]).is_err());
    }
}
