//! Shared text documents: each is a `dingo_docs::TextDoc` (one automerge document) kept in sync
//! through the document's own group, exactly like a project's task board (see `projects.rs`):
//! one deterministic genesis, changes sealed once with the editor's sender key, author-bound,
//! causal gaps answered "retry". Every function runs in a store job.

use crate::chat::{Accepted, Core, SealCtx};
use crate::projects::scope_named;
use crate::records::{BlameView, ProjectView, RevisionView};
use crate::{NodeError, NodeEvent};
use dingo_crypto::membership::{Channel, TeamState};
use dingo_docs::{actor_of, TextDoc};
use dingo_store::Store;
use dingo_types::envelope::Envelope;
use dingo_types::team::Action;
use dingo_types::{ConvId, DeviceKey};

/// Largest document text, in bytes (an edit's changes must fit the envelopes of one send).
pub(crate) const MAX_DOC_BYTES: usize = 1024 * 1024;

impl Core {
    pub(crate) fn doc_named(&self, state: &TeamState, name: &str) -> Result<(String, Channel), NodeError> {
        scope_named(&state.docs, name).ok_or_else(|| NodeError::UnknownDoc(name.to_owned()))
    }

    /// Creates a document (any member may), scoped to departments and/or members.
    pub(crate) fn create_doc(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        name: &str,
        depts: Vec<String>,
        members: Vec<String>,
        now: u64,
    ) -> Result<(), NodeError> {
        let name = name.trim().to_owned();
        if name.is_empty()
            || name.len() > dingo_types::limits::MAX_NAME_BYTES
            || name.contains(char::is_whitespace)
        {
            return Err(NodeError::BadName("a document name must be 1 to 64 bytes without spaces".into()));
        }
        self.create_scoped(s, ctx, (name, depts, members), now, |name, depts, members| Action::DocCreate {
            name,
            depts,
            members,
        })
    }

    /// Reads the document (loaded once and kept).
    fn read_text<R>(
        &self,
        s: &Store,
        id: &ConvId,
        name: &str,
        f: impl FnOnce(&mut TextDoc) -> Result<R, NodeError>,
    ) -> Result<R, NodeError> {
        let mut w = self.open_work::<TextDoc>(s, id, name)?;
        let r = f(&mut w.doc);
        self.release_work(w);
        r
    }

    fn member_doc(
        &self,
        s: &Store,
        name: &str,
    ) -> Result<(std::sync::Arc<TeamState>, String, Channel), NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let (name, chan) = self.doc_named(&state, name)?;
        if !state.channel_members(&chan).contains(&self.me.user_id()) {
            return Err(NodeError::NotInChannel(format!("document {name}")));
        }
        Ok((state, name, chan))
    }

    /// Makes the document's text `text` (line edits of what differs); says whether it changed.
    pub(crate) fn edit_doc(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        name: &str,
        text: &str,
        message: &str,
        now: u64,
    ) -> Result<bool, NodeError> {
        if text.len() > MAX_DOC_BYTES {
            return Err(NodeError::TooLong(text.len(), MAX_DOC_BYTES));
        }
        let (state, name, chan) = self.member_doc(s, name)?;
        let mut w = self.open_work::<TextDoc>(s, &chan.id, &name)?;
        let before = w.doc.replica().heads();
        if !w.doc.edit(text, message, now)? {
            self.release_work(w);
            return Ok(false);
        }
        let changes = w.doc.replica().changes_since(&before);
        self.send_changes(s, ctx, (&state, &name, &chan), changes, now)?;
        self.keep_work(w);
        Ok(true)
    }

    /// Applies changes received in a document's group from `env`'s signer.
    pub(crate) fn accept_text_changes(
        &self,
        s: &Store,
        env: &Envelope,
        name: &str,
        changes: Vec<Vec<u8>>,
    ) -> Result<Result<Vec<NodeEvent>, Accepted>, NodeError> {
        let mut w = self.open_work::<TextDoc>(s, &env.group, name)?;
        let signer = actor_of(&env.sender);
        if let Err(e) = w.doc.replica().apply(&changes, |a| *a == signer) {
            return Ok(Err(self.not_applied(w, e, "document changes")));
        }
        self.keep_work(w);
        Ok(Ok(vec![NodeEvent::DocChanged { doc: name.to_owned() }]))
    }

    /// The document's text.
    pub(crate) fn doc_text(&self, s: &Store, name: &str) -> Result<String, NodeError> {
        let (_, name, chan) = self.member_doc(s, name)?;
        self.read_text(s, &chan.id, &name, |d| Ok(d.body()?))
    }

    /// The document as standard automerge bytes.
    pub(crate) fn doc_bytes(&self, s: &Store, name: &str) -> Result<Vec<u8>, NodeError> {
        let (_, name, chan) = self.member_doc(s, name)?;
        // A copy: saving the live document would move its persisted mark.
        self.read_text(s, &chan.id, &name, |d| Ok(d.replica().clone().save()))
    }

    /// Who wrote a device key (hex), by member name.
    fn author_name(&self, s: &Store, state: &TeamState, device_hex: &str) -> String {
        state
            .members
            .iter()
            .find(|(_, m)| DeviceKey(m.device_key).to_hex() == device_hex)
            .map(|(u, _)| self.member_name(s, state, u))
            .or_else(|| {
                state.docs.values().any(|c| c.id.to_hex() == device_hex).then(|| "(created)".to_owned())
            })
            .unwrap_or_else(|| format!("{}…", &device_hex[..device_hex.len().min(12)]))
    }

    /// Every change: who, when, what they said.
    pub(crate) fn doc_history(&self, s: &Store, name: &str) -> Result<Vec<RevisionView>, NodeError> {
        let (state, name, chan) = self.member_doc(s, name)?;
        let history = self.read_text(s, &chan.id, &name, |d| Ok(d.history()?))?;
        Ok(history
            .into_iter()
            .map(|r| RevisionView {
                author: self.author_name(s, &state, &r.author),
                at: r.at,
                message: r.message,
                hash: r.hash,
                lines_added: r.lines_added,
                lines_removed: r.lines_removed,
                chars_added: r.chars_added,
                chars_removed: r.chars_removed,
            })
            .collect())
    }

    /// Each line with who last changed it and when.
    pub(crate) fn doc_blame(&self, s: &Store, name: &str) -> Result<Vec<BlameView>, NodeError> {
        let (state, name, chan) = self.member_doc(s, name)?;
        let blame = self.read_text(s, &chan.id, &name, |d| Ok(d.blame()?))?;
        Ok(blame
            .into_iter()
            .map(|l| BlameView {
                line: l.line,
                author: self.author_name(s, &state, &l.author),
                at: l.at,
                text: l.text,
            })
            .collect())
    }

    pub(crate) fn docs_view(&self, s: &Store) -> Result<Vec<ProjectView>, NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        Ok(self.scoped_views(s, &state, &state.docs))
    }
}
