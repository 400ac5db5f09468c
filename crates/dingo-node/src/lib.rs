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

mod chat;
mod delivery;
mod error;
pub mod home;
mod records;

pub use error::NodeError;
pub use home::{Home, Role};
pub use records::{
    ContactInfo, ConversationView, Direction, IdInfo, MessageView, NodeEvent, SendResult, Stats, Status,
    Verification,
};

use chat::Core;
use dingo_crypto::at_rest::StorageKey;
use dingo_crypto::Identity;
use dingo_net::Net;
use dingo_store::{Store, StoreHandle};
use dingo_types::invite::Invite;
use dingo_types::now_ms;
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
struct Counters {
    received: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    delivered: AtomicU64,
}

struct Inner {
    home: Home,
    core: Arc<Core>,
    store: StoreHandle,
    net: OnceLock<Net>,
    events: broadcast::Sender<NodeEvent>,
    delivery: delivery::State,
    shutdown: watch::Sender<bool>,
    counters: Counters,
    listen_addrs: Mutex<Vec<String>>,
    sealer: OnceLock<mpsc::Sender<SendRequest>>,
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
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(Node {
            inner: Arc::new(Inner {
                home: home.clone(),
                core: Arc::new(Core::new(identity)),
                store: StoreHandle::spawn(store),
                net: OnceLock::new(),
                events,
                delivery: delivery::State::default(),
                shutdown: watch::channel(false).0,
                counters: Counters::default(),
                listen_addrs: Mutex::new(Vec::new()),
                sealer: OnceLock::new(),
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
        for e in events {
            let _ = self.inner.events.send(e);
        }
    }

    /// Runs `f` with the chat core on the store thread.
    async fn job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core, &Store) -> Result<R, NodeError> + Send + 'static,
    ) -> Result<R, NodeError> {
        let core = self.inner.core.clone();
        self.inner.store.call(move |s| f(&core, s)).await?
    }

    /// Like [`Node::job`], and the job's writes are durable (flushed on the store thread, saving
    /// a hop to the flusher) before it answers.
    async fn durable_job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core, &Store) -> Result<R, NodeError> + Send + 'static,
    ) -> Result<R, NodeError> {
        let core = self.inner.core.clone();
        self.inner
            .store
            .call(move |s| {
                let r = f(&core, s)?;
                s.flush()?;
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
        let v = self.job(move |c, s| c.verify_contact(s, &who, confirm)).await?;
        self.inner.store.flush().await?;
        if confirm {
            self.inner.delivery.wake_all();
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
        let queue = self.inner.sealer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(SEND_QUEUE);
            tokio::spawn(sealer(Arc::downgrade(&self.inner), rx));
            tx
        });
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
        let (views, receipts_to) = self.job(move |c, s| c.read(s, &who, now_ms())).await?;
        self.inner.store.flush().await?;
        if let Some(uid) = receipts_to {
            self.inner.delivery.enqueued(uid);
            delivery::kick(self, uid);
        }
        Ok(views)
    }

    /// Counters since this process started.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            received: c.received.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
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
        let mut run = vec![first];
        while run.len() < SEND_RUN {
            match queue.try_recv() {
                Ok(r) => run.push(r),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { break };
        let node = Node { inner };
        let items: Vec<(String, String)> = run.iter().map(|r| (r.who.clone(), r.text.clone())).collect();
        let started = std::time::Instant::now();
        let n = items.len();
        let sealed = node
            .durable_job(move |c, s| {
                let mut ctx = chat::SealCtx::default();
                let now = now_ms();
                let out: Vec<_> =
                    items.iter().map(|(who, text)| c.send_text(s, &mut ctx, who, text, now)).collect();
                c.commit_seals(s, ctx)?;
                Ok(out)
            })
            .await;
        tracing::debug!(n, took = ?started.elapsed(), "sends sealed and durable");
        let sealed = sealed.map_err(|e| e.to_string());
        match sealed {
            Ok(out) => {
                for (req, result) in run.into_iter().zip(out) {
                    if let Ok((_, uid)) = &result {
                        node.inner.delivery.enqueued(*uid);
                        delivery::kick(&node, *uid);
                    }
                    let _ = req.reply.send(result.map(|(id, _)| id));
                }
            }
            Err(e) => {
                for req in run {
                    let _ = req.reply.send(Err(NodeError::Unavailable(e.clone())));
                }
            }
        }
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
