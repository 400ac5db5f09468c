//! Catch-up of task boards and documents with automerge's sync protocol, run pairwise between
//! two members inside their end-to-end encrypted session.
//!
//! Live edits travel as changes in the document's group (sealed once, stored in every member's
//! group log). Catch-up is for what a member lacks beyond that, and uses the protocol:
//!
//! - **A newcomer.** When team ops put this node in a project's or document's scope and it holds
//!   nothing of it beyond the genesis (which every member builds identically), it opens a
//!   round with the member who sent the ops (and with each member it meets later, while it
//!   still holds nothing): its first message says it has only the genesis, and the answer (the
//!   protocol's second version) is the whole document, compressed, which the newcomer loads in
//!   one go instead of replaying each change.
//! - **A gap.** Changes that arrive ahead of changes they build on are answered "retry" and
//!   open a round with their author (at most one per document and peer every
//!   [`ROUND_EVERY_MS`]): it sends its heads and a Bloom filter of what it has, and the author
//!   answers with what is missing.
//!
//! Each sync message travels as [`Content::DocSync`] parts that each fit an envelope,
//! reassembled here in memory (bounded). Received changes obey the same author binding as live
//! ones, checked before anything is applied ([`dingo_docs::Replica::receive_sync`]). Sync
//! states live in memory only: a round lost to a restart is simply started again by the next
//! gap, and a round's first message tells the peer to forget what it believed (`start`).

use crate::chat::{Accepted, Core, SealCtx};
use crate::records::ContactRec;
use crate::workdocs::Work;
use crate::{NodeError, NodeEvent};
use dingo_crypto::membership::TeamState;
use dingo_docs::{actor_of, Board, SharedDoc, SyncApplied, SyncState, TextDoc};
use dingo_store::Store;
use dingo_types::content::Content;
use dingo_types::limits::{MAX_DOC_SYNC_PARTS, MAX_DOC_SYNC_PART_BYTES};
use dingo_types::{ConvId, DeviceKey, UserId};
use std::collections::HashMap;
use std::sync::Mutex;

/// At most one round opened per document and peer in this time (a retried change would
/// otherwise open one per retry).
pub(crate) const ROUND_EVERY_MS: u64 = 10_000;
/// Sync states kept (one per document and peer being synced).
const MAX_STATES: usize = 1024;
/// Bytes of sync messages being reassembled, in total.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// Sync messages being reassembled at once.
const MAX_PENDING_MESSAGES: usize = 64;

/// A sync message arriving in parts.
struct Assembly {
    parts: Vec<Option<Vec<u8>>>,
    missing: u32,
    bytes: usize,
    /// Arrival of the first part (the oldest go first when the bounds are reached).
    since: u64,
}

#[derive(Default)]
struct Inner {
    states: HashMap<(ConvId, UserId), SyncState>,
    started: HashMap<(ConvId, UserId), u64>,
    pending: HashMap<(UserId, ConvId, u64), Assembly>,
    pending_bytes: usize,
}

/// The node's sync states and partly received sync messages.
#[derive(Default)]
pub(crate) struct DocSyncs {
    inner: Mutex<Inner>,
}

impl DocSyncs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every state (after a failed job: a state may describe a message never sent).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.states.clear();
        inner.started.clear();
    }

    /// The state for `doc` with `peer` (a fresh one if `fresh` or none is kept).
    fn take_state(&self, doc: ConvId, peer: UserId, fresh: bool) -> SyncState {
        let kept = self.lock().states.remove(&(doc, peer));
        match kept {
            Some(s) if !fresh => s,
            _ => SyncState::new(),
        }
    }

    fn put_state(&self, doc: ConvId, peer: UserId, state: SyncState) {
        let mut inner = self.lock();
        if inner.states.len() >= MAX_STATES {
            // Any one: a forgotten state costs at most a resent change or a new round.
            if let Some(k) = inner.states.keys().next().copied() {
                inner.states.remove(&k);
            }
        }
        inner.states.insert((doc, peer), state);
    }

    /// Whether a round about `doc` with `peer` may open now (and notes that it does).
    fn may_start(&self, doc: ConvId, peer: UserId, now: u64) -> bool {
        let mut inner = self.lock();
        match inner.started.get(&(doc, peer)) {
            Some(at) if now < at.saturating_add(ROUND_EVERY_MS) => false,
            _ => {
                if inner.started.len() >= MAX_STATES {
                    inner.started.retain(|_, at| now < at.saturating_add(ROUND_EVERY_MS));
                }
                inner.started.insert((doc, peer), now);
                true
            }
        }
    }

    /// Adds one part; the whole message once every part is here.
    fn add_part(
        &self,
        key: (UserId, ConvId, u64),
        (part, parts): (u32, u32),
        bytes: Vec<u8>,
        now: u64,
    ) -> Option<Vec<u8>> {
        if parts <= 1 {
            return Some(bytes);
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        // Room for it: the oldest unfinished messages go (their round is started again later).
        while inner.pending_bytes + bytes.len() > MAX_PENDING_BYTES
            || (inner.pending.len() >= MAX_PENDING_MESSAGES && !inner.pending.contains_key(&key))
        {
            let Some(oldest) = inner.pending.iter().min_by_key(|(_, a)| a.since).map(|(k, _)| *k) else {
                break;
            };
            if let Some(a) = inner.pending.remove(&oldest) {
                inner.pending_bytes -= a.bytes;
            }
        }
        let entry = inner.pending.entry(key).or_insert_with(|| Assembly {
            parts: vec![None; parts as usize],
            missing: parts,
            bytes: 0,
            since: now,
        });
        let slot = entry.parts.get_mut(part as usize)?;
        if slot.is_none() {
            entry.missing -= 1;
            entry.bytes += bytes.len();
            inner.pending_bytes += bytes.len();
            *slot = Some(bytes);
        }
        if entry.missing > 0 {
            return None;
        }
        let done = inner.pending.remove(&key)?;
        inner.pending_bytes -= done.bytes;
        Some(done.parts.into_iter().flatten().flatten().collect())
    }
}

/// What a sync message did to a document: whether anything changed (or why nothing could be
/// applied), and the protocol's answer to send, if any.
type Received = (Result<bool, dingo_docs::DocError>, Option<Vec<u8>>);

/// One `DocSync` part as received.
pub(crate) struct SyncPart {
    pub doc: ConvId,
    pub message: u64,
    pub start: bool,
    pub part: u32,
    pub parts: u32,
    pub bytes: Vec<u8>,
}

/// Who may have written a project's or document's changes: every member's device, past or
/// present (a removed member's earlier edits stay part of it), and the genesis actor.
pub(crate) fn writers(state: &TeamState, group: &ConvId) -> Vec<automerge::ActorId> {
    let mut writers: Vec<automerge::ActorId> = state
        .members
        .values()
        .map(|m| m.device_key)
        .chain(state.removed.values().copied())
        .map(|d| actor_of(&DeviceKey(d)))
        .collect();
    writers.push(actor_of(&DeviceKey(group.0)));
    writers
}

impl Core {
    /// Opens a sync round about a project or document with `to`: this node's heads and a
    /// summary of what it has, which `to` answers with what it lacks.
    pub(crate) fn start_doc_sync(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        state: &TeamState,
        group: &ConvId,
        to: &ContactRec,
    ) -> Result<(), NodeError> {
        let message = if let Some((name, _)) = state.project_by_id(group) {
            self.first_sync_message::<Board>(s, group, name, to)?
        } else if let Some((name, _)) = state.doc_by_id(group) {
            self.first_sync_message::<TextDoc>(s, group, name, to)?
        } else {
            return Ok(());
        };
        if let Some(bytes) = message {
            self.send_doc_sync(s, ctx, to, *group, true, &bytes)?;
        }
        Ok(())
    }

    fn first_sync_message<T: SharedDoc>(
        &self,
        s: &Store,
        group: &ConvId,
        name: &str,
        to: &ContactRec,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        let mut sync = SyncState::new();
        let mut w = self.open_work::<T>(s, group, name)?;
        let message = w.doc.replica().sync_message(&mut sync);
        self.release_work(w);
        self.doc_sync.put_state(*group, to.user_id, sync);
        Ok(message)
    }

    /// After team ops from `from` arrived: every project and document this node is in but
    /// holds nothing of is asked of `from` (if it is in it too), so a newcomer has the work at
    /// once rather than at the next edit.
    pub(crate) fn pull_new_docs(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        state: &TeamState,
        from: &ContactRec,
        now: u64,
    ) -> Result<(), NodeError> {
        let me = self.me.user_id();
        let groups: Vec<ConvId> = state.projects.values().chain(state.docs.values()).map(|c| c.id).collect();
        for group in groups {
            let Some((_, scope)) = state.project_by_id(&group).or_else(|| state.doc_by_id(&group)) else {
                continue;
            };
            let members = state.channel_members(scope);
            if !members.contains(&me) || !members.contains(&from.user_id) || self.holds_work(s, &group)? {
                continue;
            }
            if self.doc_sync.may_start(group, from.user_id, now) {
                self.start_doc_sync(s, ctx, state, &group, from)?;
            }
        }
        Ok(())
    }

    /// A peer's device connected: projects and documents both are in and this node holds
    /// nothing of are asked of it (a newcomer whose first round was lost to a restart, or
    /// whose team ops came from someone outside the project).
    pub(crate) fn pull_new_docs_from(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        device: &DeviceKey,
        now: u64,
    ) -> Result<(), NodeError> {
        let Some(contact) = self.contact_by_device(s, device)? else { return Ok(()) };
        let Some((_, state)) = self.team_state(s)? else { return Ok(()) };
        if contact.removed || !state.members.contains_key(&contact.user_id) {
            return Ok(());
        }
        self.pull_new_docs(s, ctx, &state, &contact, now)
    }

    /// Opens a round with the author of changes that arrived before what they build on (at
    /// most one per document and peer every [`ROUND_EVERY_MS`]).
    pub(crate) fn sync_gap(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        state: &TeamState,
        group: &ConvId,
        author: &UserId,
        now: u64,
    ) -> Result<(), NodeError> {
        let Some(contact) = s.get::<ContactRec>(dingo_store::Table::Contacts, &author.0)? else {
            return Ok(());
        };
        if contact.removed || !self.doc_sync.may_start(*group, *author, now) {
            return Ok(());
        }
        tracing::debug!(peer = %contact.name, "changes ahead of their dependencies: syncing");
        self.start_doc_sync(s, ctx, state, group, &contact)
    }

    /// Seals one sync message to `to`, in parts that each fit an envelope.
    fn send_doc_sync(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        to: &ContactRec,
        doc: ConvId,
        start: bool,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        let parts = bytes.len().div_ceil(MAX_DOC_SYNC_PART_BYTES).max(1);
        let Ok(parts) = u32::try_from(parts) else { return Ok(()) };
        if parts > MAX_DOC_SYNC_PARTS {
            tracing::warn!(to = %to.name, "a sync message of {} bytes is too large to send", bytes.len());
            return Ok(());
        }
        let message = rand::random::<u64>();
        // A sync message is never empty (it starts with its type byte).
        for (part, chunk) in (0..parts).zip(bytes.chunks(MAX_DOC_SYNC_PART_BYTES)) {
            let content = Content::DocSync { doc, message, start, part, parts, bytes: chunk.to_vec() };
            self.seal_into(s, ctx, to, &content, None)?;
        }
        Ok(())
    }

    /// A `DocSync` part from `from`: once the message is whole, its changes are applied (if
    /// their authors may write there) and the answer, if the protocol has one, goes back.
    pub(crate) fn accept_doc_sync(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        from: &ContactRec,
        p: SyncPart,
        now: u64,
    ) -> Result<Accepted, NodeError> {
        let Some((_, state)) = self.team_state(s)? else {
            return Ok(Accepted::Rejected("document sync while not in a team".into()));
        };
        let Some((_, scope)) = state.project_by_id(&p.doc).or_else(|| state.doc_by_id(&p.doc)) else {
            // The op creating it may still be on its way.
            return Ok(Accepted::Retry(Vec::new()));
        };
        let members = state.channel_members(scope);
        if !members.contains(&self.me.user_id()) {
            return Ok(Accepted::Rejected("document sync for a document this node is not in".into()));
        }
        if !members.contains(&from.user_id) {
            // Perhaps added by an op not here yet.
            return Ok(Accepted::Retry(Vec::new()));
        }
        let Some(bytes) =
            self.doc_sync.add_part((from.user_id, p.doc, p.message), (p.part, p.parts), p.bytes, now)
        else {
            return Ok(Accepted::Stored(Vec::new()));
        };
        let mut sync = self.doc_sync.take_state(p.doc, from.user_id, p.start);
        let writers = writers(&state, &p.doc);
        let may_edit = |a: &automerge::ActorId| writers.contains(a);
        let (outcome, reply) = if let Some((name, _)) = state.project_by_id(&p.doc) {
            let got = self.receive_into::<Board>(
                s,
                (&p.doc, name),
                (&mut sync, &bytes),
                may_edit,
                |b, applied| b.touched_by_sync(applied),
                |core, w, touched| core.keep_board(s, w, touched),
            )?;
            (got.0.map(|changed| changed.then(|| NodeEvent::TasksChanged { project: name.clone() })), got.1)
        } else if let Some((name, _)) = state.doc_by_id(&p.doc) {
            let got = self.receive_into::<TextDoc>(
                s,
                (&p.doc, name),
                (&mut sync, &bytes),
                may_edit,
                |_, _| Ok(None),
                |core, w, _| {
                    core.keep_work(w);
                    Ok(())
                },
            )?;
            (got.0.map(|changed| changed.then(|| NodeEvent::DocChanged { doc: name.clone() })), got.1)
        } else {
            return Ok(Accepted::Stored(Vec::new()));
        };
        let accepted = match outcome {
            Ok(None) => Accepted::Stored(Vec::new()),
            Ok(Some(event)) => {
                // Changes that waited for these can be taken now.
                ctx.effects.resync = true;
                Accepted::Stored(vec![event])
            }
            // Changes ahead of what they build on: nothing applied; the answer below says what
            // this node has, and the peer sends what is missing.
            Err(dingo_docs::DocError::MissingDeps) => Accepted::Stored(Vec::new()),
            Err(e) => {
                tracing::warn!(from = %from.name, "document sync refused: {e}");
                return Ok(Accepted::Rejected(format!("document sync refused: {e}")));
            }
        };
        if let Some(reply) = reply {
            self.send_doc_sync(s, ctx, from, p.doc, false, &reply)?;
        }
        self.doc_sync.put_state(p.doc, from.user_id, sync);
        Ok(accepted)
    }

    /// Applies a whole sync message to a group's document and puts the document back:
    /// `touched` names what changed (for a board, the tasks; `None` for everything) and `keep`
    /// puts it back as its kind needs; a whole document received becomes the stored save, a
    /// merged one is saved whole. Says whether anything changed (or why nothing could be
    /// applied), and gives the protocol's answer, if it has one.
    fn receive_into<T: SharedDoc>(
        &self,
        s: &Store,
        (group, name): (&ConvId, &str),
        (sync, bytes): (&mut SyncState, &[u8]),
        may_edit: impl Fn(&automerge::ActorId) -> bool,
        touched: impl FnOnce(&T, &SyncApplied) -> Result<Option<Vec<String>>, dingo_docs::DocError>,
        keep: impl FnOnce(&Self, Work<T>, Option<Vec<String>>) -> Result<(), NodeError>,
    ) -> Result<Received, NodeError> {
        let mut w = self.open_work::<T>(s, group, name)?;
        let received = w.doc.replica().receive_sync(sync, bytes, may_edit);
        let reply = w.doc.replica().sync_message(sync);
        let applied = match received {
            Ok(applied) => applied,
            Err(e) => {
                self.release_work(w);
                return Ok((Err(e), reply));
            }
        };
        let changed = touched(&w.doc, &applied)?;
        match applied {
            SyncApplied::Nothing => {
                self.release_work(w);
                return Ok((Ok(false), reply));
            }
            SyncApplied::Whole(bytes) => w.replaced_by(bytes),
            SyncApplied::Merged => w.resave(),
            SyncApplied::Changes(_) => {}
        }
        keep(self, w, changed)?;
        Ok((Ok(true), reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_reassemble_in_any_order_once_each_and_within_bounds() {
        let syncs = DocSyncs::default();
        let key = (UserId([1; 16]), ConvId([2; 32]), 7);
        assert_eq!(syncs.add_part(key, (0, 1), vec![1, 2], 0), Some(vec![1, 2]));
        assert_eq!(syncs.add_part(key, (2, 3), vec![5], 0), None);
        assert_eq!(syncs.add_part(key, (2, 3), vec![5], 0), None, "a repeated part counts once");
        assert_eq!(syncs.add_part(key, (0, 3), vec![1, 2], 0), None);
        assert_eq!(syncs.add_part(key, (1, 3), vec![3, 4], 0), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(syncs.lock().pending_bytes, 0);
        // A part beyond the count it arrived with is ignored.
        assert_eq!(syncs.add_part((key.0, key.1, 8), (0, 2), vec![1], 0), None);
        assert_eq!(syncs.add_part((key.0, key.1, 8), (5, 2), vec![1], 0), None);
        // Too many messages at once: the oldest unfinished ones go.
        for m in 0..(MAX_PENDING_MESSAGES as u64 + 5) {
            syncs.add_part((key.0, key.1, 100 + m), (0, 2), vec![0; 10], m);
        }
        let inner = syncs.lock();
        assert_eq!(inner.pending.len(), MAX_PENDING_MESSAGES);
        assert!(!inner.pending.contains_key(&(key.0, key.1, 8)));
        assert_eq!(inner.pending_bytes, MAX_PENDING_MESSAGES * 10);
    }

    #[test]
    fn a_round_opens_at_most_once_per_interval() {
        let syncs = DocSyncs::default();
        let (doc, peer) = (ConvId([2; 32]), UserId([1; 16]));
        assert!(syncs.may_start(doc, peer, 1000));
        assert!(!syncs.may_start(doc, peer, 1000 + ROUND_EVERY_MS - 1));
        assert!(syncs.may_start(ConvId([3; 32]), peer, 1000));
        assert!(syncs.may_start(doc, peer, 1000 + ROUND_EVERY_MS));
    }
}
