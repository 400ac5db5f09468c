//! What is inside a 1:1 envelope once decrypted: a versioned postcard encoding of [`Content`].

use crate::codec::DecodeError;
use crate::file::FileManifest;
use crate::ids::{ConvId, MsgId};
use crate::limits::*;
use crate::team::{MemberInfo, TeamId};
use serde::{Deserialize, Serialize};

/// The plaintext content format version.
pub const CONTENT_VERSION: u8 = 1;

/// Names a message of the receipt's recipient exactly: its id and where its author filed it
/// (author's send time and sequence number), so no id index is needed to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgRef {
    /// The message id.
    pub id: MsgId,
    /// The author's `sent_at`.
    pub sent_at: u64,
    /// The author's sequence number for it.
    pub seq: u64,
}

/// A decrypted message body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// A chat message.
    Text {
        /// The author's id for the message (receipts refer to it).
        id: MsgId,
        /// The author's clock when sent, ms since the epoch.
        sent_at: u64,
        /// The text, at most [`MAX_TEXT_BYTES`].
        text: String,
    },
    /// The reader's node reports that these messages were read.
    ReadReceipt {
        /// The messages read.
        read: Vec<MsgRef>,
        /// When, on the reader's clock.
        read_at: u64,
    },
    /// Team membership ops (encoded `SignedOp`s), sent pairwise to members.
    TeamOps {
        /// The team.
        team: TeamId,
        /// The ops, at most [`MAX_OPS_PER_MESSAGE`].
        ops: Vec<Vec<u8>>,
    },
    /// A joiner presents a join code's token to the admin who issued it.
    JoinRequest {
        /// The team.
        team: TeamId,
        /// The code's secret.
        token: [u8; 16],
        /// The joiner's device, as the admin will add it.
        member: MemberInfo,
    },
    /// The admin's answer to a join request it will not honour.
    JoinRefused {
        /// The team.
        team: TeamId,
        /// Why (shown to the joiner).
        reason: String,
    },
    /// The sender's current sender-key chain for a group, sent pairwise to each member.
    SenderKey {
        /// The group.
        group: ConvId,
        /// The chain generation.
        chain_id: u32,
        /// The message number `key` is at.
        n: u32,
        /// The chain key at `n`.
        key: [u8; 32],
    },
    /// The reader reports group messages read (sent pairwise to their author).
    GroupRead {
        /// The group.
        group: ConvId,
        /// The messages read.
        read: Vec<MsgRef>,
        /// When, on the reader's clock.
        read_at: u64,
    },
    /// An urgent message that alerts until acknowledged.
    Ding {
        /// The author's id for it.
        id: MsgId,
        /// The author's clock when sent.
        sent_at: u64,
        /// The text.
        text: String,
        /// Re-alert interval the author asks for, in seconds.
        repeat_every: u32,
    },
    /// The author asks those who have not acknowledged a DING to be alerted again.
    DingAgain {
        /// The DING.
        id: MsgId,
    },
    /// The recipient acknowledged a DING (sent pairwise to its author).
    DingAck {
        /// The DING.
        id: MsgId,
        /// When, on the recipient's clock.
        acked_at: u64,
    },
    /// "These are my team log's heads; send me what I lack" (anti-entropy between members).
    TeamSync {
        /// The team.
        team: TeamId,
        /// The sender's heads, at most [`MAX_OP_DEPS`].
        heads: Vec<[u8; 32]>,
    },
    /// "I stored these messages of yours, which reached me through another node" (sent
    /// pairwise to their author, who could not hear the "stored" answer itself).
    Delivered {
        /// The conversation: ours (1:1) or a channel.
        conv: ConvId,
        /// The messages.
        delivered: Vec<MsgRef>,
        /// Sequence numbers of the author's 1:1 envelopes in `conv` that arrived this way (any
        /// content, so the author can stop sending them).
        envelopes: Vec<u64>,
        /// When, on the recipient's clock.
        at: u64,
    },
    /// Automerge changes to a project's task board (sent in the project's group; each change
    /// must be written by the sending device).
    DocChanges {
        /// The project.
        doc: ConvId,
        /// Encoded automerge changes, in order.
        changes: Vec<Vec<u8>>,
    },
    /// A shared file (a new version when the name was shared in the same place before): a
    /// message like a text, whose manifest lets the recipient fetch and open the chunks.
    File {
        /// The author's id for the message.
        id: MsgId,
        /// The author's clock when sent.
        sent_at: u64,
        /// What to fetch and the key to open it.
        file: FileManifest,
    },
    /// A [`Content::SenderKey`] that also says where in the sender's log for the group the
    /// key starts: a member who never had a key from this sender cannot read anything before
    /// `first_seq`, so its node counts those as received and takes what follows at once, however
    /// long the log already is.
    SenderKeyAt {
        /// The group.
        group: ConvId,
        /// The chain generation.
        chain_id: u32,
        /// The message number `key` is at.
        n: u32,
        /// The chain key at `n`.
        key: [u8; 32],
        /// The sender's log sequence number of its next envelope in the group.
        first_seq: u64,
    },
    /// One part of a message of automerge's sync protocol about a project's board or a
    /// document, sent pairwise between two of its members (catch-up; live edits travel as
    /// [`Content::DocChanges`] in the group).
    DocSync {
        /// The project or document.
        doc: ConvId,
        /// Names the sync message this is part of (random), for reassembly.
        message: u64,
        /// The sender starts a new round: the receiver forgets what it believes the sender has.
        start: bool,
        /// This part's index, from 0.
        part: u32,
        /// How many parts the message has (at most [`MAX_DOC_SYNC_PARTS`]).
        parts: u32,
        /// The part's bytes (at most [`MAX_DOC_SYNC_PART_BYTES`]).
        bytes: Vec<u8>,
    },
}

impl Content {
    /// Encodes with the version byte first.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CONTENT_VERSION];
        // Serializing these plain types into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Decodes and checks limits.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Truncated("content"))?;
        if version != CONTENT_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "content", version });
        }
        let content: Content = postcard::from_bytes(body).map_err(|_| DecodeError::Invalid("content"))?;
        if let Content::File { file, .. } = &content {
            file.check()?;
        }
        match &content {
            Content::Text { text, .. } if text.len() > MAX_TEXT_BYTES => Err(DecodeError::TooLarge("text")),
            Content::ReadReceipt { read, .. }
            | Content::GroupRead { read, .. }
            | Content::Delivered { delivered: read, .. }
                if read.len() > MAX_RECEIPT_IDS =>
            {
                Err(DecodeError::TooLarge("receipt"))
            }
            Content::Ding { text, .. } if text.len() > MAX_TEXT_BYTES => Err(DecodeError::TooLarge("text")),
            Content::TeamOps { ops, .. }
                if ops.len() > MAX_OPS_PER_MESSAGE || ops.iter().any(|o| o.len() > MAX_TEAM_OP_BYTES) =>
            {
                Err(DecodeError::TooLarge("team ops"))
            }
            Content::Delivered { envelopes, .. } if envelopes.len() > MAX_RECEIPT_IDS => {
                Err(DecodeError::TooLarge("receipt"))
            }
            Content::DocChanges { changes, .. } if changes.len() > MAX_RECEIPT_IDS => {
                Err(DecodeError::TooLarge("changes"))
            }
            Content::DocSync { part, parts, bytes, .. }
                if bytes.len() > MAX_DOC_SYNC_PART_BYTES || *parts > MAX_DOC_SYNC_PARTS || part >= parts =>
            {
                Err(DecodeError::TooLarge("sync message part"))
            }
            Content::TeamSync { heads, .. } if heads.len() > MAX_OP_DEPS => {
                Err(DecodeError::TooLarge("heads"))
            }
            Content::JoinRefused { reason, .. } if reason.len() > 256 => Err(DecodeError::TooLarge("reason")),
            Content::JoinRequest { member, .. }
                if member.name.len() > MAX_NAME_BYTES || member.addrs.len() > MAX_INVITE_ADDRS =>
            {
                Err(DecodeError::TooLarge("join request"))
            }
            _ => Ok(content),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips() {
        let c = Content::Text { id: MsgId([9; 16]), sent_at: 5, text: "hi ✓".into() };
        assert_eq!(Content::decode(&c.encode()), Ok(c));
        let r = Content::ReadReceipt {
            read: vec![MsgRef { id: MsgId([1; 16]), sent_at: 3, seq: 4 }],
            read_at: 7,
        };
        assert_eq!(Content::decode(&r.encode()), Ok(r));
        assert!(Content::decode(&[]).is_err());
        assert!(Content::decode(&[2, 0]).is_err());
    }
}
