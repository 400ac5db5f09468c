//! What the node stores (sealed by the store) and what it shows (JSON views).

use dingo_types::{ConvId, MsgId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

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
    /// Removed from the team: its envelopes and connections are refused, nothing is sent to it.
    pub removed: bool,
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
    /// The channel's name, for a group conversation.
    pub channel: Option<String>,
}

/// Which of my 1:1 messages in one conversation the recipient's node acknowledged storing, at
/// its time `at`: inclusive ranges of sequence numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveredRun {
    pub at: u64,
    pub seqs: Vec<(u64, u64)>,
}

impl DeliveredRun {
    /// The runs of `seqs` (sorted, deduplicated) delivered at `at`.
    pub(crate) fn new(at: u64, mut seqs: Vec<u64>) -> Self {
        seqs.sort_unstable();
        seqs.dedup();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for seq in seqs {
            match ranges.last_mut() {
                Some((_, hi)) if *hi + 1 == seq => *hi = seq,
                _ => ranges.push((seq, seq)),
            }
        }
        Self { at, seqs: ranges }
    }
}

/// When each of my 1:1 messages in a conversation was delivered, from its [`DeliveredRun`]s.
#[derive(Debug, Default)]
pub(crate) struct DeliveredIndex(HashMap<u64, u64>);

impl DeliveredIndex {
    pub(crate) fn new(runs: impl IntoIterator<Item = DeliveredRun>) -> Self {
        let mut at_of = HashMap::new();
        for run in runs {
            for (lo, hi) in run.seqs {
                // A run never spans more messages than one delivery batch holds.
                for seq in lo..=hi.min(lo.saturating_add(MAX_RUN_SPAN)) {
                    let at: &mut u64 = at_of.entry(seq).or_insert(run.at);
                    *at = (*at).min(run.at);
                }
            }
        }
        Self(at_of)
    }

    /// The earliest time message `seq` was acknowledged, if it was (a retried batch answered
    /// `Duplicate` names a message again, later).
    pub(crate) fn at(&self, seq: u64) -> Option<u64> {
        self.0.get(&seq).copied()
    }
}

/// Widest range a [`DeliveredRun`] records (more than any delivery batch).
const MAX_RUN_SPAN: u64 = 4096;

/// An envelope waiting in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutboxItem {
    /// (`serde_bytes`: the same encoding as a sequence of bytes, read and written at once.)
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    pub msg_id: Option<MsgId>,
    /// Where the message record is, so delivery needs no index lookup.
    #[serde(with = "serde_bytes")]
    pub msg_key: Option<Vec<u8>>,
    pub conv: ConvId,
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
    /// For my group messages: the members it was sent to.
    pub recipients: Vec<UserId>,
}

impl MessageRec {
    /// A message this user sends, queued.
    pub(crate) fn outgoing(
        (id, conv, from): (MsgId, ConvId, UserId),
        text: &str,
        sent_at: u64,
        seq: u64,
        recipients: Vec<UserId>,
    ) -> Self {
        Self {
            id,
            conv,
            direction: Direction::Out,
            from,
            text: text.to_owned(),
            sent_at,
            received_at: None,
            seq,
            status: Status::Queued,
            delivered_at: None,
            read_at: None,
            recipients,
        }
    }

    /// A message received (and durably stored) now.
    pub(crate) fn incoming(
        (id, conv, from): (MsgId, ConvId, UserId),
        text: &str,
        sent_at: u64,
        seq: u64,
        now: u64,
    ) -> Self {
        Self {
            id,
            conv,
            direction: Direction::In,
            from,
            text: text.to_owned(),
            sent_at,
            received_at: Some(now),
            seq,
            status: Status::Delivered,
            delivered_at: Some(now),
            read_at: None,
            recipients: Vec::new(),
        }
    }
}

/// This node's team membership and settings (one record).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TeamRec {
    /// The team this home belongs to.
    pub team: Option<[u8; 32]>,
    /// A join request waiting for the admin's answer.
    pub joining: Option<JoiningRec>,
    /// Do not send read receipts (delivery receipts and DING acks still go).
    pub no_read_receipts: bool,
    /// Ops of a team a known admin is adding us to, kept until they make us a member (a big
    /// log arrives in several messages).
    pub offered: Option<([u8; 32], Vec<Vec<u8>>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoiningRec {
    pub team: [u8; 32],
    pub team_name: String,
    pub admin: UserId,
    pub requested_at: u64,
    pub refused: Option<String>,
}

/// A join code I issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinTokenRec {
    pub expires_at: u64,
    pub dept: Option<String>,
    pub used_by: Option<UserId>,
}

/// My sender chain in a group and who holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MyChainRec {
    pub chain: dingo_crypto::group::SenderChain,
    pub holders: BTreeSet<UserId>,
}

/// Another member's chains in a group (the newest few).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PeerChainsRec {
    pub chains: Vec<dingo_crypto::group::ReceiverChain>,
}

/// One member's status for one of my group messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MemberReceipt {
    pub delivered_at: Option<u64>,
    pub read_at: Option<u64>,
}

/// A DING, sent or received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DingRec {
    pub id: MsgId,
    pub direction: Direction,
    pub from: UserId,
    pub to: Vec<UserId>,
    pub channel: Option<String>,
    pub text: String,
    pub sent_at: u64,
    pub received_at: u64,
    pub repeat_every: u32,
    /// Sent: who acknowledged, when.
    pub acks: Vec<(UserId, u64)>,
    /// Sent: when it was last re-sent to those who had not acknowledged.
    pub last_again: Option<u64>,
    /// Received: when this user acknowledged.
    pub acked_at: Option<u64>,
    /// Received: over the sender's rate limit, so stored without alerting.
    pub muted: bool,
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
    /// The channel, for a group message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel: Option<String>,
    /// My group message: each recipient's delivery and read status.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub members: Vec<MemberStatus>,
    /// My group message: "read by N of M".
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub summary: Option<String>,
    /// My group message: how many read it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub read_by: Option<usize>,
    /// My group message: how many nodes stored it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delivered_to: Option<usize>,
    /// My group message: to how many members it went.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recipients: Option<usize>,
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
    /// Envelopes this node could not take yet (a key still on its way, or a delivery that
    /// waited too long for the store); the sender tries again.
    pub retried: u64,
    /// Envelopes offered to carriers for contacts that could not be reached (per carrier).
    pub handed_off: u64,
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
        /// The channel, for a group message.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        channel: Option<String>,
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
    /// A DING alert (the first, or a repeat until acknowledged with `dingo ack ID`).
    Ding {
        /// The DING's id.
        id: String,
        /// From whom.
        from: String,
        /// The channel, if sent to one.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        channel: Option<String>,
        /// The text.
        text: String,
        /// 1 for the first alert, then 2, 3, ...
        alert: u32,
    },
    /// A recipient acknowledged my DING.
    DingAcked {
        /// The DING's id.
        id: String,
        /// Who.
        by: String,
        /// When (their clock).
        at: u64,
    },
    /// A task needs attention: `due_soon` (its deadline is within the hour), `overdue` (to
    /// its assignees) or `owner_overdue` (to the project's creator).
    TaskReminder {
        /// The project.
        project: String,
        /// Task id.
        id: String,
        /// Title.
        title: String,
        /// Deadline (ms).
        due: u64,
        /// Which reminder.
        kind: String,
    },
    /// A file was shared in a project or document (in a chat it arrives as a message).
    FileShared {
        /// Who shared it.
        from: String,
        /// File name.
        name: String,
        /// Version id.
        id: String,
        /// Size in bytes.
        size: u64,
        /// `project:NAME` or `doc:NAME`.
        place: String,
    },
    /// A document changed (a member's edit arrived).
    DocChanged {
        /// The document.
        doc: String,
    },
    /// A project's tasks changed (a member's edit arrived).
    TasksChanged {
        /// The project.
        project: String,
    },
    /// The team's membership changed.
    TeamChanged {
        /// Team name.
        team: String,
        /// Members now.
        members: usize,
    },
    /// This user joined a team.
    Joined {
        /// Team name.
        team: String,
    },
    /// This user was removed from the team.
    RemovedFromTeam {
        /// Team name.
        team: String,
    },
    /// A join request was refused.
    JoinRefused {
        /// Why.
        reason: String,
    },
}

/// A member's status for one group message, in views.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's name.
    pub member: String,
    /// Their user id.
    pub user_id: String,
    /// When their node stored it.
    pub delivered_at: Option<u64>,
    /// When they read it.
    pub read_at: Option<u64>,
}

/// A team member, as `dingo team members` shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    /// Display name (the local contact name).
    pub name: String,
    /// User id.
    pub user_id: String,
    /// Their devices' PeerIds.
    pub devices: Vec<String>,
    /// `admin` or `member`.
    pub role: String,
    /// Departments.
    pub departments: Vec<String>,
    /// When this node last heard from them (ms), if ever.
    pub last_seen: Option<u64>,
    /// Whether this is the local user.
    pub me: bool,
}

/// The team, as `dingo team` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamView {
    /// Team name.
    pub name: String,
    /// Team id (hex).
    pub team_id: String,
    /// Members.
    pub members: Vec<MemberView>,
    /// Departments with their members' names.
    pub departments: Vec<DeptView>,
    /// Ops in the log, and how many did not take effect.
    pub ops: usize,
    /// Ops that did not take effect (not by an admin, voided by a removal, ...).
    pub void_ops: usize,
    /// Removed users' ids.
    pub removed: Vec<String>,
    /// A join still waiting for the admin, if any.
    pub joining: Option<String>,
}

/// A department.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeptView {
    /// Name.
    pub name: String,
    /// Members' names.
    pub members: Vec<String>,
}

/// A channel, as `dingo channel list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelView {
    /// Name (without '#').
    pub name: String,
    /// Group id (hex).
    pub id: String,
    /// Departments it follows.
    pub departments: Vec<String>,
    /// Current members' names.
    pub members: Vec<String>,
    /// Whether this user is a member.
    pub joined: bool,
    /// Unread messages.
    pub unread: u64,
}

/// Who has not read a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnreadView {
    /// The message.
    pub id: String,
    /// Its text.
    pub text: String,
    /// Members who have not read it.
    pub not_read: Vec<String>,
    /// Members who have.
    pub read: Vec<String>,
    /// "read by N of M".
    pub summary: String,
}

/// A DING, as `dingo dings` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DingView {
    /// Id (for `dingo ack` and `dingo ding --again`).
    pub id: String,
    /// `in` or `out`.
    pub direction: Direction,
    /// Author's name.
    pub from: String,
    /// The channel, if sent to one.
    pub channel: Option<String>,
    /// Text.
    pub text: String,
    /// Author's clock.
    pub sent_at: u64,
    /// Re-alert interval, seconds.
    pub repeat_every: u32,
    /// Sent: each recipient and when they acknowledged.
    pub recipients: Vec<AckView>,
    /// Sent: how many acknowledged.
    pub acked: usize,
    /// Received: when I acknowledged.
    pub acked_at: Option<u64>,
    /// Received: stored without alerting (sender over the rate limit).
    pub muted: bool,
}

/// One recipient's acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckView {
    /// Name.
    pub member: String,
    /// User id.
    pub user_id: String,
    /// When they acknowledged, if they did.
    pub acked_at: Option<u64>,
}

/// What `dingo team invite` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinCodeView {
    /// The one-time code.
    pub code: String,
    /// When it expires (ms).
    pub expires_at: u64,
    /// Department the joiner is put in.
    pub dept: Option<String>,
}

/// User settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettingsView {
    /// Whether read receipts are sent.
    pub read_receipts: bool,
}

/// A peer device, as `dingo peers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    /// The contact's name, if the device is a contact's.
    pub name: Option<String>,
    /// The contact's user id.
    pub user_id: Option<String>,
    /// The device's PeerId.
    pub device_id: String,
    /// Whether a connection is up now.
    pub connected: bool,
    /// The address of the current or last connection.
    pub address: Option<String>,
    /// `tcp` or `quic`, from the address.
    pub transport: Option<String>,
    /// When this node last heard from the device (ms).
    pub last_seen: Option<u64>,
    /// When the last sync with it finished (ms), this run.
    pub last_sync: Option<u64>,
    /// Envelopes waiting for it: its 1:1 outbox and my group envelopes it has not taken.
    pub queue: usize,
    /// Envelopes this node carries for it (others' mail).
    pub mailbox: usize,
    /// Envelopes written by others that this node passed to it, this run.
    pub carried_for_others: u64,
    /// Whether it is a current team member.
    pub member: bool,
    /// Removed from the team (refused).
    pub removed: bool,
}

/// A project, as `dingo project list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectView {
    /// Its name.
    pub name: String,
    /// Its group id.
    pub id: String,
    /// Departments in scope.
    pub departments: Vec<String>,
    /// Members now.
    pub members: Vec<String>,
    /// Whether this user is one.
    pub joined: bool,
}

/// A task, as `dingo task list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    /// The project.
    pub project: String,
    /// Task id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Assigned members (names).
    pub assignees: Vec<String>,
    /// Deadline (ms).
    pub due: Option<u64>,
    /// Past its deadline and not done.
    pub overdue: bool,
    /// low, normal, high, urgent.
    pub priority: dingo_docs::Priority,
    /// Parent task id.
    pub parent: Option<String>,
    /// Done?
    pub done: bool,
    /// When it was done (ms).
    pub done_at: Option<u64>,
    /// Creator (name).
    pub created_by: String,
    /// When (ms).
    pub created_at: u64,
    /// Comments (author names).
    pub comments: Vec<dingo_docs::Comment>,
    /// Attached files (`file:ID`) and messages (`msg:ID`).
    pub attachments: Vec<String>,
}

/// One member's progress in a project.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemberProgress {
    /// Member name.
    pub member: String,
    /// Tasks done.
    pub done: usize,
    /// Done in the last 7 days.
    pub done_this_week: usize,
    /// Open tasks.
    pub open: usize,
    /// Open and past their deadline.
    pub overdue: usize,
    /// Overdue tasks and nothing done this week.
    pub stuck: bool,
}

/// A project's progress, as `dingo project status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectStatus {
    /// The project.
    pub project: String,
    /// Tasks.
    pub total: usize,
    /// Done.
    pub done: usize,
    /// Open.
    pub open: usize,
    /// Open and overdue.
    pub overdue: usize,
    /// Done, percent.
    pub percent_done: usize,
    /// Per member (assignees).
    pub members: Vec<MemberProgress>,
    /// Members who look stuck.
    pub stuck: Vec<String>,
}

/// One change of a document, as `dingo doc history` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionView {
    /// Who (member name).
    pub author: String,
    /// When (ms, the author's clock).
    pub at: u64,
    /// What they said.
    pub message: String,
    /// The automerge change hash.
    pub hash: String,
    /// Lines the change added (a changed line counts as one added and one removed).
    pub lines_added: usize,
    /// Lines the change removed.
    pub lines_removed: usize,
    /// Characters the change inserted.
    pub chars_added: usize,
    /// Characters the change deleted.
    pub chars_removed: usize,
}

/// One line of a document, as `dingo doc blame` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlameView {
    /// Line number, from 1.
    pub line: usize,
    /// Who last changed it (member name).
    pub author: String,
    /// When (ms).
    pub at: u64,
    /// The line.
    pub text: String,
}

/// A task in a weekly report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportTask {
    /// The project.
    pub project: String,
    /// Task id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Deadline (ms).
    pub due: Option<u64>,
    /// When it was done (ms).
    pub done_at: Option<u64>,
}

/// A document a member changed this week.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocActivity {
    /// The document.
    pub doc: String,
    /// How many changes.
    pub changes: usize,
}

/// `dingo report weekly`: one member's week.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WeeklyReport {
    /// Whose.
    pub member: String,
    /// From (ms).
    pub from: u64,
    /// To (ms).
    pub to: u64,
    /// Tasks done in the week.
    pub done: Vec<ReportTask>,
    /// Open tasks not overdue.
    pub in_progress: Vec<ReportTask>,
    /// Open tasks past their deadline.
    pub overdue: Vec<ReportTask>,
    /// Documents changed in the week.
    pub documents: Vec<DocActivity>,
}

/// One version of a shared file, as `dingo file list` and `dingo file versions` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileView {
    /// The version's id (hex; a prefix of 4 or more digits also names it).
    pub id: String,
    /// File name.
    pub name: String,
    /// 1 for the first share of this name in this place, then 2, 3, ...
    pub version: u32,
    /// Size in bytes.
    pub size: u64,
    /// Where it was shared: `@contact`, `#channel`, `project:NAME` or `doc:NAME`.
    pub place: String,
    /// Who shared it (`me` for this user).
    pub from: String,
    /// When (ms, the sharer's clock).
    pub shared_at: u64,
    /// How many chunks it has.
    pub chunks: usize,
    /// How many of them this node holds (all of them: it can be opened here and served).
    pub chunks_here: usize,
}

/// A file share or fetch, while it runs and after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferView {
    /// The transfer's id (for `GET /v1/transfers?id=`).
    pub transfer: String,
    /// `share` or `get`.
    pub kind: String,
    /// The file's name.
    pub name: String,
    /// The file version's id, once known.
    pub file_id: Option<String>,
    /// The local file read (share) or written (get).
    pub path: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The file's size.
    pub total_bytes: u64,
    /// Bytes sealed (share) or written out (get) so far.
    pub done_bytes: u64,
    /// Chunks fetched from peers.
    pub chunks_fetched: u64,
    /// Chunks that were here already (an earlier, interrupted fetch).
    pub chunks_reused: u64,
    /// Chunks refused because they did not match their hash.
    pub chunks_rejected: u64,
    /// Chunks fetched from each peer (PeerId).
    pub from_peers: std::collections::BTreeMap<String, u64>,
    /// Time taken so far, or in all once finished.
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record as stores written before `serde_bytes` held it.
    #[derive(Serialize)]
    struct PlainOutboxItem {
        envelope: Vec<u8>,
        msg_id: Option<MsgId>,
        msg_key: Option<Vec<u8>>,
        conv: ConvId,
    }

    #[test]
    fn bytes_fields_keep_the_encoding_of_a_byte_sequence() {
        let item = OutboxItem {
            envelope: (0..=255).collect(),
            msg_id: Some(MsgId([7; 16])),
            msg_key: Some(vec![1, 2, 3]),
            conv: ConvId([9; 32]),
        };
        let plain = PlainOutboxItem {
            envelope: item.envelope.clone(),
            msg_id: item.msg_id,
            msg_key: item.msg_key.clone(),
            conv: item.conv,
        };
        let bytes = postcard::to_allocvec(&item).expect("encode");
        assert_eq!(bytes, postcard::to_allocvec(&plain).expect("encode"));
        let back: OutboxItem = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!((back.envelope, back.msg_key), (item.envelope, item.msg_key));
    }

    #[test]
    fn delivery_runs_collapse_into_ranges_and_the_earliest_acknowledgement_wins() {
        let run = DeliveredRun::new(100, vec![7, 3, 4, 5, 9, 4]);
        assert_eq!(run.seqs, [(3, 5), (7, 7), (9, 9)]);
        let retried = DeliveredRun::new(50, vec![5, 6]);
        let later = DeliveredRun::new(200, vec![9, 10]);
        let index = DeliveredIndex::new([run, retried, later]);
        assert_eq!(index.at(3), Some(100));
        assert_eq!(index.at(5), Some(50));
        assert_eq!(index.at(6), Some(50));
        assert_eq!(index.at(8), None);
        assert_eq!(index.at(9), Some(100));
        assert_eq!(index.at(10), Some(200));
        // A corrupt run cannot make the index unbounded.
        let huge = DeliveredIndex::new([DeliveredRun { at: 1, seqs: vec![(0, u64::MAX)] }]);
        assert_eq!(huge.at(MAX_RUN_SPAN), Some(1));
        assert_eq!(huge.at(MAX_RUN_SPAN + 1), None);
    }
}
