//! Group fan-out. A group envelope of mine is stored once, in the group log; each member has,
//! per group, one cursor naming my next envelope to deliver to it. Sending to a channel of
//! fifty thus writes the envelope and one small record, not fifty outbox entries; a member's
//! delivery run reads its 1:1 outbox first, then my group log from each of its cursors, and the
//! member's answers move the cursors.
//!
//! A cursor starts at the envelope that first carries my chain key to the member (and never
//! moves back), is ignored while the member is out of the group, and is dropped when the member
//! leaves the team.

use crate::chat::Core;
use crate::records::OutboxItem;
use crate::relay::{group_log_key, LoggedEnv};
use crate::NodeError;
use dingo_store::{Batch, Store, Table};
use dingo_types::{ConvId, MsgId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// `Meta` key present once this store keeps group deliveries as cursors.
const CURSORS_MARK: &[u8] = b"group-cursors";

/// Which message one of my group envelopes carries (for that message's per-member receipts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupSentRec {
    pub msg_id: Option<MsgId>,
    #[serde(with = "serde_bytes")]
    pub msg_key: Option<Vec<u8>>,
}

/// `GroupCursors` key: member, then group (so one scan finds a member's cursors).
fn cursor_key(uid: &UserId, group: &ConvId) -> Vec<u8> {
    [uid.0.as_slice(), &group.0].concat()
}

/// `GroupSent` key: group, then sequence number (big-endian, so a scan is in order).
fn sent_key(group: &ConvId, seq: u64) -> Vec<u8> {
    [group.0.as_slice(), &seq.to_be_bytes()].concat()
}

/// Where a transmitted envelope came from, so its answer can settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A 1:1 outbox entry (deleted once answered).
    Outbox(Vec<u8>),
    /// My group envelope with this sequence number (the member's cursor moves past it).
    Group(ConvId, u64),
}

/// One envelope on its way to a member, and what it carries.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub source: Source,
    pub msg_id: Option<MsgId>,
    /// The message record's key, for its status or the member's receipt.
    pub msg_key: Option<Vec<u8>>,
}

impl Sent {
    /// The outbox entry this came from, if it did.
    pub(crate) fn outbox_key(&self) -> Option<&[u8]> {
        match &self.source {
            Source::Outbox(key) => Some(key),
            Source::Group(..) => None,
        }
    }
}

/// How far one member's delivery run has read: past this outbox key, and per group up to
/// (not including) this sequence number. Positions only move forward; the stored cursors move
/// when answers come.
#[derive(Debug, Default, Clone)]
pub(crate) struct RunCursor {
    pub outbox: Option<Vec<u8>>,
    pub groups: BTreeMap<ConvId, u64>,
}

impl Core {
    /// Queues my group envelope `seq` (carrying `msg`): notes which message it is, and starts a
    /// cursor there for each member in `newly_keyed` (who got my chain key with it) that has
    /// none yet. Members who had the key already have their cursors.
    pub(crate) fn queue_group(
        &self,
        s: &Store,
        b: &mut Batch,
        (group, seq): (ConvId, u64),
        msg: (Option<MsgId>, Option<Vec<u8>>),
        newly_keyed: &[UserId],
    ) -> Result<(), NodeError> {
        s.put(b, Table::GroupSent, &sent_key(&group, seq), &GroupSentRec { msg_id: msg.0, msg_key: msg.1 });
        for uid in newly_keyed {
            let key = cursor_key(uid, &group);
            // An earlier cursor stays: what it still points at is the member's too.
            if s.get::<u64>(Table::GroupCursors, &key)?.is_none() {
                s.put(b, Table::GroupCursors, &key, &seq);
            }
        }
        Ok(())
    }

    /// `uid`'s cursors in groups it shares with me now.
    fn live_cursors(&self, s: &Store, uid: &UserId) -> Result<Vec<(ConvId, u64)>, NodeError> {
        let Some((_, state)) = self.team_state(s)? else { return Ok(Vec::new()) };
        let me = self.me.user_id();
        let mut out = Vec::new();
        for item in s.scan::<u64>(Table::GroupCursors, &uid.0) {
            let (key, next) = item?;
            let Some(group) = key.get(16..48).and_then(|g| <[u8; 32]>::try_from(g).ok()).map(ConvId) else {
                continue;
            };
            let Some((_, chan)) = state.group_by_id(&group) else {
                continue;
            };
            let members = state.channel_members(chan);
            if members.contains(uid) && members.contains(&me) {
                out.push((group, next));
            }
        }
        Ok(out)
    }

    /// Appends my group envelopes for `uid` from where `run` stands, while `room` (count,
    /// bytes) allows; returns whether every one was taken.
    pub(crate) fn group_items(
        &self,
        s: &Store,
        uid: &UserId,
        run: &mut RunCursor,
        items: &mut Vec<(Sent, Vec<u8>)>,
        bytes: &mut usize,
        room: (usize, usize),
    ) -> Result<bool, NodeError> {
        let me = self.me.device_key();
        for (group, stored) in self.live_cursors(s, uid)? {
            let from = run.groups.get(&group).copied().unwrap_or(0).max(stored);
            let prefix = [group.0.as_slice(), &me.0].concat();
            // Sequence numbers start at 1: scanning after `from - 1` starts at `from`.
            let after = group_log_key(&group, &me, from.saturating_sub(1));
            for item in s.scan_after::<LoggedEnv>(Table::GroupLog, &prefix, Some(&after)) {
                let (key, rec) = item?;
                let Some(seq) = key.get(64..72).and_then(|b| <[u8; 8]>::try_from(b).ok()) else { continue };
                let seq = u64::from_be_bytes(seq);
                *bytes += rec.envelope.len();
                if !items.is_empty() && (items.len() >= room.0 || *bytes > room.1) {
                    return Ok(false);
                }
                let msg = s.get::<GroupSentRec>(Table::GroupSent, &sent_key(&group, seq))?;
                let (msg_id, msg_key) = msg.map_or((None, None), |m| (m.msg_id, m.msg_key));
                items.push((Sent { source: Source::Group(group, seq), msg_id, msg_key }, rec.envelope));
                run.groups.insert(group, seq + 1);
            }
        }
        Ok(true)
    }

    /// Moves `uid`'s cursors to the positions in `answered` (group → next sequence number).
    pub(crate) fn advance_cursors(
        &self,
        s: &Store,
        b: &mut Batch,
        uid: &UserId,
        answered: &BTreeMap<ConvId, u64>,
    ) -> Result<(), NodeError> {
        for (group, next) in answered {
            let key = cursor_key(uid, group);
            if s.get::<u64>(Table::GroupCursors, &key)?.is_some_and(|stored| stored < *next) {
                s.put(b, Table::GroupCursors, &key, next);
            }
        }
        Ok(())
    }

    /// Moves `uid`'s cursor in `group` past envelopes it reports having (relayed to it), as
    /// far as they follow on from the cursor.
    pub(crate) fn cursor_past(
        &self,
        s: &Store,
        b: &mut Batch,
        uid: &UserId,
        group: &ConvId,
        have: &HashSet<u64>,
    ) -> Result<(), NodeError> {
        let key = cursor_key(uid, group);
        let Some(mut next) = s.get::<u64>(Table::GroupCursors, &key)? else { return Ok(()) };
        let was = next;
        while have.contains(&next) {
            next += 1;
        }
        if next != was {
            s.put(b, Table::GroupCursors, &key, &next);
        }
        Ok(())
    }

    /// `uid`'s stored cursor in `group`: my next envelope to deliver to it, if it has one.
    pub(crate) fn stored_cursor(
        &self,
        s: &Store,
        uid: &UserId,
        group: &ConvId,
    ) -> Result<Option<u64>, NodeError> {
        Ok(s.get::<u64>(Table::GroupCursors, &cursor_key(uid, group))?)
    }

    /// The sequence number my next envelope in `group` takes (every one below is in my log).
    pub(crate) fn my_next_seq(s: &Store, group: &ConvId) -> Result<u64, NodeError> {
        let conv = s.get::<crate::records::ConversationRec>(Table::Conversations, &group.0)?;
        Ok(conv.map_or(1, |c| c.next_seq.max(1)))
    }

    /// How many of my group envelopes wait for `uid`.
    pub(crate) fn group_queue_len(&self, s: &Store, uid: &UserId) -> Result<usize, NodeError> {
        let mut n = 0;
        for (group, cursor) in self.live_cursors(s, uid)? {
            n += Self::my_next_seq(s, &group)?.saturating_sub(cursor) as usize;
        }
        Ok(n)
    }

    /// Members with group envelopes of mine still to deliver.
    pub(crate) fn pending_group_members(&self, s: &Store) -> Result<HashSet<UserId>, NodeError> {
        let mut members = std::collections::BTreeSet::new();
        for item in s.scan::<u64>(Table::GroupCursors, &[]) {
            let (key, _) = item?;
            if let Some(uid) = key.get(..16).and_then(|u| <[u8; 16]>::try_from(u).ok()) {
                members.insert(UserId(uid));
            }
        }
        let mut out = HashSet::new();
        for uid in members {
            if self.group_queue_len(s, &uid)? > 0 {
                out.insert(uid);
            }
        }
        Ok(out)
    }

    /// Forgets `uid`'s cursors (it left the team: nothing more goes to it).
    pub(crate) fn drop_cursors(&self, s: &Store, b: &mut Batch, uid: &UserId) -> Result<(), NodeError> {
        for item in s.scan::<u64>(Table::GroupCursors, &uid.0) {
            let (key, _) = item?;
            s.delete(b, Table::GroupCursors, &key);
        }
        Ok(())
    }

    /// Once per store: turns group outbox entries (one per member and message, as kept before
    /// cursors) into cursors at each member's oldest waiting envelope, and gives every member
    /// who holds one of my chains a cursor at my next envelope in that group.
    pub(crate) fn migrate_group_outbox(&self, s: &Store) -> Result<(), NodeError> {
        if s.get::<bool>(Table::Meta, CURSORS_MARK)?.is_some() {
            return Ok(());
        }
        let mut b = Batch::default();
        let mut cursors: BTreeMap<(UserId, ConvId), u64> = BTreeMap::new();
        let me = self.me.device_key();
        if let Some((_, state)) = self.team_state(s)? {
            let groups = state.channels.values().chain(state.projects.values()).chain(state.docs.values());
            for group in groups.map(|c| c.id) {
                let key = crate::channels::chain_key(&group, &me);
                let Some(chain) = s.get::<crate::records::MyChainRec>(Table::GroupKeys, &key)? else {
                    continue;
                };
                let next = Self::my_next_seq(s, &group)?;
                for uid in chain.holders {
                    cursors.insert((uid, group), next);
                }
            }
        }
        for item in s.scan::<OutboxItem>(Table::Outbox, &[]) {
            let (okey, it) = item?;
            if !it.envelope.is_empty() {
                continue;
            }
            s.delete(&mut b, Table::Outbox, &okey);
            let (Some(uid), Some(mkey)) = (crate::chat::outbox_recipient(&okey), &it.msg_key) else {
                continue;
            };
            let Some((group, seq)) = crate::chat::split_message_key(mkey) else { continue };
            let at = cursors.entry((uid, group)).or_insert(seq);
            *at = (*at).min(seq);
            let rec = GroupSentRec { msg_id: it.msg_id, msg_key: it.msg_key.clone() };
            s.put(&mut b, Table::GroupSent, &sent_key(&group, seq), &rec);
        }
        let moved = cursors.len();
        for ((uid, group), next) in cursors {
            s.put(&mut b, Table::GroupCursors, &cursor_key(&uid, &group), &next);
        }
        s.put(&mut b, Table::Meta, CURSORS_MARK, &true);
        self.apply(s, b)?;
        if moved > 0 {
            tracing::info!(cursors = moved, "group deliveries now kept as cursors");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{message_key, outbox_key};
    use dingo_crypto::at_rest::StorageKey;
    use dingo_crypto::Identity;

    fn store_and_core() -> (tempfile::TempDir, Store, Core) {
        let dir = tempfile::tempdir().expect("tmp");
        let me = Identity::generate("me");
        let s = Store::open(dir.path(), StorageKey::new(me.storage_key().clone())).expect("store");
        (dir, s, Core::new(me))
    }

    /// A member's answers move its cursor past what it took, up to the first envelope it could
    /// not take now (that one is sent again), and never back.
    #[test]
    fn answers_move_a_cursor_only_past_envelopes_taken_in_order() {
        use dingo_types::wire::DeliveryStatus::{Duplicate, Rejected, Retry, Stored};
        let (_dir, s, core) = store_and_core();
        let (bob, group) = (UserId([1; 16]), ConvId([10; 32]));
        let cursor = || s.get::<u64>(Table::GroupCursors, &cursor_key(&bob, &group)).expect("get");
        let sent = |seqs: &[u64]| -> Vec<Sent> {
            seqs.iter()
                .map(|q| Sent { source: Source::Group(group, *q), msg_id: None, msg_key: None })
                .collect()
        };
        let mut b = Batch::default();
        core.queue_group(&s, &mut b, (group, 5), (None, None), &[bob]).expect("queue");
        s.apply(b).expect("apply");
        assert_eq!(cursor(), Some(5));
        // Getting the key again later does not move an existing cursor.
        let mut b = Batch::default();
        core.queue_group(&s, &mut b, (group, 9), (None, None), &[bob]).expect("queue");
        s.apply(b).expect("apply");
        assert_eq!(cursor(), Some(5));

        core.delivery_results(&s, &bob, &sent(&[5, 6, 7]), &[Stored(1), Retry, Stored(1)]).expect("results");
        assert_eq!(cursor(), Some(6), "held at the envelope to send again");
        core.delivery_results(&s, &bob, &sent(&[6, 7, 8]), &[Duplicate(2), Stored(2), Rejected])
            .expect("results");
        assert_eq!(cursor(), Some(9), "a refused envelope is not sent again");
        core.delivery_results(&s, &bob, &sent(&[5]), &[Stored(3)]).expect("results");
        assert_eq!(cursor(), Some(9), "a late answer does not move it back");

        let mut b = Batch::default();
        core.drop_cursors(&s, &mut b, &bob).expect("drop");
        s.apply(b).expect("apply");
        assert_eq!(cursor(), None);
    }

    fn pointer(group: ConvId, seq: u64) -> OutboxItem {
        let id = MsgId([seq as u8; 16]);
        let key = message_key(&group, 1_000 + seq, seq, &id);
        OutboxItem { envelope: Vec::new(), msg_id: Some(id), msg_key: Some(key), conv: group }
    }

    /// A store written before cursors: its group entries (one per member and message) become
    /// one cursor per member and group at the oldest waiting message, with each message's
    /// record; 1:1 entries stay; a second run changes nothing.
    #[test]
    fn group_outbox_entries_become_cursors_at_the_oldest_waiting_message() {
        let (_dir, s, core) = store_and_core();
        let (bob, carol) = (UserId([1; 16]), UserId([2; 16]));
        let (general, eng) = (ConvId([10; 32]), ConvId([11; 32]));
        let direct =
            OutboxItem { envelope: vec![1, 2, 3], msg_id: None, msg_key: None, conv: ConvId([9; 32]) };
        let mut b = Batch::default();
        let entries = [
            (bob, 1, pointer(general, 7)),
            (bob, 2, direct.clone()),
            (bob, 3, pointer(general, 8)),
            (bob, 4, pointer(eng, 3)),
            (carol, 5, pointer(general, 8)),
        ];
        for (uid, n, item) in &entries {
            s.put(&mut b, Table::Outbox, &outbox_key(uid, *n), item);
        }
        s.apply(b).expect("apply");

        for _ in 0..2 {
            core.migrate_group_outbox(&s).expect("migrate");
            let cursor = |uid: &UserId, g: &ConvId| {
                s.get::<u64>(Table::GroupCursors, &cursor_key(uid, g)).expect("get")
            };
            assert_eq!(cursor(&bob, &general), Some(7));
            assert_eq!(cursor(&bob, &eng), Some(3));
            assert_eq!(cursor(&carol, &general), Some(8));
            assert_eq!(cursor(&carol, &eng), None);
            let left: Vec<OutboxItem> = s.scan(Table::Outbox, &[]).map(|r| r.expect("read").1).collect();
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].envelope, direct.envelope);
            for (group, seq) in [(general, 7), (general, 8), (eng, 3)] {
                let rec = s.get::<GroupSentRec>(Table::GroupSent, &sent_key(&group, seq)).expect("get");
                let rec = rec.expect("each waiting message keeps its record");
                assert_eq!(rec.msg_key, pointer(group, seq).msg_key);
            }
        }
    }
}
