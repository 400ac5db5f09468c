//! Identifiers, wire and disk structures, versioned codecs and limits shared by every Dingo crate.
//!
//! Nothing here does I/O. Every decoder of untrusted bytes lives here, is bounded by the limits in
//! [`limits`], never panics, and has a fuzz target (`fuzz/`) and frozen test vectors (`tests/`).

pub mod codec;
pub mod content;
pub mod envelope;
pub mod file;
pub mod ids;
pub mod invite;
pub mod limits;
pub mod team;
pub mod wire;

pub use codec::DecodeError;
pub use ids::{ConvId, DeviceKey, FileId, MsgId, UserId};

/// Milliseconds since the Unix epoch, the one clock unit used on the wire and on disk.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
