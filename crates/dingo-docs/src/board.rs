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
use automerge::{hydrate, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
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
        match self.replica.doc.hydrate(&t, None)? {
            hydrate::Value::Map(m) => Ok(task_from(id, &m)),
            _ => Err(DocError::UnknownTask(id.to_owned())),
        }
    }

    /// Every task, oldest first (read in one pass over the document).
    pub fn tasks(&self) -> Result<Vec<Task>, DocError> {
        Self::tasks_in(&self.replica)
    }

    /// Every task of a board's replica (without taking it).
    pub fn tasks_in(replica: &Replica) -> Result<Vec<Task>, DocError> {
        let tasks = obj_at(&replica.doc, &ROOT, "tasks").ok_or(DocError::WrongKind("task board"))?;
        let hydrate::Value::Map(all) = replica.doc.hydrate(tasks, None)? else {
            return Err(DocError::WrongKind("task board"));
        };
        let mut out: Vec<Task> = all
            .iter()
            .filter_map(|(id, v)| match &v.value {
                hydrate::Value::Map(m) => Some(task_from(id, m)),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }
}

fn h_str(m: &hydrate::Map, key: &str) -> Option<String> {
    match m.get(key)? {
        hydrate::Value::Scalar(ScalarValue::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn h_u64(m: &hydrate::Map, key: &str) -> Option<u64> {
    match m.get(key)? {
        hydrate::Value::Scalar(ScalarValue::Uint(v)) => Some(*v),
        hydrate::Value::Scalar(ScalarValue::Int(v)) => u64::try_from(*v).ok(),
        _ => None,
    }
}

fn task_from(id: &str, t: &hydrate::Map) -> Task {
    let mut assignees: Vec<String> = match t.get("assignees") {
        Some(hydrate::Value::Map(a)) => a.iter().map(|(k, _)| k.clone()).collect(),
        _ => Vec::new(),
    };
    assignees.sort();
    let mut attachments: Vec<String> = match t.get("attachments") {
        Some(hydrate::Value::Map(a)) => a.iter().map(|(k, _)| k.clone()).collect(),
        _ => Vec::new(),
    };
    attachments.sort();
    let comments = match t.get("comments") {
        Some(hydrate::Value::List(list)) => list
            .iter()
            .filter_map(|c| match &c.value {
                hydrate::Value::Map(c) => Some(Comment {
                    by: h_str(c, "by").unwrap_or_default(),
                    at: h_u64(c, "at").unwrap_or_default(),
                    text: h_str(c, "text").unwrap_or_default(),
                }),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Task {
        id: id.to_owned(),
        title: h_str(t, "title").unwrap_or_default(),
        assignees,
        due: h_u64(t, "due"),
        priority: h_str(t, "priority").and_then(|p| Priority::parse(&p)).unwrap_or_default(),
        parent: h_str(t, "parent"),
        done: matches!(t.get("done"), Some(hydrate::Value::Scalar(ScalarValue::Boolean(true)))),
        done_at: h_u64(t, "done_at"),
        created_by: h_str(t, "created_by").unwrap_or_default(),
        created_at: h_u64(t, "created_at").unwrap_or_default(),
        comments,
        attachments,
    }
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
