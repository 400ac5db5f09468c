//! Live automerge documents (task boards and texts), kept loaded between edits and persisted
//! incrementally, so an edit costs what it changes, not what the document holds.
//!
//! On disk (table `Docs`), per group: a full save under the group id, then each edit's new
//! changes under `group/inc/N`; every [`COMPACT_AFTER`] increments the document is saved whole
//! again and the increments deleted, in the same atomic batch. A board also keeps each task,
//! as it reads, under `group/t/ID`, rewritten only for the tasks an edit touched: listings
//! never load the automerge document.
//!
//! In memory, a job takes a document out of the cache ([`Core::open_work`]) and puts it back
//! when it has written what changed into the job's batch ([`Core::keep_work`]) or only read
//! it ([`Core::release_work`]). A document not put back (a refused change, an error) is simply
//! reloaded next time, and a job that fails empties the cache, so it never holds what the
//! store does not.

use crate::chat::Core;
use crate::NodeError;
use dingo_docs::{Board, SharedDoc};
use dingo_store::{Batch, Store, Table};
use dingo_types::ConvId;
use std::collections::HashMap;
use std::sync::Mutex;

/// Increments kept before the document is saved whole again.
pub(crate) const COMPACT_AFTER: u32 = 256;

const INC: &[u8] = b"/inc/";
const TASK: &[u8] = b"/t/";

fn inc_key(group: &ConvId, n: u32) -> Vec<u8> {
    [group.0.as_slice(), INC, &n.to_be_bytes()].concat()
}

/// Where a board's task `id` is kept as it reads.
pub(crate) fn task_key(group: &ConvId, id: &str) -> Vec<u8> {
    [group.0.as_slice(), TASK, id.as_bytes()].concat()
}

/// The prefix of a board's task records.
pub(crate) fn tasks_prefix(group: &ConvId) -> Vec<u8> {
    [group.0.as_slice(), TASK].concat()
}

/// A document taken out for a job.
pub(crate) struct Work<T> {
    pub doc: T,
    pub group: ConvId,
    incs: u32,
}

struct Cached {
    replica: dingo_docs::Replica,
    incs: u32,
}

/// The loaded documents, by group.
#[derive(Default)]
pub(crate) struct WorkDocs {
    docs: Mutex<HashMap<ConvId, Cached>>,
}

impl WorkDocs {
    fn take(&self, group: &ConvId) -> Option<Cached> {
        self.docs.lock().unwrap_or_else(|p| p.into_inner()).remove(group)
    }

    fn put(&self, group: ConvId, c: Cached) {
        self.docs.lock().unwrap_or_else(|p| p.into_inner()).insert(group, c);
    }

    /// Forgets everything (after a failed job: the store is the truth).
    pub(crate) fn clear(&self) {
        self.docs.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Core {
    /// Takes a group's document: from the cache, else loaded (full save and increments), else
    /// its genesis.
    pub(crate) fn open_work<T: SharedDoc>(
        &self,
        s: &Store,
        group: &ConvId,
        name: &str,
    ) -> Result<Work<T>, NodeError> {
        if let Some(c) = self.work.take(group) {
            return Ok(Work { doc: T::from_replica(c.replica)?, group: *group, incs: c.incs });
        }
        let me = self.me.device_key();
        let mut doc = match s.get::<Vec<u8>>(Table::Docs, &group.0)? {
            Some(bytes) => T::load(&bytes, &me)?,
            None => T::genesis(&group.0, name, &me)?,
        };
        let mut incs = 0;
        for item in s.scan::<Vec<u8>>(Table::Docs, &[group.0.as_slice(), INC].concat()) {
            let (_, bytes) = item?;
            doc.replica().load_more(&bytes)?;
            incs += 1;
        }
        Ok(Work { doc, group: *group, incs })
    }

    /// Writes what changed since the document was opened into `batch` and puts it back.
    pub(crate) fn keep_work<T: SharedDoc>(&self, s: &Store, batch: &mut Batch, mut w: Work<T>) {
        let group = w.group;
        if w.incs + 1 >= COMPACT_AFTER {
            let bytes = w.doc.replica().save();
            s.put(batch, Table::Docs, &group.0, &bytes);
            for n in 0..w.incs {
                s.delete(batch, Table::Docs, &inc_key(&group, n));
            }
            w.incs = 0;
        } else {
            let bytes = w.doc.replica().save_new();
            if !bytes.is_empty() {
                s.put(batch, Table::Docs, &inc_key(&group, w.incs), &bytes);
                w.incs += 1;
            }
        }
        self.work.put(group, Cached { replica: w.doc.into_replica(), incs: w.incs });
    }

    /// Puts a document back unchanged (it was only read).
    pub(crate) fn release_work<T: SharedDoc>(&self, w: Work<T>) {
        self.work.put(w.group, Cached { replica: w.doc.into_replica(), incs: w.incs });
    }

    /// Keeps a board, and rewrites the records of the tasks `changed` names (all of them when
    /// `None`).
    pub(crate) fn keep_board(
        &self,
        s: &Store,
        batch: &mut Batch,
        w: Work<Board>,
        changed: Option<Vec<String>>,
    ) -> Result<(), NodeError> {
        match changed {
            Some(ids) => {
                for id in ids {
                    if let Ok(t) = w.doc.task(&id) {
                        s.put(batch, Table::Docs, &task_key(&w.group, &id), &t);
                    }
                }
            }
            None => {
                for t in w.doc.tasks()? {
                    s.put(batch, Table::Docs, &task_key(&w.group, &t.id), &t);
                }
            }
        }
        self.keep_work(s, batch, w);
        Ok(())
    }

    /// A board's tasks as last kept, oldest first (without loading the board).
    pub(crate) fn saved_tasks(&self, s: &Store, group: &ConvId) -> Result<Vec<dingo_docs::Task>, NodeError> {
        let mut tasks = s
            .scan::<dingo_docs::Task>(Table::Docs, &tasks_prefix(group))
            .map(|r| r.map(|(_, t)| t))
            .collect::<Result<Vec<_>, _>>()?;
        tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tasks)
    }
}
