//! The Dingo application: one user's node. It owns the identity, the store (through its thread)
//! and, while running, the network; everything a user does goes through [`Node`].
//!
//! - `chat`: the 1:1 state machine, run as store jobs (atomic, no I/O).
//! - `delivery`: the outbox loop (retry until the recipient's node says "stored") and the handler
//!   for inbound envelopes (verify, open, store, group-commit, acknowledge).
//! - [`home`]: the files of a home directory and its exclusive lock.
//!
//! A node works offline too: [`Node::open`] without [`Node::start_network`] queues sends in the
//! outbox, and the next run delivers them.

mod carrier;
mod channels;
mod chat;
mod copies;
mod delivery;
mod docsync;
mod documents;
mod error;
mod fanout;
mod files;
pub mod home;
mod projects;
mod records;
mod relay;
mod report;
pub mod sync;
mod team;
mod workdocs;

pub use dingo_docs::{Priority as TaskPriority, TaskEdit};
pub use error::NodeError;
pub use files::{
    human_size, CHUNKS_PER_REQUEST, CHUNK_TIMEOUT, MAX_SERVING_STREAMS, MAX_TRANSFERS_KEPT,
    REQUESTS_IN_FLIGHT,
};
pub use home::{Home, Role};
pub use projects::{TaskUpdate, REMIND_BEFORE_MS};
pub use records::{
    AckView, BlameView, ChannelView, ContactInfo, ConversationView, DeptView, DingView, Direction,
    DocActivity, FileView, IdInfo, JoinCodeView, MemberProgress, MemberStatus, MemberView, MessageView,
    NodeEvent, PeerView, ProjectStatus, ProjectView, ReportTask, RevisionView, SendResult, SettingsView,
    Stats, Status, TaskView, TeamView, TransferView, UnreadView, Verification, WeeklyReport,
};
pub use report::weekly_markdown;
pub use team::JOIN_CODE_TTL_MS;
pub use workdocs::{COMPACT_AFTER, MAX_LOADED_DOCS};

use chat::{Core, Effects, SealCtx};
use dingo_crypto::at_rest::StorageKey;
use dingo_crypto::Identity;
use dingo_net::Net;
use dingo_store::{Lane, Store, StoreHandle};
use dingo_types::invite::Invite;
use dingo_types::now_ms;
use dingo_types::team::Action;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Sends waiting to be sealed before callers wait.
pub const SEND_QUEUE: usize = 4096;
/// Most sends sealed in one store job.
pub const SEND_RUN: usize = 256;

/// Events buffered per subscriber before the slowest one misses some.
pub const EVENT_BUFFER: usize = 4096;

pub use dingo_net::{Addr as Multiaddr, Config as NetConfig};

/// A running (or offline) node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("home", &self.inner.home.dir()).finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    received: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    handed_off: AtomicU64,
}

struct Inner {
    home: Home,
    core: Arc<Core>,
    store: StoreHandle,
    net: OnceLock<Net>,
    events: broadcast::Sender<NodeEvent>,
    delivery: Arc<delivery::State>,
    carrier: carrier::State,
    transfers: files::Transfers,
    shutdown: watch::Sender<bool>,
    counters: Arc<Counters>,
    listen_addrs: Mutex<Vec<String>>,
    sealer: OnceLock<mpsc::Sender<SendRequest>>,
    /// Held while sends are being sealed: a send that finds it free and nothing queued seals
    /// itself at once instead of handing over to the sealer task.
    sealing: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    _lock: home::HomeLock,
}

impl Node {
    /// Creates a new identity and empty store in `home`. Refuses to overwrite one.
    pub fn init(home: &Home, name: &str, passphrase: Option<&[u8]>) -> Result<IdInfo, NodeError> {
        let name = name.trim();
        if name.is_empty() || name.len() > dingo_types::limits::MAX_NAME_BYTES {
            return Err(NodeError::BadName(format!(
                "a name must be 1 to {} bytes",
                dingo_types::limits::MAX_NAME_BYTES
            )));
        }
        if home.is_initialized() {
            return Err(NodeError::AlreadyInitialized(home.dir().display().to_string()));
        }
        let lock = home.lock(Role::Command)?;
        let identity = Identity::generate(name);
        home.create_identity(&identity, passphrase)?;
        drop(Store::open(&home.store_dir(), StorageKey::new(identity.storage_key().clone()))?);
        drop(lock);
        Ok(id_info(&identity, Vec::new()))
    }

    /// Opens the node in `home` (takes the home's lock as a node). The network is not started.
    pub fn open(home: &Home, passphrase: Option<&[u8]>) -> Result<Node, NodeError> {
        Self::open_as(home, passphrase, Role::Node)
    }

    /// Opens the home for a one-off command (others see a short-lived holder and wait).
    pub fn open_as(home: &Home, passphrase: Option<&[u8]>, role: Role) -> Result<Node, NodeError> {
        if !home.is_initialized() {
            return Err(NodeError::NotInitialized(home.dir().display().to_string()));
        }
        let lock = lock_waiting(home, role)?;
        let identity = home.load_identity(passphrase)?;
        let store = open_store(home, &identity)?;
        let core = Core::new(identity);
        core.migrate_group_outbox(&store)?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(Node {
            inner: Arc::new(Inner {
                home: home.clone(),
                core: Arc::new(core),
                store: StoreHandle::spawn(store),
                net: OnceLock::new(),
                events,
                delivery: Arc::default(),
                carrier: carrier::State::default(),
                transfers: files::Transfers::default(),
                shutdown: watch::channel(false).0,
                counters: Arc::default(),
                listen_addrs: Mutex::new(Vec::new()),
                sealer: OnceLock::new(),
                sealing: tokio::sync::Mutex::new(()),
                tasks: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        })
    }

    /// The home directory.
    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// Subscribes to events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, events: impl IntoIterator<Item = NodeEvent>) {
        emit_to(&self.inner.events, events);
    }

    /// Runs `f` with the chat core on the store thread.
    async fn job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core, &Store) -> Result<R, NodeError> + Send + 'static,
    ) -> Result<R, NodeError> {
        let core = self.inner.core.clone();
        // A failed job leaves nothing cached that its batch did not write.
        self.inner.store.call(move |s| f(&core, s).inspect_err(|_| core.forget_work())).await?
    }

    /// Runs `f` with the chat core on the store thread, queued behind the work peers handed
    /// over, not before it, as the node's own jobs are (`dingo_store::Lane`).
    async fn peer_job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core, &Store) -> Result<R, NodeError> + Send + 'static,
    ) -> Result<R, NodeError> {
        let core = self.inner.core.clone();
        self.inner.store.call_in(Lane::Peer, move |s| f(&core, s).inspect_err(|_| core.forget_work())).await?
    }

    /// Like [`Node::job`], and the job's writes are durable (flushed on the store thread, saving
    /// a hop to the flusher) before it answers.
    async fn durable_job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core, &Store) -> Result<R, NodeError> + Send + 'static,
    ) -> Result<R, NodeError> {
        self.durable_job_then(Lane::Local, f, |_| {}).await
    }

    /// [`Node::durable_job`] queued in `lane`, then `durable` on the store thread as soon as
    /// the job's writes are: what only waits for durability (a delivery run's next envelopes, a
    /// peer's answer) need not wait for the caller to be scheduled too.
    async fn durable_job_then<R: Send + 'static>(
        &self,
        lane: Lane,
        f: impl FnOnce(&Core, &Store) -> Result<R, NodeError> + Send + 'static,
        durable: impl FnOnce(&mut R) + Send + 'static,
    ) -> Result<R, NodeError> {
        let core = self.inner.core.clone();
        self.inner
            .store
            .call_in(lane, move |s| {
                let mut r = f(&core, s).inspect_err(|_| core.forget_work())?;
                s.flush()?;
                durable(&mut r);
                Ok(r)
            })
            .await?
    }

    /// This node's identity and invite.
    pub fn id(&self) -> IdInfo {
        let addrs = self.inner.listen_addrs.lock().map(|a| a.clone()).unwrap_or_default();
        id_info(&self.inner.core.me, addrs)
    }

    /// Adds a contact from an invite code.
    pub async fn add_contact(&self, invite: &str, name: Option<String>) -> Result<ContactInfo, NodeError> {
        let invite = Invite::from_code(invite).map_err(|e| NodeError::BadInvite(e.to_string()))?;
        let rec = self.job(move |c, s| c.add_contact(s, &invite, name.as_deref(), now_ms())).await?;
        self.inner.store.flush().await?;
        if let Some(net) = self.inner.net.get() {
            delivery::learn_addresses(net, &rec).await;
        }
        Ok(rec.info())
    }

    /// All contacts.
    pub async fn contacts(&self) -> Result<Vec<ContactInfo>, NodeError> {
        self.job(|c, s| Ok(c.contacts(s)?.iter().map(|r| r.info()).collect())).await
    }

    /// Shows (and with `confirm`, accepts) a contact's safety number.
    pub async fn verify_contact(&self, who: &str, confirm: bool) -> Result<Verification, NodeError> {
        let who = who.to_owned();
        // Mail held for this contact goes out once accepted, even if this call is cancelled.
        let held = confirm.then(|| RequeueUnlessDone(Some(self.clone())));
        let v = self.job(move |c, s| c.verify_contact(s, &who, confirm)).await?;
        self.inner.store.flush().await?;
        if let Some(held) = held {
            self.inner.delivery.wake_all();
            held.done();
        }
        Ok(v)
    }

    /// Sends a text; it is durably in the outbox when this returns. Concurrent sends are sealed
    /// together in one store job and one flush (group commit); each gets its own result.
    pub async fn send(&self, who: &str, text: &str) -> Result<SendResult, NodeError> {
        // `send_text` checks this too; checking here keeps oversized texts out of the queue.
        if text.len() > dingo_types::limits::MAX_TEXT_BYTES {
            return Err(NodeError::TooLong(text.len(), dingo_types::limits::MAX_TEXT_BYTES));
        }
        if channels::is_channel(who) {
            let (who, text) = (who.to_owned(), text.to_owned());
            let id =
                self.sealing_job(move |c, s, ctx| c.send_channel_text(s, ctx, &who, &text, now_ms())).await?;
            return Ok(SendResult { id: id.to_hex(), status: Status::Queued });
        }
        let queue = self.inner.sealer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(SEND_QUEUE);
            tokio::spawn(sealer(Arc::downgrade(&self.inner), rx));
            tx
        });
        // A lone send skips the hop to the sealer task; sends that come together queue up and
        // are sealed in runs.
        if queue.capacity() == SEND_QUEUE {
            if let Ok(_sealing) = self.inner.sealing.try_lock() {
                let mut sealed = seal_texts(self, vec![(who.to_owned(), text.to_owned())]).await?;
                let id = sealed.pop().ok_or_else(|| NodeError::Unavailable("nothing sealed".into()))??;
                return Ok(SendResult { id: id.to_hex(), status: Status::Queued });
            }
        }
        let (reply, answer) = oneshot::channel();
        let request = SendRequest { who: who.to_owned(), text: text.to_owned(), reply };
        queue.send(request).await.map_err(|_| NodeError::Unavailable("the sealer stopped".into()))?;
        let id = answer.await.map_err(|_| NodeError::Unavailable("the sealer stopped".into()))??;
        Ok(SendResult { id: id.to_hex(), status: Status::Queued })
    }

    /// Conversations with unread counts.
    pub async fn inbox(&self) -> Result<Vec<ConversationView>, NodeError> {
        self.job(|c, s| c.inbox(s)).await
    }

    /// A conversation, without marking anything read.
    pub async fn messages(&self, who: &str) -> Result<Vec<MessageView>, NodeError> {
        let who = who.to_owned();
        self.job(move |c, s| c.messages(s, &who)).await
    }

    /// A conversation; marks incoming messages read and sends read receipts.
    pub async fn read(&self, who: &str) -> Result<Vec<MessageView>, NodeError> {
        let who = who.to_owned();
        self.effects_job(move |c, s| c.read(s, &who, now_ms())).await
    }

    /// Runs `f` with a sealing context on the store thread; commits, makes it durable, then
    /// carries out the effects (deliveries, blocks, events).
    async fn sealing_job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core, &Store, &mut SealCtx) -> Result<R, NodeError> + Send + 'static,
    ) -> Result<R, NodeError> {
        self.sealing_job_with(SealCtx::default(), f).await
    }

    /// [`Node::sealing_job`] starting from `ctx` (how to sign, whether to hand entries back).
    async fn sealing_job_with<R: Send + 'static>(
        &self,
        ctx: SealCtx,
        f: impl FnOnce(&Core, &Store, &mut SealCtx) -> Result<R, NodeError> + Send + 'static,
    ) -> Result<R, NodeError> {
        self.effects_job(move |c, s| {
            let mut ctx = ctx;
            let r = f(c, s, &mut ctx)?;
            Ok((r, c.commit_seals(s, ctx)?))
        })
        .await
    }

    /// Runs `f` as a [`Node::durable_job`], then carries out the effects it returns. Mail the
    /// job queued is delivered even if the caller stops waiting (an API client that went away)
    /// between the job and its effects.
    async fn effects_job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core, &Store) -> Result<(R, Effects), NodeError> + Send + 'static,
    ) -> Result<R, NodeError> {
        let unsent = RequeueUnlessDone(Some(self.clone()));
        let delivery = self.inner.delivery.clone();
        let handed = move |(_, effects): &mut (R, Effects)| delivery::hand_over(&delivery, effects);
        let (r, effects) = match self.durable_job_then(Lane::Local, f, handed).await {
            Ok(done) => done,
            Err(e) => {
                // A job that failed wrote nothing to deliver.
                unsent.done();
                return Err(e);
            }
        };
        self.apply_effects(effects).await;
        unsent.done();
        Ok(r)
    }

    /// Asks a peer that just connected for the projects and documents this node is in but
    /// holds nothing of (see `docsync`).
    pub(crate) async fn pull_work_from(&self, device: [u8; 32]) {
        // Runs at every connection: usually there is nothing to ask, and then nothing is
        // written or flushed.
        let pulled = self
            .job(move |c, s| {
                let mut ctx = SealCtx::default();
                c.pull_new_docs_from(s, &mut ctx, &dingo_types::DeviceKey(device), now_ms())?;
                if ctx.effects.delivers_nothing() {
                    return Ok(None);
                }
                let effects = c.commit_seals(s, ctx)?;
                s.flush()?;
                Ok(Some(effects))
            })
            .await;
        match pulled {
            Ok(Some(effects)) => self.apply_effects(effects).await,
            Ok(None) => {}
            Err(e) => tracing::debug!("no catch-up asked of a peer: {e}"),
        }
    }

    /// Starts deliveries, blocks removed devices and emits events after a durable job.
    pub(crate) async fn apply_effects(&self, mut effects: Effects) {
        // Entries handed back go to their delivery runs in memory and other new mail is queued
        // (unless the job's own thread did that already); a run starts where none is under way.
        delivery::hand_over(&self.inner.delivery, &mut effects);
        for uid in std::mem::take(&mut effects.handed) {
            delivery::kick(self, uid);
        }
        if let Some(net) = self.inner.net.get() {
            for device in effects.block {
                if let Some(peer) = dingo_net::peer_id_of(&device.0) {
                    let _ = net.block(peer).await;
                }
            }
            for rec in &effects.learn {
                delivery::learn_addresses(net, rec).await;
            }
        }
        self.emit(effects.events);
        if self.inner.core.work.queue_compaction() {
            // Queued behind what is waiting: the edit that crossed the line is answered first.
            let node = self.clone();
            tokio::spawn(async move {
                if let Err(e) = node.job(|c, s| c.compact_work(s)).await {
                    tracing::warn!("compaction failed: {e}");
                }
            });
        }
        if effects.resync {
            self.inner.carrier.want_resync();
            carrier::resync_now(self);
        }
    }

    fn listen_addrs(&self) -> Vec<String> {
        self.id().addrs
    }

    // ---- team ----

    /// Creates a team with this user as its first admin (and a `#general` channel).
    pub async fn team_create(&self, name: &str) -> Result<TeamView, NodeError> {
        let name = name.to_owned();
        let v = self.job(move |c, s| c.create_team(s, &name, now_ms())).await?;
        self.inner.store.flush().await?;
        Ok(v)
    }

    /// The team: members, roles, departments.
    pub async fn team(&self) -> Result<TeamView, NodeError> {
        self.job(|c, s| c.team_view(s)).await
    }

    /// Issues a one-time join code (admins only), valid for `ttl_secs` (default a week).
    pub async fn team_invite(
        &self,
        dept: Option<String>,
        ttl_secs: Option<u64>,
    ) -> Result<JoinCodeView, NodeError> {
        let addrs = self.listen_addrs();
        let v = self
            .job(move |c, s| c.make_join_code(s, dept, ttl_secs.map(|t| t * 1000), addrs, now_ms()))
            .await?;
        self.inner.store.flush().await?;
        Ok(v)
    }

    /// Redeems a join code: the request goes to the admin's node, which adds this user.
    pub async fn team_join(&self, code: &str) -> Result<TeamView, NodeError> {
        let code = code.to_owned();
        let addrs = self.listen_addrs();
        let learn = self
            .sealing_job(move |c, s, ctx| {
                c.join_team(s, ctx, &code, &addrs, now_ms())?;
                Ok(c.contacts(s)?.iter().cloned().collect::<Vec<_>>())
            })
            .await?;
        if let Some(net) = self.inner.net.get() {
            for rec in &learn {
                delivery::learn_addresses(net, rec).await;
            }
        }
        self.team().await
    }

    async fn team_action(
        &self,
        make: impl FnOnce(&Core, &Store) -> Result<Action, NodeError> + Send + 'static,
    ) -> Result<TeamView, NodeError> {
        self.sealing_job(move |c, s, ctx| {
            let action = make(c, s)?;
            c.author(s, ctx, action, now_ms())
        })
        .await?;
        self.team().await
    }

    /// Adds members directly from their invite codes (admins only), optionally to a
    /// department: one op each, and each member is sent the log once.
    pub async fn team_add(&self, invites: Vec<String>, dept: Option<String>) -> Result<TeamView, NodeError> {
        let mut actions = Vec::new();
        for code in &invites {
            let inv = Invite::from_code(code).map_err(|e| NodeError::BadInvite(e.to_string()))?;
            dingo_crypto::identity::verify_invite(&inv).map_err(|_| NodeError::ForgedInvite)?;
            if inv.cert.user_key == self.inner.core.me.user_key() {
                return Err(NodeError::OwnInvite);
            }
            let member = dingo_types::team::MemberInfo::from_invite(&inv);
            actions.push(Action::Add {
                member,
                role: dingo_types::team::Role::Member,
                depts: dept.iter().cloned().collect(),
            });
        }
        self.sealing_job(move |c, s, ctx| c.author_many(s, ctx, actions, now_ms())).await?;
        self.team().await
    }

    fn member_of(c: &Core, s: &Store, who: &str) -> Result<dingo_types::UserId, NodeError> {
        let (_, state) = c.team_state(s)?.ok_or(NodeError::NoTeam)?;
        c.member(s, &state, who)
    }

    /// Makes a member an admin.
    pub async fn team_promote(&self, who: &str) -> Result<TeamView, NodeError> {
        let who = who.to_owned();
        self.team_action(move |c, s| Ok(Action::Promote { user: Self::member_of(c, s, &who)? })).await
    }

    /// Makes an admin a member.
    pub async fn team_demote(&self, who: &str) -> Result<TeamView, NodeError> {
        let who = who.to_owned();
        self.team_action(move |c, s| Ok(Action::Demote { user: Self::member_of(c, s, &who)? })).await
    }

    /// Removes a member: their device is refused at once, and every channel rotates its keys
    /// before the next message.
    pub async fn team_remove(&self, who: &str) -> Result<TeamView, NodeError> {
        let who = who.to_owned();
        self.team_action(move |c, s| Ok(Action::Remove { user: Self::member_of(c, s, &who)? })).await
    }

    /// Creates a department.
    pub async fn dept_create(&self, name: &str) -> Result<TeamView, NodeError> {
        let name = name.trim().to_owned();
        self.team_action(move |_, _| Ok(Action::DeptCreate { name })).await
    }

    /// Puts a member in a department.
    pub async fn dept_add(&self, dept: &str, who: &str) -> Result<TeamView, NodeError> {
        let (dept, who) = (dept.trim().to_owned(), who.to_owned());
        self.team_action(move |c, s| Ok(Action::DeptAdd { dept, user: Self::member_of(c, s, &who)? })).await
    }

    /// Takes a member out of a department.
    pub async fn dept_remove(&self, dept: &str, who: &str) -> Result<TeamView, NodeError> {
        let (dept, who) = (dept.trim().to_owned(), who.to_owned());
        self.team_action(move |c, s| Ok(Action::DeptRemove { dept, user: Self::member_of(c, s, &who)? }))
            .await
    }

    /// Creates a channel for departments and/or members (the whole team when both are empty).
    pub async fn channel_create(
        &self,
        name: &str,
        depts: Vec<String>,
        members: Vec<String>,
    ) -> Result<Vec<ChannelView>, NodeError> {
        let name = name.to_owned();
        self.sealing_job(move |c, s, ctx| c.create_channel(s, ctx, &name, depts, members, now_ms())).await?;
        self.channels().await
    }

    /// Channels of the team.
    pub async fn channels(&self) -> Result<Vec<ChannelView>, NodeError> {
        self.job(|c, s| c.channels_view(s)).await
    }

    // ---- projects and tasks ----

    /// Creates a project (any member): the whole team, or the given departments and members.
    pub async fn project_create(
        &self,
        name: &str,
        depts: Vec<String>,
        members: Vec<String>,
    ) -> Result<Vec<ProjectView>, NodeError> {
        let name = name.to_owned();
        self.sealing_job(move |c, s, ctx| c.create_project(s, ctx, &name, depts, members, now_ms())).await?;
        self.projects().await
    }

    /// The team's projects.
    pub async fn projects(&self) -> Result<Vec<ProjectView>, NodeError> {
        self.job(|c, s| c.projects_view(s)).await
    }

    /// Adds a task to a project; returns its id.
    pub async fn task_add(
        &self,
        project: &str,
        title: &str,
        assignees: Vec<String>,
        due: Option<u64>,
        priority: TaskPriority,
        parent: Option<String>,
    ) -> Result<String, NodeError> {
        self.task_add_with(project, title, assignees, due, priority, parent, Vec::new()).await
    }

    /// Adds a task with attachments: each a path to a file (shared into the project first), a
    /// shared file's id (or prefix), or a message id.
    #[allow(clippy::too_many_arguments)]
    pub async fn task_add_with(
        &self,
        project: &str,
        title: &str,
        assignees: Vec<String>,
        due: Option<u64>,
        priority: TaskPriority,
        parent: Option<String>,
        attach: Vec<String>,
    ) -> Result<String, NodeError> {
        let attachments = self.resolve_attachments(project, attach).await?;
        let (project, title) = (project.to_owned(), title.to_owned());
        self.sealing_job(move |c, s, ctx| {
            c.add_task(
                s,
                ctx,
                &project,
                &title,
                &assignees,
                due,
                priority,
                parent.as_deref(),
                attachments,
                now_ms(),
            )
        })
        .await
    }

    /// Changes a task (by id or a unique prefix of at least 4 characters); returns its id.
    pub async fn task_update(&self, id: &str, update: TaskUpdate) -> Result<String, NodeError> {
        let id = id.to_owned();
        self.sealing_job(move |c, s, ctx| c.update_task(s, ctx, &id, now_ms(), update)).await
    }

    /// Nudges a task's assignees by hand (a DING each); returns who was nudged.
    pub async fn task_remind(&self, id: &str) -> Result<Vec<String>, NodeError> {
        let id = id.to_owned();
        self.sealing_job(move |c, s, ctx| c.remind_task(s, ctx, &id, now_ms())).await
    }

    /// Tasks of one project or of all this user is in; only mine, only overdue.
    pub async fn tasks(
        &self,
        project: Option<String>,
        mine: bool,
        overdue: bool,
    ) -> Result<Vec<TaskView>, NodeError> {
        self.job(move |c, s| c.tasks_view(s, project.as_deref(), mine, overdue, now_ms())).await
    }

    /// The task reminders due at `now` (ms), as the node's alarm loop gives them each second;
    /// each is given once. With `now` in the future this shows what will fire then.
    pub async fn task_reminders_at(&self, now: u64) -> Result<Vec<NodeEvent>, NodeError> {
        self.job(move |c, s| c.due_reminders(s, now)).await
    }

    /// Creates a shared text document (any member), for the team or the given departments and
    /// members.
    pub async fn doc_create(
        &self,
        name: &str,
        depts: Vec<String>,
        members: Vec<String>,
    ) -> Result<Vec<ProjectView>, NodeError> {
        let name = name.to_owned();
        self.sealing_job(move |c, s, ctx| c.create_doc(s, ctx, &name, depts, members, now_ms())).await?;
        self.docs().await
    }

    /// The team's documents.
    pub async fn docs(&self) -> Result<Vec<ProjectView>, NodeError> {
        self.job(|c, s| c.docs_view(s)).await
    }

    /// Makes a document's text `text` (the lines that differ become edits); whether it changed.
    pub async fn doc_edit(&self, name: &str, text: &str, message: &str) -> Result<bool, NodeError> {
        let (name, text, message) = (name.to_owned(), text.to_owned(), message.to_owned());
        self.sealing_job(move |c, s, ctx| c.edit_doc(s, ctx, &name, &text, &message, now_ms())).await
    }

    /// A document's text.
    pub async fn doc_text(&self, name: &str) -> Result<String, NodeError> {
        let name = name.to_owned();
        self.job(move |c, s| c.doc_text(s, &name)).await
    }

    /// A project's task board as standard automerge bytes.
    pub async fn project_bytes(&self, name: &str) -> Result<Vec<u8>, NodeError> {
        let name = name.to_owned();
        self.job(move |c, s| c.project_bytes(s, &name)).await
    }

    /// A document as standard automerge bytes.
    pub async fn doc_bytes(&self, name: &str) -> Result<Vec<u8>, NodeError> {
        let name = name.to_owned();
        self.job(move |c, s| c.doc_bytes(s, &name)).await
    }

    /// A document's changes: who, when, what.
    pub async fn doc_history(&self, name: &str) -> Result<Vec<RevisionView>, NodeError> {
        let name = name.to_owned();
        self.job(move |c, s| c.doc_history(s, &name)).await
    }

    /// A document's lines with who last changed each.
    pub async fn doc_blame(&self, name: &str) -> Result<Vec<BlameView>, NodeError> {
        let name = name.to_owned();
        self.job(move |c, s| c.doc_blame(s, &name)).await
    }

    /// A member's week (default: this user): tasks done, in progress, overdue; documents
    /// changed.
    pub async fn weekly_report(&self, member: Option<String>) -> Result<WeeklyReport, NodeError> {
        self.job(move |c, s| c.weekly_report(s, member.as_deref(), now_ms())).await
    }

    /// A project's progress, per member.
    pub async fn project_status(&self, project: &str) -> Result<ProjectStatus, NodeError> {
        let project = project.to_owned();
        self.job(move |c, s| c.project_status(s, &project, now_ms())).await
    }

    /// Who has not read one of my channel messages (by id prefix, or my latest).
    pub async fn unread(&self, channel: &str, id: Option<String>) -> Result<UnreadView, NodeError> {
        let channel = channel.to_owned();
        self.job(move |c, s| c.unread(s, &channel, id.as_deref())).await
    }

    /// Sends a DING to a contact, member or `#channel`; it re-alerts every `repeat_every`
    /// seconds until acknowledged.
    pub async fn ding(
        &self,
        target: &str,
        text: &str,
        repeat_every: Option<u32>,
    ) -> Result<SendResult, NodeError> {
        let (target, text) = (target.to_owned(), text.to_owned());
        let id =
            self.sealing_job(move |c, s, ctx| c.ding(s, ctx, &target, &text, repeat_every, now_ms())).await?;
        Ok(SendResult { id: id.to_hex(), status: Status::Queued })
    }

    /// Alerts again those who have not acknowledged a DING (at most once a minute).
    pub async fn ding_again(&self, id: &str) -> Result<usize, NodeError> {
        let id = id.to_owned();
        self.sealing_job(move |c, s, ctx| c.ding_again(s, ctx, &id, now_ms())).await
    }

    /// Acknowledges a DING: its alerts stop and the sender sees the acknowledgement.
    pub async fn ack(&self, id: &str) -> Result<String, NodeError> {
        let id = id.to_owned();
        self.sealing_job(move |c, s, ctx| c.ack(s, ctx, &id, now_ms())).await
    }

    /// DINGs sent and received.
    pub async fn dings(&self) -> Result<Vec<DingView>, NodeError> {
        self.job(|c, s| c.dings_view(s)).await
    }

    /// Shows, and optionally changes, the user's settings.
    pub async fn settings(&self, read_receipts: Option<bool>) -> Result<SettingsView, NodeError> {
        let v = self
            .job(move |c, s| {
                let mut rec = c.team_rec(s)?;
                if let Some(on) = read_receipts {
                    rec.no_read_receipts = !on;
                    let mut b = dingo_store::Batch::default();
                    c.put_team_rec(s, &mut b, &rec);
                    c.apply(s, b)?;
                }
                Ok(SettingsView { read_receipts: !rec.no_read_receipts })
            })
            .await?;
        self.inner.store.flush().await?;
        Ok(v)
    }

    /// Test support: the group envelopes this node holds for a channel (its own and other
    /// members').
    #[doc(hidden)]
    pub async fn test_support_group_log(&self, channel: &str) -> Result<Vec<Vec<u8>>, NodeError> {
        let channel = channel.to_owned();
        self.job(move |c, s| {
            let (_, state) = c.team_state(s)?.ok_or(NodeError::NoTeam)?;
            let (_, chan) = c.channel_named(&state, &channel)?;
            s.scan::<relay::LoggedEnv>(dingo_store::Table::GroupLog, &chan.id.0)
                .map(|r| r.map(|(_, v)| v.envelope).map_err(NodeError::from))
                .collect()
        })
        .await
    }

    /// Test support: the envelopes this node holds for a project's group.
    #[doc(hidden)]
    pub async fn test_support_project_log(&self, project: &str) -> Result<Vec<Vec<u8>>, NodeError> {
        let project = project.to_owned();
        self.job(move |c, s| {
            let (_, state) = c.team_state(s)?.ok_or(NodeError::NoTeam)?;
            let (_, p) = c.project_named(&state, &project)?;
            s.scan::<relay::LoggedEnv>(dingo_store::Table::GroupLog, &p.id.0)
                .map(|r| r.map(|(_, v)| v.envelope).map_err(NodeError::from))
                .collect()
        })
        .await
    }

    /// Test support: the 1:1 envelopes waiting in this node's outbox, oldest first.
    #[doc(hidden)]
    pub async fn test_support_outbox(&self) -> Result<Vec<Vec<u8>>, NodeError> {
        self.job(|_, s| {
            s.scan::<records::OutboxItem>(dingo_store::Table::Outbox, &[])
                .map(|r| r.map(|(_, v)| v.envelope).map_err(NodeError::from))
                .collect()
        })
        .await
    }

    /// Test support: the 1:1 envelopes this node carries for others (sealed to their
    /// recipients).
    #[doc(hidden)]
    pub async fn test_support_mailbox(&self) -> Result<Vec<Vec<u8>>, NodeError> {
        self.job(|_, s| {
            s.scan::<relay::MailRec>(dingo_store::Table::Mailbox, &[])
                .map(|r| r.map(|(_, v)| v.envelope).map_err(NodeError::from))
                .collect()
        })
        .await
    }

    /// Test support: tries to decrypt a group envelope with every chain key this node holds,
    /// ignoring membership (what a removed member's node, keeping all its state, could do).
    /// Changes nothing.
    #[doc(hidden)]
    pub async fn test_support_try_open(&self, envelope: Vec<u8>) -> Option<Vec<u8>> {
        self.job(move |_, s| {
            let env = dingo_types::envelope::Envelope::decode(&envelope)
                .map_err(|e| NodeError::Unavailable(e.to_string()))?;
            let verified = dingo_crypto::session::verify_envelope(env.clone())?;
            let key = [env.group.0.as_slice(), &env.sender.0].concat();
            let chains =
                s.get::<records::PeerChainsRec>(dingo_store::Table::GroupKeys, &key)?.unwrap_or_default();
            for mut chain in chains.chains {
                if let Ok(p) = chain.open(&verified) {
                    return Ok(Some(p));
                }
            }
            Ok(None)
        })
        .await
        .ok()
        .flatten()
    }

    /// Counters since this process started.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            received: c.received.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            handed_off: c.handed_off.load(Ordering::Relaxed),
        }
    }

    /// Starts the network: listens, dials `peers`, and starts delivery. Returns the listen
    /// addresses.
    pub async fn start_network(
        &self,
        config: NetConfig,
        peers: Vec<dingo_net::Addr>,
    ) -> Result<Vec<String>, NodeError> {
        delivery::start(self, config, peers).await
    }

    /// The network handle, if started.
    pub fn net(&self) -> Option<&Net> {
        self.inner.net.get()
    }

    /// Stops delivery and the network and makes the store durable.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let _ = self.inner.shutdown.send(true);
        if let Some(net) = self.inner.net.get() {
            net.shutdown().await;
        }
        let tasks: Vec<_> = self.inner.tasks.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = self.job(|c, s| c.save_seen(s)).await {
            tracing::warn!("last-seen times not saved: {e}");
        }
        self.inner.store.flush().await?;
        Ok(())
    }
}

/// Takes the home lock. A holder that lets go soon is waited for (up to 10 s): a one-off
/// command, or a node of this same process that is closing. A running node elsewhere is an
/// immediate error (the caller then talks to it through its API).
fn lock_waiting(home: &Home, role: Role) -> Result<home::HomeLock, NodeError> {
    let me = std::process::id().to_string();
    for _ in 0..500 {
        match home.lock(role) {
            Err(NodeError::HomeInUse { pid, role: holder, .. }) if pid == me || holder == Role::Command => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
    home.lock(role)
}

/// Opens the store, waiting briefly if a previous owner in this process is still closing (the
/// home lock is already ours, so whoever holds sled's lock is on the way out).
fn open_store(home: &Home, identity: &Identity) -> Result<Store, NodeError> {
    let mut tries = 0;
    loop {
        match Store::open(&home.store_dir(), StorageKey::new(identity.storage_key().clone())) {
            Err(dingo_store::StoreError::Locked) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

struct SendRequest {
    who: String,
    text: String,
    reply: oneshot::Sender<Result<dingo_types::MsgId, NodeError>>,
}

/// Seals queued sends in runs: one store job and one flush for everything that queued while
/// the previous run was being written. Holds only a weak reference, so dropping the last
/// [`Node`] ends it (and releases the home).
async fn sealer(inner: std::sync::Weak<Inner>, mut queue: mpsc::Receiver<SendRequest>) {
    while let Some(first) = queue.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        let node = Node { inner };
        let _sealing = node.inner.sealing.lock().await;
        let mut run = vec![first];
        while run.len() < SEND_RUN {
            match queue.try_recv() {
                Ok(r) => run.push(r),
                Err(_) => break,
            }
        }
        let items: Vec<(String, String)> = run.iter().map(|r| (r.who.clone(), r.text.clone())).collect();
        match seal_texts(&node, items).await {
            Ok(out) => {
                for (req, result) in run.into_iter().zip(out) {
                    let _ = req.reply.send(result);
                }
            }
            Err(e) => {
                let e = e.to_string();
                for req in run {
                    let _ = req.reply.send(Err(NodeError::Unavailable(e.clone())));
                }
            }
        }
    }
}

/// Seals texts (recipient, text) into the outbox in one durable store job and hands them to
/// delivery; one result per text.
async fn seal_texts(
    node: &Node,
    items: Vec<(String, String)>,
) -> Result<Vec<Result<dingo_types::MsgId, NodeError>>, NodeError> {
    let started = std::time::Instant::now();
    let n = items.len();
    // A lone send is signed at once; a run shares signatures.
    let ctx = chat::SealCtx { sign_as_batch: n > 1, hand_back: true, ..Default::default() };
    let out = node
        .sealing_job_with(ctx, move |c, s, ctx| {
            let now = now_ms();
            Ok(items
                .iter()
                .map(|(who, text)| c.send_text(s, ctx, who, text, now).map(|(id, _)| id))
                .collect())
        })
        .await;
    tracing::debug!(n, took = ?started.elapsed(), "sends sealed, durable and handed to delivery");
    out
}

/// Sends `events` to whoever subscribed (none listening is fine).
fn emit_to(subscribers: &broadcast::Sender<NodeEvent>, events: impl IntoIterator<Item = NodeEvent>) {
    for e in events {
        let _ = subscribers.send(e);
    }
}

/// Makes sure queued mail (messages, receipts) is delivered even when the call that queued it is
/// cancelled (say, its API client went away) before handing it to delivery: dropped before
/// [`Self::done`], it queues every contact with mail in the outbox.
struct RequeueUnlessDone(Option<Node>);

impl RequeueUnlessDone {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for RequeueUnlessDone {
    fn drop(&mut self) {
        let (Some(node), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        runtime.spawn(async move {
            if let Ok(uids) = node.job(|c, s| c.pending_contacts(s)).await {
                for uid in uids {
                    node.inner.delivery.enqueued(uid);
                    delivery::kick(&node, uid);
                }
            }
        });
    }
}

fn id_info(me: &Identity, addrs: Vec<String>) -> IdInfo {
    // Loopback addresses only help peers on this machine: leave them out of the invite when the
    // node is reachable any other way.
    let is_loopback = |a: &String| a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/");
    let addrs = if addrs.iter().all(is_loopback) {
        addrs
    } else {
        addrs.into_iter().filter(|a| !is_loopback(a)).collect()
    };
    IdInfo {
        user_id: me.user_id().to_hex(),
        device_id: chat::peer_id_string(&me.device_key().0),
        name: me.name().to_owned(),
        fingerprint: me.fingerprint(),
        invite: me.invite(addrs.clone()).to_code(),
        addrs,
    }
}
