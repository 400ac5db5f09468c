//! Team membership as a signed, causally ordered operation log (an op-based CRDT).
//!
//! Every op names the heads it follows (`deps`) and is signed by its author's device. The
//! membership is a pure function of the *set* of ops, so every peer holding the same ops
//! computes the same team, whatever order they arrived in:
//!
//! 1. Ops are replayed in a deterministic topological order: by Lamport number, then hash.
//! 2. An op takes effect only if, at its place in that order, its author is an admin (any
//!    member, for creating a project or a document) whose device is the one the team knows, and
//!    the op is valid against the state (no removing the last admin, no adding to an unknown
//!    department, ...).
//! 3. Strong removal: when an applied op removes or demotes a user, every op by that user that
//!    is *concurrent* with the removal (neither before nor after it) is void. Ops after it already
//!    fail step 2. The replay repeats until no new op becomes void. A removed member can
//!    therefore not act by backdating (naming old deps), and two admins who remove each other
//!    concurrently resolve the same way everywhere: the removal first in the order wins and
//!    voids the other.
//!
//! Team ids commit to the genesis op (its hash), so nobody can mint another genesis.

use crate::identity::{verify, verify_cert};
use crate::CryptoError;
use dingo_types::invite::{DeviceCert, Invite};
use dingo_types::limits::{MAX_TEAM_MEMBERS, MAX_TEAM_OPS};
use dingo_types::team::*;
use dingo_types::{ConvId, DecodeError, UserId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use thiserror::Error;

/// Most ops held while waiting for their dependencies.
pub const MAX_PENDING_OPS: usize = 4096;
/// The channel every team starts with.
pub const GENERAL_CHANNEL: &str = "general";

/// Why an op was refused on arrival, or would not take effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TeamError {
    /// The op does not parse.
    #[error("malformed team op: {0}")]
    Malformed(#[from] DecodeError),
    /// Signature, certificate or prekey check failed.
    #[error("team op signature or certificate check failed")]
    BadSignature,
    /// The op belongs to another team.
    #[error("op belongs to another team")]
    WrongTeam,
    /// A second genesis, a non-genesis without deps, or a wrong Lamport number.
    #[error("op is not correctly placed in the log: {0}")]
    BadPlacement(&'static str),
    /// The log or the pending set is full.
    #[error("team log is full")]
    Full,
    /// The author is not an admin (or not a member, or was removed).
    #[error("only admins can do that")]
    NotAdmin,
    /// The author's device is not the one the team knows for that user.
    #[error("op signed by a device the team does not know for its author")]
    WrongDevice,
    /// The named user is not a member.
    #[error("{0} is not a member of the team")]
    NotMember(String),
    /// The named user is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(String),
    /// The op would leave the team without an admin.
    #[error("the team must keep at least one admin")]
    LastAdmin,
    /// The member already has that role.
    #[error("{0} already has that role")]
    SameRole(String),
    /// No such department.
    #[error("no department named {0}")]
    UnknownDept(String),
    /// The department exists.
    #[error("department {0} already exists")]
    DeptExists(String),
    /// The member is (not) in the department.
    #[error("{0}")]
    DeptMembership(String),
    /// The channel exists.
    #[error("channel #{0} already exists")]
    ChannelExists(String),
    /// The team has reached [`MAX_TEAM_MEMBERS`].
    #[error("the team is full")]
    TeamFull,
    /// Voided by strong removal.
    #[error("void: its author was removed concurrently")]
    Void,
}

impl From<CryptoError> for TeamError {
    fn from(_: CryptoError) -> Self {
        TeamError::BadSignature
    }
}

/// A member as the team sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Device, prekey, name and address hints.
    pub info: MemberInfo,
    /// The device's signing key.
    pub device_key: [u8; 32],
    /// Admin or member.
    pub role: Role,
    /// Departments.
    pub depts: BTreeSet<String>,
    /// When they were added (author's clock).
    pub added_at: u64,
}

/// A channel as the team sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// The group id its messages carry.
    pub id: ConvId,
    /// Departments whose members belong.
    pub depts: BTreeSet<String>,
    /// Individually listed members.
    pub members: BTreeSet<UserId>,
    /// Who created it.
    pub created_by: UserId,
}

/// The membership computed from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamState {
    /// The team's name.
    pub name: String,
    /// Current members.
    pub members: BTreeMap<UserId, Member>,
    /// Users removed (and not added again), with the device key to refuse.
    pub removed: BTreeMap<UserId, [u8; 32]>,
    /// Departments.
    pub depts: BTreeSet<String>,
    /// Channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// Projects (task boards) by name, scoped like channels.
    pub projects: BTreeMap<String, Channel>,
    /// Shared text documents by name, scoped like channels.
    pub docs: BTreeMap<String, Channel>,
}

impl TeamState {
    /// Members of a channel now: everyone for a channel with no scope, else the listed members
    /// plus the listed departments' members.
    pub fn channel_members(&self, channel: &Channel) -> BTreeSet<UserId> {
        if channel.depts.is_empty() && channel.members.is_empty() {
            return self.members.keys().copied().collect();
        }
        self.members
            .iter()
            .filter(|(uid, m)| {
                channel.members.contains(uid) || m.depts.iter().any(|d| channel.depts.contains(d))
            })
            .map(|(uid, _)| *uid)
            .collect()
    }

    /// Admins now.
    pub fn admins(&self) -> usize {
        self.members.values().filter(|m| m.role == Role::Admin).count()
    }

    /// The channel with this group id.
    pub fn channel_by_id(&self, id: &ConvId) -> Option<(&String, &Channel)> {
        self.channels.iter().find(|(_, c)| c.id == *id)
    }

    /// The project whose group id is `id`.
    pub fn project_by_id(&self, id: &ConvId) -> Option<(&String, &Channel)> {
        self.projects.iter().find(|(_, c)| c.id == *id)
    }

    /// The document whose group id is `id`.
    pub fn doc_by_id(&self, id: &ConvId) -> Option<(&String, &Channel)> {
        self.docs.iter().find(|(_, c)| c.id == *id)
    }

    /// The channel, project or document whose group id is `id`.
    pub fn group_by_id(&self, id: &ConvId) -> Option<(&String, &Channel)> {
        self.channel_by_id(id).or_else(|| self.project_by_id(id)).or_else(|| self.doc_by_id(id))
    }

    fn name_of(&self, uid: &UserId) -> String {
        self.members.get(uid).map(|m| m.info.name.clone()).unwrap_or_else(|| uid.to_hex()[..8].to_owned())
    }

    /// Applies `action` by `author` (signed by `device`), or says why it does not take effect.
    fn apply(
        &mut self,
        author: &UserId,
        device: &[u8; 32],
        action: &Action,
        op: &OpHash,
        team: &TeamId,
        at: u64,
    ) -> Result<(), TeamError> {
        let a = self.members.get(author).ok_or(TeamError::NotAdmin)?;
        if a.device_key != *device {
            return Err(TeamError::WrongDevice);
        }
        // Any member may start a project or a document; everything else is for admins.
        let for_members = matches!(action, Action::ProjectCreate { .. } | Action::DocCreate { .. });
        if a.role != Role::Admin && !for_members {
            return Err(TeamError::NotAdmin);
        }
        match action {
            Action::Create { .. } => return Err(TeamError::BadPlacement("second genesis")),
            Action::Add { member, role, depts } => {
                let cert = member.device_cert()?;
                let uid = UserId::from_user_key(&cert.user_key);
                if self.members.contains_key(&uid) {
                    return Err(TeamError::AlreadyMember(member.name.clone()));
                }
                if self.members.len() >= MAX_TEAM_MEMBERS {
                    return Err(TeamError::TeamFull);
                }
                if let Some(d) = depts.iter().find(|d| !self.depts.contains(*d)) {
                    return Err(TeamError::UnknownDept(d.clone()));
                }
                self.removed.remove(&uid);
                self.members.insert(
                    uid,
                    Member {
                        info: member.clone(),
                        device_key: cert.device_key,
                        role: *role,
                        depts: depts.iter().cloned().collect(),
                        added_at: at,
                    },
                );
            }
            Action::Remove { user } => {
                let m = self.members.get(user).ok_or_else(|| TeamError::NotMember(user.to_hex()))?;
                if m.role == Role::Admin && self.admins() == 1 {
                    return Err(TeamError::LastAdmin);
                }
                let device = m.device_key;
                self.members.remove(user);
                self.removed.insert(*user, device);
            }
            Action::Promote { user } | Action::Demote { user } => {
                let admins = self.admins();
                let name = self.name_of(user);
                let m = self.members.get_mut(user).ok_or(TeamError::NotMember(name.clone()))?;
                let to = if matches!(action, Action::Promote { .. }) { Role::Admin } else { Role::Member };
                if m.role == to {
                    return Err(TeamError::SameRole(name));
                }
                if to == Role::Member && admins == 1 {
                    return Err(TeamError::LastAdmin);
                }
                m.role = to;
            }
            Action::DeptCreate { name } => {
                if !self.depts.insert(name.clone()) {
                    return Err(TeamError::DeptExists(name.clone()));
                }
            }
            Action::DeptAdd { dept, user } | Action::DeptRemove { dept, user } => {
                if !self.depts.contains(dept) {
                    return Err(TeamError::UnknownDept(dept.clone()));
                }
                let name = self.name_of(user);
                let m = self.members.get_mut(user).ok_or(TeamError::NotMember(name.clone()))?;
                let changed = if matches!(action, Action::DeptAdd { .. }) {
                    m.depts.insert(dept.clone())
                } else {
                    m.depts.remove(dept)
                };
                if !changed {
                    return Err(TeamError::DeptMembership(format!("{name}: no change in department {dept}")));
                }
            }
            Action::ChannelCreate { name, depts, members }
            | Action::ProjectCreate { name, depts, members }
            | Action::DocCreate { name, depts, members } => {
                let (context, existing) = match action {
                    Action::ProjectCreate { .. } => ("dingo 2026 project id v1", &self.projects),
                    Action::DocCreate { .. } => ("dingo 2026 document id v1", &self.docs),
                    _ => ("dingo 2026 channel id v1", &self.channels),
                };
                if existing.contains_key(name) {
                    return Err(TeamError::ChannelExists(name.clone()));
                }
                if let Some(d) = depts.iter().find(|d| !self.depts.contains(*d)) {
                    return Err(TeamError::UnknownDept(d.clone()));
                }
                if let Some(u) = members.iter().find(|u| !self.members.contains_key(*u)) {
                    return Err(TeamError::NotMember(u.to_hex()));
                }
                let id = group_id(context, team, op);
                let target = match action {
                    Action::ProjectCreate { .. } => &mut self.projects,
                    Action::DocCreate { .. } => &mut self.docs,
                    _ => &mut self.channels,
                };
                target.insert(
                    name.clone(),
                    Channel {
                        id,
                        depts: depts.iter().cloned().collect(),
                        members: members.iter().copied().collect(),
                        created_by: *author,
                    },
                );
            }
        }
        Ok(())
    }
}

/// The group id of the channel created by `op` in `team`.
pub fn channel_id(team: &TeamId, op: &OpHash) -> ConvId {
    group_id("dingo 2026 channel id v1", team, op)
}

/// The group id of a channel, project or document created by `op` in `team` (each kind has its
/// own derivation context, so ids never collide across kinds).
fn group_id(context: &str, team: &TeamId, op: &OpHash) -> ConvId {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(team);
    h.update(op);
    ConvId(*h.finalize().as_bytes())
}

/// One op in the log, verified.
#[derive(Debug, Clone)]
struct LoggedOp {
    bytes: Vec<u8>,
    body: OpBody,
    author: UserId,
    device: [u8; 32],
}

/// What receiving an op did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Added to the log, with any pending ops it released (hashes, in insertion order).
    Added(Vec<OpHash>),
    /// Already known.
    Duplicate,
    /// Held until its dependencies arrive.
    Pending,
}

/// A team's op log and the membership computed from it.
#[derive(Debug, Clone)]
pub struct TeamLog {
    id: TeamId,
    ops: HashMap<OpHash, LoggedOp>,
    /// In replay order: (lamport, hash).
    order: BTreeSet<(u64, OpHash)>,
    heads: BTreeSet<OpHash>,
    pending: HashMap<OpHash, (Vec<u8>, OpBody)>,
    state: TeamState,
    void: BTreeMap<OpHash, TeamError>,
}

/// Checks an op's signatures (op, author cert, any member cert and prekey it adds).
fn verify_op(op: &SignedOp, body: &OpBody) -> Result<(DeviceCert, UserId), TeamError> {
    let cert = body.author_cert()?;
    verify_cert(&cert)?;
    verify(&cert.device_key, &SignedOp::signed_bytes(&op.body), &op.signature)?;
    let member = match &body.action {
        Action::Create { creator, .. } => Some(creator),
        Action::Add { member, .. } => Some(member),
        _ => None,
    };
    if let Some(m) = member {
        let invite = Invite {
            name: m.name.clone(),
            cert: m.device_cert()?,
            prekey: m.signed_prekey()?,
            addrs: Vec::new(),
        };
        crate::identity::verify_invite(&invite)?;
    }
    Ok((cert.clone(), UserId::from_user_key(&cert.user_key)))
}

impl TeamLog {
    /// Starts a log from its genesis op (received or authored).
    pub fn from_genesis(bytes: &[u8]) -> Result<Self, TeamError> {
        let (op, body) = SignedOp::decode(bytes)?;
        let Action::Create { name, creator } = &body.action else {
            return Err(TeamError::BadPlacement("first op is not a genesis"));
        };
        if body.team != [0; 32] || body.lamport != 0 || !body.deps.is_empty() {
            return Err(TeamError::BadPlacement("genesis with a team, deps or Lamport number"));
        }
        let (cert, author) = verify_op(&op, &body)?;
        if creator.cert != body.author {
            return Err(TeamError::WrongDevice);
        }
        let hash = op.hash();
        let mut state = TeamState { name: name.clone(), ..TeamState::default() };
        state.members.insert(
            author,
            Member {
                info: creator.clone(),
                device_key: cert.device_key,
                role: Role::Admin,
                depts: BTreeSet::new(),
                added_at: body.at,
            },
        );
        state.channels.insert(
            GENERAL_CHANNEL.to_owned(),
            Channel {
                id: channel_id(&hash, &hash),
                depts: BTreeSet::new(),
                members: BTreeSet::new(),
                created_by: author,
            },
        );
        let mut log = Self {
            id: hash,
            ops: HashMap::new(),
            order: BTreeSet::new(),
            heads: BTreeSet::from([hash]),
            pending: HashMap::new(),
            state,
            void: BTreeMap::new(),
        };
        log.order.insert((0, hash));
        log.ops.insert(hash, LoggedOp { bytes: bytes.to_vec(), body, author, device: cert.device_key });
        Ok(log)
    }

    /// Creates a team: signs its genesis op, with the creator as described by its own invite.
    pub fn create(me: &crate::Identity, name: &str, now: u64) -> Result<(Self, Vec<u8>), TeamError> {
        let creator = MemberInfo::from_invite(&me.invite(Vec::new()));
        let body = OpBody {
            team: [0; 32],
            author: me.cert().encode(),
            lamport: 0,
            deps: Vec::new(),
            at: now,
            action: Action::Create { name: name.to_owned(), creator },
        };
        let bytes = sign(me, &body);
        Ok((Self::from_genesis(&bytes)?, bytes))
    }

    /// The team id (the genesis op's hash).
    pub fn id(&self) -> TeamId {
        self.id
    }

    /// The membership now.
    pub fn state(&self) -> &TeamState {
        &self.state
    }

    /// How many ops the log holds (applied or void).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Never true: a log has at least its genesis.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Ops that did not take effect, and why.
    pub fn void_ops(&self) -> &BTreeMap<OpHash, TeamError> {
        &self.void
    }

    /// The current heads (ops nothing else follows yet).
    pub fn heads(&self) -> Vec<OpHash> {
        self.heads.iter().copied().collect()
    }

    /// Every op's encoding, in replay order (genesis first), for sending to a member.
    pub fn all_ops(&self) -> Vec<Vec<u8>> {
        self.order.iter().map(|(_, h)| self.ops[h].bytes.clone()).collect()
    }

    /// The ops a peer whose heads are `heads` lacks (as far as this log can tell), in replay
    /// order. Heads this log does not know are ignored.
    pub fn missing_for(&self, heads: &[OpHash]) -> Vec<Vec<u8>> {
        let mut have: HashSet<OpHash> = HashSet::new();
        let mut stack: Vec<OpHash> = heads.iter().filter(|h| self.ops.contains_key(*h)).copied().collect();
        while let Some(h) = stack.pop() {
            if have.insert(h) {
                stack.extend(self.ops[&h].body.deps.iter().copied());
            }
        }
        self.order.iter().filter(|(_, h)| !have.contains(h)).map(|(_, h)| self.ops[h].bytes.clone()).collect()
    }

    /// Whether the op is in the log.
    pub fn contains(&self, hash: &OpHash) -> bool {
        self.ops.contains_key(hash)
    }

    /// Ops waiting for dependencies.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Receives an op from anyone: verified, placed, and the membership recomputed.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Received, TeamError> {
        let r = self.ingest(bytes)?;
        if matches!(r, Received::Added(_)) {
            self.recompute();
        }
        Ok(r)
    }

    /// Receives many ops, recomputing the membership once. Returns the hashes added and the
    /// errors of refused ops (the others are still taken).
    pub fn receive_many<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<OpHash>, Vec<TeamError>) {
        let mut added = Vec::new();
        let mut errors = Vec::new();
        for bytes in ops {
            match self.ingest(bytes) {
                Ok(Received::Added(h)) => added.extend(h),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        if !added.is_empty() {
            self.recompute();
        }
        (added, errors)
    }

    /// Verifies and places one op without recomputing the membership.
    fn ingest(&mut self, bytes: &[u8]) -> Result<Received, TeamError> {
        let (op, body) = SignedOp::decode(bytes)?;
        let hash = op.hash();
        if self.ops.contains_key(&hash) || self.pending.contains_key(&hash) {
            return Ok(Received::Duplicate);
        }
        if body.team != self.id {
            return Err(TeamError::WrongTeam);
        }
        if matches!(body.action, Action::Create { .. }) || body.deps.is_empty() {
            return Err(TeamError::BadPlacement("a second genesis or an op without deps"));
        }
        let distinct: HashSet<&OpHash> = body.deps.iter().collect();
        if distinct.len() != body.deps.len() {
            return Err(TeamError::BadPlacement("repeated dependency"));
        }
        verify_op(&op, &body)?;
        if self.ops.len() + self.pending.len() >= MAX_TEAM_OPS {
            return Err(TeamError::Full);
        }
        if body.deps.iter().any(|d| !self.ops.contains_key(d)) {
            if self.pending.len() >= MAX_PENDING_OPS {
                return Err(TeamError::Full);
            }
            self.pending.insert(hash, (bytes.to_vec(), body));
            return Ok(Received::Pending);
        }
        self.integrate(hash, bytes.to_vec(), body)?;
        let mut added = vec![hash];
        // Release pending ops whose deps are now all present (repeatedly).
        loop {
            let ready: Vec<OpHash> = self
                .pending
                .iter()
                .filter(|(_, (_, b))| b.deps.iter().all(|d| self.ops.contains_key(d)))
                .map(|(h, _)| *h)
                .collect();
            if ready.is_empty() {
                break;
            }
            for h in ready {
                if let Some((bytes, body)) = self.pending.remove(&h) {
                    // A pending op with a wrong Lamport number is dropped, not kept.
                    if self.integrate(h, bytes, body).is_ok() {
                        added.push(h);
                    }
                }
            }
        }
        Ok(Received::Added(added))
    }

    /// Adds a verified op whose deps are present (checks its Lamport number).
    fn integrate(&mut self, hash: OpHash, bytes: Vec<u8>, body: OpBody) -> Result<(), TeamError> {
        let expected = 1 + body.deps.iter().map(|d| self.ops[d].body.lamport).max().unwrap_or(0);
        if body.lamport != expected {
            return Err(TeamError::BadPlacement("wrong Lamport number"));
        }
        let cert = body.author_cert()?;
        for d in &body.deps {
            self.heads.remove(d);
        }
        self.heads.insert(hash);
        self.order.insert((body.lamport, hash));
        let author = UserId::from_user_key(&cert.user_key);
        self.ops.insert(hash, LoggedOp { bytes, body, author, device: cert.device_key });
        Ok(())
    }

    /// Whether `a` is a strict causal ancestor of `b`.
    fn is_ancestor(&self, a: &OpHash, b: &OpHash) -> bool {
        let la = self.ops[a].body.lamport;
        let mut stack = vec![*b];
        let mut seen = HashSet::new();
        while let Some(x) = stack.pop() {
            for d in &self.ops[&x].body.deps {
                if d == a {
                    return true;
                }
                // Ancestors have smaller Lamport numbers: nothing at or below `a`'s can lead to it.
                if self.ops[d].body.lamport > la && seen.insert(*d) {
                    stack.push(*d);
                }
            }
        }
        false
    }

    /// Replays the whole log (see the module docs).
    fn recompute(&mut self) {
        let mut void: BTreeSet<OpHash> = BTreeSet::new();
        loop {
            let (state, errors, removals) = self.replay(&void);
            let mut grew = false;
            for (r, target) in &removals {
                for (h, op) in &self.ops {
                    if op.author != *target || h == r || void.contains(h) {
                        continue;
                    }
                    if !self.is_ancestor(h, r) && !self.is_ancestor(r, h) {
                        void.insert(*h);
                        grew = true;
                    }
                }
            }
            if !grew {
                self.state = state;
                self.void = errors;
                for h in &void {
                    self.void.insert(*h, TeamError::Void);
                }
                return;
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn replay(
        &self,
        void: &BTreeSet<OpHash>,
    ) -> (TeamState, BTreeMap<OpHash, TeamError>, Vec<(OpHash, UserId)>) {
        let mut errors = BTreeMap::new();
        let mut removals = Vec::new();
        let genesis = &self.ops[&self.id];
        let mut state = TeamState::default();
        if let Action::Create { name, creator } = &genesis.body.action {
            state.name = name.clone();
            state.members.insert(
                genesis.author,
                Member {
                    info: creator.clone(),
                    device_key: genesis.device,
                    role: Role::Admin,
                    depts: BTreeSet::new(),
                    added_at: genesis.body.at,
                },
            );
            state.channels.insert(
                GENERAL_CHANNEL.to_owned(),
                Channel {
                    id: channel_id(&self.id, &self.id),
                    depts: BTreeSet::new(),
                    members: BTreeSet::new(),
                    created_by: genesis.author,
                },
            );
        }
        for (_, h) in self.order.iter().skip(1) {
            if void.contains(h) {
                continue;
            }
            let op = &self.ops[h];
            match state.apply(&op.author, &op.device, &op.body.action, h, &self.id, op.body.at) {
                Ok(()) => match &op.body.action {
                    Action::Remove { user } | Action::Demote { user } => removals.push((*h, *user)),
                    _ => {}
                },
                Err(e) => {
                    errors.insert(*h, e);
                }
            }
        }
        (state, errors, removals)
    }

    /// Checks that `action` by `me` would take effect now, without changing anything.
    pub fn check(&self, me: &crate::Identity, action: &Action) -> Result<(), TeamError> {
        let mut state = self.state.clone();
        state.apply(&me.user_id(), &me.device_key().0, action, &[0; 32], &self.id, 0)
    }

    /// Authors an op on top of the current heads; it is in the log when this returns.
    pub fn author(&mut self, me: &crate::Identity, action: Action, now: u64) -> Result<Vec<u8>, TeamError> {
        self.check(me, &action)?;
        let deps = self.heads();
        let lamport = 1 + deps.iter().map(|d| self.ops[d].body.lamport).max().unwrap_or(0);
        let body = OpBody { team: self.id, author: me.cert().encode(), lamport, deps, at: now, action };
        let bytes = sign(me, &body);
        self.receive(&bytes)?;
        Ok(bytes)
    }
}

fn sign(me: &crate::Identity, body: &OpBody) -> Vec<u8> {
    let encoded = SignedOp::encode_body(body);
    let signature = me.sign_device(&SignedOp::signed_bytes(&encoded));
    SignedOp { body: encoded, signature }.encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn info(id: &Identity) -> MemberInfo {
        MemberInfo::from_invite(&id.invite(Vec::new()))
    }

    fn add(id: &Identity) -> Action {
        Action::Add { member: info(id), role: Role::Member, depts: vec![] }
    }

    #[test]
    fn only_admins_ops_count_and_the_last_admin_stays() {
        let alice = Identity::generate("alice");
        let bob = Identity::generate("bob");
        let (mut log, _) = TeamLog::create(&alice, "acme", 1).expect("test step");
        log.author(&alice, add(&bob), 2).expect("test step");
        assert_eq!(log.state().members.len(), 2);
        // Bob is a member, not an admin: his op is refused when authored, and void if forced.
        assert_eq!(log.check(&bob, &Action::DeptCreate { name: "x".into() }), Err(TeamError::NotAdmin));
        let project = Action::ProjectCreate { name: "p".into(), depts: vec![], members: vec![] };
        assert_eq!(log.check(&bob, &project), Ok(()), "any member may start a project");
        assert_eq!(log.check(&alice, &Action::Remove { user: alice.user_id() }), Err(TeamError::LastAdmin));
        assert_eq!(log.check(&alice, &Action::Demote { user: alice.user_id() }), Err(TeamError::LastAdmin));
    }

    #[test]
    fn a_forged_genesis_cannot_take_over_a_team() {
        let alice = Identity::generate("alice");
        let mallory = Identity::generate("mallory");
        let (mut log, _) = TeamLog::create(&alice, "acme", 1).expect("test step");
        let (_, forged) = TeamLog::create(&mallory, "acme", 1).expect("test step");
        assert!(log.receive(&forged).is_err());
        // An op whose signature does not match its body is refused.
        let mut other = log.clone();
        let mut op = other.author(&alice, add(&mallory), 2).expect("test step");
        let n = op.len();
        op[n - 1] ^= 1;
        assert_eq!(log.receive(&op), Err(TeamError::BadSignature));
    }
}
