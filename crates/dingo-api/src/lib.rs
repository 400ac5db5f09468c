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

/// Body of `POST /v1/team` and `POST /v1/dept/create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameBody {
    /// The name.
    pub name: String,
}

/// Body of `POST /v1/team/{promote,demote,remove}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberBody {
    /// Member name or user id.
    pub member: String,
}

/// Body of `POST /v1/dept/{add,remove}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeptMemberBody {
    /// The department.
    pub dept: String,
    /// Member name or user id.
    pub member: String,
}

/// Body of `POST /v1/team/invite`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InviteBody {
    /// Department the joiner is put in.
    pub dept: Option<String>,
    /// Validity in seconds (default a week).
    pub ttl_secs: Option<u64>,
}

/// Body of `POST /v1/team/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinBody {
    /// The join code.
    pub code: String,
}

/// Body of `POST /v1/channels`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelBody {
    /// Channel name (without '#').
    pub name: String,
    /// Departments whose members belong.
    pub depts: Vec<String>,
    /// Individual members.
    pub members: Vec<String>,
}

/// Body of `POST /v1/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskAddBody {
    /// The project.
    pub project: String,
    /// Title.
    pub title: String,
    /// Members to assign.
    pub assignees: Vec<String>,
    /// Deadline (ms since the epoch).
    pub due: Option<u64>,
    /// low, normal, high or urgent.
    pub priority: dingo_node::TaskPriority,
    /// Parent task id (or prefix).
    pub parent: Option<String>,
    /// Files (absolute paths, shared into the project), file ids or message ids to attach.
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// Body of `POST /v1/tasks/update`: one change to a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskUpdateBody {
    /// The task (id or unique prefix).
    pub id: String,
    /// `done`, `reopen`, `assign`, `unassign`, `comment` or `edit`.
    pub action: String,
    /// For assign/unassign.
    pub member: Option<String>,
    /// For comment.
    pub text: Option<String>,
    /// For edit: a new title.
    pub title: Option<String>,
    /// For edit: a new deadline (ms).
    pub due: Option<u64>,
    /// For edit: remove the deadline.
    #[serde(default)]
    pub clear_due: bool,
    /// For edit: a new priority.
    pub priority: Option<dingo_node::TaskPriority>,
}

impl TaskUpdateBody {
    /// The node-level update this body asks for.
    pub fn to_update(&self) -> Result<dingo_node::TaskUpdate, String> {
        use dingo_node::TaskUpdate;
        let member = || self.member.clone().ok_or_else(|| format!("{} needs a member", self.action));
        Ok(match self.action.as_str() {
            "done" => TaskUpdate::Done(true),
            "reopen" => TaskUpdate::Done(false),
            "assign" => TaskUpdate::Assign(member()?, true),
            "unassign" => TaskUpdate::Assign(member()?, false),
            "comment" => TaskUpdate::Comment(self.text.clone().ok_or("comment needs a text")?),
            "edit" => TaskUpdate::Edit(dingo_node::TaskEdit {
                title: self.title.clone(),
                due: if self.clear_due { Some(None) } else { self.due.map(Some) },
                priority: self.priority,
            }),
            other => return Err(format!("unknown task action {other:?}")),
        })
    }
}

/// Body of `POST /v1/docs/edit`: the document's whole new text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocEditBody {
    /// The document.
    pub name: String,
    /// Its new text.
    pub text: String,
    /// What the change is (shown in history).
    pub message: String,
}

/// Answer of `POST /v1/docs/edit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocEditAnswer {
    /// Whether the text changed.
    pub changed: bool,
}

/// Answer of `GET /v1/docs/text` and `/v1/docs/export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocContent {
    /// The text (for `text`), or the automerge bytes in lowercase hex (for `export`).
    pub content: String,
}

/// A task id answered by `POST /v1/tasks` and `/v1/tasks/update`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskIdAnswer {
    /// The task.
    pub id: String,
}

/// Query of `GET /v1/unread`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnreadQuery {
    /// `#channel`.
    pub channel: String,
    /// Message id prefix (default: my latest message there).
    pub id: Option<String>,
}

/// Body of `POST /v1/ding`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DingBody {
    /// Contact, member or `#channel`.
    pub target: String,
    /// The text.
    pub text: String,
    /// Re-alert interval in seconds.
    pub repeat_every: Option<u32>,
}

/// Body of `POST /v1/ack` and `POST /v1/ding/again`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdBody {
    /// The DING's id (or a unique prefix).
    pub id: String,
}

/// Body of `POST /v1/settings`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SettingsBody {
    /// Send read receipts.
    pub read_receipts: Option<bool>,
}

/// Answer of `POST /v1/ding/again`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgainAnswer {
    /// How many recipients were alerted again.
    pub realerted: usize,
}

/// Answer of `POST /v1/ack`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckAnswer {
    /// The DING acknowledged.
    pub id: String,
}

/// Body of `POST /v1/team/add`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddMembersBody {
    /// Invite codes (`dingo1...`).
    pub invites: Vec<String>,
    /// Department to put them in.
    pub dept: Option<String>,
}

/// Body of `POST /v1/files`: share the file at `path` (absolute, on this machine).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileShareBody {
    /// `@contact`, `#channel`, `project:NAME`, `doc:NAME`, or a bare contact or project name.
    pub target: String,
    /// The file to share.
    pub path: String,
}

/// Body of `POST /v1/files/get`: fetch a file version into `out` (absolute path).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileGetBody {
    /// Version id (or a prefix of 4+ hex digits), or a name for its newest version.
    pub id: String,
    /// Where to write it.
    pub out: String,
}
