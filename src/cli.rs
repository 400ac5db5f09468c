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
