//! A shared text document: one automerge document whose body is an automerge text object.
//!
//! ```text
//! ROOT { kind: "dingo/text/v1", name: str, body: text }
//! ```
//! An edit is given as the whole new text (what `$EDITOR` saved); a line diff turns it into text
//! splices of only the lines that changed, so concurrent edits of different lines both survive
//! and blame stays with whoever wrote each line. History and blame come from the changes
//! themselves: each names its actor (the device), time and message.

use crate::diff::splices;
use crate::{device_of, DocError, Replica};
use automerge::patches::PatchAction;
use automerge::transaction::Transactable;
use automerge::{legacy, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use dingo_types::DeviceKey;
use serde::{Deserialize, Serialize};

const KIND: &str = "dingo/text/v1";

/// One change in a document's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The change hash (hex).
    pub hash: String,
    /// The device that wrote it (its signing key, hex).
    pub author: String,
    /// When, on the author's clock (ms).
    pub at: u64,
    /// What the author said it was.
    pub message: String,
    /// Lines it added and removed (a changed line counts as one of each, as in a diff).
    pub lines_added: usize,
    /// See `lines_added`.
    pub lines_removed: usize,
    /// Characters it inserted and deleted.
    pub chars_added: usize,
    /// See `chars_added`.
    pub chars_removed: usize,
}

/// One line of a document with who last changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlameLine {
    /// Line number, from 1.
    pub line: usize,
    /// The line, without its newline.
    pub text: String,
    /// The device that last changed it (hex).
    pub author: String,
    /// When (ms).
    pub at: u64,
}

/// A shared text document.
#[derive(Debug, Clone)]
pub struct TextDoc {
    replica: Replica,
    /// The body text object (fixed for the document's life).
    body: ObjId,
}

fn body_of(doc: &AutoCommit) -> Option<ObjId> {
    match doc.get(ROOT, "body").ok()?? {
        (Value::Object(ObjType::Text), id) => Some(id),
        _ => None,
    }
}

fn hex_of(actor: &automerge::ActorId) -> String {
    device_of(actor).map(|d| d.to_hex()).unwrap_or_else(|| actor.to_hex_string())
}

impl TextDoc {
    /// A new, empty document written by `device`.
    pub fn create(device: &DeviceKey, name: &str, now: u64) -> Result<Self, DocError> {
        let mut replica = Replica::new(device);
        replica.doc.put(ROOT, "kind", KIND)?;
        replica.doc.put(ROOT, "name", name)?;
        let body = replica.doc.put_object(ROOT, "body", ObjType::Text)?;
        replica.commit("create the document", now);
        Ok(Self { replica, body })
    }

    /// A document from saved bytes, written from now on by `device`.
    pub fn load(bytes: &[u8], device: &DeviceKey) -> Result<Self, DocError> {
        Self::from_replica(Replica::load(bytes, device)?)
    }

    /// A document from a replica (e.g. one built from received changes).
    pub fn from_replica(replica: Replica) -> Result<Self, DocError> {
        let kind = match replica.doc.get(ROOT, "kind") {
            Ok(Some((Value::Scalar(s), _))) => matches!(s.as_ref(), ScalarValue::Str(k) if k == KIND),
            _ => false,
        };
        match body_of(&replica.doc) {
            Some(body) if kind => Ok(Self { replica, body }),
            _ => Err(DocError::WrongKind("text document")),
        }
    }

    /// The automerge replica (save, sync, apply).
    pub fn replica(&mut self) -> &mut Replica {
        &mut self.replica
    }

    fn body_obj(&self) -> Result<ObjId, DocError> {
        Ok(self.body.clone())
    }

    /// The text.
    pub fn body(&self) -> Result<String, DocError> {
        Ok(self.replica.doc.text(self.body_obj()?)?)
    }

    /// Makes the text `new`, as edits of the lines that differ; says whether anything changed.
    pub fn edit(&mut self, new: &str, message: &str, now: u64) -> Result<bool, DocError> {
        let body = self.body_obj()?;
        let old = self.replica.doc.text(&body)?;
        let edits = splices(&old, new);
        if edits.is_empty() {
            return Ok(false);
        }
        for s in edits {
            let delete =
                isize::try_from(s.delete).map_err(|_| DocError::Malformed("edit too large".into()))?;
            self.replica.doc.splice_text(&body, s.at, delete, &s.insert)?;
        }
        self.replica.commit(message, now);
        Ok(true)
    }

    /// Splices the text directly (character positions), without committing: for replaying
    /// character-level edits (an editor plugin, a trace); [`TextDoc::commit`] ends the change.
    pub fn splice(&mut self, at: usize, delete: usize, insert: &str) -> Result<(), DocError> {
        let body = self.body_obj()?;
        let delete = isize::try_from(delete).map_err(|_| DocError::Malformed("edit too large".into()))?;
        self.replica.doc.splice_text(&body, at, delete, insert)?;
        Ok(())
    }

    /// Ends the current change with a message and time.
    pub fn commit(&mut self, message: &str, now: u64) {
        self.replica.commit(message, now);
    }

    /// Every change, in causal order (oldest first), with the lines and characters it
    /// added and removed. These are read from each change's own operations (a deletion
    /// names the character it removes), so they say what its author did whatever else
    /// happened concurrently, and every replica gives a change the same figures.
    pub fn history(&mut self) -> Result<Vec<Revision>, DocError> {
        let body = match self.body_obj()? {
            ObjId::Id(counter, actor, _) => legacy::ObjectId::Id(legacy::OpId(counter, actor)),
            ObjId::Root => return Err(DocError::Malformed("the body is not a text object".into())),
        };
        let changes: Vec<_> = self.replica.doc.get_changes(&[]).iter().map(|c| c.decode()).collect();
        let op_id = |c: &automerge::ExpandedChange, k: usize| {
            legacy::OpId(c.start_op.get() + k as u64, c.actor_id.clone())
        };
        // Every newline ever inserted into the body, by the id of the operation that did it.
        let mut newlines = std::collections::HashSet::new();
        for c in &changes {
            for (k, op) in c.operations.iter().enumerate() {
                if op.insert
                    && op.obj == body
                    && matches!(&op.action, legacy::OpType::Put(ScalarValue::Str(s)) if s == "\n")
                {
                    newlines.insert(op_id(c, k));
                }
            }
        }
        Ok(changes
            .iter()
            .map(|c| {
                let mut r = Revision {
                    hash: c.hash.map(|h| h.to_string()).unwrap_or_default(),
                    author: hex_of(&c.actor_id),
                    at: u64::try_from(c.time).unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                    ..Revision::default()
                };
                for (k, op) in c.operations.iter().enumerate().filter(|(_, op)| op.obj == body) {
                    if op.insert {
                        r.chars_added += 1;
                        r.lines_added += usize::from(newlines.contains(&op_id(c, k)));
                    } else if matches!(op.action, legacy::OpType::Delete) {
                        r.chars_removed += op.pred.len();
                        r.lines_removed += op.pred.iter().filter(|p| newlines.contains(*p)).count();
                    }
                }
                r
            })
            .collect())
    }

    /// Each line with the device and time of the last change that touched it: the history is
    /// replayed change by change, and every character carries the change that inserted it.
    pub fn blame(&mut self) -> Result<Vec<BlameLine>, DocError> {
        let changes = self.replica.doc.get_changes(&[]);
        let mut replay = AutoCommit::new();
        // Per character of the replayed body: the index of the change that inserted it.
        let mut owner: Vec<usize> = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            replay.apply_changes([change.clone()])?;
            let Some(body) = body_of(&replay) else {
                replay.update_diff_cursor();
                continue;
            };
            for patch in replay.diff_incremental() {
                if patch.obj != body {
                    continue;
                }
                match patch.action {
                    PatchAction::SpliceText { index, value, .. } => {
                        let n = value.make_string().chars().count();
                        let at = index.min(owner.len());
                        owner.splice(at..at, std::iter::repeat_n(i, n));
                    }
                    PatchAction::DeleteSeq { index, length } => {
                        let start = index.min(owner.len());
                        let end = (index + length).min(owner.len());
                        owner.drain(start..end);
                    }
                    _ => {}
                }
            }
        }
        let text = self.body()?;
        let mut out = Vec::new();
        let mut pos = 0;
        for (n, line) in text.split_inclusive('\n').enumerate() {
            let len = line.chars().count();
            let content = line.strip_suffix('\n').unwrap_or(line);
            // The newline counts only for an empty line.
            let span = content.chars().count().max(len.min(1));
            let last = owner.get(pos..pos + span).and_then(|o| o.iter().max().copied());
            let (author, at) = last
                .and_then(|i| changes.get(i))
                .map(|c| (hex_of(c.actor_id()), u64::try_from(c.timestamp()).unwrap_or_default()))
                .unwrap_or_default();
            out.push(BlameLine { line: n + 1, text: content.to_owned(), author, at });
            pos += len;
        }
        Ok(out)
    }
}

impl crate::SharedDoc for TextDoc {
    fn create(device: &DeviceKey, name: &str, now: u64) -> Result<Self, DocError> {
        TextDoc::create(device, name, now)
    }

    fn load(bytes: &[u8], device: &DeviceKey) -> Result<Self, DocError> {
        TextDoc::load(bytes, device)
    }

    fn replica(&mut self) -> &mut Replica {
        TextDoc::replica(self)
    }

    fn from_replica(replica: Replica) -> Result<Self, DocError> {
        TextDoc::from_replica(replica)
    }

    fn into_replica(self) -> Replica {
        self.replica
    }
}
