use thiserror::Error;

/// Why a node operation failed. Each variant's message tells the user what to do.
#[derive(Debug, Error)]
pub enum NodeError {
    /// `init` found an identity already there.
    #[error("an identity already exists in {0}; refusing to overwrite it")]
    AlreadyInitialized(String),
    /// No identity in the home directory.
    #[error("no identity in {0}; run `dingo init --name NAME` first")]
    NotInitialized(String),
    /// Another process holds the home (usually a running `dingo run`).
    #[error("{dir} is in use by another Dingo process (pid {pid})")]
    HomeInUse {
        /// The home.
        dir: String,
        /// The holder's pid.
        pid: String,
        /// What the holder is.
        role: crate::home::Role,
    },
    /// The passphrase is wrong or the key file is corrupt.
    #[error("wrong passphrase, or the key file is corrupt")]
    WrongPassphrase,
    /// The key file needs a passphrase and none was given.
    #[error("this identity is protected by a passphrase; pass --passphrase-file FILE")]
    PassphraseRequired,
    /// A name is empty, too long or otherwise unusable.
    #[error("invalid name: {0}")]
    BadName(String),
    /// The invite code could not be read.
    #[error("malformed invite code: {0}")]
    BadInvite(String),
    /// The invite's signatures do not verify.
    #[error("the invite code's signatures do not verify (forged or corrupted)")]
    ForgedInvite,
    /// The invite is this user's own.
    #[error("that invite code is your own")]
    OwnInvite,
    /// No contact by that name or id.
    #[error("unknown contact {0:?}; see `dingo contact list`")]
    UnknownContact(String),
    /// Two contacts match a prefix.
    #[error("{0:?} matches more than one contact; use more of the name or id")]
    AmbiguousContact(String),
    /// A different contact already has the name.
    #[error("a different contact is already called {0:?}; pass --name to choose another")]
    NameTaken(String),
    /// The contact's key changed and the conversation is blocked until re-verified.
    #[error("the key of {0} changed: compare the safety number with `dingo contact verify {0}`, then accept it with `dingo contact verify {0} --confirm`")]
    KeyChanged(String),
    /// No session and no prekey to start one.
    #[error("no encrypted session with {0} yet: add their invite with `dingo contact add`, or wait for their first message")]
    NoSession(String),
    /// The message is over the size limit.
    #[error("message too long: {0} bytes (the limit is {1} bytes)")]
    TooLong(usize, usize),
    /// The message is empty.
    #[error("empty message")]
    Empty,
    /// The network is not running (offline command that needs it).
    #[error("the node's network is not running")]
    Offline,
    /// A store or internal failure while handling a batch of requests.
    #[error("the node could not complete the request: {0}")]
    Unavailable(String),
    /// A store failure.
    #[error(transparent)]
    Store(#[from] dingo_store::StoreError),
    /// A network failure.
    #[error(transparent)]
    Net(#[from] dingo_net::NetError),
    /// A file in the home directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A team operation was refused (not an admin, last admin, unknown department, ...).
    #[error("{0}")]
    Team(#[from] dingo_crypto::membership::TeamError),
    /// This user is not in a team.
    #[error("you are not in a team: create one with `dingo team create NAME` or join one with `dingo team join CODE`")]
    NoTeam,
    /// This user is already in a team (one team per home for now).
    #[error("this home is already in team {0:?} (one team per home)")]
    AlreadyInTeam(String),
    /// The join code could not be read or used.
    #[error("join code: {0}")]
    BadJoinCode(String),
    /// No member by that name or id.
    #[error("unknown team member {0:?}; see `dingo team members`")]
    UnknownMember(String),
    /// No channel by that name.
    #[error("unknown channel {0:?}; see `dingo channel list`")]
    UnknownChannel(String),
    /// This user is not a member of the channel.
    #[error("you are not a member of channel {0}")]
    NotInChannel(String),
    /// The contact was removed from the team.
    #[error("{0} was removed from the team")]
    Removed(String),
    /// No DING with that id.
    #[error("unknown DING {0:?}; see `dingo dings`")]
    UnknownDing(String),
    /// Too many DINGs too fast.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// No project by that name.
    #[error("unknown project {0:?}; see `dingo project list`")]
    UnknownProject(String),
    /// No document by that name.
    #[error("unknown document {0:?}; see `dingo doc list`")]
    UnknownDoc(String),
    /// No task with that id (or prefix).
    #[error("unknown task {0:?}; see `dingo task list`")]
    UnknownTask(String),
    /// No file with that id (or prefix) or name.
    #[error("unknown file {0:?}; see `dingo file list`")]
    UnknownFile(String),
    /// A file share names nothing known.
    #[error("unknown target {0:?}: give a contact (@name), a channel (#name), project:NAME or doc:NAME")]
    UnknownTarget(String),
    /// A file's chunks could not all be fetched (what was fetched is kept).
    #[error("file not complete: {0}")]
    FileUnavailable(String),
    /// A file is over the sharing limit.
    #[error("the file is {0} bytes; the limit is {1} bytes")]
    FileTooLarge(u64, u64),
    /// A task board could not be read or changed.
    #[error("task board: {0}")]
    Doc(#[from] dingo_docs::DocError),
    /// A crypto operation failed where it should not (bad local state).
    #[error("crypto error: {0}")]
    Crypto(#[from] dingo_crypto::CryptoError),
}

impl NodeError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.display().to_string(), source }
    }
}
