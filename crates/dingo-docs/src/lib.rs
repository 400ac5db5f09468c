//! Dingo's shared work as automerge CRDTs (DESIGN.md §1, §6): a project's task board
//! ([`Board`]) and text documents ([`TextDoc`]). No I/O, no network, no keys: the node stores
//! the bytes (sealed) and carries changes in the project's encrypted group log.
//!
//! - **Authors are bound.** Every replica writes with an automerge actor id equal to its device's
//!   signing key ([`actor_of`]), and [`Replica::apply`] takes changes only when every change's
//!   actor is one the caller allows (the devices with access), checked before anything is
//!   applied: a rejected batch changes nothing.
//! - **Concurrent edits merge deterministically**: automerge's own rules; the same set of changes
//!   gives the same document in any order (property-tested in `tests/`).
//! - **Exports are standard automerge**: [`Replica::save`] is the automerge binary format.

mod board;
mod diff;
mod text;

pub use board::{Board, Comment, NewTask, Priority, Task, TaskEdit};
pub use text::{BlameLine, Revision, TextDoc};

use automerge::sync::{ChunkList, Message, SyncDoc};
use automerge::{ActorId, AutoCommit, Change, ChangeHash};
use dingo_types::DeviceKey;

/// Automerge's per-peer sync state (one per document and peer).
pub use automerge::sync::State as SyncState;

/// What a received sync message did to a replica.
#[derive(Debug, PartialEq)]
pub enum SyncApplied {
    /// Nothing new: the message only told what the peer has.
    Nothing,
    /// These encoded changes were applied.
    Changes(Vec<Vec<u8>>),
    /// The peer sent its whole document and it held everything this replica had, so the
    /// replica now is that document: the bytes are a full automerge save of it, for the caller
    /// to store in place of what it stored before.
    Whole(Vec<u8>),
    /// The peer's whole document was merged into this replica's own changes.
    Merged,
}

/// Why a document operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// automerge refused the operation or the bytes.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// Bytes that are not an automerge change or document.
    #[error("not an automerge change or document: {0}")]
    Malformed(String),
    /// A change written by a device without access.
    #[error("a change by {0} was refused: that device may not edit this")]
    ForeignAuthor(String),
    /// The document lacks something every Dingo document has.
    #[error("not a Dingo {0}")]
    WrongKind(&'static str),
    /// No task with that id.
    #[error("unknown task {0}")]
    UnknownTask(String),
    /// Some changes build on changes that have not arrived; nothing was applied.
    #[error("changes arrived before those they build on")]
    MissingDeps,
}

/// The automerge actor a device writes as: its signing key.
pub fn actor_of(device: &DeviceKey) -> ActorId {
    ActorId::from(device.0.as_slice())
}

/// The device an actor id names, if it is one.
pub fn device_of(actor: &ActorId) -> Option<DeviceKey> {
    <[u8; 32]>::try_from(actor.to_bytes()).ok().map(DeviceKey)
}

/// What task boards and text documents share: made, loaded and synced the same way.
pub trait SharedDoc: Sized {
    /// A new document written by `device`.
    fn create(device: &DeviceKey, name: &str, now: u64) -> Result<Self, DocError>;
    /// Saved bytes, written from now on by `device`.
    fn load(bytes: &[u8], device: &DeviceKey) -> Result<Self, DocError>;
    /// The automerge replica (save, sync, apply).
    fn replica(&mut self) -> &mut Replica;
    /// Wraps a replica (checking it holds this kind of document).
    fn from_replica(replica: Replica) -> Result<Self, DocError>;
    /// Unwraps the replica.
    fn into_replica(self) -> Replica;

    /// The state every member of `group` starts from before anything is saved: its first
    /// change is written by an actor named after the group, at time 0, so every member builds
    /// the very same change (same hash) and all edits hang off one root object. From then on
    /// `device` writes.
    fn genesis(group: &[u8; 32], name: &str, device: &DeviceKey) -> Result<Self, DocError> {
        let mut first = Self::create(&DeviceKey(*group), name, 0)?;
        Self::load(&first.replica().save(), device)
    }
}

/// Most hash probes a peer's Bloom filter may ask for (automerge uses 7).
const MAX_BLOOM_PROBES: u64 = 64;

/// Refuses a Bloom filter automerge 0.12 would panic on or allocate without bound for when it
/// is used (found by the `docsync` fuzz target): entries without bits (a division by zero) or
/// an absurd number of probes (a vector that large). The filter's encoding is three LEB128
/// numbers (entries, bits per entry, probes) and the bits, or nothing for an empty filter.
fn check_bloom(bytes: &[u8]) -> Result<(), DocError> {
    fn uleb(input: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = input.split_first()?;
            *input = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    if bytes.is_empty() {
        return Ok(());
    }
    let mut input = bytes;
    let bad = || DocError::Malformed("a sync message's Bloom filter is malformed".into());
    let entries = uleb(&mut input).ok_or_else(bad)?;
    let bits_per_entry = uleb(&mut input).ok_or_else(bad)?;
    let probes = uleb(&mut input).ok_or_else(bad)?;
    if entries > 0 && (bits_per_entry == 0 || input.is_empty() || probes == 0 || probes > MAX_BLOOM_PROBES) {
        return Err(bad());
    }
    Ok(())
}

/// An automerge document written by one device: what boards and text documents share.
#[derive(Debug, Clone)]
pub struct Replica {
    doc: AutoCommit,
    /// Heads of what the owner has persisted (loaded or saved): [`Replica::save_new`] gives
    /// what came after.
    persisted: Vec<ChangeHash>,
}

impl Replica {
    fn new(device: &DeviceKey) -> Self {
        Self { doc: AutoCommit::new().with_actor(actor_of(device)), persisted: Vec::new() }
    }

    /// Loads saved bytes (a full save, optionally followed by incremental saves) as `device`.
    pub fn load(bytes: &[u8], device: &DeviceKey) -> Result<Self, DocError> {
        let mut doc = AutoCommit::load(bytes).map_err(|e| DocError::Malformed(e.to_string()))?;
        let persisted = doc.get_heads();
        Ok(Self { doc: doc.with_actor(actor_of(device)), persisted })
    }

    /// Adds what [`Replica::save_new`] gave earlier to a loaded document.
    pub fn load_more(&mut self, bytes: &[u8]) -> Result<(), DocError> {
        self.doc.load_incremental(bytes).map_err(|e| DocError::Malformed(e.to_string()))?;
        self.persisted = self.doc.get_heads();
        Ok(())
    }

    /// The whole document in automerge's binary format (what other implementations load).
    pub fn save(&mut self) -> Vec<u8> {
        let bytes = self.doc.save();
        self.persisted = self.doc.get_heads();
        bytes
    }

    /// The changes since the document was last loaded or saved (empty if none), to persist
    /// beside the saved bytes and give to [`Replica::load_more`]: a small edit costs a small
    /// write, whatever the document's size.
    pub fn save_new(&mut self) -> Vec<u8> {
        let bytes = self.doc.save_after(&self.persisted);
        self.persisted = self.doc.get_heads();
        bytes
    }

    /// The current heads.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Encoded changes the holder of `heads` lacks (all of them for no heads).
    pub fn changes_since(&mut self, heads: &[ChangeHash]) -> Vec<Vec<u8>> {
        self.doc.get_changes(heads).into_iter().map(|c| c.raw_bytes().to_vec()).collect()
    }

    /// Applies encoded changes if every one was written by an actor `may_edit` allows and
    /// everything they build on is here or among them; else applies none
    /// ([`DocError::ForeignAuthor`], [`DocError::MissingDeps`]). Changes already present are
    /// ignored.
    pub fn apply(
        &mut self,
        changes: &[Vec<u8>],
        may_edit: impl Fn(&ActorId) -> bool,
    ) -> Result<(), DocError> {
        let mut decoded = Vec::with_capacity(changes.len());
        for bytes in changes {
            let change = Change::from_bytes(bytes.clone()).map_err(|e| DocError::Malformed(e.to_string()))?;
            if !may_edit(change.actor_id()) {
                return Err(DocError::ForeignAuthor(change.actor_id().to_hex_string()));
            }
            decoded.push(change);
        }
        let incoming: std::collections::HashSet<ChangeHash> = decoded.iter().map(|c| c.hash()).collect();
        let lacking = decoded
            .iter()
            .flat_map(|c| c.deps())
            .any(|d| !incoming.contains(d) && self.doc.get_change_by_hash(d).is_none());
        if lacking {
            return Err(DocError::MissingDeps);
        }
        // The batch path applies many changes at once far faster than one by one.
        self.doc.apply_changes_batch(decoded)?;
        Ok(())
    }

    /// The next message of automerge's sync protocol for the peer `state` tracks, encoded
    /// (`None`: nothing to tell it until it answers).
    pub fn sync_message(&mut self, state: &mut SyncState) -> Option<Vec<u8>> {
        self.doc.sync().generate_sync_message(state).map(Message::encode)
    }

    /// Takes an encoded sync message from the peer `state` tracks. Changes it carries are
    /// applied only if every one was written by an actor `may_edit` allows and everything they
    /// build on is here ([`Replica::apply`]'s rules: otherwise nothing is applied; `state` then
    /// learns only the peer's heads if the changes merely arrived early, so the next message
    /// asks for what they build on, and nothing at all if an author was refused). A whole document (what the protocol sends to a peer missing most of it)
    /// is loaded and checked the same way, then either becomes this replica (when it holds
    /// everything this one has, the common case of a newcomer: one load, no replay) or is
    /// merged.
    pub fn receive_sync(
        &mut self,
        state: &mut SyncState,
        bytes: &[u8],
        may_edit: impl Fn(&ActorId) -> bool,
    ) -> Result<SyncApplied, DocError> {
        let mut message = Message::decode(bytes).map_err(|e| DocError::Malformed(e.to_string()))?;
        for have in &message.have {
            check_bloom(&have.bloom.to_bytes())?;
        }
        let chunks: Vec<Vec<u8>> = message.changes.iter().map(<[u8]>::to_vec).collect();
        // Applied here, with the author check; the protocol then only learns the heads.
        message.changes = ChunkList::empty();
        let applied = match chunks.as_slice() {
            [] => SyncApplied::Nothing,
            [one] if Change::from_bytes(one.clone()).is_err() => self.take_whole(one, &may_edit)?,
            _ => match self.apply(&chunks, &may_edit) {
                Ok(()) => SyncApplied::Changes(chunks),
                Err(DocError::MissingDeps) => {
                    // Still learn the peer's heads, so the answer asks for what is missing.
                    self.doc.sync().receive_sync_message(state, message)?;
                    return Err(DocError::MissingDeps);
                }
                Err(e) => return Err(e),
            },
        };
        self.doc.sync().receive_sync_message(state, message)?;
        Ok(applied)
    }

    fn take_whole(
        &mut self,
        bytes: &[u8],
        may_edit: &impl Fn(&ActorId) -> bool,
    ) -> Result<SyncApplied, DocError> {
        let mut other = AutoCommit::load(bytes).map_err(|e| DocError::Malformed(e.to_string()))?;
        if let Some(m) = other.get_changes_meta(&[]).into_iter().find(|m| !may_edit(&m.actor)) {
            return Err(DocError::ForeignAuthor(m.actor.to_hex_string()));
        }
        let ours = self.doc.get_heads();
        if ours.iter().all(|h| other.get_change_meta_by_hash(h).is_some()) {
            let actor = self.doc.get_actor().clone();
            self.persisted = other.get_heads();
            self.doc = other.with_actor(actor);
            Ok(SyncApplied::Whole(bytes.to_vec()))
        } else {
            self.doc.merge(&mut other)?;
            Ok(SyncApplied::Merged)
        }
    }

    /// The change this replica committed last, encoded (what its node sends the group).
    pub fn last_local_change(&mut self) -> Option<Vec<u8>> {
        self.doc.get_last_local_change().map(|c| c.raw_bytes().to_vec())
    }

    /// The document as it was at `heads`, written from now on by `device`.
    pub fn fork_at(&mut self, heads: &[ChangeHash], device: &DeviceKey) -> Result<Replica, DocError> {
        let mut doc = self.doc.fork_at(heads)?.with_actor(actor_of(device));
        let persisted = doc.get_heads();
        Ok(Self { doc, persisted })
    }

    /// Merges everything `other` has (both replicas of the same document; no author check:
    /// for local use and tests).
    pub fn merge(&mut self, other: &mut Replica) -> Result<(), DocError> {
        self.doc.merge(&mut other.doc)?;
        Ok(())
    }

    fn commit(&mut self, message: &str, now: u64) {
        let options = automerge::transaction::CommitOptions::default()
            .with_message(message.to_owned())
            .with_time(i64::try_from(now).unwrap_or(i64::MAX));
        self.doc.commit_with(options);
    }
}
