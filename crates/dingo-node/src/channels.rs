//! Channels (group conversations with sender keys), per-member receipts, and DING. Every
//! function runs inside a store job, like `chat` and `team`.
//!
//! Sending to a channel: my sender chain for the channel is rotated if anyone who holds it is
//! no longer a member (removal), its current key goes to members who lack it, then the message
//! is encrypted and signed once and stored once in the group log, from which each member's
//! cursor ([`crate::fanout`]) delivers it. Members answer "stored" per envelope, which is that
//! member's "delivered"; read receipts come back pairwise to the author.

use crate::chat::{message_key, preview, replay_key, AcceptCtx, Accepted, Core, SealCtx};
use crate::fanout::{Sent, Source};
use crate::records::*;
use crate::sync::Priority;
use crate::{NodeError, NodeEvent};
use dingo_crypto::group::{wrap_context, ReceiverChain, SenderChain, GROUP_RECIPIENT};
use dingo_crypto::membership::{Channel, TeamState};
use dingo_crypto::session::{Recipient, VerifiedEnvelope};
use dingo_store::{Batch, Store, Table};
use dingo_types::content::{Content, MsgRef};
use dingo_types::envelope::{Envelope, GroupHeader, KeyWrap};
use dingo_types::limits::{MAX_CRYPTO_HEADER_BYTES, MAX_RECEIPT_IDS, MAX_TEXT_BYTES};
use dingo_types::team::Action;
use dingo_types::{ConvId, DeviceKey, MsgId, UserId};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Other members' chains kept per group and device (older ones are dropped).
const CHAINS_KEPT: usize = 4;
/// Default DING re-alert interval, seconds.
pub(crate) const DING_REPEAT_DEFAULT: u32 = 60;
/// Shortest re-alert interval a sender may ask for, seconds.
pub(crate) const DING_REPEAT_MIN: u32 = 5;
/// DINGs one user may send per minute.
pub(crate) const DING_SEND_PER_MINUTE: usize = 10;
/// DINGs from one sender that alert per 10 minutes; more are stored silently.
pub(crate) const DING_ALERTS_PER_10_MIN: usize = 20;
/// Shortest time between two `ding --again` of one DING.
pub(crate) const DING_AGAIN_INTERVAL_MS: u64 = 60_000;

pub(crate) fn chain_key(group: &ConvId, device: &DeviceKey) -> Vec<u8> {
    [group.0.as_slice(), &device.0].concat()
}

fn receipt_key(msg_key: &[u8], uid: &UserId) -> Vec<u8> {
    [msg_key, &uid.0].concat()
}

/// Names the membership a group message was sent under.
fn epoch_of(members: &BTreeSet<UserId>) -> u64 {
    let mut h = blake3::Hasher::new_derive_key("dingo 2026 group epoch v1");
    for m in members {
        h.update(&m.0);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_be_bytes(out)
}

/// Adds a member's new chain, keeping the newest [`CHAINS_KEPT`].
fn learn_chain(chains: &mut PeerChainsRec, chain: ReceiverChain) {
    chains.chains.push(chain);
    chains.chains.sort_by_key(|c| std::cmp::Reverse(c.chain_id()));
    chains.chains.truncate(CHAINS_KEPT);
}

/// Room one key wrap may take in a group header (a session start included).
const WRAP_ROOM: usize = 640;

/// How urgent a group message is when a sync has to choose.
fn priority_of(content: &Content) -> Priority {
    match content {
        Content::Ding { .. } => Priority::Ding,
        Content::DocChanges { .. } => Priority::Work,
        Content::File { .. } => Priority::File,
        _ => Priority::Chat,
    }
}

/// Whether `who` names a channel (`#name`).
pub(crate) fn is_channel(who: &str) -> bool {
    who.starts_with('#')
}

impl Core {
    pub(crate) fn channel_named(
        &self,
        state: &TeamState,
        name: &str,
    ) -> Result<(String, Channel), NodeError> {
        let bare = name.trim_start_matches('#');
        state
            .channels
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(bare))
            .map(|(n, c)| (n.clone(), c.clone()))
            .ok_or_else(|| NodeError::UnknownChannel(format!("#{bare}")))
    }

    fn team_or_err(&self, s: &Store) -> Result<std::sync::Arc<TeamState>, NodeError> {
        Ok(self.team_state(s)?.ok_or(NodeError::NoTeam)?.1)
    }

    /// Creates a channel (admins only) scoped to departments and/or members.
    pub(crate) fn create_channel(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        name: &str,
        depts: Vec<String>,
        members: Vec<String>,
        now: u64,
    ) -> Result<(), NodeError> {
        let state = self.team_or_err(s)?;
        let name = name.trim().trim_start_matches('#').to_owned();
        if name.is_empty()
            || name.len() > dingo_types::limits::MAX_NAME_BYTES
            || name.contains(char::is_whitespace)
        {
            return Err(NodeError::BadName("a channel name must be 1 to 64 bytes without spaces".into()));
        }
        let members = members.iter().map(|m| self.member(s, &state, m)).collect::<Result<Vec<_>, _>>()?;
        self.author(s, ctx, Action::ChannelCreate { name, depts, members }, now)
    }

    pub(crate) fn channels_view(&self, s: &Store) -> Result<Vec<ChannelView>, NodeError> {
        let state = self.team_or_err(s)?;
        let me = self.me.user_id();
        let mut out = Vec::new();
        for (name, c) in &state.channels {
            let members = state.channel_members(c);
            let conv = s.get::<ConversationRec>(Table::Conversations, &c.id.0)?.unwrap_or_default();
            out.push(ChannelView {
                name: name.clone(),
                id: c.id.to_hex(),
                departments: c.depts.iter().cloned().collect(),
                members: members.iter().map(|u| self.member_name(s, &state, u)).collect(),
                joined: members.contains(&me),
                unread: conv.unread,
            });
        }
        Ok(out)
    }

    /// Seals `content` for a channel: rotates and distributes my chain as needed, stores the
    /// envelope once, and starts a delivery cursor for members who get my chain with it (the
    /// others' cursors deliver it as they stand). Returns the message key and
    /// the recipients.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn seal_group(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        state: &TeamState,
        chan_name: &str,
        chan: &Channel,
        id: MsgId,
        make: impl FnOnce(u64) -> Content,
        now: u64,
    ) -> Result<(Vec<u8>, u64, u64, Vec<UserId>), NodeError> {
        let me = self.me.user_id();
        let members = state.channel_members(chan);
        if !members.contains(&me) {
            return Err(NodeError::NotInChannel(format!("#{chan_name}")));
        }
        let others: BTreeSet<UserId> = members.iter().filter(|u| **u != me).copied().collect();
        let group = chan.id;
        let stored = match ctx.my_chains.get(&group) {
            Some(c) => Some(c.clone()),
            None => self.committed_my_chain(s, &group)?,
        };
        let mut mine = match stored {
            // Everyone holding the chain is still a member: keep it.
            Some(c) if c.holders.is_subset(&others) => c,
            // Someone left: a new chain, which only the remaining members get.
            Some(c) => {
                MyChainRec { chain: SenderChain::new(c.chain.chain_id() + 1), holders: BTreeSet::new() }
            }
            None => MyChainRec { chain: SenderChain::new(1), holders: BTreeSet::new() },
        };
        let lacking: Vec<UserId> = others.iter().filter(|u| !mine.holders.contains(*u)).copied().collect();
        // The envelope sealed below takes this number; the key starts there for its receivers.
        let seq = self.ctx_conv(s, ctx, group)?.next_seq.max(1);
        let epoch = epoch_of(&members);
        let (chain_id, n, chain_key_now) = mine.chain.distribution();
        let mut wraps = Vec::new();
        let mut header_bytes = GroupHeader::LEN + 2;
        for uid in &lacking {
            let Some(contact) = s.get::<ContactRec>(Table::Contacts, &uid.0)? else { continue };
            // Members we share a session with get the key inside the envelope itself.
            if header_bytes + WRAP_ROOM <= MAX_CRYPTO_HEADER_BYTES {
                let device = contact.device_key()?;
                let context = wrap_context(&group, epoch, &self.me.device_key(), &device, seq, (chain_id, n));
                if let Some(wrap) = self.wrap_chain_key(s, ctx, &contact, &context, &chain_key_now)? {
                    header_bytes += wrap.encoded_len();
                    wraps.push(wrap);
                    mine.holders.insert(*uid);
                    continue;
                }
            }
            let content = Content::SenderKeyAt { group, chain_id, n, key: chain_key_now, first_seq: seq };
            match self.seal_into(s, ctx, &contact, &content, None) {
                Ok(_) => {
                    mine.holders.insert(*uid);
                }
                Err(e) => tracing::warn!(member = %contact.name, "channel key not sent: {e}"),
            }
        }
        if !lacking.is_empty() {
            tracing::debug!(
                wrapped = wraps.len(),
                pairwise = lacking.len() - wraps.len(),
                chain_id,
                "chain key sent"
            );
        }
        let conv = self.ctx_conv(s, ctx, group)?;
        let sent_at = now.max(conv.last_at);
        let content = make(sent_at);
        let priority = priority_of(&content);
        let env = mine.chain.seal_with_keys(&self.me, group, epoch, seq, &content.encode(), wraps)?;
        let key = message_key(&group, sent_at, seq, &id);
        self.log_group_envelope(s, &mut ctx.batch, &env, priority);
        let recipients: Vec<UserId> = others.iter().filter(|u| mine.holders.contains(*u)).copied().collect();
        let newly_keyed: Vec<UserId> = lacking.into_iter().filter(|u| mine.holders.contains(u)).collect();
        self.queue_group(s, &mut ctx.batch, (group, seq), (Some(id), Some(key.clone())), &newly_keyed)?;
        let sent = Sent { source: Source::Group(group, seq), msg_id: Some(id), msg_key: Some(key.clone()) };
        ctx.effects.group_fresh.push((recipients.clone(), sent, env.encode()));
        let conv = self.ctx_conv(s, ctx, group)?;
        conv.next_seq = seq + 1;
        if state.channel_by_id(&group).is_some() {
            conv.channel = Some(chan_name.to_owned());
        }
        conv.last_at = sent_at;
        ctx.my_chains.insert(group, mine);
        Ok((key, seq, sent_at, recipients))
    }

    /// My chain key for `contact`, to ride in the group envelope named by `context`; `None`
    /// when we share no session yet (it then goes pairwise, which can start one).
    fn wrap_chain_key(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        contact: &ContactRec,
        context: &[u8],
        key: &[u8; 32],
    ) -> Result<Option<KeyWrap>, NodeError> {
        if contact.removed || contact.pending_cert.is_some() {
            return Ok(None);
        }
        let cert = contact.device_cert()?;
        let mut sessions = self.ctx_sessions(s, ctx, &contact.user_id)?;
        match sessions.wrap(&self.me, Recipient { cert: &cert, prekey: None }, context, key) {
            Ok(wrap) => {
                ctx.sessions.insert(contact.user_id, sessions);
                Ok(Some(wrap))
            }
            Err(dingo_crypto::CryptoError::UnknownSession) => Ok(None),
            Err(e) => {
                tracing::warn!(member = %contact.name, "channel key not wrapped: {e}");
                Ok(None)
            }
        }
    }

    /// Opens the chain key `wrap` carries for me in `env` from member `sender`: `Err` with the
    /// reason when it cannot be (the envelope is then refused). The pairwise session's step is
    /// recorded in `ctx`.
    fn unwrap_chain_key(
        &self,
        s: &Store,
        ctx: &mut AcceptCtx,
        env: &Envelope,
        sender: &UserId,
        (header, wrap): (&GroupHeader, &KeyWrap),
        now: u64,
    ) -> Result<Result<[u8; 32], String>, NodeError> {
        let Some(contact) = s.get::<ContactRec>(Table::Contacts, &sender.0)? else {
            return Ok(Err("a chain key from a member with no session here".into()));
        };
        if contact.device_key()? != env.sender {
            return Ok(Err("a chain key from a device this node has no session with".into()));
        }
        let mut sessions = self.ctx_sessions(s, &ctx.seal, sender)?;
        let me = self.me.device_key();
        let context =
            wrap_context(&env.group, env.epoch, &env.sender, &me, env.seq, (header.chain_id, header.n));
        let opened = match sessions.open_wrap(&self.me, &env.sender, wrap, &context, now) {
            Ok(o) => o,
            Err(e) => return Ok(Err(format!("cannot open the chain key: {e}"))),
        };
        if opened.new_peer.as_ref().is_some_and(|(cert, _)| cert.encode() != contact.cert) {
            return Ok(Err("certificate does not match the pinned one".into()));
        }
        let Ok(key) = <[u8; 32]>::try_from(opened.plaintext.as_slice()) else {
            return Ok(Err("a chain key of the wrong length".into()));
        };
        ctx.seal.sessions.insert(*sender, sessions);
        Ok(Ok(key))
    }

    /// Sends a text to a channel.
    pub(crate) fn send_channel_text(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        chan: &str,
        text: &str,
        now: u64,
    ) -> Result<MsgId, NodeError> {
        check_text(text)?;
        let body = text.to_owned();
        self.send_channel(s, ctx, chan, text, now, |id, sent_at| Content::Text { id, sent_at, text: body })
    }

    /// Sends a chat message (a text, or a file shown as `text`) to a channel.
    pub(crate) fn send_channel(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        chan: &str,
        text: &str,
        now: u64,
        make: impl FnOnce(MsgId, u64) -> Content,
    ) -> Result<MsgId, NodeError> {
        let state = self.team_or_err(s)?;
        let (name, channel) = self.channel_named(&state, chan)?;
        let id = MsgId::random();
        let (key, seq, sent_at, recipients) =
            self.seal_group(s, ctx, &state, &name, &channel, id, |sent_at| make(id, sent_at), now)?;
        let rec = MessageRec::outgoing((id, channel.id, self.me.user_id()), text, sent_at, seq, recipients);
        s.put(&mut ctx.batch, Table::Messages, &key, &rec);
        let conv = self.ctx_conv(s, ctx, channel.id)?;
        conv.last_text = preview(text);
        conv.total += 1;
        Ok(id)
    }

    // ---- receiving ----

    /// Verifies membership, opens and stores one group envelope (signature already checked).
    pub(crate) fn accept_group(
        &self,
        s: &Store,
        ctx: &mut AcceptCtx,
        verified: &VerifiedEnvelope,
        now: u64,
    ) -> Result<Accepted, NodeError> {
        let env = verified.envelope();
        if env.recipient != GROUP_RECIPIENT {
            return Ok(Accepted::Rejected("group envelope with a recipient".into()));
        }
        let Some((_, state)) = self.team_state(s)? else {
            return Ok(Accepted::Rejected("group message while not in a team".into()));
        };
        let Some((sender, _)) = state.members.iter().find(|(_, m)| m.device_key == env.sender.0) else {
            if state.removed.values().any(|d| *d == env.sender.0) {
                return Ok(Accepted::Rejected("sender was removed from the team".into()));
            }
            // Perhaps added by an op this node has not seen yet: the sender retries.
            return Ok(Accepted::Retry(Vec::new()));
        };
        let sender = *sender;
        let project = state.project_by_id(&env.group).is_some();
        let document = state.doc_by_id(&env.group).is_some();
        let Some((chan_name, chan)) = state.group_by_id(&env.group) else {
            return Ok(Accepted::Retry(Vec::new()));
        };
        let members = state.channel_members(chan);
        if !members.contains(&self.me.user_id()) {
            return Ok(Accepted::Rejected("this node is not a member of that channel".into()));
        }
        if !members.contains(&sender) {
            tracing::debug!("held a channel message from a non-member (membership may be in flight)");
            return Ok(Accepted::Retry(Vec::new()));
        }
        if env.sender == self.me.device_key() {
            // My own envelope, offered back by a peer: I have it (and my chain is not a peer's).
            tracing::debug!(seq = env.seq, "own group envelope offered back");
            return Ok(Accepted::Duplicate);
        }
        let rkey = replay_key(&env.group, &env.sender);
        if let Ok(false) = self.check_replay(s, ctx, &rkey, env.seq)? {
            return Ok(Accepted::Duplicate);
        }
        let ck = (env.group, env.sender);
        let mut chains = match ctx.seal.peer_chains.get(&ck) {
            Some(c) => c.clone(),
            None => self.committed_peer_chains(s, &env.group, &env.sender)?,
        };
        let Ok(header) = GroupHeader::decode(&env.crypto_header) else {
            return Ok(Accepted::Rejected("bad group header".into()));
        };
        let chain_id = header.chain_id;
        if !chains.chains.iter().any(|c| c.chain_id() == chain_id) {
            // A new chain: its key rides in this envelope, or travels pairwise just before.
            let Some(wrap) = header.wrap_for(&self.me.device_key()) else {
                tracing::debug!(chain_id, "group message before its chain key");
                return Ok(Accepted::Retry(Vec::new()));
            };
            let key = match self.unwrap_chain_key(s, ctx, env, &sender, (&header, wrap), now)? {
                Ok(key) => key,
                Err(reason) => {
                    tracing::warn!("chain key refused: {reason}");
                    return Ok(Accepted::Rejected(reason));
                }
            };
            let first = chains.chains.is_empty();
            learn_chain(&mut chains, ReceiverChain::from_distribution((chain_id, header.n, key)));
            // Learned for good, whatever becomes of this envelope: the wrap's ratchet key is spent.
            // (No resync: nothing earlier waits for this key, which came with the chain's first
            // message.)
            ctx.seal.peer_chains.insert(ck, chains.clone());
            if first {
                // Nothing this sender sent before can ever be read here.
                self.raise_window(s, ctx, rkey.clone(), env.seq.saturating_sub(1))?;
            }
        }
        // Judged after a first key has set where this sender's log starts for us: a member who
        // joins after a long history takes the first message it can read at once.
        match self.check_replay(s, ctx, &rkey, env.seq)? {
            Ok(true) => {}
            Ok(false) => return Ok(Accepted::Duplicate),
            Err(reason) => return Ok(Accepted::Rejected(reason)),
        }
        let Some(chain) = chains.chains.iter_mut().find(|c| c.chain_id() == chain_id) else {
            return Ok(Accepted::Retry(Vec::new()));
        };
        let plaintext = match chain.open(verified) {
            Ok(p) => p,
            // Sent before this member had the key: it can never be read here (a project's or
            // document's past comes through automerge's sync protocol instead). Counted as received, so syncs move
            // past it instead of offering it again.
            Err(dingo_crypto::CryptoError::TooOld) => {
                self.mark_received(ctx, rkey, env.seq);
                return Ok(Accepted::Duplicate);
            }
            Err(e) => return Ok(Accepted::Rejected(format!("cannot open: {e}"))),
        };
        let content = match Content::decode(&plaintext) {
            Ok(c) => c,
            Err(e) => return Ok(Accepted::Rejected(format!("bad content: {e}"))),
        };
        let from_name = self.member_name(s, &state, &sender);
        let chan_name = chan_name.clone();
        let priority = priority_of(&content);
        // A shared file is filed; in a channel it then shows like a text.
        let content = match content {
            Content::File { id, sent_at, file } => {
                let rec = crate::files::FileRec {
                    manifest: file.clone(),
                    place: crate::files::Place::Group(env.group),
                    from: sender,
                    from_device: env.sender,
                    shared_at: sent_at,
                    msg: id,
                };
                self.record_file(s, &mut ctx.seal.batch, rec)?;
                match project || document {
                    true => Content::File { id, sent_at, file },
                    false => Content::Text { id, sent_at, text: crate::files::file_line(&file) },
                }
            }
            other => other,
        };
        if let Content::Text { id, sent_at, .. } | Content::Ding { id, sent_at, .. } = &content {
            ctx.note_relayed(env, sender, env.group, MsgRef { id: *id, sent_at: *sent_at, seq: env.seq });
        }
        let events = match content {
            Content::DocChanges { doc, changes } if (project || document) && doc == env.group => {
                let accepted = if project {
                    self.accept_doc_changes(s, env, &chan_name, changes)?
                } else {
                    self.accept_text_changes(s, env, &chan_name, changes)?
                };
                match accepted {
                    Ok(events) => events,
                    // Its dependencies have not arrived (nothing written): ask its author.
                    Err(Accepted::Retry(events)) => {
                        self.sync_gap(s, &mut ctx.seal, &state, &env.group, &sender, now)?;
                        return Ok(Accepted::Retry(events));
                    }
                    // Refused.
                    Err(not_now) => return Ok(not_now),
                }
            }
            Content::File { file, .. } if project || document => vec![NodeEvent::FileShared {
                from: from_name,
                name: file.name.clone(),
                id: file.id().to_hex(),
                size: file.size,
                place: format!("{}:{chan_name}", if project { "project" } else { "doc" }),
            }],
            _ if project || document => {
                return Ok(Accepted::Rejected(
                    "a project or document carries only its changes and files".into(),
                ))
            }
            Content::Text { id, sent_at, text } => {
                let rec = MessageRec::incoming((id, env.group, sender), &text, sent_at, env.seq, now);
                let key = message_key(&env.group, sent_at, env.seq, &id);
                s.put(&mut ctx.seal.batch, Table::Messages, &key, &rec);
                let conv = self.ctx_conv(s, &mut ctx.seal, env.group)?;
                conv.channel = Some(chan_name.clone());
                conv.unread += 1;
                conv.total += 1;
                conv.last_at = conv.last_at.max(sent_at);
                conv.last_text = preview(&text);
                vec![NodeEvent::Message {
                    from: from_name,
                    id: id.to_hex(),
                    text,
                    sent_at,
                    channel: Some(format!("#{chan_name}")),
                }]
            }
            Content::Ding { id, sent_at, text, repeat_every } => self.receive_ding(
                s,
                &mut ctx.seal,
                (sender, from_name),
                Some(format!("#{chan_name}")),
                (id, sent_at, text, repeat_every),
                now,
            )?,
            _ => return Ok(Accepted::Rejected("unexpected content in a group message".into())),
        };
        ctx.seal.peer_chains.insert(ck, chains);
        self.log_group_envelope(s, &mut ctx.seal.batch, env, priority);
        self.mark_received(ctx, rkey, env.seq);
        self.note_seen(&sender);
        Ok(Accepted::Stored(events))
    }

    /// Pairwise content about channels and DINGs from `from`.
    pub(crate) fn accept_channel_control(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        from: &ContactRec,
        env: &Envelope,
        content: Content,
        now: u64,
    ) -> Result<Accepted, NodeError> {
        let first_seq = match &content {
            Content::SenderKeyAt { first_seq, .. } => Some(*first_seq),
            _ => None,
        };
        match content {
            Content::SenderKey { group, chain_id, n, key }
            | Content::SenderKeyAt { group, chain_id, n, key, .. } => {
                let Some((_, state)) = self.team_state(s)? else {
                    return Ok(Accepted::Rejected("channel key while not in a team".into()));
                };
                // Channels, projects and documents all have sender keys.
                let Some((_, chan)) = state.group_by_id(&group) else {
                    return Ok(Accepted::Retry(Vec::new()));
                };
                if !state.channel_members(chan).contains(&from.user_id) {
                    return Ok(Accepted::Retry(Vec::new()));
                }
                let ck = (group, env.sender);
                let mut chains = match ctx.peer_chains.get(&ck) {
                    Some(c) => c.clone(),
                    None => self.committed_peer_chains(s, &group, &env.sender)?,
                };
                if !chains.chains.iter().any(|c| c.chain_id() == chain_id) {
                    // The first key from this sender: nothing before it can ever be read here.
                    if let (true, Some(first)) = (chains.chains.is_empty(), first_seq) {
                        ctx.window_floors.push((replay_key(&group, &env.sender), first.saturating_sub(1)));
                    }
                    learn_chain(&mut chains, ReceiverChain::from_distribution((chain_id, n, key)));
                    ctx.peer_chains.insert(ck, chains);
                    ctx.effects.resync = true;
                }
                Ok(Accepted::Stored(Vec::new()))
            }
            Content::GroupRead { group, read, read_at } => {
                let mut events = Vec::new();
                for r in read {
                    let key = message_key(&group, r.sent_at, r.seq, &r.id);
                    let Some(m) = s.get::<MessageRec>(Table::Messages, &key)? else { continue };
                    if m.id != r.id || m.direction != Direction::Out || !m.recipients.contains(&from.user_id)
                    {
                        continue;
                    }
                    let rk = receipt_key(&key, &from.user_id);
                    let mut rec = s.get::<MemberReceipt>(Table::Receipts, &rk)?.unwrap_or_default();
                    if rec.read_at.is_none() {
                        rec.read_at = Some(read_at);
                        rec.delivered_at.get_or_insert(read_at);
                        s.put(&mut ctx.batch, Table::Receipts, &rk, &rec);
                        events.push(NodeEvent::Read {
                            id: r.id.to_hex(),
                            by: from.name.clone(),
                            at: read_at,
                        });
                    }
                }
                Ok(Accepted::Stored(events))
            }
            Content::DocSync { doc, message, start, part, parts, bytes } => self.accept_doc_sync(
                s,
                ctx,
                from,
                crate::docsync::SyncPart { doc, message, start, part, parts, bytes },
                now,
            ),
            Content::Delivered { conv, delivered, envelopes, at } => {
                self.accept_delivered(s, ctx, from, conv, (delivered, envelopes), at)
            }
            Content::Ding { id, sent_at, text, repeat_every } => {
                let events = self.receive_ding(
                    s,
                    ctx,
                    (from.user_id, from.name.clone()),
                    None,
                    (id, sent_at, text, repeat_every),
                    now,
                )?;
                Ok(Accepted::Stored(events))
            }
            Content::DingAgain { id } => {
                if let Some(d) = s.get::<DingRec>(Table::Dings, &id.0)? {
                    if d.direction == Direction::In
                        && d.from == from.user_id
                        && d.acked_at.is_none()
                        && !d.muted
                    {
                        let mut active = self.active_dings.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(map) = active.as_mut() {
                            let interval = u64::from(d.repeat_every) * 1000;
                            let e = map.entry(id).or_insert((now, interval, 0));
                            e.0 = now;
                        }
                    }
                }
                Ok(Accepted::Stored(Vec::new()))
            }
            Content::DingAck { id, acked_at } => {
                let mut events = Vec::new();
                if let Some(mut d) = s.get::<DingRec>(Table::Dings, &id.0)? {
                    if d.direction == Direction::Out
                        && d.to.contains(&from.user_id)
                        && !d.acks.iter().any(|(u, _)| *u == from.user_id)
                    {
                        d.acks.push((from.user_id, acked_at));
                        s.put(&mut ctx.batch, Table::Dings, &id.0, &d);
                        events.push(NodeEvent::DingAcked {
                            id: id.to_hex(),
                            by: from.name.clone(),
                            at: acked_at,
                        });
                    }
                }
                Ok(Accepted::Stored(events))
            }
            _ => Ok(Accepted::Rejected("unexpected content".into())),
        }
    }

    // ---- reading ----

    fn channel_view(
        &self,
        s: &Store,
        state: &TeamState,
        chan: &str,
        rec: &MessageRec,
        key: &[u8],
    ) -> Result<MessageView, NodeError> {
        let mine = rec.direction == Direction::Out;
        let mut view = MessageView {
            id: rec.id.to_hex(),
            direction: rec.direction,
            from: if mine { "me".into() } else { self.member_name(s, state, &rec.from) },
            from_user_id: rec.from.to_hex(),
            text: rec.text.clone(),
            sent_at: rec.sent_at,
            received_at: rec.received_at,
            seq: rec.seq,
            status: rec.status,
            delivered_at: rec.delivered_at,
            read_at: rec.read_at,
            channel: Some(format!("#{chan}")),
            members: Vec::new(),
            summary: None,
            read_by: None,
            delivered_to: None,
            recipients: None,
        };
        if mine {
            let mut receipts: HashMap<UserId, MemberReceipt> = HashMap::new();
            for item in s.scan::<MemberReceipt>(Table::Receipts, key) {
                let (k, r) = item?;
                if let Some(uid) = k.get(key.len()..).and_then(|t| <[u8; 16]>::try_from(t).ok()) {
                    receipts.insert(UserId(uid), r);
                }
            }
            for uid in &rec.recipients {
                let r = receipts.remove(uid).unwrap_or_default();
                view.members.push(MemberStatus {
                    member: self.member_name(s, state, uid),
                    user_id: uid.to_hex(),
                    delivered_at: r.delivered_at,
                    read_at: r.read_at,
                });
            }
            let n = view.members.len();
            let read = view.members.iter().filter(|m| m.read_at.is_some()).count();
            let delivered = view.members.iter().filter(|m| m.delivered_at.is_some()).count();
            view.status = if n > 0 && read == n {
                Status::Read
            } else if n > 0 && delivered == n {
                Status::Delivered
            } else {
                rec.status
            };
            view.delivered_at =
                view.members.iter().filter_map(|m| m.delivered_at).max().filter(|_| delivered == n && n > 0);
            view.read_at = view.members.iter().filter_map(|m| m.read_at).max().filter(|_| read == n && n > 0);
            view.summary = Some(format!("read by {read} of {n}"));
            view.read_by = Some(read);
            view.delivered_to = Some(delivered);
            view.recipients = Some(n);
        }
        Ok(view)
    }

    pub(crate) fn channel_messages(&self, s: &Store, chan: &str) -> Result<Vec<MessageView>, NodeError> {
        let state = self.team_or_err(s)?;
        let (name, channel) = self.channel_named(&state, chan)?;
        let mut out = Vec::new();
        for item in s.scan::<MessageRec>(Table::Messages, &channel.id.0) {
            let (key, m) = item?;
            out.push(self.channel_view(s, &state, &name, &m, &key)?);
        }
        Ok(out)
    }

    /// Marks a channel read and sends read receipts to the authors (unless turned off).
    pub(crate) fn read_channel(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        chan: &str,
        now: u64,
    ) -> Result<Vec<MessageView>, NodeError> {
        let state = self.team_or_err(s)?;
        let (name, channel) = self.channel_named(&state, chan)?;
        let mut by_author: BTreeMap<UserId, Vec<MsgRef>> = BTreeMap::new();
        let mut out = Vec::new();
        for item in s.scan::<MessageRec>(Table::Messages, &channel.id.0) {
            let (key, mut m) = item?;
            if m.direction == Direction::In && m.status != Status::Read {
                m.status = Status::Read;
                m.read_at = Some(now);
                by_author.entry(m.from).or_default().push(MsgRef {
                    id: m.id,
                    sent_at: m.sent_at,
                    seq: m.seq,
                });
                s.put(&mut ctx.batch, Table::Messages, &key, &m);
            }
            out.push(self.channel_view(s, &state, &name, &m, &key)?);
        }
        self.ctx_conv(s, ctx, channel.id)?.unread = 0;
        if !self.team_rec(s)?.no_read_receipts {
            for (author, refs) in by_author {
                let Some(contact) = s.get::<ContactRec>(Table::Contacts, &author.0)? else { continue };
                for chunk in refs.chunks(MAX_RECEIPT_IDS) {
                    let receipt =
                        Content::GroupRead { group: channel.id, read: chunk.to_vec(), read_at: now };
                    if let Err(e) = self.seal_into(s, ctx, &contact, &receipt, None) {
                        tracing::debug!(member = %contact.name, "read receipt not sent: {e}");
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Who has not read one of my channel messages (by id, or my latest).
    pub(crate) fn unread(&self, s: &Store, chan: &str, id: Option<&str>) -> Result<UnreadView, NodeError> {
        let views = self.channel_messages(s, chan)?;
        let mine: Vec<MessageView> = views.into_iter().filter(|v| v.direction == Direction::Out).collect();
        let found = match id {
            Some(id) => mine.into_iter().find(|v| v.id.starts_with(&id.to_lowercase())),
            None => mine.into_iter().next_back(),
        };
        let v = found.ok_or_else(|| NodeError::UnknownDing(id.unwrap_or("(none of yours)").to_owned()))?;
        let (read, not_read): (Vec<_>, Vec<_>) = v.members.iter().partition(|m| m.read_at.is_some());
        Ok(UnreadView {
            id: v.id.clone(),
            text: v.text.clone(),
            not_read: not_read.iter().map(|m| m.member.clone()).collect(),
            read: read.iter().map(|m| m.member.clone()).collect(),
            summary: v.summary.clone().unwrap_or_default(),
        })
    }

    // ---- DING ----

    /// Stores a received DING and raises its first alert (unless the sender is over the limit).
    fn receive_ding(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        (from, from_name): (UserId, String),
        channel: Option<String>,
        (id, sent_at, text, repeat_every): (MsgId, u64, String, u32),
        now: u64,
    ) -> Result<Vec<NodeEvent>, NodeError> {
        if s.get::<DingRec>(Table::Dings, &id.0)?.is_some() {
            return Ok(Vec::new());
        }
        let stored = recent_dings(s, Direction::In, &from, now.saturating_sub(600_000));
        let in_batch = ctx.dings_in_batch.entry(from).or_default();
        let muted = stored + *in_batch >= DING_ALERTS_PER_10_MIN;
        *in_batch += 1;
        let repeat_every = repeat_every.max(DING_REPEAT_MIN);
        let rec = DingRec {
            id,
            direction: Direction::In,
            from,
            to: vec![self.me.user_id()],
            channel: channel.clone(),
            text: text.clone(),
            sent_at,
            received_at: now,
            repeat_every,
            acks: Vec::new(),
            last_again: None,
            acked_at: None,
            muted,
        };
        s.put(&mut ctx.batch, Table::Dings, &id.0, &rec);
        if muted {
            tracing::warn!(from = %from_name, "DING over the rate limit: stored without alerting");
            return Ok(Vec::new());
        }
        let interval = u64::from(repeat_every) * 1000;
        if let Some(map) = self.active_dings.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            map.insert(id, (now + interval, interval, 1));
        }
        Ok(vec![NodeEvent::Ding { id: id.to_hex(), from: from_name, channel, text, alert: 1 }])
    }

    /// Sends a DING to a contact, member or channel.
    pub(crate) fn ding(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        target: &str,
        text: &str,
        repeat_every: Option<u32>,
        now: u64,
    ) -> Result<MsgId, NodeError> {
        check_text(text)?;
        let repeat_every = repeat_every.unwrap_or(DING_REPEAT_DEFAULT).clamp(DING_REPEAT_MIN, 24 * 3600);
        let recent = recent_dings(s, Direction::Out, &self.me.user_id(), now.saturating_sub(60_000));
        if recent >= DING_SEND_PER_MINUTE {
            return Err(NodeError::RateLimited(format!("at most {DING_SEND_PER_MINUTE} DINGs a minute")));
        }
        let id = MsgId::random();
        let body = text.to_owned();
        let (to, channel, sent_at) = if is_channel(target) {
            let state = self.team_or_err(s)?;
            let (name, chan) = self.channel_named(&state, target)?;
            let (_, _, sent_at, recipients) = self.seal_group(
                s,
                ctx,
                &state,
                &name,
                &chan,
                id,
                |sent_at| Content::Ding { id, sent_at, text: body, repeat_every },
                now,
            )?;
            (recipients, Some(format!("#{name}")), sent_at)
        } else {
            let contact = match self.contact(s, target) {
                Ok(c) => c,
                Err(e) => match self.team_state(s)? {
                    Some((_, state)) => {
                        let uid = self.member(s, &state, target).map_err(|_| e)?;
                        s.get::<ContactRec>(Table::Contacts, &uid.0)?
                            .ok_or(NodeError::UnknownMember(target.into()))?
                    }
                    None => return Err(e),
                },
            };
            let content = Content::Ding { id, sent_at: now, text: body, repeat_every };
            self.seal_into(s, ctx, &contact, &content, None)?;
            (vec![contact.user_id], None, now)
        };
        let rec = DingRec {
            id,
            direction: Direction::Out,
            from: self.me.user_id(),
            to,
            channel,
            text: text.to_owned(),
            sent_at,
            received_at: now,
            repeat_every,
            acks: Vec::new(),
            last_again: None,
            acked_at: None,
            muted: false,
        };
        s.put(&mut ctx.batch, Table::Dings, &id.0, &rec);
        Ok(id)
    }

    fn find_ding(&self, s: &Store, id: &str) -> Result<DingRec, NodeError> {
        let needle = id.trim().to_lowercase();
        if needle.len() >= 4 {
            for item in s.scan::<DingRec>(Table::Dings, &[]) {
                let (_, d) = item?;
                if d.id.to_hex().starts_with(&needle) {
                    return Ok(d);
                }
            }
        }
        Err(NodeError::UnknownDing(id.into()))
    }

    /// Re-alerts the recipients who have not acknowledged (rate-limited). Returns how many.
    pub(crate) fn ding_again(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        id: &str,
        now: u64,
    ) -> Result<usize, NodeError> {
        let mut d = self.find_ding(s, id)?;
        if d.direction != Direction::Out {
            return Err(NodeError::UnknownDing(format!("{id} (not one of yours)")));
        }
        if let Some(last) = d.last_again {
            if last + DING_AGAIN_INTERVAL_MS > now {
                let wait = (last + DING_AGAIN_INTERVAL_MS - now).div_ceil(1000);
                return Err(NodeError::RateLimited(format!("DING re-sent recently; try again in {wait} s")));
            }
        }
        let mut n = 0;
        for uid in d.to.iter().filter(|u| !d.acks.iter().any(|(a, _)| a == *u)) {
            let Some(contact) = s.get::<ContactRec>(Table::Contacts, &uid.0)? else { continue };
            if self.seal_into(s, ctx, &contact, &Content::DingAgain { id: d.id }, None).is_ok() {
                n += 1;
            }
        }
        d.last_again = Some(now);
        s.put(&mut ctx.batch, Table::Dings, &d.id.0, &d);
        Ok(n)
    }

    /// Acknowledges a received DING: alerts stop and the sender is told.
    pub(crate) fn ack(&self, s: &Store, ctx: &mut SealCtx, id: &str, now: u64) -> Result<String, NodeError> {
        let mut d = self.find_ding(s, id)?;
        if d.direction != Direction::In {
            return Err(NodeError::UnknownDing(format!("{id} (you sent it)")));
        }
        if let Some(map) = self.active_dings.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            map.remove(&d.id);
        }
        if d.acked_at.is_none() {
            d.acked_at = Some(now);
            s.put(&mut ctx.batch, Table::Dings, &d.id.0, &d);
            if let Some(contact) = s.get::<ContactRec>(Table::Contacts, &d.from.0)? {
                self.seal_into(s, ctx, &contact, &Content::DingAck { id: d.id, acked_at: now }, None)?;
            }
        }
        Ok(d.id.to_hex())
    }

    pub(crate) fn dings_view(&self, s: &Store) -> Result<Vec<DingView>, NodeError> {
        let state = self.team_state(s)?.map(|(_, st)| st).unwrap_or_default();
        let mut out = Vec::new();
        for item in s.scan::<DingRec>(Table::Dings, &[]) {
            let (_, d) = item?;
            let recipients = if d.direction == Direction::Out {
                d.to.iter()
                    .map(|u| AckView {
                        member: self.member_name(s, &state, u),
                        user_id: u.to_hex(),
                        acked_at: d.acks.iter().find(|(a, _)| a == u).map(|(_, t)| *t),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            out.push(DingView {
                id: d.id.to_hex(),
                direction: d.direction,
                from: if d.direction == Direction::Out {
                    "me".into()
                } else {
                    self.member_name(s, &state, &d.from)
                },
                channel: d.channel.clone(),
                text: d.text.clone(),
                sent_at: d.sent_at,
                repeat_every: d.repeat_every,
                acked: d.acks.len(),
                recipients,
                acked_at: d.acked_at,
                muted: d.muted,
            });
        }
        out.sort_by_key(|d| std::cmp::Reverse(d.sent_at));
        Ok(out)
    }

    /// Alerts due now for unacknowledged DINGs (loads them on first use: after a restart every
    /// unacknowledged DING rings again).
    pub(crate) fn due_dings(&self, s: &Store, now: u64) -> Result<Vec<NodeEvent>, NodeError> {
        let mut active = self.active_dings.lock().unwrap_or_else(|p| p.into_inner());
        if active.is_none() {
            let mut map = HashMap::new();
            for item in s.scan::<DingRec>(Table::Dings, &[]) {
                let (_, d) = item?;
                if d.direction == Direction::In && d.acked_at.is_none() && !d.muted {
                    map.insert(d.id, (now, u64::from(d.repeat_every) * 1000, 0));
                }
            }
            *active = Some(map);
        }
        let Some(map) = active.as_mut() else { return Ok(Vec::new()) };
        let state = self.team_state(s)?.map(|(_, st)| st).unwrap_or_default();
        let mut events = Vec::new();
        for (id, (next, interval, alerts)) in map.iter_mut() {
            if *next > now {
                continue;
            }
            let Some(d) = s.get::<DingRec>(Table::Dings, &id.0)? else { continue };
            *next = now + *interval;
            *alerts += 1;
            events.push(NodeEvent::Ding {
                id: id.to_hex(),
                from: self.member_name(s, &state, &d.from),
                channel: d.channel,
                text: d.text,
                alert: *alerts,
            });
        }
        Ok(events)
    }

    /// Records a member's "stored" answer for one of my group envelopes.
    /// `from` stored messages of mine that reached it through another node: they are
    /// delivered, and their outbox entries (or its group cursor) move past them.
    fn accept_delivered(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        from: &ContactRec,
        conv: ConvId,
        (delivered, envelopes): (Vec<MsgRef>, Vec<u64>),
        at: u64,
    ) -> Result<Accepted, NodeError> {
        let direct = conv == self.conv_with(&from.user_id);
        let envelopes: std::collections::HashSet<u64> =
            if direct { envelopes.into_iter().collect() } else { Default::default() };
        let mut events = Vec::new();
        let mut done = std::collections::HashSet::new();
        let mut done_seqs = std::collections::HashSet::new();
        for r in delivered {
            let key = message_key(&conv, r.sent_at, r.seq, &r.id);
            let Some(mut m) = s.get::<MessageRec>(Table::Messages, &key)? else { continue };
            if m.id != r.id || m.direction != Direction::Out {
                continue;
            }
            done.insert(r.id);
            done_seqs.insert(r.seq);
            let newly = if direct {
                let newly = m.delivered_at.is_none();
                m.status = m.status.max(Status::Delivered);
                m.delivered_at.get_or_insert(at);
                s.put(&mut ctx.batch, Table::Messages, &key, &m);
                newly
            } else {
                m.recipients.contains(&from.user_id)
                    && self.group_delivered(s, &mut ctx.batch, &key, &from.user_id, at)?
            };
            if newly {
                events.push(NodeEvent::Delivered { id: r.id.to_hex(), to: from.name.clone(), at });
            }
        }
        if !direct {
            self.cursor_past(s, &mut ctx.batch, &from.user_id, &conv, &done_seqs)?;
            return Ok(Accepted::Stored(events));
        }
        for item in s.scan::<OutboxItem>(Table::Outbox, &from.user_id.0) {
            let (okey, it) = item?;
            let arrived = Envelope::decode(&it.envelope).is_ok_and(|e| envelopes.contains(&e.seq));
            if arrived || it.msg_id.is_some_and(|id| done.contains(&id)) {
                s.delete(&mut ctx.batch, Table::Outbox, &okey);
            }
        }
        Ok(Accepted::Stored(events))
    }

    pub(crate) fn group_delivered(
        &self,
        s: &Store,
        b: &mut Batch,
        msg_key: &[u8],
        uid: &UserId,
        at: u64,
    ) -> Result<bool, NodeError> {
        let rk = receipt_key(msg_key, uid);
        let mut rec = s.get::<MemberReceipt>(Table::Receipts, &rk)?.unwrap_or_default();
        if rec.delivered_at.is_some() {
            return Ok(false);
        }
        rec.delivered_at = Some(at);
        s.put(b, Table::Receipts, &rk, &rec);
        Ok(true)
    }
}

/// How many DINGs this node recorded after `since` (its clock) in `direction` from `from`: what
/// both rate limits count.
fn recent_dings(s: &Store, direction: Direction, from: &UserId, since: u64) -> usize {
    s.scan::<DingRec>(Table::Dings, &[])
        .filter_map(Result::ok)
        .filter(|(_, d)| d.direction == direction && d.from == *from && d.received_at > since)
        .count()
}

fn check_text(text: &str) -> Result<(), NodeError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(NodeError::TooLong(text.len(), MAX_TEXT_BYTES));
    }
    if text.is_empty() {
        return Err(NodeError::Empty);
    }
    Ok(())
}
