//! Store-and-forward (DESIGN.md §6), the parts that run as store jobs: the group logs that
//! members serve each other when they meet, and the bounded mailbox of 1:1 mail a node carries
//! for its contacts. The network side is in `carrier.rs`; the sync rules in [`crate::sync`].
//!
//! - Every group envelope a node stores (its own and accepted ones of other members) is kept in
//!   `GroupLog` under (group, author device, sequence number). When two members meet, each asks
//!   the other with its "have" vector for every channel both belong to, and stores what comes
//!   back through the same checks as a direct delivery. A carrier only serves groups it is a
//!   member of, to members of them: it holds only sealed envelopes it could read anyway.
//! - 1:1 mail the author could not deliver is handed to connected contacts, who keep it in
//!   `Mailbox` (bounded per recipient and in total, by author and sequence number) and hand it on when they meet the recipient.
//!   The carrier cannot open it: it is sealed to the recipient's ratchet.
//! - The recipient of anything that reached it through another node tells the author with a
//!   pairwise `Delivered` receipt (which may itself travel through carriers).

use crate::chat::Core;
use crate::records::{ContactRec, OutboxItem};
use crate::sync::{Budget, Entry, LogSource, Priority, SeqWindow};
use crate::NodeError;
use dingo_crypto::batch::Verifier;
use dingo_store::{Batch, Store, StoreError, Table};
use dingo_types::envelope::{Envelope, EnvelopeKind};
use dingo_types::limits::{MAX_ENVELOPES_PER_REQUEST, MAX_FRAME_BYTES, MAX_SYNC_GROUPS};
use dingo_types::wire::{DeliveryStatus, GroupHave};
use dingo_types::{ConvId, DeviceKey, UserId};
use serde::{Deserialize, Serialize};

/// What one sync answer may carry (room left in the frame for its header).
pub(crate) const SYNC_BUDGET: Budget =
    Budget { envelopes: MAX_ENVELOPES_PER_REQUEST, bytes: MAX_FRAME_BYTES - 64 * 1024 };
/// Most envelopes a node carries for one recipient device.
pub(crate) const MAILBOX_PER_RECIPIENT: usize = 5_000;
/// Most envelopes a node carries for one recipient from one sender.
pub(crate) const MAILBOX_PER_SENDER: usize = 1_000;
/// Most envelopes a node carries in all.
pub(crate) const MAILBOX_TOTAL: usize = 50_000;
/// Most mailbox envelopes handed on in one request.
pub(crate) const MAIL_BATCH: usize = 256;

/// Envelopes with the store keys they came from (to delete them once handed on).
pub(crate) type KeyedEnvelopes = Vec<(Vec<u8>, Vec<u8>)>;

/// `GroupLog` key: group, author device, sequence number (big-endian, so a scan is in order).
pub(crate) fn group_log_key(group: &ConvId, author: &DeviceKey, seq: u64) -> Vec<u8> {
    [group.0.as_slice(), &author.0, &seq.to_be_bytes()].concat()
}

/// A group envelope as kept in `GroupLog`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoggedEnv {
    pub priority: Priority,
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

/// 1:1 mail carried for someone else.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MailRec {
    /// Who handed it over.
    pub depositor: DeviceKey,
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    pub at: u64,
}

/// `Mailbox` key: recipient, author, the author's sequence number (so mail is handed on in
/// each author's order, and a second copy of an envelope finds the first).
fn mail_key(env: &Envelope) -> Vec<u8> {
    [env.recipient.0.as_slice(), &env.sender.0, &env.seq.to_be_bytes()].concat()
}

/// The first envelopes of `items` (skipping `None`s) within one request's bounds.
fn first_batch(
    items: impl Iterator<Item = Result<Option<(Vec<u8>, Vec<u8>)>, StoreError>>,
) -> Result<KeyedEnvelopes, NodeError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for item in items {
        let Some((key, env)) = item? else { continue };
        bytes += env.len();
        if !out.is_empty() && (out.len() >= MAIL_BATCH || bytes > SYNC_BUDGET.bytes) {
            break;
        }
        out.push((key, env));
    }
    Ok(out)
}

/// A sync answer, and what serving it leaves to do.
pub(crate) struct ServedSync {
    pub envs: Vec<Vec<u8>>,
    pub more: bool,
    /// How many of the envelopes other members wrote.
    pub carried: usize,
    /// The asker, whom my delivery run owes the rest of my own envelopes.
    pub push_to: Option<UserId>,
}

/// A node's group logs in its sled store, as the sync rules see them.
struct SledLog<'a> {
    core: &'a Core,
    s: &'a Store,
    /// My own envelopes from this sequence number on are left out (my delivery run pushes them
    /// to the asker).
    mine_from: Option<u64>,
}

impl LogSource for SledLog<'_> {
    type Error = StoreError;

    fn windows(&self, group: &ConvId) -> Result<Vec<(DeviceKey, SeqWindow)>, StoreError> {
        let mut out = Vec::new();
        for item in self.s.scan::<SeqWindow>(Table::Replay, &group.0) {
            let (key, w) = item?;
            if let Some(author) = key.get(32..64).and_then(|a| <[u8; 32]>::try_from(a).ok()) {
                out.push((DeviceKey(author), w));
            }
        }
        // My own envelopes are numbered by the conversation's counter.
        let mine = self
            .s
            .get::<crate::records::ConversationRec>(Table::Conversations, &group.0)?
            .map_or(0, |c| c.next_seq.saturating_sub(1))
            .min(self.mine_from.map_or(u64::MAX, |from| from.saturating_sub(1)));
        if mine > 0 {
            out.push((self.core.me.device_key(), SeqWindow { contiguous: mine, above: Default::default() }));
        }
        Ok(out)
    }

    fn entries_after(
        &self,
        group: &ConvId,
        author: &DeviceKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let prefix = [group.0.as_slice(), &author.0].concat();
        let start = group_log_key(group, author, after);
        let below = match self.mine_from {
            Some(from) if *author == self.core.me.device_key() => from,
            _ => u64::MAX,
        };
        let mut out = Vec::new();
        for item in self.s.scan_after::<LoggedEnv>(Table::GroupLog, &prefix, Some(&start)).take(limit) {
            let (key, rec) = item?;
            let seq = key.get(64..72).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes);
            if seq >= below {
                break;
            }
            out.push(Entry { author: *author, seq, priority: rec.priority, bytes: rec.envelope });
        }
        Ok(out)
    }
}

impl Core {
    /// Keeps a group envelope in the group log, to serve to members who lack it.
    pub(crate) fn log_group_envelope(&self, s: &Store, b: &mut Batch, env: &Envelope, priority: Priority) {
        let rec = LoggedEnv { priority, envelope: env.encode() };
        s.put(b, Table::GroupLog, &group_log_key(&env.group, &env.sender, env.seq), &rec);
    }

    /// Groups (channels, projects, documents) both this node's user and `peer`'s are in.
    fn common_groups(&self, s: &Store, peer: &DeviceKey) -> Result<Vec<ConvId>, NodeError> {
        let Some((_, state)) = self.team_state(s)? else { return Ok(Vec::new()) };
        let Some(them) = state.members.iter().find(|(_, m)| m.device_key == peer.0).map(|(u, _)| *u) else {
            return Ok(Vec::new());
        };
        let me = self.me.user_id();
        // Channels, projects and documents: every group both belong to.
        let mut groups: Vec<ConvId> = state
            .channels
            .values()
            .chain(state.projects.values())
            .chain(state.docs.values())
            .filter(|c| {
                let members = state.channel_members(c);
                members.contains(&me) && members.contains(&them)
            })
            .map(|c| c.id)
            .collect();
        groups.sort();
        groups.truncate(MAX_SYNC_GROUPS);
        Ok(groups)
    }

    /// What to ask `peer` for: my have vector of every channel we share; and per channel, the
    /// devices of its other members (authors who push their own envelopes to me while we are
    /// connected, so a pull from someone else can leave them out).
    pub(crate) fn sync_request(
        &self,
        s: &Store,
        peer: &DeviceKey,
    ) -> Result<(Vec<GroupHave>, Vec<Vec<DeviceKey>>), NodeError> {
        let log = SledLog { core: self, s, mine_from: None };
        let groups = self.common_groups(s, peer)?;
        let state = self.team_state(s)?.map(|(_, st)| st);
        let me = self.me.device_key();
        let mut asks = Vec::with_capacity(groups.len());
        let mut authors = Vec::with_capacity(groups.len());
        for group in groups {
            asks.push(GroupHave { group, have: crate::sync::have(&log, &group)? });
            let members = state.as_ref().and_then(|st| {
                let (_, chan) = st.group_by_id(&group)?;
                Some(
                    st.channel_members(chan)
                        .iter()
                        .filter_map(|u| st.members.get(u).map(|m| DeviceKey(m.device_key)))
                        .filter(|d| *d != me && d != peer)
                        .collect(),
                )
            });
            authors.push(members.unwrap_or_default());
        }
        Ok((asks, authors))
    }

    /// Answers `peer`'s sync request: envelopes of shared channels it lacks, most urgent first;
    /// whether there is more; how many of them other members wrote (carried for others); and
    /// the peer's user id if my delivery run must push it the rest of my own envelopes.
    ///
    /// My own envelopes from the peer's delivery cursor on are left out: my delivery run sends
    /// those, and answering them here too had each one reach a returning member twice.
    pub(crate) fn serve_sync(
        &self,
        s: &Store,
        peer: &DeviceKey,
        asked: &[GroupHave],
    ) -> Result<ServedSync, NodeError> {
        let shared = self.common_groups(s, peer)?;
        let asker = self.contact_by_device(s, peer)?.map(|c| c.user_id);
        let me = self.me.device_key();
        let mut budget = SYNC_BUDGET;
        let (mut out, mut more, mut carried) = (Vec::new(), false, 0);
        let mut push_to = None;
        for g in asked.iter().filter(|g| shared.binary_search(&g.group).is_ok()) {
            if budget.envelopes == 0 || budget.bytes == 0 {
                more = true;
                break;
            }
            let mine_from = match &asker {
                Some(uid) => self.stored_cursor(s, uid, &g.group)?,
                None => None,
            };
            if let (Some(from), Some(uid)) = (mine_from, asker) {
                if Self::my_next_seq(s, &g.group)? > from {
                    push_to = Some(uid);
                }
            }
            let log = SledLog { core: self, s, mine_from };
            let (entries, left) = crate::sync::missing(&log, &g.group, &g.have, budget)?;
            more |= left;
            for e in entries {
                budget.envelopes -= 1;
                budget.bytes = budget.bytes.saturating_sub(e.bytes.len());
                carried += usize::from(e.author != me);
                out.push(e.bytes);
            }
        }
        Ok(ServedSync { envs: out, more, carried, push_to })
    }

    /// Takes 1:1 mail from `depositor` (a contact) to carry to other contacts.
    pub(crate) fn carry(
        &self,
        s: &Store,
        depositor: &DeviceKey,
        envs: Vec<Vec<u8>>,
        now: u64,
    ) -> Result<(Vec<DeliveryStatus>, Vec<DeviceKey>), NodeError> {
        let refuse = |n| (vec![DeliveryStatus::Rejected; n], Vec::new());
        match self.contact_by_device(s, depositor)? {
            Some(c) if !c.removed => {}
            _ => return Ok(refuse(envs.len())),
        }
        let mut total = s.count(Table::Mailbox, &[]);
        let mut b = Batch::default();
        let mut statuses = Vec::with_capacity(envs.len());
        let mut taken = Vec::new();
        // Envelopes an author sealed in one run share a signature: check each batch root once.
        let mut verifier = Verifier::default();
        for bytes in envs {
            statuses.push(self.carry_one(
                s,
                &mut b,
                &mut verifier,
                depositor,
                bytes,
                now,
                &mut total,
                &mut taken,
            )?);
        }
        self.apply(s, b)?;
        Ok((statuses, taken.into_iter().map(|(recipient, _)| recipient).collect()))
    }

    #[allow(clippy::too_many_arguments)]
    fn carry_one(
        &self,
        s: &Store,
        b: &mut Batch,
        verifier: &mut Verifier,
        depositor: &DeviceKey,
        bytes: Vec<u8>,
        now: u64,
        total: &mut usize,
        taken: &mut Vec<(DeviceKey, DeviceKey)>,
    ) -> Result<DeliveryStatus, NodeError> {
        let Ok(env) = Envelope::decode(&bytes) else { return Ok(DeliveryStatus::Rejected) };
        if env.kind != EnvelopeKind::Direct || env.recipient == self.me.device_key() {
            return Ok(DeliveryStatus::Rejected);
        }
        // Only mail between people this node knows, and only intact mail, takes its space.
        let known = |d: &DeviceKey| -> Result<bool, NodeError> {
            Ok(self.contact_by_device(s, d)?.is_some_and(|c: ContactRec| !c.removed))
        };
        if !known(&env.recipient)? || !known(&env.sender)? || verifier.verify(env.clone()).is_err() {
            return Ok(DeliveryStatus::Rejected);
        }
        let key = mail_key(&env);
        if s.get::<MailRec>(Table::Mailbox, &key)?.is_some() {
            return Ok(DeliveryStatus::Duplicate(now));
        }
        // One sender cannot fill a recipient's box: others' mail still finds room.
        let queued = s.count(Table::Mailbox, &env.recipient.0)
            + taken.iter().filter(|(r, _)| *r == env.recipient).count();
        let from_sender = s.count(Table::Mailbox, &key[..64])
            + taken.iter().filter(|(r, f)| *r == env.recipient && *f == env.sender).count();
        if *total >= MAILBOX_TOTAL || queued >= MAILBOX_PER_RECIPIENT || from_sender >= MAILBOX_PER_SENDER {
            return Ok(DeliveryStatus::Rejected);
        }
        *total += 1;
        s.put(b, Table::Mailbox, &key, &MailRec { depositor: *depositor, envelope: bytes, at: now });
        taken.push((env.recipient, env.sender));
        Ok(DeliveryStatus::Stored(now))
    }

    /// Mail this node carries for `device`, oldest first within the batch bounds.
    pub(crate) fn mail_for(&self, s: &Store, device: &DeviceKey) -> Result<KeyedEnvelopes, NodeError> {
        let mail = s
            .scan::<MailRec>(Table::Mailbox, &device.0)
            .map(|item| item.map(|(k, rec)| Some((k, rec.envelope))));
        first_batch(mail)
    }

    /// Drops carried mail that reached its recipient (or that it refused).
    pub(crate) fn mail_done(&self, s: &Store, keys: &[Vec<u8>]) -> Result<(), NodeError> {
        let mut b = Batch::default();
        for k in keys {
            s.delete(&mut b, Table::Mailbox, k);
        }
        self.apply(s, b)
    }

    /// 1:1 envelopes waiting for `uid`, to hand to carriers (group messages travel by sync).
    pub(crate) fn handoff_batch(&self, s: &Store, uid: &UserId) -> Result<KeyedEnvelopes, NodeError> {
        let direct = s
            .scan::<OutboxItem>(Table::Outbox, &uid.0)
            .map(|item| item.map(|(k, it)| (!it.envelope.is_empty()).then_some((k, it.envelope))));
        first_batch(direct)
    }

    /// Whether `device` belongs to a contact this node may hand mail to (not removed).
    pub(crate) fn is_live_contact(&self, s: &Store, device: &DeviceKey) -> Result<Option<UserId>, NodeError> {
        Ok(self.contact_by_device(s, device)?.filter(|c| !c.removed).map(|c| c.user_id))
    }
}

fn transport_of(addr: &str) -> Option<String> {
    if addr.contains("/quic") {
        Some("quic".into())
    } else if addr.contains("/tcp/") {
        Some("tcp".into())
    } else {
        None
    }
}

impl Core {
    /// Every contact's device and every other device met this run, with what is known of it.
    pub(crate) fn peers_view(
        &self,
        s: &Store,
        live: &std::collections::HashMap<[u8; 32], crate::carrier::LivePeer>,
    ) -> Result<Vec<crate::records::PeerView>, NodeError> {
        let seen = self.seen(s)?;
        let members = self.team_state(s)?.map(|(_, st)| st).unwrap_or_default();
        let mut out = Vec::new();
        let mut listed = std::collections::HashSet::new();
        for c in self.contacts(s)?.iter() {
            let device = c.device_key()?;
            listed.insert(device.0);
            let l = live.get(&device.0);
            let address = l.and_then(|l| l.1.clone()).or_else(|| c.addrs.first().cloned());
            out.push(crate::records::PeerView {
                name: Some(c.name.clone()),
                user_id: Some(c.user_id.to_hex()),
                device_id: crate::chat::peer_id_string(&device.0),
                connected: l.is_some_and(|l| l.0),
                transport: address.as_deref().and_then(transport_of),
                address,
                last_seen: l.map(|l| l.2).into_iter().chain(seen.get(&c.user_id).copied()).max(),
                last_sync: l.and_then(|l| l.3),
                queue: s.count(Table::Outbox, &c.user_id.0) + self.group_queue_len(s, &c.user_id)?,
                mailbox: s.count(Table::Mailbox, &device.0),
                carried_for_others: l.map_or(0, |l| l.4),
                member: members.members.contains_key(&c.user_id),
                removed: c.removed,
            });
        }
        for (device, l) in live {
            if listed.contains(device) {
                continue;
            }
            out.push(crate::records::PeerView {
                name: None,
                user_id: None,
                device_id: crate::chat::peer_id_string(device),
                connected: l.0,
                transport: l.1.as_deref().and_then(transport_of),
                address: l.1.clone(),
                last_seen: Some(l.2),
                last_sync: l.3,
                queue: 0,
                mailbox: s.count(Table::Mailbox, device),
                carried_for_others: l.4,
                member: false,
                removed: false,
            });
        }
        out.sort_by(|a, b| (!a.connected, &a.name).cmp(&(!b.connected, &b.name)));
        Ok(out)
    }
}
