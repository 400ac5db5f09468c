//! Command-line arguments.

use clap::{Args, Parser, Subcommand};
use dingo_node::Multiaddr;
use std::path::PathBuf;

/// Dingo: a serverless, end-to-end encrypted team messenger.
#[derive(Debug, Parser)]
#[command(name = "dingo", version, about)]
pub(crate) struct Cli {
    /// The home directory holding identity and store (default: $XDG_DATA_HOME/dingo).
    #[arg(long, global = true, env = "DINGO_HOME")]
    pub home: Option<PathBuf>,
    /// A file whose first line is the passphrase protecting the identity.
    #[arg(long, global = true, env = "DINGO_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create this user's identity (user key, device key, X25519 keys) and empty store.
    Init {
        /// Your display name, as contacts first see it.
        #[arg(long)]
        name: String,
    },
    /// Show user id, device id, name, fingerprint and invite code.
    Id(JsonFlag),
    /// Run the node in the foreground until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Manage contacts.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Send a message (queued if the recipient or this node is offline).
    Send {
        /// Contact name or user id.
        contact: String,
        /// The message text.
        text: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Conversations with unread counts.
    Inbox(JsonFlag),
    /// Show a conversation without marking anything read.
    Messages {
        /// Contact name or user id.
        contact: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show a conversation and mark it read (sends read receipts).
    Read {
        /// Contact name or user id.
        contact: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The team: create, invite, join, members and roles.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Departments of the team.
    #[command(subcommand)]
    Dept(DeptCommand),
    /// Projects: task boards shared by their members.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Tasks of projects.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Shared text documents, with history and blame.
    #[command(subcommand)]
    Doc(DocCommand),
    /// Files shared in chats, channels, projects and documents, with versions.
    #[command(subcommand)]
    File(FileCommand),
    /// Reports drafted from tasks and documents.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Channels of the team (send to them with `dingo send '#name' TEXT`).
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Who has not read one of your channel messages (default: your latest).
    Unread {
        /// The channel, as '#name'.
        channel: String,
        /// Message id (or a prefix).
        id: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// An urgent message that alerts until acknowledged; `--again ID` re-alerts those who have not.
    Ding {
        /// Contact, member or '#channel'.
        #[arg(required_unless_present = "again")]
        target: Option<String>,
        /// The message.
        #[arg(required_unless_present = "again")]
        text: Option<String>,
        /// Re-alert every SECS seconds until acknowledged (default 60, at least 5).
        #[arg(long, value_name = "SECS")]
        repeat_every: Option<u32>,
        /// Re-alert those who have not acknowledged this DING (at most once a minute).
        #[arg(long, value_name = "ID", conflicts_with_all = ["target", "text", "repeat_every"])]
        again: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Acknowledge a DING (its alerts stop; the sender sees it).
    Ack {
        /// The DING's id (or a prefix of at least 4 characters).
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// DINGs sent (with who acknowledged) and received.
    Dings(JsonFlag),
    /// Known devices: connected or last seen, address and transport, queued and carried mail,
    /// last sync.
    Peers(JsonFlag),
    /// Show or change settings.
    Settings {
        /// Send read receipts (delivery receipts and DING acknowledgements always go).
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        read_receipts: Option<bool>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Start three nodes on 127.0.0.1 in this process and show them talking.
    Demo {
        /// Messages in the timed burst.
        #[arg(long, default_value_t = 1000)]
        burst: usize,
    },
}

#[derive(Debug, Args)]
pub(crate) struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Listen address (repeatable). Default: all interfaces, TCP and QUIC, random ports.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Dial this peer at start (repeatable), for networks without multicast.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peer: Vec<Multiaddr>,
    /// Do not discover peers with mDNS.
    #[arg(long)]
    pub no_mdns: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ContactCommand {
    /// Add a contact from their invite code.
    Add {
        /// The invite code (starts with dingo1).
        invite: String,
        /// Local name for the contact (default: the name in the invite).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List contacts.
    List(JsonFlag),
    /// Show the safety number to compare; --confirm marks it verified (and accepts a changed key).
    Verify {
        /// Contact name or user id.
        name: String,
        /// Mark verified after comparing.
        #[arg(long)]
        confirm: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// A deadline: RFC 3339 (`2026-12-01T17:00:00Z`), `YYYY-MM-DD HH:MM[:SS]` (UTC), `YYYY-MM-DD`
/// (end of that day, UTC), or a duration from now (`+2h`, `in 3 days`). Milliseconds.
pub(crate) fn parse_due(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let rel = s.strip_prefix('+').or_else(|| s.strip_prefix("in "));
    if let Some(d) = rel {
        let d = humantime::parse_duration(d.trim()).map_err(|e| format!("bad duration: {e}"))?;
        let now = std::time::SystemTime::now();
        return ms(now + d);
    }
    let full = if s.len() == 10 { format!("{s} 23:59:59") } else { s.to_owned() };
    let t = humantime::parse_rfc3339_weak(&full)
        .or_else(|_| humantime::parse_rfc3339_weak(&format!("{full}:00")))
        .or_else(|_| humantime::parse_rfc3339(&full))
        .map_err(|_| format!("{s:?} is not a date: use 2026-12-01, \"2026-12-01 17:00\", RFC 3339 or +2h"))?;
    ms(t)
}

fn ms(t: std::time::SystemTime) -> Result<u64, String> {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| "a date before 1970".into())
}

fn parse_priority(s: &str) -> Result<dingo_node::TaskPriority, String> {
    dingo_node::TaskPriority::parse(s).ok_or_else(|| "expected low, normal, high or urgent".into())
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TeamCommand {
    /// Create a team; you become its first admin (and it gets a #general channel).
    Create {
        /// The team's name.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print a one-time join code (admins only).
    Invite {
        /// Put the joiner in this department.
        #[arg(long)]
        dept: Option<String>,
        /// The code expires after SECS seconds (default a week).
        #[arg(long, value_name = "SECS")]
        expires: Option<u64>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Join a team with a code from one of its admins.
    Join {
        /// The join code (starts with dingoteam1).
        code: String,
        /// With a running node, wait up to SECS seconds for the admin's answer.
        #[arg(long, value_name = "SECS", default_value_t = 20)]
        wait: u64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Add members directly from their invite codes (admins only).
    Add {
        /// Invite codes (from `dingo id`), one or more.
        #[arg(required = true)]
        invites: Vec<String>,
        /// Put them in this department.
        #[arg(long)]
        dept: Option<String>,
    },
    /// Members with devices, role, departments and last seen.
    Members(JsonFlag),
    /// Make a member an admin.
    Promote {
        /// Member name or user id.
        member: String,
    },
    /// Make an admin a member (the last admin stays).
    Demote {
        /// Member name or user id.
        member: String,
    },
    /// Remove a member: refused at once, and channels rotate keys before the next message.
    Remove {
        /// Member name or user id.
        member: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeptCommand {
    /// Create a department (admins only).
    Create {
        /// Its name.
        name: String,
    },
    /// Put a member in a department.
    Add {
        /// The department.
        name: String,
        /// Member name or user id.
        member: String,
    },
    /// Take a member out of a department.
    Remove {
        /// The department.
        name: String,
        /// Member name or user id.
        member: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectCommand {
    /// Create a project (any member; you are in it); with no --dept or --member it is for the whole team.
    Create {
        /// Project name.
        name: String,
        /// Its members are this department's (repeatable).
        #[arg(long = "dept")]
        depts: Vec<String>,
        /// A member (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List projects.
    List(JsonFlag),
    /// Progress of a project: done, open, overdue, per member, who looks stuck.
    Status {
        /// The project.
        project: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReportCommand {
    /// The last seven days: tasks done, in progress and overdue, documents changed.
    Weekly {
        /// Whose (default: yours).
        #[arg(long)]
        member: Option<String>,
        /// md (Markdown).
        #[arg(long, value_parser = ["md"], default_value = "md")]
        format: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FileCommand {
    /// Share a file (encrypted once, fetched by recipients from whoever has it); sharing the same
    /// name again in the same place makes a new version.
    Share {
        /// `@contact` (or a contact's name), `#channel`, `project:NAME` (or a project's name), `doc:NAME`.
        target: String,
        /// The file.
        path: std::path::PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Fetch a shared file from any peers that have it (resumes after an interruption).
    Get {
        /// Version id (or a prefix of 4+ hex digits), or a file name for its newest version.
        id: String,
        /// Where to write it (default: the file's name in the current directory, which must not exist).
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The versions of a file, oldest first, with author and time.
    Versions {
        /// The file name.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Every file version known here.
    List(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub(crate) enum DocCommand {
    /// Create a document (any member; you are in it); with no --dept or --member it is for the whole team.
    Create {
        /// Document name (no spaces).
        name: String,
        /// Its members are this department's (repeatable).
        #[arg(long = "dept")]
        depts: Vec<String>,
        /// A member (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List documents.
    List(JsonFlag),
    /// Edit a document in $EDITOR (or take the new text from --file or --text); the lines you
    /// changed become the edit.
    Edit {
        /// The document.
        name: String,
        /// Take the new text from this file instead of an editor.
        #[arg(long, conflicts_with = "text")]
        file: Option<std::path::PathBuf>,
        /// The new text.
        #[arg(long)]
        text: Option<String>,
        /// What the change is (shown in history).
        #[arg(short, long, default_value = "edit")]
        message: String,
    },
    /// Print a document.
    Cat {
        /// The document.
        name: String,
    },
    /// Who changed what, when.
    History {
        /// The document.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Each line with who last changed it and when (like git blame).
    Blame {
        /// The document.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Export: `md` (the text) or `automerge` (the standard binary other automerge
    /// implementations load).
    Export {
        /// The document.
        name: String,
        /// md or automerge.
        #[arg(long, value_parser = ["md", "automerge"], default_value = "md")]
        format: String,
        /// Write here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TaskCommand {
    /// Add a task; prints its id.
    Add {
        /// The project.
        project: String,
        /// Title.
        title: String,
        /// Assign a member (repeatable).
        #[arg(long = "assignee")]
        assignees: Vec<String>,
        /// Deadline: 2026-12-01, "2026-12-01 17:00" (UTC), RFC 3339, or +2h / "in 3 days".
        #[arg(long, value_parser = parse_due)]
        due: Option<u64>,
        /// low, normal (default), high or urgent.
        #[arg(long, value_parser = parse_priority, default_value = "normal")]
        priority: dingo_node::TaskPriority,
        /// Make it a subtask of this task.
        #[arg(long)]
        parent: Option<String>,
        /// Attach a file (shared into the project), a shared file's id, or a message id (repeatable).
        #[arg(long, value_name = "FILE|ID")]
        attach: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change a task's title, deadline or priority.
    Edit {
        /// Task id (or a unique prefix of at least 4 characters).
        id: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New deadline.
        #[arg(long, value_parser = parse_due)]
        due: Option<u64>,
        /// Remove the deadline.
        #[arg(long, conflicts_with = "due")]
        no_due: bool,
        /// New priority.
        #[arg(long, value_parser = parse_priority)]
        priority: Option<dingo_node::TaskPriority>,
    },
    /// Mark a task done.
    Done {
        /// Task id or prefix.
        id: String,
    },
    /// Open a done task again.
    Reopen {
        /// Task id or prefix.
        id: String,
    },
    /// Assign a member to a task (`--remove` to unassign).
    Assign {
        /// Task id or prefix.
        id: String,
        /// The member.
        member: String,
        /// Unassign instead.
        #[arg(long)]
        remove: bool,
    },
    /// Nudge a task's assignees now (a DING to each).
    Remind {
        /// Task id or prefix.
        id: String,
    },
    /// Comment on a task.
    Comment {
        /// Task id or prefix.
        id: String,
        /// The comment.
        text: String,
    },
    /// Tasks of a project, or of all your projects.
    List {
        /// The project.
        project: Option<String>,
        /// Only tasks assigned to me.
        #[arg(long)]
        mine: bool,
        /// Only open tasks past their deadline.
        #[arg(long)]
        overdue: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChannelCommand {
    /// Create a channel (admins only); with no --dept or --member it is for the whole team.
    Create {
        /// Channel name (without '#').
        name: String,
        /// Readable by this department's members, as it changes (repeatable).
        #[arg(long = "dept")]
        depts: Vec<String>,
        /// Readable by this member (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List channels.
    List(JsonFlag),
}
