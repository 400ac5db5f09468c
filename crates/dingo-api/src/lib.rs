//! The node's local API (DESIGN.md §8): HTTP+JSON and a WebSocket event stream on 127.0.0.1,
//! for the CLI and a future web UI, plus the blocking [`Client`] the CLI uses.
//!
//! The server binds only to 127.0.0.1 on a random port, writes the address to `HOME/api.json`
//! and a random bearer token to `HOME/api.token` (0600). Every request must carry the token
//! (`Authorization: Bearer`, or `?token=` for the WebSocket, which browsers cannot give headers),
//! a `Host` naming that loopback address, and no foreign `Origin`, which shuts out DNS
//! rebinding and cross-site requests.

mod client;
mod server;

pub use client::{Client, ClientError};
pub use server::{serve, ApiHandle};

use serde::{Deserialize, Serialize};

/// What `HOME/api.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiInfo {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The serving process.
    pub pid: u32,
}

/// Body of `POST /v1/send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendBody {
    /// Contact name or id.
    pub to: String,
    /// The text.
    pub text: String,
}

/// Body of `POST /v1/contacts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddContactBody {
    /// The invite code.
    pub invite: String,
    /// A local name (defaults to the invite's).
    pub name: Option<String>,
}

/// Body of `POST /v1/contacts/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyBody {
    /// Contact name or id.
    pub who: String,
    /// Accept the key (and mark verified).
    pub confirm: bool,
}

/// Body of `POST /v1/read` and query of `GET /v1/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationQuery {
    /// Contact name or id.
    pub with: String,
}

/// An error body: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for the user.
    pub error: String,
}
