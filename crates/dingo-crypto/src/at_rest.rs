//! Encryption at rest (DESIGN.md §4): every stored value is sealed with XChaCha20-Poly1305 under
//! the storage key, random 24-byte nonces, and the record's location (tree and key) as associated
//! data so records cannot be swapped. The identity and storage key live in a key file wrapped
//! with Argon2id from the passphrase, when one is set.
//!
//! ```text
//! value    = 1u8 | nonce [24] | ciphertext
//! key file = "DINGOKEY" | 1u8 | kdf u8 (0 none, 1 argon2id) | m_kib u32 | t u32 | p u32
//!          | salt [16] | nonce [24] | ciphertext
//! ```
//! Without a passphrase the key file's wrapping key is derived from its salt alone: the file's
//! 0600 permissions are then its only protection, and the README says so.

use crate::{CryptoError, Secret32};
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use dingo_types::codec::{Reader, Writer};

const VALUE_VERSION: u8 = 1;
/// Bytes before a stored value's ciphertext: version and nonce.
pub const VALUE_HEADER_LEN: usize = 1 + 24;
const VALUE_TAG_LEN: usize = 16;
const KEY_FILE_MAGIC: &[u8; 8] = b"DINGOKEY";
const KEY_FILE_VERSION: u8 = 1;
/// Argon2id memory cost in KiB (OWASP's 19 MiB minimum, with t = 2).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// Argon2id iterations.
pub const ARGON2_T: u32 = 2;

/// The key that encrypts every stored value.
#[derive(Clone)]
pub struct StorageKey(Secret32);

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageKey(<redacted>)")
    }
}

fn xchacha(key: &Secret32) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.expose().into())
}

impl StorageKey {
    /// Wraps the key.
    pub fn new(key: Secret32) -> Self {
        Self(key)
    }

    /// Seals `plaintext` stored at location `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut buf = Self::value_buffer(plaintext.len());
        buf.extend_from_slice(plaintext);
        self.seal_buffer(aad, buf)
    }

    /// An empty value with room for its header and tag, to write `capacity` bytes of plaintext
    /// into (after [`VALUE_HEADER_LEN`] bytes) and seal in place with [`StorageKey::seal_buffer`].
    pub fn value_buffer(capacity: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(VALUE_HEADER_LEN + capacity + VALUE_TAG_LEN);
        buf.resize(VALUE_HEADER_LEN, 0);
        buf
    }

    /// Seals, in place, a [`StorageKey::value_buffer`] whose plaintext follows the header, stored
    /// at location `aad` (one allocation per stored value).
    pub fn seal_buffer(&self, aad: &[u8], mut buf: Vec<u8>) -> Vec<u8> {
        let nonce: [u8; 24] = rand::random();
        buf[0] = VALUE_VERSION;
        buf[1..VALUE_HEADER_LEN].copy_from_slice(&nonce);
        // Fails only for plaintexts beyond 256 GiB, which no record comes near; such a value
        // would then not open and read as corrupt rather than be stored in the clear.
        match xchacha(&self.0).encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            aad,
            &mut buf[VALUE_HEADER_LEN..],
        ) {
            Ok(tag) => buf.extend_from_slice(&tag),
            Err(_) => buf.truncate(VALUE_HEADER_LEN),
        }
        buf
    }

    /// Opens a value sealed at location `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut r = Reader::new(sealed);
        let version = r.u8("value version").map_err(|_| CryptoError::Format("stored value"))?;
        if version != VALUE_VERSION {
            return Err(CryptoError::Format("stored value version"));
        }
        let nonce: [u8; 24] = r.array("nonce").map_err(|_| CryptoError::Format("stored value"))?;
        let ct = r.bytes(r.remaining(), "ciphertext").map_err(|_| CryptoError::Format("stored value"))?;
        xchacha(&self.0)
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::DecryptFailed)
    }
}

fn wrapping_key(
    kdf: u8,
    m: u32,
    t: u32,
    p: u32,
    salt: &[u8; 16],
    passphrase: &[u8],
) -> Result<Secret32, CryptoError> {
    let mut out = [0u8; 32];
    match kdf {
        0 => {
            let mut h = blake3::Hasher::new_derive_key("dingo 2026 key file without passphrase v1");
            h.update(salt);
            out = *h.finalize().as_bytes();
        }
        1 => {
            let params = argon2::Params::new(m, t, p, Some(32))
                .map_err(|_| CryptoError::Format("key file parameters"))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(passphrase, salt, &mut out)
                .map_err(|_| CryptoError::Format("key file parameters"))?;
        }
        _ => return Err(CryptoError::Format("key file kdf")),
    }
    Ok(Secret32::from_bytes(out))
}

/// Wraps identity secrets for the key file, with Argon2id if a passphrase is given.
pub fn wrap_key_file(secret: &[u8], passphrase: Option<&[u8]>) -> Vec<u8> {
    let (kdf, m, t, p) = match passphrase {
        Some(_) => (1u8, ARGON2_M_KIB, ARGON2_T, 1u32),
        None => (0, 0, 0, 0),
    };
    let salt: [u8; 16] = rand::random();
    let nonce: [u8; 24] = rand::random();
    let key = wrapping_key(kdf, m, t, p, &salt, passphrase.unwrap_or_default())
        .unwrap_or_else(|_| Secret32::random());
    let mut w = Writer::new();
    w.bytes(KEY_FILE_MAGIC).u8(KEY_FILE_VERSION).u8(kdf).u32(m).u32(t).u32(p).bytes(&salt).bytes(&nonce);
    let header = w.into_bytes();
    let ct = xchacha(&key)
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad: &header })
        .unwrap_or_default();
    [header, ct].concat()
}

/// Whether a key file needs a passphrase.
pub fn key_file_needs_passphrase(data: &[u8]) -> Result<bool, CryptoError> {
    if data.len() < 10 || &data[..8] != KEY_FILE_MAGIC {
        return Err(CryptoError::Format("not a Dingo key file"));
    }
    Ok(data[9] == 1)
}

/// Unwraps a key file; a wrong passphrase and a corrupt file both fail the same way.
pub fn unwrap_key_file(data: &[u8], passphrase: Option<&[u8]>) -> Result<Vec<u8>, CryptoError> {
    let mut r = Reader::new(data);
    let bad = |_| CryptoError::Format("key file");
    let magic: [u8; 8] = r.array("magic").map_err(bad)?;
    if &magic != KEY_FILE_MAGIC {
        return Err(CryptoError::Format("not a Dingo key file"));
    }
    if r.u8("version").map_err(bad)? != KEY_FILE_VERSION {
        return Err(CryptoError::Format("key file version"));
    }
    let kdf = r.u8("kdf").map_err(bad)?;
    let m = r.u32("m").map_err(bad)?;
    let t = r.u32("t").map_err(bad)?;
    let p = r.u32("p").map_err(bad)?;
    // Refuse absurd parameters from a tampered file instead of allocating gigabytes.
    if m > 1024 * 1024 || t > 64 || p > 16 {
        return Err(CryptoError::Format("key file parameters"));
    }
    let salt: [u8; 16] = r.array("salt").map_err(bad)?;
    let nonce: [u8; 24] = r.array("nonce").map_err(bad)?;
    let header_len = data.len() - r.remaining();
    let ct = r.bytes(r.remaining(), "ciphertext").map_err(bad)?;
    if kdf == 1 && passphrase.is_none() {
        return Err(CryptoError::WrongPassphrase);
    }
    let key = wrapping_key(kdf, m, t, p, &salt, passphrase.unwrap_or_default())?;
    xchacha(&key)
        .decrypt(XNonce::from_slice(&nonce), Payload { msg: ct, aad: &data[..header_len] })
        .map_err(|_| CryptoError::WrongPassphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_to_their_location() {
        let k = StorageKey::new(Secret32::from_bytes([1; 32]));
        let sealed = k.seal(b"messages/1", b"secret");
        assert_eq!(k.open(b"messages/1", &sealed).expect("open"), b"secret");
        assert_eq!(k.open(b"messages/2", &sealed), Err(CryptoError::DecryptFailed));
        let other = StorageKey::new(Secret32::from_bytes([2; 32]));
        assert_eq!(other.open(b"messages/1", &sealed), Err(CryptoError::DecryptFailed));
    }

    #[test]
    fn key_file_needs_the_right_passphrase() {
        let wrapped = wrap_key_file(b"identity", Some(b"correct horse"));
        assert!(key_file_needs_passphrase(&wrapped).expect("format"));
        assert_eq!(unwrap_key_file(&wrapped, Some(b"correct horse")).expect("unwrap"), b"identity");
        assert_eq!(unwrap_key_file(&wrapped, Some(b"wrong")), Err(CryptoError::WrongPassphrase));
        assert_eq!(unwrap_key_file(&wrapped, None), Err(CryptoError::WrongPassphrase));
        let plain = wrap_key_file(b"identity", None);
        assert_eq!(unwrap_key_file(&plain, None).expect("unwrap"), b"identity");
        let mut corrupt = plain.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(unwrap_key_file(&corrupt, None).is_err());
        assert!(unwrap_key_file(b"junk", None).is_err());
    }
}
