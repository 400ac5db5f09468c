//! What the node stores (sealed by the store) and what it shows (JSON views).

use dingo_types::{ConvId, MsgId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How far ahead of the contiguous prefix a sequence number may be (a bound on the window).
pub(crate) const MAX_REPLAY_AHEAD: u64 = 8192;
/// Most sequence numbers held above the contiguous prefix.
pub(crate) const MAX_REPLAY_ABOVE: usize = 4096;

/// A contact as stored: the pinned device certificate and what is needed to reach them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContactRec {
    pub user_id: UserId,
    pub name: String,
    /// Encoded `DeviceCert` pinned on first use.
    pub cert: Vec<u8>,
    /// Encoded `SignedPreKey`, if we have their invite.
    pub prekey: Option<Vec<u8>>,
    pub addrs: Vec<String>,
    pub verified: bool,
    /// A different device certificate seen for this user: the conversation is blocked until the
    /// user confirms it.
    pub pending_cert: Option<Vec<u8>>,
    pub pending_prekey: Option<Vec<u8>>,
    pub added_at: u64,
}

/// Per-conversation counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ConversationRec {
    pub contact: Option<UserId>,
    pub next_seq: u64,
    pub unread: u64,
    pub last_at: u64,
    pub last_text: String,
    pub total: u64,
}

/// An envelope waiting in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutboxItem {
    pub envelope: Vec<u8>,
    pub msg_id: Option<MsgId>,
    /// Where the message record is, so delivery needs no index lookup.
    pub msg_key: Option<Vec<u8>>,
    pub conv: ConvId,
}

/// Which sequence numbers of one sender in one conversation were received: an exact record (a
/// contiguous prefix plus a bounded set above it), persisted so replays fail after restarts too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ReplayWindow {
    pub contiguous: u64,
    pub above: BTreeSet<u64>,
}

impl ReplayWindow {
    pub(crate) fn contains(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.above.contains(&seq)
    }
    pub(crate) fn acceptable(&self, seq: u64) -> bool {
        seq > 0 && seq <= self.contiguous.saturating_add(MAX_REPLAY_AHEAD)
    }
    pub(crate) fn insert(&mut self, seq: u64) {
        self.above.insert(seq);
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        // A gap that never fills (a message the sender gave up on) must not stall the window:
        // past the bound, the oldest gaps are treated as seen, and their numbers as replays.
        while self.above.len() > MAX_REPLAY_ABOVE {
            let Some(lowest) = self.above.pop_first() else { break };
            self.contiguous = lowest;
            while self.above.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received.
    In,
    /// Sent by this user.
    Out,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_is_exact_and_survives_a_permanent_gap() {
        let mut w = ReplayWindow::default();
        for seq in [1, 2, 4, 3, 6] {
            assert!(!w.contains(seq));
            w.insert(seq);
            assert!(w.contains(seq));
        }
        assert_eq!(w.contiguous, 4);
        assert!(!w.contains(5));
        assert!(!w.acceptable(0));
        // Seq 5 never comes: the window keeps accepting, bounded.
        for seq in 7..7 + 3 * MAX_REPLAY_ABOVE as u64 {
            assert!(w.acceptable(seq), "{seq}");
            w.insert(seq);
        }
        assert!(w.above.len() <= MAX_REPLAY_ABOVE);
        assert!(w.contains(5), "a number given up on counts as a replay");
    }
}

/// A message's delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored in the outbox; not yet transmitted.
    Queued,
    /// Transmitted, not yet acknowledged by the recipient's node.
    Sent,
    /// The recipient's node acknowledged storing it.
    Delivered,
    /// The recipient read it.
    Read,
    /// The recipient's node refused it (it will not be retried).
    Failed,
}

/// A message as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MessageRec {
    pub id: MsgId,
    pub conv: ConvId,
    pub direction: Direction,
    pub from: UserId,
    pub text: String,
    pub sent_at: u64,
    pub received_at: Option<u64>,
    pub seq: u64,
    pub status: Status,
    pub delivered_at: Option<u64>,
    pub read_at: Option<u64>,
}

/// This node's identity, as `dingo id` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdInfo {
    /// The user id.
    pub user_id: String,
    /// The device's libp2p PeerId.
    pub device_id: String,
    /// The display name.
    pub name: String,
    /// The user's fingerprint.
    pub fingerprint: String,
    /// The invite code.
    pub invite: String,
    /// Addresses the invite carries.
    pub addrs: Vec<String>,
}

/// A contact, as `dingo contact list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactInfo {
    /// The local name.
    pub name: String,
    /// Their user id.
    pub user_id: String,
    /// Their device's PeerId.
    pub device_id: String,
    /// Their fingerprint.
    pub fingerprint: String,
    /// Whether the safety number was confirmed.
    pub verified: bool,
    /// Whether a key change blocks the conversation.
    pub key_changed: bool,
    /// Known addresses.
    pub addrs: Vec<String>,
}

/// The result of `dingo contact verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    /// The contact.
    pub name: String,
    /// The 60-digit number both sides compare.
    pub safety_number: String,
    /// Whether it is now marked verified.
    pub verified: bool,
    /// Whether a key change is pending (the number shown is for the new key).
    pub key_changed: bool,
}

/// A message, as `dingo messages --json` shows it. Times are ms since the Unix epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageView {
    /// Message id.
    pub id: String,
    /// `in` or `out`.
    pub direction: Direction,
    /// The author's name (`me` for this user).
    pub from: String,
    /// The author's user id.
    pub from_user_id: String,
    /// The text.
    pub text: String,
    /// Author's clock at sending.
    pub sent_at: u64,
    /// When this node stored it (incoming only).
    pub received_at: Option<u64>,
    /// The sender's sequence number in the conversation.
    pub seq: u64,
    /// Delivery state.
    pub status: Status,
    /// When the recipient's node stored it (outgoing) or this node did (incoming).
    pub delivered_at: Option<u64>,
    /// When it was read.
    pub read_at: Option<u64>,
}

/// A conversation, as `dingo inbox` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationView {
    /// The contact's name.
    pub contact: String,
    /// Their user id.
    pub user_id: String,
    /// Unread incoming messages.
    pub unread: u64,
    /// Messages in the conversation.
    pub total: u64,
    /// Time of the last message.
    pub last_at: u64,
    /// Start of the last message.
    pub last_text: String,
}

/// What `dingo send` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendResult {
    /// The new message's id.
    pub id: String,
    /// Its status right after the call.
    pub status: Status,
}

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Envelopes stored from the network.
    pub received: u64,
    /// Duplicates acknowledged again.
    pub duplicates: u64,
    /// Envelopes dropped as malformed, forged, tampered, misaddressed or replayed.
    pub rejected: u64,
    /// Envelopes acknowledged by recipients.
    pub delivered: u64,
}

/// Something that happened, for the API's event stream and the demo.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// A message arrived.
    Message {
        /// From whom.
        from: String,
        /// Its id.
        id: String,
        /// The text.
        text: String,
        /// Author's clock.
        sent_at: u64,
    },
    /// A recipient's node stored our message.
    Delivered {
        /// Message id.
        id: String,
        /// Recipient.
        to: String,
        /// When (their clock).
        at: u64,
    },
    /// A recipient read our message.
    Read {
        /// Message id.
        id: String,
        /// Reader.
        by: String,
        /// When (their clock).
        at: u64,
    },
    /// A connection to a peer opened.
    PeerConnected {
        /// PeerId.
        peer: String,
    },
    /// An envelope was dropped.
    Rejected {
        /// From which peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A contact's key changed; their conversation is blocked until re-verified.
    KeyChanged {
        /// The contact.
        contact: String,
    },
}
