//! The 1:1 chat state machine: every function here runs on the store thread (inside one store
//! job), so its read-modify-write of sessions, counters and messages is atomic with respect to
//! every other job. Nothing here does network I/O.

use crate::fanout::{RunCursor, Sent, Source};
use crate::records::*;
use crate::sync::SeqWindow;
use crate::{NodeError, NodeEvent};
use dingo_crypto::identity::{fingerprint, safety_number, verify_invite};
use dingo_crypto::session::{PeerSessions, Recipient, VerifiedEnvelope};
use dingo_crypto::Identity;
use dingo_store::{Batch, Store, Table};
use dingo_types::content::{Content, MsgRef};
use dingo_types::envelope::Envelope;
use dingo_types::invite::{DeviceCert, Invite, SignedPreKey};
use dingo_types::limits::{MAX_RECEIPT_IDS, MAX_TEXT_BYTES};
use dingo_types::wire::DeliveryStatus;
use dingo_types::{ConvId, DeviceKey, MsgId, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Most envelopes sent to one peer in one request.
pub(crate) const DELIVERY_BATCH: usize = 256;
/// Envelopes of a run of sends that share one signature (a Merkle tree of height 5: each
/// envelope carries 5 sibling hashes, 179 bytes more than a lone signature).
pub(crate) const SIGN_BATCH: usize = 32;
/// Most envelope bytes sent to one peer in one request.
pub(crate) const DELIVERY_BATCH_BYTES: usize = 1024 * 1024;

/// A member's next envelopes, with where each came from, in send order.
pub(crate) type OutgoingBatch = Vec<(Sent, Vec<u8>)>;

/// What happened to one inbound envelope.
#[derive(Debug)]
pub(crate) enum Accepted {
    Stored(Vec<NodeEvent>),
    Duplicate,
    Rejected(String),
    /// Not now (e.g. a key change awaits the user); the sender retries. Events to report.
    Retry(Vec<NodeEvent>),
}

/// What a run of outgoing seals changes, written once by [`Core::commit_seals`].
#[derive(Default)]
pub(crate) struct SealCtx {
    pub(crate) batch: Batch,
    pub(crate) convs: HashMap<ConvId, ConversationRec>,
    pub(crate) sessions: HashMap<UserId, PeerSessions>,
    /// My sender chains touched, by group.
    pub(crate) my_chains: HashMap<ConvId, MyChainRec>,
    /// Other members' chains touched, by group and device.
    pub(crate) peer_chains: HashMap<(ConvId, DeviceKey), PeerChainsRec>,
    /// What the caller must do once the batch is durable.
    pub(crate) effects: Effects,
    /// DINGs received in this batch per sender (rate limits must count what is not written yet).
    pub(crate) dings_in_batch: HashMap<UserId, usize>,
    /// Replay windows to raise (a first sender key says where its sender's log starts for us).
    pub(crate) window_floors: Vec<(Vec<u8>, u64)>,
    /// Seal 1:1 envelopes to be signed together ([`dingo_crypto::batch`]) by
    /// [`Core::commit_seals`], which then writes their outbox entries.
    pub(crate) sign_as_batch: bool,
    /// Outbox entries (key, entry) whose envelopes await their batch signature.
    pub(crate) unsigned: Vec<(Vec<u8>, OutboxItem, Envelope)>,
    /// When set, every outbox entry written is also handed back in [`Effects::fresh`], so the
    /// caller can send it once durable without reading it back (see `delivery::State`).
    pub(crate) hand_back: bool,
}

/// Follow-ups of a committed job that need the network.
#[derive(Default, Debug)]
pub(crate) struct Effects {
    /// Contacts with new outbox entries.
    pub kick: HashSet<UserId>,
    /// Devices to refuse from now on (removed members).
    pub block: Vec<DeviceKey>,
    /// Contacts whose addresses the network should learn.
    pub learn: Vec<ContactRec>,
    /// Events to emit.
    pub events: Vec<NodeEvent>,
    /// A channel key arrived: messages a sync could not open may open now.
    pub resync: bool,
    /// The outbox entries written, by recipient and outbox key (only with
    /// [`SealCtx::hand_back`]).
    pub fresh: Vec<(UserId, Vec<u8>, OutboxItem)>,
    /// My group envelopes sealed, each with the members it goes to: handed to their delivery
    /// runs in memory like `fresh` (the group log is the record).
    pub group_fresh: Vec<(Vec<UserId>, crate::fanout::Sent, Vec<u8>)>,
    /// Contacts queued already (by [`crate::delivery::hand_over`], from `fresh`,
    /// `group_fresh` and `kick`), whose runs are still to be started if none is under way.
    pub handed: Vec<UserId>,
}

impl Effects {
    /// Whether nothing was queued for delivery.
    pub(crate) fn delivers_nothing(&self) -> bool {
        self.kick.is_empty() && self.fresh.is_empty() && self.group_fresh.is_empty()
    }
}

/// What a batch of inbound envelopes changes, written once by [`Core::commit`].
#[derive(Default)]
pub(crate) struct AcceptCtx {
    pub(crate) seal: SealCtx,
    windows: HashMap<Vec<u8>, SeqWindow>,
    dirty_windows: HashSet<Vec<u8>>,
    contacts: HashMap<DeviceKey, Option<ContactRec>>,
    new_contacts: bool,
    /// The node the batch came from, when not necessarily the authors (a carrier or a sync).
    pub(crate) via: Option<DeviceKey>,
    /// Messages that came through another node, by author and conversation: their authors get
    /// a `Delivered` receipt.
    relayed: std::collections::BTreeMap<(UserId, ConvId), Relayed>,
}

impl AcceptCtx {
    /// A batch received from `via` (its authors may be others).
    pub(crate) fn from_peer(via: DeviceKey) -> Self {
        Self { via: Some(via), ..Self::default() }
    }

    /// Notes a message stored from `env`: if it came through another node, its author is told.
    pub(crate) fn note_relayed(
        &mut self,
        env: &dingo_types::envelope::Envelope,
        author: UserId,
        conv: ConvId,
        r: MsgRef,
    ) {
        if self.via.is_some_and(|v| v != env.sender) {
            self.relayed.entry((author, conv)).or_default().0.push(r);
        }
    }

    /// Notes a 1:1 envelope accepted from `env`'s author: if it came through another node, the
    /// author is told, so it can drop it from its outbox.
    pub(crate) fn note_relayed_envelope(
        &mut self,
        env: &dingo_types::envelope::Envelope,
        author: UserId,
        conv: ConvId,
    ) {
        if self.via.is_some_and(|v| v != env.sender) {
            self.relayed.entry((author, conv)).or_default().1.push(env.seq);
        }
    }
}

/// Messages and 1:1 envelope numbers that reached this node through another, for one author.
type Relayed = (Vec<MsgRef>, Vec<u64>);

/// The team id and membership, or `None` when not in a team.
pub(crate) type TeamSnapshot = Option<([u8; 32], Arc<dingo_crypto::membership::TeamState>)>;

/// A write-through cache of records as last committed: filled when a record is read, updated
/// only after the batch that changes it was applied, emptied when a batch fails. Bounded: past
/// [`Committed::MAX`] entries it starts over, and records are read from the store again.
pub(crate) struct Committed<K, V>(Mutex<HashMap<K, V>>);

impl<K, V> Default for Committed<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Committed<K, V> {
    const MAX: usize = 10_000;

    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The committed record `key` names: cached, else read by `load` (and then cached).
    fn get_or_load<E>(&self, key: &K, load: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if let Some(v) = self.locked().get(key) {
            return Ok(v.clone());
        }
        let v = load()?;
        self.put(std::iter::once((key.clone(), v.clone())));
        Ok(v)
    }

    /// Records just applied to the store.
    fn put(&self, applied: impl IntoIterator<Item = (K, V)>) {
        let mut map = self.locked();
        for (k, v) in applied {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(k, v);
        }
    }

    fn clear(&self) {
        self.locked().clear();
    }
}

/// A received DING's alarm: next alert time (ms), interval (ms), alerts so far.
pub(crate) type DingAlarm = (u64, u64, u32);

/// State shared by all store jobs: the identity and the write-through caches.
pub(crate) struct Core {
    pub me: Identity,
    sessions: Mutex<HashMap<UserId, PeerSessions>>,
    /// All contacts, sorted by name; dropped whenever a contact is written.
    contacts: Mutex<Option<Arc<Vec<ContactRec>>>>,
    /// Device key → user (the `ContactByDevice` index), cached and dropped with `contacts`:
    /// every received envelope looks its sender up.
    by_device: Mutex<Option<Arc<HashMap<DeviceKey, UserId>>>>,
    /// Replay windows as last committed, so a received envelope costs no read of its window.
    windows: Committed<Vec<u8>, SeqWindow>,
    /// Conversation records as last committed (every message sent or received updates one).
    convs: Committed<ConvId, ConversationRec>,
    /// Other members' group chains as last committed (every channel message received opens one).
    peer_chains: Committed<(ConvId, DeviceKey), PeerChainsRec>,
    /// My own chain per group as last committed (every channel message sent advances it).
    my_chains: Committed<ConvId, Option<MyChainRec>>,
    /// The team log, loaded on first use (`None` inside: not in a team).
    pub(crate) team: Mutex<Option<Option<dingo_crypto::membership::TeamLog>>>,
    /// The membership computed from `team`, shared (dropped whenever the log may change).
    pub(crate) team_cache: Mutex<Option<TeamSnapshot>>,
    /// The next outbox key suffix (found on first use).
    outbox_next: Mutex<Option<u64>>,
    /// Received DINGs not yet acknowledged: id → (next alert time, interval ms, alerts so far).
    pub(crate) active_dings: Mutex<Option<HashMap<MsgId, DingAlarm>>>,
    /// When each user's device was last heard from (ms).
    /// `None` until the times saved at the last shutdown are loaded (on first use).
    pub(crate) last_seen: Mutex<Option<HashMap<UserId, u64>>>,
    /// Task boards and documents kept loaded between edits.
    pub(crate) work: crate::workdocs::WorkDocs,
    /// Automerge sync states with peers, and sync messages arriving in parts.
    pub(crate) doc_sync: crate::docsync::DocSyncs,
}

pub(crate) fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(80).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

pub(crate) fn message_key(conv: &ConvId, sent_at: u64, seq: u64, id: &MsgId) -> Vec<u8> {
    [conv.0.as_slice(), &sent_at.to_be_bytes(), &seq.to_be_bytes(), &id.0].concat()
}

/// The conversation and sequence number a [`message_key`] names.
pub(crate) fn split_message_key(key: &[u8]) -> Option<(ConvId, u64)> {
    let conv = ConvId(key.get(..32)?.try_into().ok()?);
    let seq = u64::from_be_bytes(key.get(40..48)?.try_into().ok()?);
    Some((conv, seq))
}

/// The recipient an [`outbox_key`] files its entry under.
pub(crate) fn outbox_recipient(key: &[u8]) -> Option<UserId> {
    Some(UserId(key.get(..16)?.try_into().ok()?))
}

pub(crate) fn outbox_key(uid: &UserId, n: u64) -> Vec<u8> {
    [uid.0.as_slice(), &n.to_be_bytes()].concat()
}

pub(crate) fn replay_key(conv: &ConvId, sender: &DeviceKey) -> Vec<u8> {
    [conv.0.as_slice(), &sender.0].concat()
}

pub(crate) fn peer_id_string(device_key: &[u8; 32]) -> String {
    dingo_net::peer_id_of(device_key).map(|p| p.to_string()).unwrap_or_default()
}

impl ContactRec {
    pub(crate) fn device_cert(&self) -> Result<DeviceCert, NodeError> {
        DeviceCert::decode(&self.cert).map_err(|_| dingo_store::StoreError::Corrupt(Table::Contacts).into())
    }
    fn signed_prekey(&self) -> Option<SignedPreKey> {
        let raw = self.prekey.as_ref()?;
        let mut r = dingo_types::codec::Reader::new(raw);
        SignedPreKey::read(&mut r).ok()
    }
    pub(crate) fn device_key(&self) -> Result<DeviceKey, NodeError> {
        Ok(DeviceKey(self.device_cert()?.device_key))
    }
    pub(crate) fn info(&self) -> ContactInfo {
        let cert = self.device_cert().ok();
        ContactInfo {
            name: self.name.clone(),
            user_id: self.user_id.to_hex(),
            device_id: cert.as_ref().map(|c| peer_id_string(&c.device_key)).unwrap_or_default(),
            fingerprint: cert.as_ref().map(|c| fingerprint(&c.user_key)).unwrap_or_default(),
            verified: self.verified,
            key_changed: self.pending_cert.is_some(),
            addrs: self.addrs.clone(),
        }
    }
}

impl Core {
    pub(crate) fn new(me: Identity) -> Self {
        Self {
            me,
            sessions: Mutex::new(HashMap::new()),
            contacts: Mutex::new(None),
            by_device: Mutex::new(None),
            windows: Committed::default(),
            convs: Committed::default(),
            peer_chains: Committed::default(),
            my_chains: Committed::default(),
            team: Mutex::new(None),
            team_cache: Mutex::new(None),
            outbox_next: Mutex::new(None),
            active_dings: Mutex::new(None),
            last_seen: Mutex::new(None),
            work: Default::default(),
            doc_sync: Default::default(),
        }
    }

    /// An outbox key for `uid` that sorts after every entry queued so far (per-recipient order).
    pub(crate) fn next_outbox_key(&self, s: &Store, uid: &UserId) -> Result<Vec<u8>, NodeError> {
        let mut next = self.outbox_next.lock().unwrap_or_else(|p| p.into_inner());
        if next.is_none() {
            let mut max = 0u64;
            for item in s.scan::<OutboxItem>(Table::Outbox, &[]) {
                let (key, _) = item?;
                if let Some(tail) = key.get(16..24) {
                    max = max.max(u64::from_be_bytes(tail.try_into().unwrap_or([0; 8])));
                }
            }
            *next = Some(max + 1);
        }
        let n = next.unwrap_or(1);
        *next = Some(n + 1);
        Ok(outbox_key(uid, n))
    }

    pub(crate) fn sessions_for(&self, s: &Store, uid: &UserId) -> Result<PeerSessions, NodeError> {
        let cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = cache.get(uid) {
            return Ok(found.clone());
        }
        drop(cache);
        Ok(s.get::<PeerSessions>(Table::Sessions, &uid.0)?.unwrap_or_default())
    }

    /// The sessions with `uid` as this job has them: its own copy in `ctx` if it touched them,
    /// else the stored (cached) ones.
    pub(crate) fn ctx_sessions(
        &self,
        s: &Store,
        ctx: &SealCtx,
        uid: &UserId,
    ) -> Result<PeerSessions, NodeError> {
        match ctx.sessions.get(uid) {
            Some(sess) => Ok(sess.clone()),
            None => self.sessions_for(s, uid),
        }
    }

    pub(crate) fn save_sessions(&self, s: &Store, b: &mut Batch, uid: &UserId, sessions: PeerSessions) {
        s.put(b, Table::Sessions, &uid.0, &sessions);
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(*uid, sessions);
    }

    pub(crate) fn forget_cache(&self) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.windows.clear();
        self.convs.clear();
        self.peer_chains.clear();
        self.my_chains.clear();
        self.forget_work();
        self.contacts_changed();
    }

    /// Drops the loaded documents and sync states (after a failed job: the store is the truth,
    /// and a sync state may describe a message that was never sent).
    pub(crate) fn forget_work(&self) {
        self.work.clear();
        self.doc_sync.clear();
    }

    pub(crate) fn contacts_changed(&self) {
        *self.contacts.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.by_device.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn apply(&self, s: &Store, mut b: Batch) -> Result<(), NodeError> {
        // Boards and documents changed in this job are written with it.
        self.work.flush_into(s, &mut b);
        s.apply(b).inspect_err(|_| self.forget_cache())?;
        Ok(())
    }

    pub(crate) fn conv_with(&self, uid: &UserId) -> ConvId {
        ConvId::direct(&self.me.user_id(), uid)
    }

    // ---- contacts ----

    /// All contacts, sorted by name: shared from the cache, so a lookup costs no copying.
    pub(crate) fn contacts(&self, s: &Store) -> Result<Arc<Vec<ContactRec>>, NodeError> {
        if let Some(cached) = self.contacts.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(cached.clone());
        }
        let mut out = s
            .scan::<ContactRec>(Table::Contacts, &[])
            .map(|r| r.map(|(_, c)| c))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|c| c.name.to_lowercase());
        let out = Arc::new(out);
        *self.contacts.lock().unwrap_or_else(|p| p.into_inner()) = Some(out.clone());
        Ok(out)
    }

    /// `f` of `uid`'s contact record in the cached list (no store read: delivery and every
    /// received channel message look contacts up).
    pub(crate) fn with_contact<R>(
        &self,
        s: &Store,
        uid: &UserId,
        f: impl FnOnce(&ContactRec) -> R,
    ) -> Result<Option<R>, NodeError> {
        Ok(self.contacts(s)?.iter().find(|c| c.user_id == *uid).map(f))
    }

    /// Finds a contact by name (case-insensitive) or a unique user-id prefix.
    pub(crate) fn contact(&self, s: &Store, who: &str) -> Result<ContactRec, NodeError> {
        let all = self.contacts(s)?;
        if let Some(c) = all.iter().find(|c| c.name.eq_ignore_ascii_case(who)) {
            return Ok(c.clone());
        }
        let needle = who.to_lowercase();
        if needle.len() >= 4 {
            let hits: Vec<&ContactRec> =
                all.iter().filter(|c| c.user_id.to_hex().starts_with(&needle)).collect();
            match hits.len() {
                1 => return Ok(hits[0].clone()),
                n if n > 1 => return Err(NodeError::AmbiguousContact(who.into())),
                _ => {}
            }
        }
        Err(NodeError::UnknownContact(who.into()))
    }

    pub(crate) fn contact_by_device(
        &self,
        s: &Store,
        device: &DeviceKey,
    ) -> Result<Option<ContactRec>, NodeError> {
        let cached = self.by_device.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let index = match cached {
            Some(index) => index,
            None => {
                let index = s
                    .scan::<UserId>(Table::ContactByDevice, &[])
                    .map(|r| {
                        let (key, uid) = r?;
                        let device = key
                            .try_into()
                            .map_err(|_| dingo_store::StoreError::Corrupt(Table::ContactByDevice))?;
                        Ok((DeviceKey(device), uid))
                    })
                    .collect::<Result<HashMap<_, _>, dingo_store::StoreError>>()?;
                let index = Arc::new(index);
                *self.by_device.lock().unwrap_or_else(|p| p.into_inner()) = Some(index.clone());
                index
            }
        };
        match index.get(device) {
            Some(uid) => self.with_contact(s, uid, |c| c.clone()),
            None => Ok(None),
        }
    }

    pub(crate) fn name_free(&self, s: &Store, name: &str, uid: &UserId) -> Result<bool, NodeError> {
        Ok(!self.contacts(s)?.iter().any(|c| c.name.eq_ignore_ascii_case(name) && c.user_id != *uid))
    }

    pub(crate) fn add_contact(
        &self,
        s: &Store,
        invite: &Invite,
        name: Option<&str>,
        now: u64,
    ) -> Result<ContactRec, NodeError> {
        verify_invite(invite).map_err(|_| NodeError::ForgedInvite)?;
        let uid = UserId::from_user_key(&invite.cert.user_key);
        if uid == self.me.user_id() {
            return Err(NodeError::OwnInvite);
        }
        let name = name.map(str::trim).unwrap_or(invite.name.trim()).to_owned();
        // '#' starts channel names (issue 3); a contact name must not look like one.
        if name.is_empty() || name.starts_with('#') || name.len() > dingo_types::limits::MAX_NAME_BYTES {
            return Err(NodeError::BadName(format!(
                "a contact needs a name of 1 to {} bytes, not starting with '#'; pass --name",
                dingo_types::limits::MAX_NAME_BYTES
            )));
        }
        if !self.name_free(s, &name, &uid)? {
            return Err(NodeError::NameTaken(name));
        }
        let cert = invite.cert.encode();
        let prekey = Some(invite.prekey.encode());
        let mut b = Batch::default();
        let rec = match s.get::<ContactRec>(Table::Contacts, &uid.0)? {
            Some(mut existing) if existing.cert == cert => {
                existing.prekey = prekey;
                existing.name = name;
                for a in &invite.addrs {
                    if !existing.addrs.contains(a) {
                        existing.addrs.push(a.clone());
                    }
                }
                existing
            }
            Some(mut existing) => {
                // Same user, different device key: pin stays, conversation blocks.
                existing.pending_cert = Some(cert);
                existing.pending_prekey = prekey;
                existing.addrs = invite.addrs.clone();
                existing
            }
            None => {
                s.put(&mut b, Table::ContactByDevice, &invite.cert.device_key, &uid);
                ContactRec {
                    user_id: uid,
                    name,
                    cert,
                    prekey,
                    addrs: invite.addrs.clone(),
                    verified: false,
                    pending_cert: None,
                    pending_prekey: None,
                    added_at: now,
                    removed: false,
                }
            }
        };
        s.put(&mut b, Table::Contacts, &uid.0, &rec);
        self.apply(s, b)?;
        self.contacts_changed();
        Ok(rec)
    }

    pub(crate) fn verify_contact(
        &self,
        s: &Store,
        who: &str,
        confirm: bool,
    ) -> Result<Verification, NodeError> {
        let mut c = self.contact(s, who)?;
        let shown = match &c.pending_cert {
            Some(p) => {
                DeviceCert::decode(p).map_err(|_| dingo_store::StoreError::Corrupt(Table::Contacts))?
            }
            None => c.device_cert()?,
        };
        let number = safety_number(&self.me.user_key(), &shown.user_key);
        let key_changed = c.pending_cert.is_some();
        if confirm {
            let mut b = Batch::default();
            if let Some(new_cert) = c.pending_cert.take() {
                s.delete(&mut b, Table::ContactByDevice, &c.device_key()?.0);
                s.put(&mut b, Table::ContactByDevice, &shown.device_key, &c.user_id);
                c.cert = new_cert;
                c.prekey = c.pending_prekey.take();
                self.save_sessions(s, &mut b, &c.user_id, PeerSessions::default());
            }
            c.verified = true;
            s.put(&mut b, Table::Contacts, &c.user_id.0, &c);
            self.apply(s, b)?;
            self.contacts_changed();
        }
        Ok(Verification {
            name: c.name,
            safety_number: number,
            verified: c.verified,
            key_changed: key_changed && !confirm,
        })
    }

    /// Remembers an address a contact's device was seen at (bounded).
    pub(crate) fn note_address(&self, s: &Store, device: &DeviceKey, addr: &str) -> Result<(), NodeError> {
        let Some(mut c) = self.contact_by_device(s, device)? else { return Ok(()) };
        if c.addrs.iter().any(|a| a == addr) {
            return Ok(());
        }
        c.addrs.push(addr.to_owned());
        if c.addrs.len() > 8 {
            c.addrs.remove(0);
        }
        let mut b = Batch::default();
        s.put(&mut b, Table::Contacts, &c.user_id.0, &c);
        self.apply(s, b)?;
        self.contacts_changed();
        Ok(())
    }

    // ---- sending ----

    pub(crate) fn ctx_conv<'a>(
        &self,
        s: &Store,
        ctx: &'a mut SealCtx,
        convid: ConvId,
    ) -> Result<&'a mut ConversationRec, NodeError> {
        Ok(match ctx.convs.entry(convid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.committed_conv(s, &convid)?),
        })
    }

    /// Another member's chains in `group` as last committed (cached).
    pub(crate) fn committed_peer_chains(
        &self,
        s: &Store,
        group: &ConvId,
        device: &DeviceKey,
    ) -> Result<PeerChainsRec, NodeError> {
        self.peer_chains.get_or_load(&(*group, *device), || {
            let key = crate::channels::chain_key(group, device);
            Ok(s.get::<PeerChainsRec>(Table::GroupKeys, &key)?.unwrap_or_default())
        })
    }

    /// My chain in `group` as last committed (cached), if I ever sent there.
    pub(crate) fn committed_my_chain(
        &self,
        s: &Store,
        group: &ConvId,
    ) -> Result<Option<MyChainRec>, NodeError> {
        self.my_chains.get_or_load(group, || {
            let key = crate::channels::chain_key(group, &self.me.device_key());
            Ok(s.get::<MyChainRec>(Table::GroupKeys, &key)?)
        })
    }

    /// A conversation's record as last committed (cached).
    fn committed_conv(&self, s: &Store, convid: &ConvId) -> Result<ConversationRec, NodeError> {
        self.convs.get_or_load(convid, || {
            Ok(s.get::<ConversationRec>(Table::Conversations, &convid.0)?.unwrap_or_default())
        })
    }

    /// Seals `content` for `contact` into the outbox (in `ctx`); returns the sequence number.
    /// On error nothing in `ctx` changes, so no sequence number is ever skipped.
    pub(crate) fn seal_into(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        contact: &ContactRec,
        content: &Content,
        message: Option<(MsgId, u64)>,
    ) -> Result<u64, NodeError> {
        if contact.removed {
            return Err(NodeError::Removed(contact.name.clone()));
        }
        if contact.pending_cert.is_some() {
            return Err(NodeError::KeyChanged(contact.name.clone()));
        }
        let cert = contact.device_cert()?;
        let prekey = contact.signed_prekey();
        let mut sessions = self.ctx_sessions(s, ctx, &contact.user_id)?;
        let convid = self.conv_with(&contact.user_id);
        let seq = self.ctx_conv(s, ctx, convid)?.next_seq.max(1);
        let to = Recipient { cert: &cert, prekey: prekey.as_ref() };
        let sealed = if ctx.sign_as_batch {
            sessions.seal_for_batch(&self.me, to, convid, seq, &content.encode())
        } else {
            sessions.seal(&self.me, to, convid, seq, &content.encode())
        };
        let env = sealed.map_err(|e| match e {
            dingo_crypto::CryptoError::UnknownSession => NodeError::NoSession(contact.name.clone()),
            other => other.into(),
        })?;
        let conv = self.ctx_conv(s, ctx, convid)?;
        conv.next_seq = seq + 1;
        conv.contact = Some(contact.user_id);
        let okey = self.next_outbox_key(s, &contact.user_id)?;
        ctx.effects.kick.insert(contact.user_id);
        let mut item = OutboxItem {
            envelope: Vec::new(),
            msg_id: message.map(|(id, _)| id),
            msg_key: message.map(|(id, sent_at)| message_key(&convid, sent_at, seq, &id)),
            conv: convid,
        };
        if ctx.sign_as_batch {
            ctx.unsigned.push((okey, item, env));
        } else {
            item.envelope = env.encode();
            s.put(&mut ctx.batch, Table::Outbox, &okey, &item);
            if ctx.hand_back {
                ctx.effects.fresh.push((contact.user_id, okey, item));
            }
        }
        ctx.sessions.insert(contact.user_id, sessions);
        Ok(seq)
    }

    /// Writes what a run of seals recorded: sessions and conversations once, atomically with
    /// the messages and outbox entries.
    pub(crate) fn commit_seals(&self, s: &Store, mut ctx: SealCtx) -> Result<Effects, NodeError> {
        let (entries, mut envs): (Vec<_>, Vec<_>) =
            std::mem::take(&mut ctx.unsigned).into_iter().map(|(k, item, env)| ((k, item), env)).unzip();
        for batch in envs.chunks_mut(SIGN_BATCH) {
            dingo_crypto::batch::sign_batch(&self.me, batch)?;
        }
        for ((okey, mut item), env) in entries.into_iter().zip(envs) {
            item.envelope = env.encode();
            s.put(&mut ctx.batch, Table::Outbox, &okey, &item);
            if ctx.hand_back {
                if let Some(uid) = outbox_recipient(&okey) {
                    ctx.effects.fresh.push((uid, okey, item));
                }
            }
        }
        for (convid, conv) in &ctx.convs {
            s.put(&mut ctx.batch, Table::Conversations, &convid.0, conv);
        }
        for (uid, sessions) in ctx.sessions {
            self.save_sessions(s, &mut ctx.batch, &uid, sessions);
        }
        for (group, chain) in &ctx.my_chains {
            s.put(
                &mut ctx.batch,
                Table::GroupKeys,
                &crate::channels::chain_key(group, &self.me.device_key()),
                chain,
            );
        }
        for ((group, device), chains) in &ctx.peer_chains {
            s.put(&mut ctx.batch, Table::GroupKeys, &crate::channels::chain_key(group, device), chains);
        }
        self.apply(s, ctx.batch)?;
        self.convs.put(ctx.convs);
        self.peer_chains.put(ctx.peer_chains);
        self.my_chains.put(ctx.my_chains.into_iter().map(|(group, chain)| (group, Some(chain))));
        Ok(ctx.effects)
    }

    /// Seals a text into the outbox (in `ctx`, written by [`Core::commit_seals`]).
    pub(crate) fn send_text(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        who: &str,
        text: &str,
        now: u64,
    ) -> Result<(MsgId, UserId), NodeError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(NodeError::TooLong(text.len(), MAX_TEXT_BYTES));
        }
        if text.is_empty() {
            return Err(NodeError::Empty);
        }
        self.send_direct(s, ctx, who, text, now, |id, sent_at| Content::Text {
            id,
            sent_at,
            text: text.to_owned(),
        })
    }

    /// Seals a chat message (a text, or a file shown as `text`) to a contact.
    pub(crate) fn send_direct(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        who: &str,
        text: &str,
        now: u64,
        make: impl FnOnce(MsgId, u64) -> Content,
    ) -> Result<(MsgId, UserId), NodeError> {
        let contact = self.contact(s, who)?;
        let convid = self.conv_with(&contact.user_id);
        // Per-conversation monotonic time keeps this sender's messages in order for everyone.
        let sent_at = now.max(self.ctx_conv(s, ctx, convid)?.last_at);
        let id = MsgId::random();
        let content = make(id, sent_at);
        let seq = self.seal_into(s, ctx, &contact, &content, Some((id, sent_at)))?;
        let rec = MessageRec::outgoing((id, convid, self.me.user_id()), text, sent_at, seq, Vec::new());
        let key = message_key(&convid, sent_at, seq, &id);
        s.put(&mut ctx.batch, Table::Messages, &key, &rec);
        let conv = self.ctx_conv(s, ctx, convid)?;
        conv.last_at = sent_at;
        conv.last_text = preview(text);
        conv.total += 1;
        Ok((id, contact.user_id))
    }

    // ---- reading ----

    /// When my 1:1 messages in `convid` were delivered.
    fn delivered_index(&self, s: &Store, convid: &ConvId) -> Result<DeliveredIndex, NodeError> {
        let runs = s.scan::<DeliveredRun>(Table::Delivered, &convid.0).map(|r| r.map(|(_, run)| run));
        Ok(DeliveredIndex::new(runs.collect::<Result<Vec<_>, _>>()?))
    }

    pub(crate) fn view(
        &self,
        rec: &MessageRec,
        contact: &ContactRec,
        delivered: &DeliveredIndex,
    ) -> MessageView {
        // A message record is written when sent; its delivery is in a run record (the earlier
        // time wins: a read receipt that came first fills in its own time).
        let (status, delivered_at) = match delivered.at(rec.seq) {
            Some(at) if rec.direction == Direction::Out && rec.status != Status::Failed => {
                (rec.status.max(Status::Delivered), Some(rec.delivered_at.map_or(at, |d| d.min(at))))
            }
            _ => (rec.status, rec.delivered_at),
        };
        let (from, from_user_id) = match rec.direction {
            Direction::Out => ("me".to_owned(), self.me.user_id().to_hex()),
            Direction::In => (contact.name.clone(), contact.user_id.to_hex()),
        };
        MessageView {
            id: rec.id.to_hex(),
            direction: rec.direction,
            from,
            from_user_id,
            text: rec.text.clone(),
            sent_at: rec.sent_at,
            received_at: rec.received_at,
            seq: rec.seq,
            status,
            delivered_at,
            read_at: rec.read_at,
            channel: None,
            members: Vec::new(),
            summary: None,
            read_by: None,
            delivered_to: None,
            recipients: None,
        }
    }

    pub(crate) fn messages(&self, s: &Store, who: &str) -> Result<Vec<MessageView>, NodeError> {
        if crate::channels::is_channel(who) {
            return self.channel_messages(s, who);
        }
        let contact = self.contact(s, who)?;
        let convid = self.conv_with(&contact.user_id);
        let delivered = self.delivered_index(s, &convid)?;
        s.scan::<MessageRec>(Table::Messages, &convid.0)
            .map(|r| r.map(|(_, m)| self.view(&m, &contact, &delivered)).map_err(NodeError::from))
            .collect()
    }

    /// Marks incoming messages read and queues read receipts. Returns the conversation and
    /// whether receipts were queued.
    pub(crate) fn read(
        &self,
        s: &Store,
        who: &str,
        now: u64,
    ) -> Result<(Vec<MessageView>, Effects), NodeError> {
        let mut ctx = SealCtx::default();
        if crate::channels::is_channel(who) {
            let views = self.read_channel(s, &mut ctx, who, now)?;
            let effects = self.commit_seals(s, ctx)?;
            return Ok((views, effects));
        }
        let contact = self.contact(s, who)?;
        let convid = self.conv_with(&contact.user_id);
        let mut newly_read = Vec::new();
        let mut out = Vec::new();
        let delivered = self.delivered_index(s, &convid)?;
        for item in s.scan::<MessageRec>(Table::Messages, &convid.0) {
            let (key, mut m) = item?;
            if m.direction == Direction::In && m.status != Status::Read {
                m.status = Status::Read;
                m.read_at = Some(now);
                newly_read.push(MsgRef { id: m.id, sent_at: m.sent_at, seq: m.seq });
                s.put(&mut ctx.batch, Table::Messages, &key, &m);
            }
            out.push(self.view(&m, &contact, &delivered));
        }
        self.ctx_conv(s, &mut ctx, convid)?.unread = 0;
        // A contact whose key changed gets no receipts until re-verified (they could not be
        // sealed to the pinned device anyway); nor does one removed, nor anyone when the user
        // turned read receipts off.
        let send_receipts = !newly_read.is_empty()
            && contact.pending_cert.is_none()
            && !contact.removed
            && !self.team_rec(s)?.no_read_receipts;
        if send_receipts {
            for chunk in newly_read.chunks(MAX_RECEIPT_IDS) {
                let receipt = Content::ReadReceipt { read: chunk.to_vec(), read_at: now };
                self.seal_into(s, &mut ctx, &contact, &receipt, None)?;
            }
        }
        let effects = self.commit_seals(s, ctx)?;
        Ok((out, effects))
    }

    pub(crate) fn inbox(&self, s: &Store) -> Result<Vec<ConversationView>, NodeError> {
        let mut out = Vec::new();
        for item in s.scan::<ConversationRec>(Table::Conversations, &[]) {
            let (convid, conv) = item?;
            if let Some(ch) = &conv.channel {
                out.push(ConversationView {
                    contact: format!("#{ch}"),
                    user_id: data_encoding::HEXLOWER.encode(&convid),
                    unread: conv.unread,
                    total: conv.total,
                    last_at: conv.last_at,
                    last_text: conv.last_text,
                });
                continue;
            }
            let Some(uid) = conv.contact else { continue };
            let Some(c) = s.get::<ContactRec>(Table::Contacts, &uid.0)? else { continue };
            out.push(ConversationView {
                contact: c.name,
                user_id: uid.to_hex(),
                unread: conv.unread,
                total: conv.total,
                last_at: conv.last_at,
                last_text: conv.last_text,
            });
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.last_at));
        Ok(out)
    }

    // ---- receiving ----

    pub(crate) fn unique_name(&self, s: &Store, wanted: &str, uid: &UserId) -> Result<String, NodeError> {
        let base: String = wanted.trim().trim_start_matches('#').chars().take(48).collect();
        let base = if base.is_empty() { "contact".to_owned() } else { base };
        if self.name_free(s, &base, uid)? {
            return Ok(base);
        }
        Ok(format!("{base}-{}", &uid.to_hex()[..8]))
    }

    /// Verifies, decrypts and stores one envelope (signature already checked) into `ctx`.
    /// Nothing changes unless the envelope is accepted; [`Core::commit`] writes the batch.
    pub(crate) fn accept(
        &self,
        s: &Store,
        ctx: &mut AcceptCtx,
        verified: &VerifiedEnvelope,
        now: u64,
    ) -> Result<Accepted, NodeError> {
        let env = verified.envelope();
        if env.kind == dingo_types::envelope::EnvelopeKind::Group {
            return self.accept_group(s, ctx, verified, now);
        }
        if env.recipient != self.me.device_key() {
            return Ok(Accepted::Rejected("addressed to another device".into()));
        }
        let rkey = replay_key(&env.group, &env.sender);
        let window = self.load_window(s, ctx, &rkey)?;
        if window.contains(env.seq) {
            return Ok(Accepted::Duplicate);
        }
        if !window.acceptable(env.seq) {
            return Ok(Accepted::Rejected("sequence number outside the replay window".into()));
        }
        // A contact with a pending key change is still pinned to this device: receiving from it
        // stays allowed.
        let known = match ctx.contacts.get(&env.sender) {
            Some(c) => c.clone(),
            None => {
                let c = self.contact_by_device(s, &env.sender)?;
                ctx.contacts.insert(env.sender, c.clone());
                c
            }
        };
        if let Some(c) = &known {
            if c.removed {
                return Ok(Accepted::Rejected(format!("{} was removed from the team", c.name)));
            }
        }
        let mut sessions = match &known {
            Some(c) => self.ctx_sessions(s, &ctx.seal, &c.user_id)?,
            None => PeerSessions::default(),
        };
        let opened = match sessions.open(&self.me, verified, now) {
            Ok(o) => o,
            Err(e) => return Ok(Accepted::Rejected(format!("cannot open: {e}"))),
        };
        let mut new_contact = None;
        let contact = match (known, opened.new_peer) {
            (Some(c), Some((cert, _))) if cert.encode() != c.cert => {
                return Ok(Accepted::Rejected("certificate does not match the pinned one".into()));
            }
            (Some(c), _) => c,
            (None, Some((cert, name))) => {
                let uid = UserId::from_user_key(&cert.user_key);
                if let Some(mut existing) = s.get::<ContactRec>(Table::Contacts, &uid.0)? {
                    // A new device key for a pinned user: block until the user re-verifies; the
                    // sender keeps retrying, so nothing is lost if they confirm.
                    if existing.pending_cert.as_deref() != Some(cert.encode().as_slice()) {
                        existing.pending_cert = Some(cert.encode());
                        existing.pending_prekey = None;
                        let mut b = Batch::default();
                        s.put(&mut b, Table::Contacts, &uid.0, &existing);
                        self.apply(s, b)?;
                        self.contacts_changed();
                        return Ok(Accepted::Retry(vec![NodeEvent::KeyChanged { contact: existing.name }]));
                    }
                    return Ok(Accepted::Retry(Vec::new()));
                }
                let rec = ContactRec {
                    user_id: uid,
                    name: self.unique_name(s, &name, &uid)?,
                    cert: cert.encode(),
                    prekey: None,
                    addrs: Vec::new(),
                    verified: false,
                    pending_cert: None,
                    pending_prekey: None,
                    added_at: now,
                    removed: false,
                };
                new_contact = Some(rec.clone());
                rec
            }
            (None, None) => return Ok(Accepted::Rejected("unknown sender".into())),
        };
        let convid = self.conv_with(&contact.user_id);
        if env.group != convid {
            return Ok(Accepted::Rejected("envelope names another conversation".into()));
        }
        let content = match Content::decode(&opened.plaintext) {
            Ok(c) => c,
            Err(e) => return Ok(Accepted::Rejected(format!("bad content: {e}"))),
        };
        let mut events = Vec::new();
        // A shared file is filed, then shown in the conversation like a text.
        let content = match content {
            Content::File { id, sent_at, file } => {
                let text = crate::files::file_line(&file);
                let rec = crate::files::FileRec {
                    manifest: file,
                    place: crate::files::Place::Direct(contact.user_id),
                    from: contact.user_id,
                    from_device: env.sender,
                    shared_at: sent_at,
                    msg: id,
                };
                self.record_file(s, &mut ctx.seal.batch, rec)?;
                Content::Text { id, sent_at, text }
            }
            other => other,
        };
        if !matches!(content, Content::Text { .. } | Content::ReadReceipt { .. }) {
            let is_delivered_receipt = matches!(content, Content::Delivered { .. });
            // Team, group-key and DING messages: their handlers seal replies with the session
            // just opened, and write nothing unless they accept.
            let before = ctx.seal.sessions.insert(contact.user_id, sessions.clone());
            match self.accept_control(s, &mut ctx.seal, &contact, env, content, now)? {
                Accepted::Stored(ev) => {
                    events = ev;
                    for (rkey, floor) in std::mem::take(&mut ctx.seal.window_floors) {
                        self.raise_window(s, ctx, rkey, floor)?;
                    }
                }
                other => {
                    match before {
                        Some(b) => ctx.seal.sessions.insert(contact.user_id, b),
                        None => ctx.seal.sessions.remove(&contact.user_id),
                    };
                    return Ok(other);
                }
            }
            // The sessions are in the context already, possibly advanced by replies sealed
            // with them: they must not be replaced by the copy taken before.
            if !is_delivered_receipt {
                // A receipt for a receipt would never end.
                ctx.note_relayed_envelope(env, contact.user_id, convid);
            }
            self.record_accepted(s, ctx, env, new_contact, &contact, None, rkey);
            return Ok(Accepted::Stored(events));
        }
        if let Content::Text { id, sent_at, .. } = &content {
            ctx.note_relayed(
                env,
                contact.user_id,
                convid,
                MsgRef { id: *id, sent_at: *sent_at, seq: env.seq },
            );
        }
        let conv = match ctx.seal.convs.entry(convid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.committed_conv(s, &convid)?),
        };
        conv.contact = Some(contact.user_id);
        match content {
            Content::Text { id, sent_at, text } => {
                let rec = MessageRec::incoming((id, convid, contact.user_id), &text, sent_at, env.seq, now);
                // Incoming messages need no id index: receipts only ever name outgoing ones.
                let key = message_key(&convid, sent_at, env.seq, &id);
                s.put(&mut ctx.seal.batch, Table::Messages, &key, &rec);
                conv.unread += 1;
                conv.total += 1;
                conv.last_at = conv.last_at.max(sent_at);
                conv.last_text = preview(&text);
                events.push(NodeEvent::Message {
                    from: contact.name.clone(),
                    id: id.to_hex(),
                    text,
                    sent_at,
                    channel: None,
                });
            }
            Content::ReadReceipt { read, read_at } => {
                for r in read {
                    let id = r.id;
                    // The reference says where the message is filed in this conversation; the
                    // record found must be ours and carry that id.
                    let key = message_key(&convid, r.sent_at, r.seq, &r.id);
                    let Some(mut m) = s.get::<MessageRec>(Table::Messages, &key)? else { continue };
                    if m.id != id || m.direction != Direction::Out || m.status == Status::Read {
                        continue;
                    }
                    m.status = Status::Read;
                    m.read_at = Some(read_at);
                    m.delivered_at.get_or_insert(read_at);
                    s.put(&mut ctx.seal.batch, Table::Messages, &key, &m);
                    events.push(NodeEvent::Read { id: id.to_hex(), by: contact.name.clone(), at: read_at });
                }
            }
            _ => {}
        }
        ctx.note_relayed_envelope(env, contact.user_id, convid);
        self.record_accepted(s, ctx, env, new_contact, &contact, Some(sessions), rkey);
        Ok(Accepted::Stored(events))
    }

    /// Team, channel-key, receipt and DING content arriving pairwise from `contact`.
    fn accept_control(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        contact: &ContactRec,
        env: &dingo_types::envelope::Envelope,
        content: Content,
        now: u64,
    ) -> Result<Accepted, NodeError> {
        match content {
            Content::TeamOps { .. }
            | Content::TeamSync { .. }
            | Content::JoinRequest { .. }
            | Content::JoinRefused { .. } => self.accept_team(s, ctx, contact, env, content, now),
            other => self.accept_channel_control(s, ctx, contact, env, other, now),
        }
    }

    /// Records what every accepted 1:1 envelope changes: a new contact, the replay record and
    /// the sessions.
    #[allow(clippy::too_many_arguments)]
    fn record_accepted(
        &self,
        s: &Store,
        ctx: &mut AcceptCtx,
        env: &dingo_types::envelope::Envelope,
        new_contact: Option<ContactRec>,
        contact: &ContactRec,
        sessions: Option<PeerSessions>,
        rkey: Vec<u8>,
    ) {
        if let Some(rec) = new_contact {
            s.put(&mut ctx.seal.batch, Table::ContactByDevice, &env.sender.0, &rec.user_id);
            s.put(&mut ctx.seal.batch, Table::Contacts, &rec.user_id.0, &rec);
            ctx.contacts.insert(env.sender, Some(rec));
            ctx.new_contacts = true;
        }
        self.note_seen(&contact.user_id);
        self.mark_received(ctx, rkey, env.seq);
        if let Some(sessions) = sessions {
            ctx.seal.sessions.insert(contact.user_id, sessions);
        }
    }

    pub(crate) fn note_seen(&self, uid: &UserId) {
        let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        // Before the saved times are loaded, record in a fresh map; loading keeps the newer.
        seen.get_or_insert_with(HashMap::new).insert(*uid, dingo_types::now_ms());
    }

    /// Loads the replay record for `rkey` into the context; says whether `seq` is new
    /// (`Ok(true)`), a duplicate (`Ok(false)`) or out of the window (`Err`).
    pub(crate) fn check_replay(
        &self,
        s: &Store,
        ctx: &mut AcceptCtx,
        rkey: &[u8],
        seq: u64,
    ) -> Result<Result<bool, String>, NodeError> {
        let window = self.load_window(s, ctx, rkey)?;
        if window.contains(seq) {
            return Ok(Ok(false));
        }
        if !window.acceptable(seq) {
            return Ok(Err("sequence number outside the replay window".into()));
        }
        Ok(Ok(true))
    }

    /// Counts every sequence number up to `floor` as received (at once, so later envelopes of
    /// the same batch are judged by the raised window).
    pub(crate) fn raise_window(
        &self,
        s: &Store,
        ctx: &mut AcceptCtx,
        rkey: Vec<u8>,
        floor: u64,
    ) -> Result<(), NodeError> {
        self.load_window(s, ctx, &rkey)?;
        if let Some(w) = ctx.windows.get_mut(&rkey) {
            if w.contiguous < floor {
                w.contiguous = floor;
                w.above.retain(|x| *x > floor);
                while w.above.remove(&(w.contiguous + 1)) {
                    w.contiguous += 1;
                }
                ctx.dirty_windows.insert(rkey);
            }
        }
        Ok(())
    }

    /// The replay window `rkey` names, loaded into the context (from the cache of committed
    /// windows, else the store) on first use in a job.
    fn load_window<'c>(
        &self,
        s: &Store,
        ctx: &'c mut AcceptCtx,
        rkey: &[u8],
    ) -> Result<&'c SeqWindow, NodeError> {
        if !ctx.windows.contains_key(rkey) {
            let w = self.windows.get_or_load(&rkey.to_vec(), || {
                Ok::<_, NodeError>(s.get::<SeqWindow>(Table::Replay, rkey)?.unwrap_or_default())
            })?;
            ctx.windows.insert(rkey.to_vec(), w);
        }
        Ok(&ctx.windows[rkey])
    }

    pub(crate) fn mark_received(&self, ctx: &mut AcceptCtx, rkey: Vec<u8>, seq: u64) {
        if let Some(w) = ctx.windows.get_mut(&rkey) {
            w.insert(seq);
        }
        ctx.dirty_windows.insert(rkey);
    }

    /// Writes everything a batch of accepts recorded, in one atomic sled batch: each message is
    /// one record, and sessions, replay windows and conversations once per batch.
    pub(crate) fn commit(&self, s: &Store, mut ctx: AcceptCtx) -> Result<Effects, NodeError> {
        for key in &ctx.dirty_windows {
            if let Some(w) = ctx.windows.get(key) {
                s.put(&mut ctx.seal.batch, Table::Replay, key, w);
            }
        }
        for ((author, conv), (refs, seqs)) in std::mem::take(&mut ctx.relayed) {
            let Some(contact) = self.with_contact(s, &author, |c| c.clone())? else { continue };
            if contact.removed {
                continue;
            }
            let chunks = refs.len().max(seqs.len()).div_ceil(MAX_RECEIPT_IDS);
            for i in 0..chunks {
                let receipt = Content::Delivered {
                    conv,
                    delivered: refs.iter().skip(i * MAX_RECEIPT_IDS).take(MAX_RECEIPT_IDS).copied().collect(),
                    envelopes: seqs.iter().skip(i * MAX_RECEIPT_IDS).take(MAX_RECEIPT_IDS).copied().collect(),
                    at: dingo_types::now_ms(),
                };
                if let Err(e) = self.seal_into(s, &mut ctx.seal, &contact, &receipt, None) {
                    tracing::debug!(to = %contact.name, "delivery receipt not sent: {e}");
                }
            }
        }
        let new_contacts = ctx.new_contacts;
        let windows = std::mem::take(&mut ctx.windows);
        let effects = self.commit_seals(s, ctx.seal)?;
        self.windows.put(windows);
        if new_contacts {
            self.contacts_changed();
        }
        Ok(effects)
    }

    // ---- delivery bookkeeping ----

    /// Contacts with something in the outbox.
    pub(crate) fn pending_contacts(&self, s: &Store) -> Result<HashSet<UserId>, NodeError> {
        let mut out = HashSet::new();
        for item in s.scan::<OutboxItem>(Table::Outbox, &[]) {
            let (key, _) = item?;
            out.extend(outbox_recipient(&key));
        }
        out.extend(self.pending_group_members(s)?);
        Ok(out)
    }

    /// The next envelopes for `uid` from where `run` stands: its 1:1 outbox oldest first, then
    /// my group envelopes from its cursors, within the batch bounds; and whether they are all
    /// there is. `run` moves past them.
    pub(crate) fn outbox_batch(
        &self,
        s: &Store,
        uid: &UserId,
        run: &mut RunCursor,
    ) -> Result<Option<(DeviceKey, OutgoingBatch, bool)>, NodeError> {
        let Some(device) = self.with_contact(s, uid, |c| c.device_key())? else { return Ok(None) };
        let device = device?;
        let mut items = Vec::new();
        let mut bytes = 0;
        let room = (DELIVERY_BATCH, DELIVERY_BATCH_BYTES);
        let mut exhausted = true;
        for item in s.scan_after::<OutboxItem>(Table::Outbox, &uid.0, run.outbox.as_deref()) {
            let (key, it) = item?;
            bytes += it.envelope.len();
            if !items.is_empty() && (items.len() >= room.0 || bytes > room.1) {
                exhausted = false;
                break;
            }
            run.outbox = Some(key.clone());
            let sent = Sent { source: Source::Outbox(key), msg_id: it.msg_id, msg_key: it.msg_key };
            items.push((sent, it.envelope));
        }
        if exhausted {
            exhausted = self.group_items(s, uid, run, &mut items, &mut bytes, room)?;
        }
        // `exhausted`: nothing else was queued when this batch was read (saves a second look).
        Ok(Some((device, items, exhausted)))
    }

    /// Records the recipient's answers for a delivered batch.
    pub(crate) fn delivery_results(
        &self,
        s: &Store,
        uid: &UserId,
        sent: &[Sent],
        results: &[DeliveryStatus],
    ) -> Result<Vec<NodeEvent>, NodeError> {
        let mut b = Batch::default();
        let events = self.delivery_results_into(s, &mut b, uid, sent, results)?;
        self.apply(s, b)?;
        Ok(events)
    }

    /// [`Core::delivery_results`] into `b`: it writes only keys of `uid`'s (its outbox entries,
    /// cursors and receipts), so several contacts' answers can share one batch.
    pub(crate) fn delivery_results_into(
        &self,
        s: &Store,
        b: &mut Batch,
        uid: &UserId,
        sent: &[Sent],
        results: &[DeliveryStatus],
    ) -> Result<Vec<NodeEvent>, NodeError> {
        let name = self.with_contact(s, uid, |c| c.name.clone())?.unwrap_or_default();
        let mut events = Vec::new();
        let mut delivered: HashMap<(ConvId, u64), Vec<u64>> = HashMap::new();
        // Per group, where the member's cursor moves: past every answered envelope up to the
        // first one it could not take now.
        let mut cursors: std::collections::BTreeMap<ConvId, u64> = Default::default();
        let mut held: HashSet<ConvId> = HashSet::new();
        for (entry, status) in sent.iter().zip(results) {
            let (new_status, at) = match *status {
                DeliveryStatus::Stored(at) | DeliveryStatus::Duplicate(at) => (Status::Delivered, at),
                DeliveryStatus::Rejected => (Status::Failed, 0),
                DeliveryStatus::Retry => {
                    if let Source::Group(group, _) = entry.source {
                        held.insert(group);
                    }
                    continue;
                }
            };
            let group = match &entry.source {
                Source::Outbox(key) => {
                    s.delete(b, Table::Outbox, key);
                    false
                }
                Source::Group(group, seq) => {
                    if !held.contains(group) {
                        cursors.insert(*group, seq + 1);
                    }
                    true
                }
            };
            let (Some(id), Some(mkey)) = (&entry.msg_id, &entry.msg_key) else { continue };
            if group {
                // Per member: the message record stays as it is.
                if new_status == Status::Delivered && self.group_delivered(s, b, mkey, uid, at)? {
                    events.push(NodeEvent::Delivered { id: id.to_hex(), to: name.clone(), at });
                }
                continue;
            }
            if new_status == Status::Delivered {
                if let Some((conv, seq)) = split_message_key(mkey) {
                    delivered.entry((conv, at)).or_default().push(seq);
                    events.push(NodeEvent::Delivered { id: id.to_hex(), to: name.clone(), at });
                    continue;
                }
            }
            let Some(mut m) = s.get::<MessageRec>(Table::Messages, mkey)? else { continue };
            if m.status < new_status || new_status == Status::Failed {
                m.status = new_status;
            }
            if new_status == Status::Delivered {
                m.delivered_at.get_or_insert(at);
                events.push(NodeEvent::Delivered { id: id.to_hex(), to: name.clone(), at });
            }
            s.put(b, Table::Messages, mkey, &m);
        }
        self.advance_cursors(s, b, uid, &cursors)?;
        // One record per conversation and batch says which messages were delivered, rather
        // than a rewrite of each message record.
        for ((conv, at), seqs) in delivered {
            let run = DeliveredRun::new(at, seqs);
            let first = run.seqs.first().map(|(lo, _)| *lo).unwrap_or(0);
            let key = [conv.0.as_slice(), &first.to_be_bytes(), &rand::random::<[u8; 8]>()].concat();
            s.put(b, Table::Delivered, &key, &run);
        }
        Ok(events)
    }

    /// Marks messages as transmitted but unacknowledged.
    pub(crate) fn mark_sent(&self, s: &Store, message_keys: &[Vec<u8>]) -> Result<(), NodeError> {
        let mut b = Batch::default();
        for mkey in message_keys {
            let Some(mut m) = s.get::<MessageRec>(Table::Messages, mkey)? else { continue };
            if m.status == Status::Queued {
                m.status = Status::Sent;
                s.put(&mut b, Table::Messages, mkey, &m);
            }
        }
        self.apply(s, b)
    }
}

#[cfg(test)]
mod tests {
    use super::Committed;

    #[test]
    fn a_committed_cache_loads_once_takes_applied_records_and_stays_bounded() {
        let cache: Committed<u64, &str> = Committed::default();
        let mut loads = 0;
        let mut load = |v| {
            loads += 1;
            Ok::<_, ()>(v)
        };
        assert_eq!(cache.get_or_load(&1, || load("stored")), Ok("stored"));
        assert_eq!(cache.get_or_load(&1, || load("not read again")), Ok("stored"));
        cache.put([(1, "applied")]);
        assert_eq!(cache.get_or_load(&1, || load("not read again")), Ok("applied"));
        // A failed load caches nothing.
        assert_eq!(cache.get_or_load(&2, || Err(())), Err(()));
        assert_eq!(cache.get_or_load(&2, || load("read")), Ok("read"));
        cache.clear();
        assert_eq!(
            cache.get_or_load(&1, || load("read after a failed batch")),
            Ok("read after a failed batch")
        );
        assert_eq!(loads, 3);

        cache.put((0..Committed::<u64, &str>::MAX as u64 + 10).map(|k| (k, "x")));
        assert!(cache.locked().len() <= Committed::<u64, &str>::MAX);
    }
}
