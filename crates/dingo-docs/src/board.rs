//! A project's task board: one automerge document.
//!
//! ```text
//! ROOT  { kind: "dingo/board/v1", name: str,
//!         tasks: { <task id>: { title: str, assignees: { <user id>: true }, due: int?,
//!                               priority: str, parent: str?, done: bool, done_at: int?,
//!                               created_by: str, created_at: int,
//!                               comments: [ { by: str, at: int, text: str } ] } } }
//! ```
//! Assignees are map keys, so concurrent assignments of different people both stay; a field two
//! people set at once resolves the same way everywhere (automerge's rule: a deterministic
//! winner by actor); comments are a list, so concurrent comments all stay.

use crate::{DocError, Replica};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, ScalarValueRef, Value, ValueRef, ROOT};
use dingo_types::DeviceKey;
use serde::{Deserialize, Serialize};

const KIND: &str = "dingo/board/v1";

/// How urgent a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Whenever.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Soon.
    High,
    /// Now.
    Urgent,
}

impl Priority {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "urgent" => Some(Priority::Urgent),
            _ => None,
        }
    }
}

/// A comment on a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Who wrote it (user id).
    pub by: String,
    /// When (ms).
    pub at: u64,
    /// What.
    pub text: String,
}

/// A task as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Assigned users, sorted.
    pub assignees: Vec<String>,
    /// Deadline (ms).
    pub due: Option<u64>,
    /// Priority.
    pub priority: Priority,
    /// The parent task, for a subtask.
    pub parent: Option<String>,
    /// Whether it is done.
    pub done: bool,
    /// When it was marked done (ms).
    pub done_at: Option<u64>,
    /// Who created it (user id).
    pub created_by: String,
    /// When (ms).
    pub created_at: u64,
    /// Comments, oldest first.
    pub comments: Vec<Comment>,
    /// Attached files (`file:ID`) and messages (`msg:ID`), sorted.
    pub attachments: Vec<String>,
}

/// What a new task starts with.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    /// Title.
    pub title: String,
    /// Assigned users.
    pub assignees: Vec<String>,
    /// Deadline (ms).
    pub due: Option<u64>,
    /// Priority.
    pub priority: Priority,
    /// Parent task id.
    pub parent: Option<String>,
    /// Attached files (`file:ID`) and messages (`msg:ID`).
    pub attachments: Vec<String>,
}

/// Changes to a task's fields (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct TaskEdit {
    /// New title.
    pub title: Option<String>,
    /// New deadline, or `Some(None)` to clear it.
    pub due: Option<Option<u64>>,
    /// New priority.
    pub priority: Option<Priority>,
}

/// A project's tasks.
#[derive(Debug, Clone)]
pub struct Board {
    replica: Replica,
}

fn scalar(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<ScalarValue> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => Some(s.into_owned()),
        _ => None,
    }
}

fn str_at(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<String> {
    match scalar(doc, obj, key)? {
        ScalarValue::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

fn obj_at(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(obj, key).ok()?? {
        (Value::Object(_), id) => Some(id),
        _ => None,
    }
}

impl Board {
    /// A new, empty board written by `device`.
    pub fn create(device: &DeviceKey, name: &str, now: u64) -> Result<Self, DocError> {
        let mut replica = Replica::new(device);
        replica.doc.put(ROOT, "kind", KIND)?;
        replica.doc.put(ROOT, "name", name)?;
        replica.doc.put_object(ROOT, "tasks", ObjType::Map)?;
        replica.commit("create the board", now);
        Ok(Self { replica })
    }

    /// A board from saved bytes, written from now on by `device`.
    pub fn load(bytes: &[u8], device: &DeviceKey) -> Result<Self, DocError> {
        Self::from_replica(Replica::load(bytes, device)?)
    }

    /// A board from a replica (e.g. one built from received changes).
    pub fn from_replica(replica: Replica) -> Result<Self, DocError> {
        if str_at(&replica.doc, &ROOT, "kind").as_deref() != Some(KIND) {
            return Err(DocError::WrongKind("task board"));
        }
        Ok(Self { replica })
    }

    /// The automerge replica (save, sync, apply).
    pub fn replica(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// The board's name.
    pub fn name(&self) -> String {
        str_at(&self.replica.doc, &ROOT, "name").unwrap_or_default()
    }

    /// Applies received changes like [`Replica::apply`] and says which tasks they touched
    /// (added, edited, commented), read off the changes' own operations, so the cost follows the
    /// changes, not the board's size; `None` for a batch so large (a whole history) that reading
    /// every task afresh is cheaper.
    pub fn apply_tracked(
        &mut self,
        changes: &[Vec<u8>],
        may_edit: impl Fn(&automerge::ActorId) -> bool,
    ) -> Result<Option<Vec<String>>, DocError> {
        self.tasks_obj()?;
        self.replica.apply(changes, may_edit)?;
        self.touched_by(changes)
    }

    /// What [`Replica::receive_sync`] changed, as [`Board::apply_tracked`] tells it.
    pub fn touched_by_sync(&self, applied: &crate::SyncApplied) -> Result<Option<Vec<String>>, DocError> {
        match applied {
            crate::SyncApplied::Nothing => Ok(Some(Vec::new())),
            crate::SyncApplied::Changes(changes) => self.touched_by(changes),
            crate::SyncApplied::Whole(_) | crate::SyncApplied::Merged => Ok(None),
        }
    }

    /// The tasks applied `changes` touched (`None`: too many changes to say cheaply).
    fn touched_by(&self, changes: &[Vec<u8>]) -> Result<Option<Vec<String>>, DocError> {
        /// Past this many changes the caller rereads every task.
        const TRACKED_CHANGES: usize = 64;
        if changes.len() > TRACKED_CHANGES {
            return Ok(None);
        }
        let tasks = self.tasks_obj()?;
        let doc = &self.replica.doc;
        let mut ids = std::collections::BTreeSet::new();
        for bytes in changes {
            let change = automerge::Change::from_bytes(bytes.clone())
                .map_err(|e| DocError::Malformed(e.to_string()))?;
            for op in change.decode().operations {
                let automerge::legacy::ObjectId::Id(id) = &op.obj else { continue };
                let obj = doc.import_obj(&id.to_string())?;
                if obj == tasks {
                    if let automerge::legacy::Key::Map(key) = &op.key {
                        ids.insert(key.to_string());
                    }
                    continue;
                }
                // A field, assignee or comment: the task is the ancestor right under `tasks`.
                if let Some(p) = doc.parents(&obj)?.find(|p| p.obj == tasks) {
                    if let automerge::Prop::Map(key) = p.prop {
                        ids.insert(key);
                    }
                }
            }
        }
        Ok(Some(ids.into_iter().collect()))
    }

    fn tasks_obj(&self) -> Result<ObjId, DocError> {
        obj_at(&self.replica.doc, &ROOT, "tasks").ok_or(DocError::WrongKind("task board"))
    }

    fn task_obj(&self, id: &str) -> Result<ObjId, DocError> {
        obj_at(&self.replica.doc, &self.tasks_obj()?, id).ok_or_else(|| DocError::UnknownTask(id.to_owned()))
    }

    /// Adds a task with the id the caller chose (unique: random or derived from a message id).
    pub fn add_task(&mut self, id: &str, task: NewTask, by: &str, now: u64) -> Result<(), DocError> {
        let tasks = self.tasks_obj()?;
        let doc = &mut self.replica.doc;
        let t = doc.put_object(&tasks, id, ObjType::Map)?;
        doc.put(&t, "title", task.title.as_str())?;
        let assignees = doc.put_object(&t, "assignees", ObjType::Map)?;
        for a in &task.assignees {
            doc.put(&assignees, a.as_str(), true)?;
        }
        if let Some(due) = task.due {
            doc.put(&t, "due", due)?;
        }
        doc.put(&t, "priority", task.priority.as_str())?;
        if let Some(p) = &task.parent {
            doc.put(&t, "parent", p.as_str())?;
        }
        doc.put(&t, "done", false)?;
        doc.put(&t, "created_by", by)?;
        doc.put(&t, "created_at", now)?;
        doc.put_object(&t, "comments", ObjType::List)?;
        if !task.attachments.is_empty() {
            let attached = doc.put_object(&t, "attachments", ObjType::Map)?;
            for a in &task.attachments {
                doc.put(&attached, a.as_str(), true)?;
            }
        }
        self.replica.commit("add a task", now);
        Ok(())
    }

    /// Changes a task's fields.
    pub fn edit(&mut self, id: &str, edit: TaskEdit, now: u64) -> Result<(), DocError> {
        let t = self.task_obj(id)?;
        let doc = &mut self.replica.doc;
        if let Some(title) = &edit.title {
            doc.put(&t, "title", title.as_str())?;
        }
        match edit.due {
            Some(Some(due)) => doc.put(&t, "due", due)?,
            Some(None) => doc.delete(&t, "due")?,
            None => {}
        }
        if let Some(p) = edit.priority {
            doc.put(&t, "priority", p.as_str())?;
        }
        self.replica.commit("edit a task", now);
        Ok(())
    }

    /// Marks a task done or open again.
    pub fn set_done(&mut self, id: &str, done: bool, now: u64) -> Result<(), DocError> {
        let t = self.task_obj(id)?;
        let doc = &mut self.replica.doc;
        doc.put(&t, "done", done)?;
        if done {
            doc.put(&t, "done_at", now)?;
        } else {
            doc.delete(&t, "done_at")?;
        }
        self.replica.commit(if done { "mark a task done" } else { "reopen a task" }, now);
        Ok(())
    }

    /// Assigns or unassigns a user.
    pub fn assign(&mut self, id: &str, user: &str, assigned: bool, now: u64) -> Result<(), DocError> {
        let t = self.task_obj(id)?;
        let doc = &mut self.replica.doc;
        let assignees = match obj_at(doc, &t, "assignees") {
            Some(a) => a,
            None => doc.put_object(&t, "assignees", ObjType::Map)?,
        };
        if assigned {
            doc.put(&assignees, user, true)?;
        } else {
            doc.delete(&assignees, user)?;
        }
        self.replica.commit("assign a task", now);
        Ok(())
    }

    /// Adds a comment.
    pub fn comment(&mut self, id: &str, by: &str, text: &str, now: u64) -> Result<(), DocError> {
        let t = self.task_obj(id)?;
        let doc = &mut self.replica.doc;
        let comments = match obj_at(doc, &t, "comments") {
            Some(c) => c,
            None => doc.put_object(&t, "comments", ObjType::List)?,
        };
        let at = doc.length(&comments);
        let c = doc.insert_object(&comments, at, ObjType::Map)?;
        doc.put(&c, "by", by)?;
        doc.put(&c, "at", now)?;
        doc.put(&c, "text", text)?;
        self.replica.commit("comment on a task", now);
        Ok(())
    }

    /// One task.
    pub fn task(&self, id: &str) -> Result<Task, DocError> {
        let t = self.task_obj(id)?;
        Ok(read_task(&self.replica.doc, id, &t))
    }

    /// Every task, oldest first (read in one pass over the document).
    pub fn tasks(&self) -> Result<Vec<Task>, DocError> {
        Self::tasks_in(&self.replica)
    }

    /// Every task of a board's replica (without taking it): what a newcomer's node pays once
    /// for a whole board. Read field by field with automerge's range iterators (faster than
    /// hydrating the map, which builds a value tree first), on several threads for a large
    /// board (reading never changes the document).
    pub fn tasks_in(replica: &Replica) -> Result<Vec<Task>, DocError> {
        /// Below this many tasks, threads cost more than they save.
        const PARALLEL_FROM: usize = 2048;
        let doc = &replica.doc;
        let tasks = obj_at(doc, &ROOT, "tasks").ok_or(DocError::WrongKind("task board"))?;
        let items: Vec<(String, ObjId)> = doc
            .map_range(&tasks, ..)
            .filter(|item| matches!(item.value, ValueRef::Object(ObjType::Map)))
            .map(|item| (item.key.to_string(), item.id()))
            .collect();
        let read = |part: &[(String, ObjId)]| -> Vec<Task> {
            part.iter().map(|(id, obj)| read_task(doc, id, obj)).collect()
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        let mut out: Vec<Task> = if items.len() >= PARALLEL_FROM && threads > 1 {
            std::thread::scope(|scope| {
                let parts: Vec<_> = items
                    .chunks(items.len().div_ceil(threads))
                    .map(|part| (part, scope.spawn(move || read(part))))
                    .collect();
                // A thread that failed is read again here (it only read).
                parts.into_iter().flat_map(|(part, h)| h.join().unwrap_or_else(|_| read(part))).collect()
            })
        } else {
            read(&items)
        };
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }
}

fn scalar_str(v: &ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Scalar(ScalarValueRef::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn scalar_u64(v: &ValueRef<'_>) -> Option<u64> {
    match v {
        ValueRef::Scalar(ScalarValueRef::Uint(n)) => Some(*n),
        ValueRef::Scalar(ScalarValueRef::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// The task stored in map `obj` under id `id` (missing or mistyped fields read as empty).
fn read_task(doc: &AutoCommit, id: &str, obj: &ObjId) -> Task {
    let mut t = Task {
        id: id.to_owned(),
        title: String::new(),
        assignees: Vec::new(),
        due: None,
        priority: Priority::default(),
        parent: None,
        done: false,
        done_at: None,
        created_by: String::new(),
        created_at: 0,
        comments: Vec::new(),
        attachments: Vec::new(),
    };
    for f in doc.map_range(obj, ..) {
        match (f.key.as_ref(), &f.value) {
            ("title", v) => t.title = scalar_str(v).unwrap_or_default(),
            ("due", v) => t.due = scalar_u64(v),
            ("priority", v) => {
                t.priority = scalar_str(v).and_then(|p| Priority::parse(&p)).unwrap_or_default()
            }
            ("parent", v) => t.parent = scalar_str(v),
            ("done", v) => t.done = matches!(v, ValueRef::Scalar(ScalarValueRef::Boolean(true))),
            ("done_at", v) => t.done_at = scalar_u64(v),
            ("created_by", v) => t.created_by = scalar_str(v).unwrap_or_default(),
            ("created_at", v) => t.created_at = scalar_u64(v).unwrap_or_default(),
            ("assignees", ValueRef::Object(ObjType::Map)) => t.assignees = doc.keys(f.id()).collect(),
            ("attachments", ValueRef::Object(ObjType::Map)) => t.attachments = doc.keys(f.id()).collect(),
            ("comments", ValueRef::Object(ObjType::List)) => {
                t.comments = doc
                    .list_range(f.id(), ..)
                    .filter(|c| matches!(c.value, ValueRef::Object(ObjType::Map)))
                    .map(|c| {
                        let mut comment = Comment { by: String::new(), at: 0, text: String::new() };
                        for g in doc.map_range(c.id(), ..) {
                            match g.key.as_ref() {
                                "by" => comment.by = scalar_str(&g.value).unwrap_or_default(),
                                "at" => comment.at = scalar_u64(&g.value).unwrap_or_default(),
                                "text" => comment.text = scalar_str(&g.value).unwrap_or_default(),
                                _ => {}
                            }
                        }
                        comment
                    })
                    .collect();
            }
            _ => {}
        }
    }
    t.assignees.sort();
    t.attachments.sort();
    t
}

impl crate::SharedDoc for Board {
    fn create(device: &DeviceKey, name: &str, now: u64) -> Result<Self, DocError> {
        Board::create(device, name, now)
    }

    fn load(bytes: &[u8], device: &DeviceKey) -> Result<Self, DocError> {
        Board::load(bytes, device)
    }

    fn replica(&mut self) -> &mut Replica {
        Board::replica(self)
    }

    fn from_replica(replica: Replica) -> Result<Self, DocError> {
        Board::from_replica(replica)
    }

    fn into_replica(self) -> Replica {
        self.replica
    }
}
