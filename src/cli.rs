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
