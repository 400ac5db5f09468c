//! Sealing file chunks: each chunk is encrypted once, when the file is shared, with the file's
//! own random key (ChaCha20-Poly1305, RFC 8439) and its index as the nonce, and is then stored
//! and sent as those sealed bytes. The key travels only inside the end-to-end encrypted
//! message that shares the file; a chunk's name is the BLAKE3 hash of its sealed bytes.

use crate::{CryptoError, Secret32};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use dingo_types::file::ChunkHash;

const CHUNK_AAD: &[u8] = b"dingo file chunk v1";

/// A fresh random key for one file version.
pub fn new_file_key() -> Secret32 {
    Secret32::random()
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_le_bytes());
    Nonce::from(n)
}

/// Seals chunk `index` in place (the tag is appended) and returns its hash. A key seals one
/// file only, so (key, index) never repeats.
pub fn seal_chunk(key: &Secret32, index: u64, chunk: &mut Vec<u8>) -> Result<ChunkHash, CryptoError> {
    ChaCha20Poly1305::new(Key::from_slice(key.expose()))
        .encrypt_in_place(&nonce(index), CHUNK_AAD, chunk)
        .map_err(|_| CryptoError::Format("chunk too large"))?;
    Ok(chunk_hash(chunk))
}

/// Opens chunk `index` in place (the tag is removed).
pub fn open_chunk(key: &Secret32, index: u64, sealed: &mut Vec<u8>) -> Result<(), CryptoError> {
    ChaCha20Poly1305::new(Key::from_slice(key.expose()))
        .decrypt_in_place(&nonce(index), CHUNK_AAD, sealed)
        .map_err(|_| CryptoError::DecryptFailed)
}

/// The name of a sealed chunk.
pub fn chunk_hash(sealed: &[u8]) -> ChunkHash {
    *blake3::hash(sealed).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_opens_only_with_its_key_and_index() {
        let key = new_file_key();
        let mut c = b"hello chunk".to_vec();
        let h = seal_chunk(&key, 3, &mut c).expect("seal");
        assert_eq!(h, chunk_hash(&c));
        assert!(open_chunk(&key, 4, &mut c.clone()).is_err());
        assert!(open_chunk(&new_file_key(), 3, &mut c.clone()).is_err());
        let mut tampered = c.clone();
        tampered[0] ^= 1;
        assert!(open_chunk(&key, 3, &mut tampered).is_err());
        open_chunk(&key, 3, &mut c).expect("open");
        assert_eq!(c, b"hello chunk");
    }
}
