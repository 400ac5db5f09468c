//! Dingo's cryptography, as synchronous state machines with no I/O:
//!
//! - [`identity`]: the user key, the device keys it certifies, the signed prekey, fingerprints.
//! - [`x3dh`] and [`ratchet`]: session start (Signal's X3DH) and the Double Ratchet
//!   (Signal's published spec) with HKDF-SHA256, HMAC-SHA256 chains and ChaCha20-Poly1305.
//! - [`session`]: a pair's sessions, and sealing/opening signed 1:1 envelopes.
//! - [`batch`]: one signature for a run of envelopes (a Merkle tree), checked once per batch.
//! - [`group`]: sender-key chains for group messages (encrypt and sign once for all members).
//! - [`membership`]: the team's signed op log and the membership computed from it (a CRDT).
//! - [`file`]: sealing file chunks once with a per-file key.
//! - [`at_rest`]: the storage key that encrypts every stored value, and the passphrase-wrapped
//!   key file.
//!
//! Only primitives from RustCrypto and dalek are used; nothing here implements a primitive.
//! Secrets are zeroized on drop and their `Debug` prints no key bytes.

pub mod at_rest;
pub mod batch;
mod error;
pub mod file;
pub mod group;
pub mod identity;
pub mod membership;
pub mod ratchet;
mod secret;
pub mod session;
pub mod x3dh;

pub use error::CryptoError;
pub use identity::Identity;
pub use secret::Secret32;
