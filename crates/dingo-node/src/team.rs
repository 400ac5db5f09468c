//! The team: its op log (a CRDT evaluated by `dingo-crypto::membership`), join codes, the
//! anti-entropy that keeps members' logs equal, and the contacts that follow membership (every
//! member is a contact; a removed member's device is refused). Like `chat`, every function
//! here runs inside a store job.
//!
//! Ops travel pairwise (Double Ratchet sessions): the author sends a new op to every member and
//! the whole log to a member it adds; members exchange heads (`TeamSync`) when they connect or
//! receive an op whose dependencies they lack, and send each other what the other lacks.

use crate::chat::{Core, Effects, SealCtx};
use crate::records::*;
use crate::{NodeError, NodeEvent};
use dingo_crypto::membership::{Member, TeamLog, TeamState};
use dingo_store::{Batch, Store, Table};
use dingo_types::content::Content;
use dingo_types::envelope::Envelope;
use dingo_types::invite::Invite;
use dingo_types::limits::{MAX_CIPHERTEXT_BYTES, MAX_OPS_PER_MESSAGE};
use dingo_types::team::{Action, JoinCode, MemberInfo, Role, TeamId};
use dingo_types::{DeviceKey, UserId};
use std::collections::HashMap;
use std::sync::Arc;

const TEAM_KEY: &[u8] = b"team";
const SEEN_KEY: &[u8] = b"seen";
/// How long a join code works unless the admin says otherwise.
pub const JOIN_CODE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

fn op_key(team: &TeamId, hash: &[u8; 32]) -> Vec<u8> {
    [team.as_slice(), hash].concat()
}

/// Splits ops into messages that fit an envelope.
fn chunk_ops(ops: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let budget = MAX_CIPHERTEXT_BYTES - 4096;
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut size = 0;
    for op in ops {
        let fits = out.last().is_some_and(|c| c.len() < MAX_OPS_PER_MESSAGE && size + op.len() + 8 <= budget);
        if !fits {
            out.push(Vec::new());
            size = 0;
        }
        size += op.len() + 8;
        if let Some(c) = out.last_mut() {
            c.push(op);
        }
    }
    out
}

impl Core {
    pub(crate) fn team_rec(&self, s: &Store) -> Result<TeamRec, NodeError> {
        Ok(s.get::<TeamRec>(Table::Team, TEAM_KEY)?.unwrap_or_default())
    }

    pub(crate) fn put_team_rec(&self, s: &Store, b: &mut Batch, rec: &TeamRec) {
        s.put(b, Table::Team, TEAM_KEY, rec);
    }

    fn load_log(&self, s: &Store, team: &TeamId) -> Result<TeamLog, NodeError> {
        let corrupt = || NodeError::Store(dingo_store::StoreError::Corrupt(Table::TeamOps));
        let genesis = s.get::<Vec<u8>>(Table::TeamOps, &op_key(team, team))?.ok_or_else(corrupt)?;
        let mut log = TeamLog::from_genesis(&genesis).map_err(|_| corrupt())?;
        let mut ops = Vec::new();
        for item in s.scan::<Vec<u8>>(Table::TeamOps, team) {
            ops.push(item?.1);
        }
        log.receive_many(ops.iter().map(Vec::as_slice));
        Ok(log)
    }

    /// Runs `f` on the team log (loading it on first use); `None` when not in a team.
    pub(crate) fn with_team<R>(
        &self,
        s: &Store,
        f: impl FnOnce(Option<&mut TeamLog>) -> Result<R, NodeError>,
    ) -> Result<R, NodeError> {
        let mut slot = self.team.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let rec = self.team_rec(s)?;
            *slot = Some(match rec.team {
                Some(t) => Some(self.load_log(s, &t)?),
                None => None,
            });
        }
        let log = slot.as_mut().and_then(|l| l.as_mut());
        let r = f(log);
        self.team_changed();
        r
    }

    /// Drops the shared membership snapshot (the log changed, or may have).
    pub(crate) fn team_changed(&self) {
        *self.team_cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The membership now, if in a team: a shared snapshot, cheap to take on every envelope.
    pub(crate) fn team_state(&self, s: &Store) -> Result<crate::chat::TeamSnapshot, NodeError> {
        if let Some(snap) = self.team_cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(snap.clone());
        }
        let snap = self.with_team(s, |log| Ok(log.map(|l| (l.id(), Arc::new(l.state().clone())))))?;
        *self.team_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap.clone());
        Ok(snap)
    }

    fn require_team(&self, s: &Store) -> Result<(TeamId, Arc<TeamState>), NodeError> {
        self.team_state(s)?.ok_or(NodeError::NoTeam)
    }

    /// Finds a member by contact name, team name, or user-id prefix.
    pub(crate) fn member(&self, s: &Store, state: &TeamState, who: &str) -> Result<UserId, NodeError> {
        let me = self.me.user_id();
        if (who.eq_ignore_ascii_case("me") || who.eq_ignore_ascii_case(self.me.name()))
            && state.members.contains_key(&me)
        {
            return Ok(me);
        }
        if let Ok(c) = self.contact(s, who) {
            if state.members.contains_key(&c.user_id) || state.removed.contains_key(&c.user_id) {
                return Ok(c.user_id);
            }
        }
        let hits: Vec<UserId> = state
            .members
            .iter()
            .filter(|(uid, m)| {
                m.info.name.eq_ignore_ascii_case(who)
                    || (who.len() >= 4 && uid.to_hex().starts_with(&who.to_lowercase()))
            })
            .map(|(uid, _)| *uid)
            .collect();
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(NodeError::UnknownMember(who.into())),
            _ => Err(NodeError::AmbiguousContact(who.into())),
        }
    }

    /// A member's local display name.
    pub(crate) fn member_name(&self, s: &Store, state: &TeamState, uid: &UserId) -> String {
        if *uid == self.me.user_id() {
            return self.me.name().to_owned();
        }
        // The cached list: a name is looked up for every channel message received.
        if let Ok(Some(name)) = self.with_contact(s, uid, |c| c.name.clone()) {
            return name;
        }
        state.members.get(uid).map(|m| m.info.name.clone()).unwrap_or_else(|| uid.to_hex()[..8].to_owned())
    }

    // ---- authoring ----

    /// Creates a team with this user as its first admin.
    pub(crate) fn create_team(&self, s: &Store, name: &str, now: u64) -> Result<TeamView, NodeError> {
        let name = name.trim();
        if name.is_empty() || name.len() > dingo_types::limits::MAX_NAME_BYTES {
            return Err(NodeError::BadName("a team name must be 1 to 64 bytes".into()));
        }
        if let Some((_, state)) = self.team_state(s)? {
            return Err(NodeError::AlreadyInTeam(state.name.clone()));
        }
        let (log, genesis) = TeamLog::create(&self.me, name, now)?;
        let mut b = Batch::default();
        s.put(&mut b, Table::TeamOps, &op_key(&log.id(), &log.id()), &genesis);
        let mut rec = self.team_rec(s)?;
        rec.team = Some(log.id());
        rec.joining = None;
        self.put_team_rec(s, &mut b, &rec);
        self.apply(s, b)?;
        *self.team.lock().unwrap_or_else(|p| p.into_inner()) = Some(Some(log));
        self.team_changed();
        self.team_view(s)
    }

    /// Authors `action` (checked first, so a refusal changes nothing), stores it and queues it
    /// to every member; a member it adds gets the whole log.
    pub(crate) fn author(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        action: Action,
        now: u64,
    ) -> Result<(), NodeError> {
        self.author_many(s, ctx, vec![action], now)
    }

    /// Authors several ops in order, all or none; each member is sent the new ops once (a member
    /// they add, the whole log).
    pub(crate) fn author_many(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        actions: Vec<Action>,
        now: u64,
    ) -> Result<(), NodeError> {
        let mut added = std::collections::BTreeSet::new();
        for a in &actions {
            if let Action::Add { member, .. } = a {
                added.insert(member.user_id().map_err(|e| NodeError::BadInvite(e.to_string()))?);
            }
        }
        let (prev, ops, team, all) = self.with_team(s, |log| {
            let log = log.ok_or(NodeError::NoTeam)?;
            let prev = log.state().clone();
            // On a copy: one refused op leaves the log as it was.
            let mut trial = log.clone();
            let ops =
                actions.into_iter().map(|a| trial.author(&self.me, a, now)).collect::<Result<Vec<_>, _>>()?;
            *log = trial;
            Ok((prev, ops, log.id(), log.all_ops()))
        })?;
        for op in &ops {
            s.put(&mut ctx.batch, Table::TeamOps, &op_key(&team, &blake3::hash(op).into()), op);
        }
        let sent = self.after_team_change(s, ctx, &prev, now).and_then(|()| {
            let (_, state) = self.require_team(s)?;
            for uid in state.members.keys().filter(|u| **u != self.me.user_id()) {
                let to_send = if added.contains(uid) { all.clone() } else { ops.clone() };
                self.send_ops(s, ctx, uid, team, to_send)?;
            }
            Ok(())
        });
        if sent.is_err() {
            // Not written: reload the log from the store on next use.
            *self.team.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.team_changed();
        }
        sent
    }

    fn send_ops(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        to: &UserId,
        team: TeamId,
        ops: Vec<Vec<u8>>,
    ) -> Result<(), NodeError> {
        let Some(contact) = s.get::<ContactRec>(Table::Contacts, &to.0)? else { return Ok(()) };
        for chunk in chunk_ops(ops) {
            let content = Content::TeamOps { team, ops: chunk };
            if let Err(e) = self.seal_into(s, ctx, &contact, &content, None) {
                // A member whose key changed gets the ops after re-verification, via sync.
                tracing::warn!(member = %contact.name, "team ops not sent: {e}");
                return Ok(());
            }
        }
        Ok(())
    }

    fn send_sync(&self, s: &Store, ctx: &mut SealCtx, contact: &ContactRec) -> Result<(), NodeError> {
        let Some((team, heads)) = self.with_team(s, |log| Ok(log.map(|l| (l.id(), l.heads()))))? else {
            return Ok(());
        };
        let heads = heads.into_iter().take(dingo_types::limits::MAX_OP_DEPS).collect();
        if let Err(e) = self.seal_into(s, ctx, contact, &Content::TeamSync { team, heads }, None) {
            tracing::debug!(member = %contact.name, "team sync not sent: {e}");
        }
        Ok(())
    }

    /// Asks a member who just connected for what this log lacks (and offers what it has).
    pub(crate) fn sync_with(&self, s: &Store, device: &DeviceKey) -> Result<Effects, NodeError> {
        let Some(contact) = self.contact_by_device(s, device)? else { return Ok(Effects::default()) };
        let Some((_, state)) = self.team_state(s)? else { return Ok(Effects::default()) };
        if contact.removed || !state.members.contains_key(&contact.user_id) {
            return Ok(Effects::default());
        }
        let mut ctx = SealCtx::default();
        self.send_sync(s, &mut ctx, &contact)?;
        self.commit_seals(s, ctx)
    }

    /// Brings contacts, blocks and the team record in line with a membership change.
    pub(crate) fn after_team_change(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        prev: &TeamState,
        now: u64,
    ) -> Result<(), NodeError> {
        let (_, state) = self.require_team(s)?;
        let me = self.me.user_id();
        let mut contacts_changed = false;
        for (uid, m) in &state.members {
            if *uid == me {
                continue;
            }
            let existing = s.get::<ContactRec>(Table::Contacts, &uid.0)?;
            match existing {
                Some(mut c) if c.removed => {
                    c.removed = false;
                    s.put(&mut ctx.batch, Table::Contacts, &uid.0, &c);
                    contacts_changed = true;
                }
                Some(c) => {
                    if c.prekey.is_none() && c.cert == m.info.cert {
                        let mut c = c;
                        c.prekey = Some(m.info.prekey.clone());
                        s.put(&mut ctx.batch, Table::Contacts, &uid.0, &c);
                        contacts_changed = true;
                    }
                }
                None => {
                    let rec = self.member_contact(s, uid, m, now)?;
                    s.put(&mut ctx.batch, Table::ContactByDevice, &m.device_key, uid);
                    s.put(&mut ctx.batch, Table::Contacts, &uid.0, &rec);
                    ctx.effects.learn.push(rec);
                    contacts_changed = true;
                }
            }
        }
        for (uid, device) in &state.removed {
            if prev.removed.contains_key(uid) && !prev.members.contains_key(uid) {
                continue;
            }
            if *uid == me {
                continue;
            }
            ctx.effects.block.push(DeviceKey(*device));
            if let Some(mut c) = s.get::<ContactRec>(Table::Contacts, &uid.0)? {
                if !c.removed {
                    c.removed = true;
                    s.put(&mut ctx.batch, Table::Contacts, &uid.0, &c);
                    contacts_changed = true;
                }
            }
            // Nothing more goes to a removed member.
            for item in s.scan::<OutboxItem>(Table::Outbox, &uid.0) {
                let (key, _) = item?;
                s.delete(&mut ctx.batch, Table::Outbox, &key);
            }
            self.drop_cursors(s, &mut ctx.batch, uid)?;
        }
        if contacts_changed {
            // Written in this batch: the cache must not serve the old list in the meantime.
            self.apply(s, std::mem::take(&mut ctx.batch))?;
            self.contacts_changed();
        }
        let mut rec = self.team_rec(s)?;
        if let Some(j) = &rec.joining {
            if state.members.contains_key(&me) {
                ctx.effects.events.push(NodeEvent::Joined { team: state.name.clone() });
                rec.team = Some(j.team);
                rec.joining = None;
                self.put_team_rec(s, &mut ctx.batch, &rec);
            }
        }
        if prev.members.contains_key(&me) && !state.members.contains_key(&me) {
            ctx.effects.events.push(NodeEvent::RemovedFromTeam { team: state.name.clone() });
        }
        if prev.members != state.members || prev.channels != state.channels || prev.depts != state.depts {
            ctx.effects
                .events
                .push(NodeEvent::TeamChanged { team: state.name.clone(), members: state.members.len() });
        }
        Ok(())
    }

    fn member_contact(&self, s: &Store, uid: &UserId, m: &Member, now: u64) -> Result<ContactRec, NodeError> {
        Ok(ContactRec {
            user_id: *uid,
            name: self.unique_name(s, &m.info.name, uid)?,
            cert: m.info.cert.clone(),
            prekey: Some(m.info.prekey.clone()),
            addrs: m.info.addrs.clone(),
            verified: false,
            pending_cert: None,
            pending_prekey: None,
            added_at: now,
            removed: false,
        })
    }

    // ---- join codes ----

    /// Issues a one-time join code (admins only).
    pub(crate) fn make_join_code(
        &self,
        s: &Store,
        dept: Option<String>,
        ttl_ms: Option<u64>,
        addrs: Vec<String>,
        now: u64,
    ) -> Result<JoinCodeView, NodeError> {
        let (team, state) = self.require_team(s)?;
        let me = state.members.get(&self.me.user_id()).ok_or(NodeError::NoTeam)?;
        if me.role != Role::Admin {
            return Err(dingo_crypto::membership::TeamError::NotAdmin.into());
        }
        if let Some(d) = &dept {
            if !state.depts.contains(d) {
                return Err(dingo_crypto::membership::TeamError::UnknownDept(d.clone()).into());
            }
        }
        let token: [u8; 16] = rand::random();
        let expires_at = now + ttl_ms.unwrap_or(JOIN_CODE_TTL_MS);
        let code = JoinCode {
            team,
            team_name: state.name.clone(),
            admin: self.me.invite(addrs),
            token,
            expires_at,
            dept: dept.clone(),
        };
        let mut b = Batch::default();
        s.put(
            &mut b,
            Table::JoinTokens,
            &token,
            &JoinTokenRec { expires_at, dept: dept.clone(), used_by: None },
        );
        self.apply(s, b)?;
        Ok(JoinCodeView { code: code.to_code(), expires_at, dept })
    }

    /// Redeems a join code: adds the admin as a contact and sends them the join request.
    pub(crate) fn join_team(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        code: &str,
        addrs: &[String],
        now: u64,
    ) -> Result<(), NodeError> {
        let code = JoinCode::from_code(code).map_err(|e| NodeError::BadJoinCode(e.to_string()))?;
        if code.expires_at < now {
            return Err(NodeError::BadJoinCode("this code has expired; ask an admin for a new one".into()));
        }
        if let Some((_, state)) = self.team_state(s)? {
            return Err(NodeError::AlreadyInTeam(state.name.clone()));
        }
        let admin = self.add_or_reuse_contact(s, &code.admin, now)?;
        let mut rec = self.team_rec(s)?;
        rec.joining = Some(JoiningRec {
            team: code.team,
            team_name: code.team_name.clone(),
            admin: admin.user_id,
            requested_at: now,
            refused: None,
        });
        self.put_team_rec(s, &mut ctx.batch, &rec);
        let request = Content::JoinRequest {
            team: code.team,
            token: code.token,
            member: MemberInfo::from_invite(&self.me.invite(addrs.to_vec())),
        };
        self.seal_into(s, ctx, &admin, &request, None)?;
        Ok(())
    }

    fn add_or_reuse_contact(&self, s: &Store, invite: &Invite, now: u64) -> Result<ContactRec, NodeError> {
        let uid = UserId::from_user_key(&invite.cert.user_key);
        if let Some(c) = s.get::<ContactRec>(Table::Contacts, &uid.0)? {
            if c.cert == invite.cert.encode() {
                return Ok(c);
            }
        }
        let name = self.unique_name(s, &invite.name, &uid)?;
        self.add_contact(s, invite, Some(&name), now)
    }

    // ---- receiving ----

    /// Handles team content from `from` (a contact; its envelope already opened).
    pub(crate) fn accept_team(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        from: &ContactRec,
        env: &Envelope,
        content: Content,
        now: u64,
    ) -> Result<crate::chat::Accepted, NodeError> {
        use crate::chat::Accepted;
        match content {
            Content::TeamOps { team, mut ops } => {
                let rec = self.team_rec(s)?;
                let joining = rec.joining.as_ref().filter(|j| j.team == team && j.admin == from.user_id);
                let mut fresh = false;
                let prev = match self.team_state(s)? {
                    Some((id, st)) if id == team => st,
                    Some(_) => return Ok(Accepted::Rejected("ops of another team".into())),
                    None => {
                        // Our join request answered, or an admin who is our contact added us
                        // directly (`team add`): start the log at its genesis, but only if the
                        // ops really make this user a member. Strangers cannot pull us into teams.
                        let known = s.get::<ContactRec>(Table::Contacts, &from.user_id.0)?.is_some();
                        if joining.is_none() && !known {
                            return Ok(Accepted::Rejected("team ops while not in a team".into()));
                        }
                        // A big log comes in several messages: gather until it makes us a member.
                        let mut offered = match &rec.offered {
                            Some((t, o)) if *t == team => o.clone(),
                            _ => Vec::new(),
                        };
                        for op in &ops {
                            if !offered.contains(op) {
                                offered.push(op.clone());
                            }
                        }
                        if offered.len() > dingo_types::limits::MAX_TEAM_OPS {
                            return Ok(Accepted::Rejected("offered team log is too large".into()));
                        }
                        let genesis = offered.iter().find(|o| *blake3::hash(o).as_bytes() == team).cloned();
                        let trial =
                            genesis.as_ref().and_then(|g| TeamLog::from_genesis(g).ok()).map(|mut t| {
                                t.receive_many(offered.iter().map(Vec::as_slice));
                                t
                            });
                        let (Some(genesis), Some(trial)) =
                            (genesis, trial.filter(|t| t.state().members.contains_key(&self.me.user_id())))
                        else {
                            let mut rec = rec.clone();
                            rec.offered = Some((team, offered));
                            self.put_team_rec(s, &mut ctx.batch, &rec);
                            // The next message of the same batch must see what was gathered.
                            self.apply(s, std::mem::take(&mut ctx.batch))?;
                            return Ok(Accepted::Stored(Vec::new()));
                        };
                        ops = offered;
                        s.put(&mut ctx.batch, Table::TeamOps, &op_key(&team, &team), &genesis);
                        let mut rec = rec.clone();
                        rec.team = Some(team);
                        rec.offered = None;
                        rec.joining = None;
                        ctx.effects.events.push(NodeEvent::Joined { team: trial.state().name.clone() });
                        self.put_team_rec(s, &mut ctx.batch, &rec);
                        // Written now, so the steps below see this home as joined.
                        self.apply(s, std::mem::take(&mut ctx.batch))?;
                        let log = TeamLog::from_genesis(&genesis)?;
                        *self.team.lock().unwrap_or_else(|p| p.into_inner()) = Some(Some(log));
                        self.team_changed();
                        fresh = true;
                        Arc::new(TeamState::default())
                    }
                };
                // Ops prove themselves (signed by admins); still, only members (and the admin
                // answering our join) may fill this log.
                if !fresh && !prev.members.contains_key(&from.user_id) {
                    return Ok(Accepted::Rejected("team ops from a non-member".into()));
                }
                let (added, pending) = self.with_team(s, |log| {
                    let log = log.ok_or(NodeError::NoTeam)?;
                    let (added, errors) = log.receive_many(ops.iter().map(Vec::as_slice));
                    for e in errors {
                        tracing::warn!(from = %from.name, "team op refused: {e}");
                    }
                    Ok((added, log.pending_len()))
                })?;
                for op in &ops {
                    let h: [u8; 32] = blake3::hash(op).into();
                    if added.contains(&h) {
                        s.put(&mut ctx.batch, Table::TeamOps, &op_key(&team, &h), op);
                    }
                }
                if !added.is_empty() {
                    self.after_team_change(s, ctx, &prev, now)?;
                    // Projects and documents this node is new to: their content, at once.
                    let (_, state) = self.require_team(s)?;
                    self.pull_new_docs(s, ctx, &state, from, now)?;
                }
                if pending > 0 {
                    self.send_sync(s, ctx, from)?;
                }
                Ok(Accepted::Stored(std::mem::take(&mut ctx.effects.events)))
            }
            Content::TeamSync { team, heads } => {
                let Some((id, state)) = self.team_state(s)? else {
                    // Usual for a member being added: the admin's heads arrive before its log.
                    tracing::debug!(from = %from.name, "team sync ignored: not in a team (yet)");
                    return Ok(Accepted::Stored(Vec::new()));
                };
                if id != team || !state.members.contains_key(&from.user_id) {
                    return Ok(Accepted::Rejected("team sync from a non-member".into()));
                }
                let (missing, unknown) = self.with_team(s, |log| {
                    let log = log.ok_or(NodeError::NoTeam)?;
                    Ok((log.missing_for(&heads), heads.iter().any(|h| !log.contains(h))))
                })?;
                if !missing.is_empty() {
                    self.send_ops(s, ctx, &from.user_id, team, missing)?;
                }
                if unknown {
                    self.send_sync(s, ctx, from)?;
                }
                Ok(Accepted::Stored(Vec::new()))
            }
            Content::JoinRequest { team, token, member } => {
                self.accept_join_request(s, ctx, from, env, team, token, member, now)
            }
            Content::JoinRefused { team, reason } => {
                let mut rec = self.team_rec(s)?;
                match rec.joining.as_mut() {
                    Some(j) if j.team == team && j.admin == from.user_id => {
                        let reason: String = reason.chars().filter(|c| !c.is_control()).take(200).collect();
                        j.refused = Some(reason.clone());
                        self.put_team_rec(s, &mut ctx.batch, &rec);
                        Ok(Accepted::Stored(vec![NodeEvent::JoinRefused { reason }]))
                    }
                    _ => Ok(Accepted::Rejected("unexpected join refusal".into())),
                }
            }
            _ => Ok(Accepted::Rejected("not a team message".into())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn accept_join_request(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        from: &ContactRec,
        env: &Envelope,
        team: TeamId,
        token: [u8; 16],
        member: MemberInfo,
        now: u64,
    ) -> Result<crate::chat::Accepted, NodeError> {
        use crate::chat::Accepted;
        let refuse = |core: &Core, ctx: &mut SealCtx, reason: &str| -> Result<Accepted, NodeError> {
            let content = Content::JoinRefused { team, reason: reason.to_owned() };
            core.seal_into(s, ctx, from, &content, None)?;
            Ok(Accepted::Stored(Vec::new()))
        };
        // The request must describe the device that sent it: nobody joins on another's behalf.
        match member.device_cert() {
            Ok(cert) if cert.device_key == env.sender.0 && member.cert == from.cert => {}
            _ => return Ok(Accepted::Rejected("join request for another device".into())),
        }
        let Some((id, state)) = self.team_state(s)? else {
            return refuse(self, ctx, "that team is not on this node");
        };
        if id != team {
            return refuse(self, ctx, "the code is for another team");
        }
        let Some(mut tok) = s.get::<JoinTokenRec>(Table::JoinTokens, &token)? else {
            return refuse(self, ctx, "unknown join code");
        };
        if tok.used_by.is_some_and(|u| u != from.user_id) {
            return refuse(self, ctx, "this join code was already used");
        }
        if tok.expires_at < now {
            return refuse(self, ctx, "this join code has expired");
        }
        if state.members.contains_key(&from.user_id) {
            // Already in (e.g. the request was retried): send the log again.
            let all = self.with_team(s, |log| Ok(log.map(|l| l.all_ops()).unwrap_or_default()))?;
            self.send_ops(s, ctx, &from.user_id, team, all)?;
            return Ok(Accepted::Stored(Vec::new()));
        }
        let depts: Vec<String> = tok.dept.iter().filter(|d| state.depts.contains(*d)).cloned().collect();
        let action = Action::Add { member, role: Role::Member, depts };
        if let Err(e) = self.with_team(s, |log| Ok(log.ok_or(NodeError::NoTeam)?.check(&self.me, &action)))? {
            return refuse(self, ctx, &format!("the admin's node cannot add you: {e}"));
        }
        tok.used_by = Some(from.user_id);
        s.put(&mut ctx.batch, Table::JoinTokens, &token, &tok);
        self.author(s, ctx, action, now)?;
        Ok(Accepted::Stored(std::mem::take(&mut ctx.effects.events)))
    }

    // ---- views ----

    /// When each user's device was last heard from: this run's times over those saved at the
    /// last shutdown.
    pub(crate) fn seen(&self, s: &Store) -> Result<HashMap<UserId, u64>, NodeError> {
        let saved = s.get::<HashMap<UserId, u64>>(Table::Team, SEEN_KEY)?.unwrap_or_default();
        let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        let map = seen.get_or_insert_with(HashMap::new);
        for (uid, at) in saved {
            let e = map.entry(uid).or_insert(at);
            *e = (*e).max(at);
        }
        Ok(map.clone())
    }

    /// Saves the last-seen times (at shutdown).
    pub(crate) fn save_seen(&self, s: &Store) -> Result<(), NodeError> {
        let seen = self.seen(s)?;
        let mut b = Batch::default();
        s.put(&mut b, Table::Team, SEEN_KEY, &seen);
        self.apply(s, b)
    }

    pub(crate) fn team_view(&self, s: &Store) -> Result<TeamView, NodeError> {
        let rec = self.team_rec(s)?;
        let Some((id, state, ops, void)) = self
            .with_team(s, |log| Ok(log.map(|l| (l.id(), l.state().clone(), l.len(), l.void_ops().len()))))?
        else {
            if let Some(j) = rec.joining {
                return Ok(TeamView {
                    name: j.team_name.clone(),
                    team_id: dingo_types::ConvId(j.team).to_hex(),
                    members: Vec::new(),
                    departments: Vec::new(),
                    ops: 0,
                    void_ops: 0,
                    removed: Vec::new(),
                    joining: Some(match j.refused {
                        Some(r) => format!("refused: {r}"),
                        None => "waiting for the admin's node".into(),
                    }),
                });
            }
            return Err(NodeError::NoTeam);
        };
        let seen = self.seen(s)?;
        let me = self.me.user_id();
        let mut members: Vec<MemberView> = state
            .members
            .iter()
            .map(|(uid, m)| MemberView {
                name: self.member_name(s, &state, uid),
                user_id: uid.to_hex(),
                devices: vec![crate::chat::peer_id_string(&m.device_key)],
                role: match m.role {
                    Role::Admin => "admin".into(),
                    Role::Member => "member".into(),
                },
                departments: m.depts.iter().cloned().collect(),
                last_seen: if *uid == me { Some(dingo_types::now_ms()) } else { seen.get(uid).copied() },
                me: *uid == me,
            })
            .collect();
        members.sort_by_key(|m| m.name.to_lowercase());
        let departments = state
            .depts
            .iter()
            .map(|d| DeptView {
                name: d.clone(),
                members: state
                    .members
                    .iter()
                    .filter(|(_, m)| m.depts.contains(d))
                    .map(|(uid, _)| self.member_name(s, &state, uid))
                    .collect(),
            })
            .collect();
        Ok(TeamView {
            name: state.name.clone(),
            team_id: dingo_types::ConvId(id).to_hex(),
            members,
            departments,
            ops,
            void_ops: void,
            removed: state.removed.keys().map(|u| u.to_hex()).collect(),
            joining: None,
        })
    }
}
