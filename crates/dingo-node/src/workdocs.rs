//! Live automerge documents (task boards and texts), kept loaded between edits and persisted
//! incrementally, so an edit costs what it changes, not what the document holds.
//!
//! On disk (table `Docs`), per group: a full save under the group id, then each edit's new
//! changes under `group/inc/N`; once there are [`COMPACT_AFTER`] increments, a job queued after
//! the edit saves the document whole again and deletes the increments, in one atomic batch
//! (a whole save of a large board takes tens of ms, which no edit should wait for). A board
//! also keeps its tasks as they read, in [`TASK_BUCKETS`] records by a hash of the task id
//! (`group/b/N`); an edit rewrites only the buckets of the tasks it touched, and listings never
//! load the automerge document (one record per task cost more to read back than the tasks
//! themselves).
//!
//! In memory, a job takes a document out of the cache ([`Core::open_work`]) and puts it back
//! changed ([`Core::keep_work`], [`Core::keep_board`]) or only read ([`Core::release_work`]).
//! What changed is written once per store batch, when the batch is applied
//! ([`WorkDocs::flush_into`], called by `Core::apply`): a batch of 20 history messages costs
//! one increment and one write per touched bucket, not twenty. A document not put back (a
//! refused change, an error) is simply reloaded next time, and a job that fails empties the
//! cache, so it never holds what the store does not.

use crate::chat::Core;
use crate::NodeError;
use dingo_docs::{Board, SharedDoc};
use dingo_store::{Batch, Store, Table};
use dingo_types::ConvId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// Increments kept before the document is saved whole again (by a job of its own, after the
/// edit that crossed the line is answered: saving a 10,000-task board takes tens of ms, which
/// no edit should wait for).
pub const COMPACT_AFTER: u32 = 256;
/// Increments past which a write saves the document whole at once (the compaction job never
/// ran, e.g. the node stopped first).
const COMPACT_AT_LATEST: u32 = 4 * COMPACT_AFTER;
/// Documents kept loaded once their changes are written (the rest are reloaded when used).
pub const MAX_LOADED_DOCS: usize = 16;

/// States of the compaction job ([`WorkDocs::compaction`]).
const IDLE: u8 = 0;
const WANTED: u8 = 1;
const QUEUED: u8 = 2;

/// How many records a board's task list is spread over.
pub(crate) const TASK_BUCKETS: u8 = 64;

const INC: &[u8] = b"/inc/";
const BUCKET: &[u8] = b"/b/";

fn inc_key(group: &ConvId, n: u32) -> Vec<u8> {
    [group.0.as_slice(), INC, &n.to_be_bytes()].concat()
}

fn bucket_of(id: &str) -> u8 {
    blake3::hash(id.as_bytes()).as_bytes()[0] % TASK_BUCKETS
}

fn bucket_key(group: &ConvId, bucket: u8) -> Vec<u8> {
    [group.0.as_slice(), BUCKET, &[bucket]].concat()
}

/// One bucket of a board's tasks, by id.
type Bucket = BTreeMap<String, dingo_docs::Task>;

/// A document taken out for a job.
pub(crate) struct Work<T> {
    pub doc: T,
    pub group: ConvId,
    state: DocState,
}

/// What the cache knows of a document besides its replica.
#[derive(Default)]
struct DocState {
    /// Increments stored since the last full save.
    incs: u32,
    /// Task buckets read or changed so far (newer than the store until flushed).
    buckets: HashMap<u8, Bucket>,
    /// Changes not yet written.
    dirty: bool,
    /// Buckets not yet written.
    dirty_buckets: BTreeSet<u8>,
    /// Every task must be read afresh before the buckets are written (after a whole document
    /// arrived, or many changes at once).
    stale_tasks: bool,
    /// A whole document that replaced the replica: stored in place of the save and increments.
    base: Option<Vec<u8>>,
    /// Save the document whole at the next write (a merge of a whole document).
    resave: bool,
}

struct Cached {
    replica: dingo_docs::Replica,
    state: DocState,
}

impl<T> Work<T> {
    /// The replica became `bytes`, a whole document received (see
    /// [`dingo_docs::SyncApplied::Whole`]): they are stored as its save, replacing what was.
    pub(crate) fn replaced_by(&mut self, bytes: Vec<u8>) {
        self.state.base = Some(bytes);
    }

    /// The next write saves the whole document (its changes grew by a merge, which an
    /// increment would store change by change).
    pub(crate) fn resave(&mut self) {
        self.state.resave = true;
    }
}

/// The loaded documents, by group.
#[derive(Default)]
pub(crate) struct WorkDocs {
    docs: Mutex<HashMap<ConvId, Cached>>,
    /// Where the compaction job is: [`IDLE`], [`WANTED`] (some loaded document has
    /// [`COMPACT_AFTER`] increments) or [`QUEUED`] (one job at a time, however many writes
    /// cross the line before it runs).
    compaction: AtomicU8,
    /// The next write is that job: it saves such documents whole.
    compacting: AtomicBool,
    /// Per board, when its next task reminder can be due (forgotten when an open task with a
    /// deadline changes).
    next_reminders: Mutex<HashMap<ConvId, u64>>,
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
        self.next_reminders.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// When a board's next task reminder can be due, if known since it last changed.
    pub(crate) fn next_reminder(&self, group: &ConvId) -> Option<u64> {
        self.next_reminders.lock().unwrap_or_else(|p| p.into_inner()).get(group).copied()
    }

    pub(crate) fn set_next_reminder(&self, group: ConvId, at: u64) {
        self.next_reminders.lock().unwrap_or_else(|p| p.into_inner()).insert(group, at);
    }

    /// A board's deadlines may have changed: its reminders are looked at afresh.
    fn forget_next_reminder(&self, group: &ConvId) {
        self.next_reminders.lock().unwrap_or_else(|p| p.into_inner()).remove(group);
    }

    /// Whether a compaction job should be queued now (then it counts as queued).
    pub(crate) fn queue_compaction(&self) -> bool {
        self.compaction.compare_exchange(WANTED, QUEUED, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Makes the next [`WorkDocs::flush_into`] save whole every document with
    /// [`COMPACT_AFTER`] increments (the compaction job).
    fn compact_next(&self) {
        self.compacting.store(true, Ordering::Relaxed);
    }

    /// Writes every document's unwritten changes and buckets into `batch` (about to be
    /// applied): new changes as the next increment, or the whole document when asked to
    /// compact (or far past due).
    pub(crate) fn flush_into(&self, s: &Store, batch: &mut Batch) {
        let compacting = self.compacting.swap(false, Ordering::Relaxed);
        let mut docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        for (group, c) in docs.iter_mut() {
            let st = &mut c.state;
            // A whole save replaces the last one and every increment after it.
            let mut save_whole = |st: &mut DocState, bytes: Vec<u8>| {
                s.put(batch, Table::Docs, &group.0, &bytes);
                for n in 0..st.incs {
                    s.delete(batch, Table::Docs, &inc_key(group, n));
                }
                st.incs = 0;
            };
            if let Some(base) = st.base.take() {
                save_whole(st, base);
            }
            let compact = (st.dirty && (st.resave || st.incs + 1 >= COMPACT_AT_LATEST))
                || (compacting && st.incs >= COMPACT_AFTER);
            if compact {
                save_whole(st, c.replica.save());
                st.resave = false;
            } else if st.dirty {
                let bytes = c.replica.save_new();
                if !bytes.is_empty() {
                    s.put(batch, Table::Docs, &inc_key(group, st.incs), &bytes);
                    st.incs += 1;
                }
                if st.incs >= COMPACT_AFTER {
                    let _ =
                        self.compaction.compare_exchange(IDLE, WANTED, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
            st.dirty = false;
            if std::mem::take(&mut st.stale_tasks) {
                // Once per batch, however many history messages it held.
                match Board::tasks_in(&c.replica) {
                    Ok(tasks) => {
                        st.buckets.clear();
                        for t in tasks {
                            let b = bucket_of(&t.id);
                            st.buckets.entry(b).or_default().insert(t.id.clone(), t);
                            st.dirty_buckets.insert(b);
                        }
                    }
                    Err(e) => tracing::warn!("task list not refreshed: {e}"),
                }
            }
            for b in std::mem::take(&mut st.dirty_buckets) {
                if let Some(bucket) = st.buckets.get(&b) {
                    s.put(batch, Table::Docs, &bucket_key(group, b), bucket);
                }
            }
        }
        // Everything is written now: beyond the bound, drop documents (they reload as stored).
        while docs.len() > MAX_LOADED_DOCS {
            let Some(group) = docs.keys().next().copied() else { break };
            docs.remove(&group);
        }
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
            return Ok(Work { doc: T::from_replica(c.replica)?, group: *group, state: c.state });
        }
        let me = self.me.device_key();
        let mut bytes = s.get::<Vec<u8>>(Table::Docs, &group.0)?;
        let mut incs = 0;
        // A save followed by increments loads in one pass (much faster than one per increment).
        let mut more = Vec::new();
        for item in s.scan::<Vec<u8>>(Table::Docs, &[group.0.as_slice(), INC].concat()) {
            more.extend(item?.1);
            incs += 1;
        }
        let doc = match bytes.as_mut() {
            Some(b) => {
                b.extend(more);
                T::load(b, &me)?
            }
            None => {
                let mut d = T::genesis(&group.0, name, &me)?;
                if !more.is_empty() {
                    d.replica().load_more(&more)?;
                }
                d
            }
        };
        Ok(Work { doc, group: *group, state: DocState { incs, ..DocState::default() } })
    }

    /// Saves whole every loaded document with [`COMPACT_AFTER`] increments, deleting them.
    pub(crate) fn compact_work(&self, s: &Store) -> Result<(), NodeError> {
        self.work.compact_next();
        let done = self.apply(s, Batch::default());
        self.work.compaction.store(IDLE, Ordering::Release);
        done
    }

    /// Whether this node holds anything of a group's document beyond its genesis.
    pub(crate) fn holds_work(&self, s: &Store, group: &ConvId) -> Result<bool, NodeError> {
        Ok(s.count(Table::Docs, &group.0) > 0)
    }

    /// Puts a changed document back; its changes are written with the job's batch.
    pub(crate) fn keep_work<T: SharedDoc>(&self, mut w: Work<T>) {
        w.state.dirty = true;
        self.release_work(w);
    }

    /// Puts a document back unchanged (it was only read).
    pub(crate) fn release_work<T: SharedDoc>(&self, w: Work<T>) {
        self.work.put(w.group, Cached { replica: w.doc.into_replica(), state: w.state });
    }

    /// The answer to changes that were not applied, and what becomes of the document: those
    /// that wait for others are asked for again and refused ones rejected, the document
    /// unchanged (both are checked before anything is applied); if automerge failed part way,
    /// what it did apply (valid changes by allowed devices) is kept.
    pub(crate) fn not_applied<T: SharedDoc>(
        &self,
        w: Work<T>,
        e: dingo_docs::DocError,
        what: &str,
    ) -> crate::chat::Accepted {
        use crate::chat::Accepted;
        match e {
            dingo_docs::DocError::MissingDeps => {
                self.release_work(w);
                Accepted::Retry(Vec::new())
            }
            dingo_docs::DocError::Automerge(_) => {
                self.keep_work(w);
                Accepted::Rejected(format!("{what} refused: {e}"))
            }
            e => {
                self.release_work(w);
                Accepted::Rejected(format!("{what} refused: {e}"))
            }
        }
    }

    /// Keeps a changed board and refreshes the tasks `changed` names (every task when `None`)
    /// in their buckets.
    pub(crate) fn keep_board(
        &self,
        s: &Store,
        mut w: Work<Board>,
        changed: Option<Vec<String>>,
    ) -> Result<(), NodeError> {
        match changed {
            Some(ids) => {
                for id in ids {
                    let b = bucket_of(&id);
                    if !w.state.buckets.contains_key(&b) {
                        let stored =
                            s.get::<Bucket>(Table::Docs, &bucket_key(&w.group, b))?.unwrap_or_default();
                        w.state.buckets.insert(b, stored);
                    }
                    if let (Ok(t), Some(bucket)) = (w.doc.task(&id), w.state.buckets.get_mut(&b)) {
                        // Only an open task with a deadline can bring a reminder forward
                        // (closing a task or dropping its deadline only removes reminders).
                        if !t.done && t.due.is_some() {
                            self.work.forget_next_reminder(&w.group);
                        }
                        bucket.insert(id, t);
                        w.state.dirty_buckets.insert(b);
                    }
                }
            }
            None => {
                w.state.stale_tasks = true;
                self.work.forget_next_reminder(&w.group);
            }
        }
        self.keep_work(w);
        Ok(())
    }

    /// A board's tasks as last kept, oldest first (without loading the board).
    pub(crate) fn saved_tasks(&self, s: &Store, group: &ConvId) -> Result<Vec<dingo_docs::Task>, NodeError> {
        let mut tasks = Vec::new();
        for item in s.scan::<Bucket>(Table::Docs, &[group.0.as_slice(), BUCKET].concat()) {
            tasks.extend(item?.1.into_values());
        }
        tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tasks)
    }

    /// One task of a board as last kept.
    pub(crate) fn saved_task(
        &self,
        s: &Store,
        group: &ConvId,
        id: &str,
    ) -> Result<Option<dingo_docs::Task>, NodeError> {
        Ok(s.get::<Bucket>(Table::Docs, &bucket_key(group, bucket_of(id)))?.and_then(|mut b| b.remove(id)))
    }
}
