//! Projects: a task board (a `dingo_docs::Board`, one automerge document) per project, kept in
//! sync through the project's own group, like a channel: each local edit's automerge changes
//! are sealed once with the editor's sender key and reach every project member (and any
//! member's sync); nobody outside the project can read them. Every function runs in a store job.
//!
//! - **One genesis.** Every member builds the same first change (same actor, time and content,
//!   so the same hash) from the project id, so all edits hang off one root object.
//! - **Authors are bound.** A received change is applied only if its automerge actor is the
//!   device that signed the envelope, and only members of the project are accepted at all.
//! - **Causal gaps wait.** Changes whose dependencies have not arrived are answered "retry"
//!   (nothing written), so automerge never holds an unsaved queue.

use crate::chat::{Accepted, Core, SealCtx};
use crate::records::{MemberProgress, ProjectStatus, ProjectView, TaskView};
use crate::{NodeError, NodeEvent};
use dingo_crypto::membership::{Channel, TeamState};
use dingo_docs::{actor_of, Board, NewTask, TaskEdit};
use dingo_store::{Batch, Store, Table};
use dingo_types::content::Content;
use dingo_types::envelope::Envelope;
use dingo_types::team::Action;
use dingo_types::{MsgId, UserId};
use std::collections::HashMap;

/// A project or document by name, case-insensitively.
pub(crate) fn scope_named(
    scopes: &std::collections::BTreeMap<String, Channel>,
    name: &str,
) -> Option<(String, Channel)> {
    scopes.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.trim())).map(|(n, c)| (n.clone(), c.clone()))
}

/// Longest task title or comment, in bytes.
pub(crate) const MAX_TASK_TEXT: usize = 16 * 1024;

fn check_task_text(text: &str) -> Result<(), NodeError> {
    if text.trim().is_empty() || text.len() > MAX_TASK_TEXT {
        return Err(NodeError::BadName(format!(
            "a task title or comment must be 1 to {MAX_TASK_TEXT} bytes"
        )));
    }
    Ok(())
}

impl Core {
    pub(crate) fn project_named(
        &self,
        state: &TeamState,
        name: &str,
    ) -> Result<(String, Channel), NodeError> {
        scope_named(&state.projects, name).ok_or_else(|| NodeError::UnknownProject(name.to_owned()))
    }

    /// Authors the op creating a project or document named `name` for `members` (names).
    pub(crate) fn create_scoped(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        (name, depts, members): (String, Vec<String>, Vec<String>),
        now: u64,
        op: impl FnOnce(String, Vec<String>, Vec<UserId>) -> Action,
    ) -> Result<(), NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let mut members = members.iter().map(|m| self.member(s, &state, m)).collect::<Result<Vec<_>, _>>()?;
        // Whoever starts a scoped project or document is in it.
        let me = self.me.user_id();
        if (!members.is_empty() || !depts.is_empty()) && !members.contains(&me) {
            members.push(me);
        }
        self.author(s, ctx, op(name, depts, members), now)
    }

    /// Projects or documents as listed: scope, members, whether this user is one.
    pub(crate) fn scoped_views(
        &self,
        s: &Store,
        state: &TeamState,
        scopes: &std::collections::BTreeMap<String, Channel>,
    ) -> Vec<ProjectView> {
        let me = self.me.user_id();
        scopes
            .iter()
            .map(|(name, c)| {
                let members = state.channel_members(c);
                ProjectView {
                    name: name.clone(),
                    id: c.id.to_hex(),
                    departments: c.depts.iter().cloned().collect(),
                    members: members.iter().map(|u| self.member_name(s, state, u)).collect(),
                    joined: members.contains(&me),
                }
            })
            .collect()
    }

    /// Creates a project (any member may) scoped to departments and/or members (or the whole team).
    pub(crate) fn create_project(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        name: &str,
        depts: Vec<String>,
        members: Vec<String>,
        now: u64,
    ) -> Result<(), NodeError> {
        let name = name.trim().to_owned();
        if name.is_empty() || name.len() > dingo_types::limits::MAX_NAME_BYTES {
            return Err(NodeError::BadName("a project name must be 1 to 64 bytes".into()));
        }
        self.create_scoped(s, ctx, (name, depts, members), now, |name, depts, members| {
            Action::ProjectCreate { name, depts, members }
        })
    }

    /// Applies a local edit to a project's board and sends its changes to the project.
    fn change_board(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        project: &str,
        now: u64,
        task: &str,
        edit: impl FnOnce(&mut Board) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let (name, chan) = self.project_named(&state, project)?;
        if !state.channel_members(&chan).contains(&self.me.user_id()) {
            return Err(NodeError::NotInChannel(format!("project {name}")));
        }
        let mut w = self.open_work::<Board>(s, &chan.id, &name)?;
        let before = w.doc.replica().heads();
        edit(&mut w.doc)?;
        let changes = w.doc.replica().changes_since(&before);
        self.send_changes(s, ctx, (&state, &name, &chan), changes, now)?;
        self.keep_board(s, w, Some(vec![task.to_owned()]))
    }

    /// Seals a local edit's automerge changes once in a project's or document's group.
    pub(crate) fn send_changes(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        (state, name, group): (&TeamState, &str, &Channel),
        changes: Vec<Vec<u8>>,
        now: u64,
    ) -> Result<(), NodeError> {
        if changes.is_empty() {
            return Ok(());
        }
        let doc = group.id;
        let content = |_| Content::DocChanges { doc, changes };
        self.seal_group(s, ctx, state, name, group, MsgId::random(), content, now)?;
        Ok(())
    }

    /// Applies changes received in a project's group from `env`'s signer.
    pub(crate) fn accept_doc_changes(
        &self,
        s: &Store,
        env: &Envelope,
        project: &str,
        changes: Vec<Vec<u8>>,
    ) -> Result<Result<Vec<NodeEvent>, Accepted>, NodeError> {
        let mut w = self.open_work::<Board>(s, &env.group, project)?;
        let signer = actor_of(&env.sender);
        let changed = match w.doc.apply_tracked(&changes, |a| *a == signer) {
            Ok(ids) => ids,
            Err(e) => return Ok(Err(self.not_applied(w, e, "task changes"))),
        };
        self.keep_board(s, w, changed)?;
        Ok(Ok(vec![NodeEvent::TasksChanged { project: project.to_owned() }]))
    }

    fn find_task(&self, s: &Store, state: &TeamState, id: &str) -> Result<(String, String), NodeError> {
        let id = id.trim().to_ascii_lowercase();
        let mut hits = Vec::new();
        // A whole id is found in its bucket (one record per project); only a prefix needs
        // every task read.
        for (name, chan) in &state.projects {
            if self.saved_task(s, &chan.id, &id)?.is_some() {
                hits.push((name.clone(), id.clone()));
            }
        }
        if hits.len() == 1 {
            return Ok(hits.remove(0));
        }
        hits.clear();
        for (name, chan) in &state.projects {
            for t in self.saved_tasks(s, &chan.id)? {
                if t.id == id || (id.len() >= 4 && t.id.starts_with(&id)) {
                    hits.push((name.clone(), t.id));
                }
            }
        }
        match hits.len() {
            1 => Ok(hits.remove(0)),
            _ => Err(NodeError::UnknownTask(id)),
        }
    }

    /// Adds a task; returns its id.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_task(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        project: &str,
        title: &str,
        assignees: &[String],
        due: Option<u64>,
        priority: dingo_docs::Priority,
        parent: Option<&str>,
        attachments: Vec<String>,
        now: u64,
    ) -> Result<String, NodeError> {
        check_task_text(title)?;
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let assignees = assignees
            .iter()
            .map(|a| self.member(s, &state, a).map(|u| u.to_hex()))
            .collect::<Result<Vec<_>, _>>()?;
        let parent = match parent {
            Some(p) => Some(self.find_task(s, &state, p)?.1),
            None => None,
        };
        let id = MsgId::random().to_hex()[..16].to_owned();
        let by = self.me.user_id().to_hex();
        let task = NewTask { title: title.to_owned(), assignees, due, priority, parent, attachments };
        let tid = id.clone();
        self.change_board(s, ctx, project, now, &id, move |b| Ok(b.add_task(&tid, task, &by, now)?))?;
        Ok(id)
    }

    /// Changes a task by id (or unique prefix).
    pub(crate) fn update_task(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        id: &str,
        now: u64,
        update: TaskUpdate,
    ) -> Result<String, NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let (project, id) = self.find_task(s, &state, id)?;
        let me = self.me.user_id().to_hex();
        let update = match update {
            TaskUpdate::Assign(who, on) => TaskUpdate::Assign(self.member(s, &state, &who)?.to_hex(), on),
            TaskUpdate::Comment(text) => {
                check_task_text(&text)?;
                TaskUpdate::Comment(text)
            }
            TaskUpdate::Edit(e) => {
                if let Some(t) = &e.title {
                    check_task_text(t)?;
                }
                TaskUpdate::Edit(e)
            }
            other => other,
        };
        let tid = id.clone();
        self.change_board(s, ctx, &project, now, &id, move |b| {
            match update {
                TaskUpdate::Done(done) => b.set_done(&tid, done, now)?,
                TaskUpdate::Assign(user, on) => b.assign(&tid, &user, on, now)?,
                TaskUpdate::Comment(text) => b.comment(&tid, &me, &text, now)?,
                TaskUpdate::Edit(e) => b.edit(&tid, e, now)?,
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// Nudges a task's assignees by hand: a DING to each (other than me) naming the task.
    pub(crate) fn remind_task(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        id: &str,
        now: u64,
    ) -> Result<Vec<String>, NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let (project, id) = self.find_task(s, &state, id)?;
        let (_, chan) = self.project_named(&state, &project)?;
        let task = self.saved_task(s, &chan.id, &id)?.ok_or_else(|| NodeError::UnknownTask(id.clone()))?;
        let me = self.me.user_id().to_hex();
        let mut nudged = Vec::new();
        for a in task.assignees.iter().filter(|a| **a != me) {
            let name = self.user_name(s, &state, a);
            let text = format!("reminder: [{project}] {}", task.title);
            self.ding(s, ctx, &name, &text, None, now)?;
            nudged.push(name);
        }
        Ok(nudged)
    }

    fn user_name(&self, s: &Store, state: &TeamState, hex: &str) -> String {
        hex.parse::<UserId>().map(|u| self.member_name(s, state, &u)).unwrap_or_else(|_| hex.to_owned())
    }

    /// Tasks of one project or all, optionally only mine or only overdue.
    /// The project's board as standard automerge bytes (a copy of the live document).
    pub(crate) fn project_bytes(&self, s: &Store, project: &str) -> Result<Vec<u8>, NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let (name, chan) = self.project_named(&state, project)?;
        if !state.channel_members(&chan).contains(&self.me.user_id()) {
            return Err(NodeError::NotInChannel(format!("project {name}")));
        }
        let mut w = self.open_work::<Board>(s, &chan.id, &name)?;
        let bytes = w.doc.replica().clone().save();
        self.release_work(w);
        Ok(bytes)
    }

    pub(crate) fn tasks_view(
        &self,
        s: &Store,
        project: Option<&str>,
        mine: bool,
        overdue: bool,
        now: u64,
    ) -> Result<Vec<TaskView>, NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let me = self.me.user_id().to_hex();
        let projects: Vec<(String, Channel)> = match project {
            Some(p) => vec![self.project_named(&state, p)?],
            None => state.projects.iter().map(|(n, c)| (n.clone(), c.clone())).collect(),
        };
        let mut out = Vec::new();
        // A board names few people many times: each name is looked up once.
        let mut names: HashMap<String, String> = HashMap::new();
        let mut name_of = |hex: &str| -> String {
            names.entry(hex.to_owned()).or_insert_with(|| self.user_name(s, &state, hex)).clone()
        };
        for (name, chan) in projects {
            if !state.channel_members(&chan).contains(&self.me.user_id()) {
                continue;
            }
            for t in self.saved_tasks(s, &chan.id)? {
                let is_overdue = !t.done && t.due.is_some_and(|d| d < now);
                if (mine && !t.assignees.contains(&me)) || (overdue && !is_overdue) {
                    continue;
                }
                out.push(TaskView {
                    project: name.clone(),
                    id: t.id,
                    title: t.title,
                    assignees: t.assignees.iter().map(|a| name_of(a)).collect(),
                    due: t.due,
                    overdue: is_overdue,
                    priority: t.priority,
                    parent: t.parent,
                    done: t.done,
                    done_at: t.done_at,
                    created_by: name_of(&t.created_by),
                    created_at: t.created_at,
                    attachments: t.attachments,
                    comments: t
                        .comments
                        .into_iter()
                        .map(|c| dingo_docs::Comment { by: name_of(&c.by), ..c })
                        .collect(),
                });
            }
        }
        Ok(out)
    }

    pub(crate) fn projects_view(&self, s: &Store) -> Result<Vec<ProjectView>, NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        Ok(self.scoped_views(s, &state, &state.projects))
    }

    /// Progress of a project, overall and per member (a member with overdue tasks and nothing
    /// done in the last week is "stuck").
    pub(crate) fn project_status(
        &self,
        s: &Store,
        project: &str,
        now: u64,
    ) -> Result<ProjectStatus, NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let (name, chan) = self.project_named(&state, project)?;
        let tasks = self.tasks_view(s, Some(&name), false, false, now)?;
        let mut per: std::collections::BTreeMap<String, MemberProgress> = state
            .channel_members(&chan)
            .iter()
            .map(|u| {
                let n = self.member_name(s, &state, u);
                (n.clone(), MemberProgress { member: n, ..MemberProgress::default() })
            })
            .collect();
        let week_ago = now.saturating_sub(7 * 24 * 3600 * 1000);
        for t in &tasks {
            for a in &t.assignees {
                let p = per
                    .entry(a.clone())
                    .or_insert_with(|| MemberProgress { member: a.clone(), ..Default::default() });
                if t.done {
                    p.done += 1;
                    if t.done_at.is_some_and(|d| d >= week_ago) {
                        p.done_this_week += 1;
                    }
                } else {
                    p.open += 1;
                    p.overdue += usize::from(t.overdue);
                }
            }
        }
        let members: Vec<MemberProgress> = per
            .into_values()
            .map(|mut p| {
                p.stuck = p.overdue > 0 && p.done_this_week == 0;
                p
            })
            .collect();
        let done = tasks.iter().filter(|t| t.done).count();
        Ok(ProjectStatus {
            project: name,
            total: tasks.len(),
            done,
            open: tasks.len() - done,
            overdue: tasks.iter().filter(|t| t.overdue).count(),
            percent_done: if tasks.is_empty() { 0 } else { done * 100 / tasks.len() },
            stuck: members.iter().filter(|m| m.stuck).map(|m| m.member.clone()).collect(),
            members,
        })
    }
}

/// How long before a deadline the assignee's node reminds them.
pub const REMIND_BEFORE_MS: u64 = 60 * 60 * 1000;
/// Where the reminders already given are kept (each fires once per task and deadline).
const REMINDED_KEY: &[u8] = b"reminded";

/// A reminder one node owes its user now.
#[derive(Debug, Clone)]
pub(crate) struct Reminder {
    /// Fires once per key.
    pub key: String,
    pub event: NodeEvent,
}

/// The reminders due at `now` for `me` among `tasks` of project `project` (owned by me when
/// `owner`), skipping those already given: before the deadline to each assignee, when overdue
/// to each assignee, and when overdue to the project's owner.
pub(crate) fn reminders_for(
    project: &str,
    tasks: &[dingo_docs::Task],
    me: &str,
    owner: bool,
    now: u64,
    given: &std::collections::BTreeSet<String>,
) -> Vec<Reminder> {
    let mut out = Vec::new();
    for t in tasks.iter().filter(|t| !t.done) {
        let Some(due) = t.due else { continue };
        if due.saturating_add(REMEMBER_REMINDERS_MS) < now {
            // Long past: its reminders are no longer remembered, so none is given again.
            continue;
        }
        let mine = t.assignees.iter().any(|a| a == me);
        let mut fire = |kind: &str| {
            let key = format!("{}/{due}/{kind}", t.id);
            if !given.contains(&key) {
                out.push(Reminder {
                    key,
                    event: NodeEvent::TaskReminder {
                        project: project.to_owned(),
                        id: t.id.clone(),
                        title: t.title.clone(),
                        due,
                        kind: kind.to_owned(),
                    },
                });
            }
        };
        if mine && now >= due {
            fire("overdue");
        } else if mine && now + REMIND_BEFORE_MS >= due {
            fire("due_soon");
        }
        if owner && now >= due {
            fire("owner_overdue");
        }
    }
    out
}

/// How long a reminder given is remembered after its deadline (the record would otherwise
/// grow forever); a deadline further past than this brings no reminder at all.
const REMEMBER_REMINDERS_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Drops the reminders given for deadlines long past (keys are `task/deadline/kind`).
fn forget_old_reminders(given: &mut std::collections::BTreeSet<String>, now: u64) {
    given.retain(|key| {
        let due = key.split('/').nth(1).and_then(|d| d.parse::<u64>().ok());
        due.is_none_or(|d| d.saturating_add(REMEMBER_REMINDERS_MS) >= now)
    });
}

/// The first time after `now` at which [`reminders_for`] could give something new for these
/// tasks (`u64::MAX`: never, until they change).
fn next_reminder_at(tasks: &[dingo_docs::Task], me: &str, owner: bool, now: u64) -> u64 {
    let mut next = u64::MAX;
    for t in tasks.iter().filter(|t| !t.done) {
        let Some(due) = t.due else { continue };
        let mine = t.assignees.iter().any(|a| a == me);
        let times = [mine.then(|| due.saturating_sub(REMIND_BEFORE_MS)), (mine || owner).then_some(due)];
        for at in times.into_iter().flatten().filter(|at| *at > now) {
            next = next.min(at);
        }
    }
    next
}

impl Core {
    /// Reminders due now for this user's tasks and projects; each is given once (remembered
    /// across restarts; a new deadline arms them again).
    ///
    /// Runs every second: a project is read again only once an open task with a deadline
    /// changed or the time of its next possible reminder has come (reading a 10,000-task board
    /// takes tens of ms).
    pub(crate) fn due_reminders(&self, s: &Store, now: u64) -> Result<Vec<NodeEvent>, NodeError> {
        let Some((_, state)) = self.team_state(s)? else { return Ok(Vec::new()) };
        let me = self.me.user_id();
        let mut given: Option<std::collections::BTreeSet<String>> = None;
        let mut events = Vec::new();
        for (name, chan) in &state.projects {
            if !state.channel_members(chan).contains(&me) {
                continue;
            }
            if self.work.next_reminder(&chan.id).is_some_and(|next| now < next) {
                continue;
            }
            let given = match &mut given {
                Some(g) => g,
                None => given.insert(s.get(Table::Team, REMINDED_KEY)?.unwrap_or_default()),
            };
            let tasks = self.saved_tasks(s, &chan.id)?;
            let owner = chan.created_by == me;
            for r in reminders_for(name, &tasks, &me.to_hex(), owner, now, given) {
                given.insert(r.key);
                events.push(r.event);
            }
            self.work.set_next_reminder(chan.id, next_reminder_at(&tasks, &me.to_hex(), owner, now));
        }
        if let (false, Some(mut given)) = (events.is_empty(), given) {
            forget_old_reminders(&mut given, now);
            let mut b = Batch::default();
            s.put(&mut b, Table::Team, REMINDED_KEY, &given);
            self.apply(s, b)?;
        }
        Ok(events)
    }
}

/// A change to an existing task.
#[derive(Debug, Clone)]
pub enum TaskUpdate {
    /// Done or reopened.
    Done(bool),
    /// Assign (true) or unassign a member.
    Assign(String, bool),
    /// A comment.
    Comment(String),
    /// Title, deadline, priority.
    Edit(TaskEdit),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, due: Option<u64>, assignees: &[&str], done: bool) -> dingo_docs::Task {
        dingo_docs::Task {
            id: id.into(),
            title: id.into(),
            assignees: assignees.iter().map(|a| a.to_string()).collect(),
            due,
            priority: dingo_docs::Priority::default(),
            parent: None,
            done,
            done_at: None,
            created_by: "owner".into(),
            created_at: 0,
            comments: Vec::new(),
            attachments: Vec::new(),
        }
    }

    #[test]
    fn reminders_for_deadlines_long_past_are_forgotten() {
        let now = 100 * REMEMBER_REMINDERS_MS;
        let mut given: std::collections::BTreeSet<String> = [
            format!("a/{}/overdue", now - 2 * REMEMBER_REMINDERS_MS),
            format!("b/{}/overdue", now - REMEMBER_REMINDERS_MS / 2),
            format!("c/{}/due_soon", now + 1),
            "odd-key".to_owned(),
        ]
        .into();
        forget_old_reminders(&mut given, now);
        assert_eq!(given.len(), 3);
        assert!(!given.iter().any(|k| k.starts_with("a/")));
        // And a task that far overdue is not nudged again once its key is gone.
        let old = task("a", Some(now - 2 * REMEMBER_REMINDERS_MS), &["me"], false);
        assert!(reminders_for("p", &[old], "me", true, now, &given).is_empty());
    }

    /// The alert loop skips a board until this time: it must never be later than a reminder
    /// `reminders_for` would give.
    #[test]
    fn the_next_reminder_time_is_the_first_that_could_fire() {
        let hour = REMIND_BEFORE_MS;
        let tasks = [
            task("mine", Some(10 * hour), &["me"], false),
            task("theirs", Some(5 * hour), &["you"], false),
            task("done", Some(2 * hour), &["me"], true),
        ];
        // Mine: an hour before its deadline; theirs matters only to the owner, at its deadline.
        assert_eq!(next_reminder_at(&tasks, "me", false, 0), 9 * hour);
        assert_eq!(next_reminder_at(&tasks, "me", true, 0), 5 * hour);
        assert_eq!(next_reminder_at(&tasks, "me", false, 9 * hour), 10 * hour);
        assert_eq!(next_reminder_at(&tasks, "me", false, 10 * hour), u64::MAX);
        // Nothing fires before the time it names, and something does at it.
        let given = std::collections::BTreeSet::new();
        for owner in [false, true] {
            let next = next_reminder_at(&tasks, "me", owner, 0);
            assert!(reminders_for("p", &tasks, "me", owner, next - 1, &given).is_empty());
            assert!(!reminders_for("p", &tasks, "me", owner, next, &given).is_empty());
        }
    }
}
