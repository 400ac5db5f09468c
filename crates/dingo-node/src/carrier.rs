//! Store-and-forward, the network side (the store side is `relay.rs`): what a node does when it
//! meets a peer (hand on mail carried for it, then pull what it lacks of the channels both are
//! in), how it answers those requests, how it hands undeliverable 1:1 mail to carriers, and
//! what it knows about each peer for `dingo peers`.

use crate::delivery::accept_envelopes;
use crate::records::PeerView;
use crate::{Node, NodeError};
use dingo_net::{peer_id_of, Responder};
use dingo_types::limits::MAX_SYNC_AUTHORS;
use dingo_types::now_ms;
use dingo_types::wire::{DeliveryStatus, GroupHave, Request, Response};
use dingo_types::{DeviceKey, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most carriers one undeliverable batch is handed to.
pub(crate) const CARRIERS_PER_HANDOFF: usize = 2;
/// Envelopes one peer may hand this node to carry per minute (beyond: "retry later").
pub(crate) const CARRY_PER_MINUTE: usize = 2_000;
/// Most sync rounds with one peer in one meeting (each round is one answer of up to 512).
pub(crate) const MAX_SYNC_ROUNDS: usize = 1_000;
/// How often a node looks again at what it could not take in a sync (a channel key may have
/// arrived since).
pub(crate) const RESYNC_INTERVAL: Duration = Duration::from_secs(3);
/// Shortest time between two hand-offs of one contact's mail.
const HANDOFF_INTERVAL: Duration = Duration::from_secs(2);
/// How long a peer being dialed at start counts as connected for pulls (see [`State::dialing`]):
/// past it, a dial that connected elsewhere or hangs no longer holds anything back.
const DIAL_GRACE: Duration = Duration::from_secs(5);
/// Outbox entries remembered as handed to a carrier (so retries do not hand them again).
const HANDED_KEPT: usize = 100_000;

/// What this node knows about one peer device while it runs.
#[derive(Debug, Clone, Default)]
struct PeerLive {
    connected: bool,
    addr: Option<String>,
    last_seen: u64,
    last_sync: Option<u64>,
    /// Envelopes of other authors this node passed to the peer (sync answers and mail).
    carried_for_others: u64,
}

/// Peers, hand-offs and rate limits.
#[derive(Default)]
pub(crate) struct State {
    peers: Mutex<HashMap<[u8; 32], PeerLive>>,
    /// (carrier, outbox key) pairs already handed over.
    handed: Mutex<HashSet<([u8; 32], Vec<u8>)>>,
    /// Per depositor: start of the current minute and envelopes taken in it.
    carry_rate: Mutex<HashMap<[u8; 32], (Instant, usize)>>,
    /// Peers a pull is running or waiting with (one at a time each).
    pulling: Mutex<HashSet<[u8; 32]>>,
    /// Pulls take turns (see [`pull`]).
    pull_turn: PullTurn,
    /// Devices dialed at start and not yet connected, since when: a pull from a third peer
    /// leaves their envelopes out as it does a connected author's, or a member coming back
    /// would take an author's envelopes from whoever connected first and then again from the
    /// author (every one twice).
    dialing: Mutex<HashMap<[u8; 32], Instant>>,
    /// Something could not be taken in a sync: look again soon.
    resync: AtomicBool,
    /// Contacts whose mail is being handed to carriers, and when that last started.
    handing: Mutex<HashMap<UserId, Instant>>,
}

/// One pull at a time per node.
struct PullTurn(tokio::sync::Semaphore);

impl Default for PullTurn {
    fn default() -> Self {
        PullTurn(tokio::sync::Semaphore::new(1))
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub(crate) fn connected(&self, device: [u8; 32], addr: String) {
        let mut peers = locked(&self.peers);
        let p = peers.entry(device).or_default();
        p.connected = true;
        p.addr = Some(addr);
        p.last_seen = now_ms();
        drop(peers);
        locked(&self.dialing).remove(&device);
    }

    /// `device` is being dialed (`true`), or its dial failed (`false`).
    pub(crate) fn dialing(&self, device: [u8; 32], on: bool) {
        let mut dialing = locked(&self.dialing);
        match on {
            true => dialing.insert(device, Instant::now()),
            false => dialing.remove(&device),
        };
    }

    /// Connected peers, and those dialed at start that may connect any moment.
    fn connected_or_dialing(&self) -> HashSet<[u8; 32]> {
        let mut peers: HashSet<[u8; 32]> = self.connected_peers().into_iter().collect();
        peers.extend(
            locked(&self.dialing).iter().filter(|(_, at)| at.elapsed() < DIAL_GRACE).map(|(d, _)| *d),
        );
        peers
    }

    pub(crate) fn disconnected(&self, device: [u8; 32]) {
        if let Some(p) = locked(&self.peers).get_mut(&device) {
            p.connected = false;
            p.last_seen = now_ms();
        }
    }

    pub(crate) fn heard_from(&self, device: [u8; 32]) {
        if let Some(p) = locked(&self.peers).get_mut(&device) {
            p.last_seen = now_ms();
        }
    }

    pub(crate) fn connected_peers(&self) -> Vec<[u8; 32]> {
        locked(&self.peers).iter().filter(|(_, p)| p.connected).map(|(d, _)| *d).collect()
    }

    fn carried(&self, device: [u8; 32], n: usize) {
        if let Some(p) = locked(&self.peers).get_mut(&device) {
            p.carried_for_others += n as u64;
        }
    }

    pub(crate) fn want_resync(&self) {
        self.resync.store(true, Ordering::Relaxed);
    }

    /// How many of `n` envelopes `device` may hand over now.
    fn carry_allowance(&self, device: [u8; 32], n: usize) -> usize {
        let mut rates = locked(&self.carry_rate);
        let now = Instant::now();
        let e = rates.entry(device).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        let allowed = n.min(CARRY_PER_MINUTE.saturating_sub(e.1));
        e.1 += allowed;
        allowed
    }
}

/// A peer connected: hand it the mail carried for it, then fill the gaps both ways (the peer
/// does the same from its side).
pub(crate) fn on_connected(node: &Node, device: [u8; 32]) {
    let node = node.clone();
    tokio::spawn(async move {
        push_mail(&node, device).await;
        pull(&node, device).await;
        node.pull_work_from(device).await;
    });
}

/// Asks `device` for what this node lacks of the channels both are in, round after round until
/// nothing is left or nothing new arrives.
///
/// Pulls take turns, each asking with what the ones before it stored: when many peers connect
/// at once (a team's first messages), or a resync asks every connected peer, they all hold
/// much the same envelopes, and pulling from all of them together had each envelope handed
/// over once per peer (about 40,000 copies among 50 members; BENCHMARKS.md).
pub(crate) async fn pull(node: &Node, device: [u8; 32]) {
    let state = &node.inner.carrier;
    if !locked(&state.pulling).insert(device) {
        return;
    }
    let Ok(_turn) = state.pull_turn.0.acquire().await else { return };
    if let Err(e) = pull_rounds(node, device).await {
        // A connection that dropped mid-sync: the next look resumes from what was stored.
        tracing::debug!("sync with a peer stopped: {e}");
        state.want_resync();
    }
    locked(&state.pulling).remove(&device);
}

/// Pages are pipelined: while one answer is verified and stored, the next is asked for with
/// the have vector advanced by what that answer brought.
async fn pull_rounds(node: &Node, device: [u8; 32]) -> Result<(), NodeError> {
    let net = node.inner.net.get().ok_or(NodeError::Offline)?.clone();
    let peer = peer_id_of(&device).ok_or(NodeError::Crypto(dingo_crypto::CryptoError::BadKey))?;
    let (mut groups, authors) = node.job(move |c, s| c.sync_request(s, &DeviceKey(device))).await?;
    if groups.is_empty() {
        return Ok(());
    }
    let mut storing: Option<tokio::task::JoinHandle<bool>> = None;
    let mut outcome = Ok(());
    for _ in 0..MAX_SYNC_ROUNDS {
        let connected = node.inner.carrier.connected_or_dialing();
        let ask = leave_out_connected(&groups, &authors, &connected);
        let answer = net.request(peer, Request::Sync(ask)).await;
        if let Some(previous) = storing.take() {
            // Nothing new in the previous page: what is left cannot be taken now.
            if !previous.await.unwrap_or(false) {
                break;
            }
        }
        let (envs, more) = match answer {
            Ok(Response::Envelopes { envs, more }) => (envs, more),
            Ok(Response::Results(_)) => break,
            Err(e) => {
                outcome = Err(e.into());
                break;
            }
        };
        if envs.is_empty() {
            break;
        }
        advance(&mut groups, &envs);
        let node = node.clone();
        storing = Some(tokio::spawn(async move { store_page(&node, peer, envs).await }));
        if !more {
            break;
        }
    }
    if let Some(last) = storing {
        let _ = last.await;
    }
    if let Some(p) = locked(&node.inner.carrier.peers).get_mut(&device) {
        p.last_sync = Some(now_ms());
    }
    outcome
}

/// The request for one round: `groups` with every author connected to this node now marked
/// as fully held. A connected author's delivery run pushes its own envelopes to this node from
/// its cursor (and serves any older gap when this node pulls from it), so taking them from a
/// third member too had each one arrive twice.
fn leave_out_connected(
    groups: &[GroupHave],
    authors: &[Vec<DeviceKey>],
    connected: &HashSet<[u8; 32]>,
) -> Vec<GroupHave> {
    groups
        .iter()
        .zip(authors)
        .map(|(g, members)| {
            let mut g = g.clone();
            for d in members.iter().filter(|d| connected.contains(&d.0)) {
                match g.have.binary_search_by(|(a, _)| a.0.cmp(&d.0)) {
                    Ok(i) => g.have[i].1 = u64::MAX,
                    Err(i) if g.have.len() < MAX_SYNC_AUTHORS => g.have.insert(i, (*d, u64::MAX)),
                    Err(_) => {}
                }
            }
            g
        })
        .collect()
}

/// Stores one page of a sync answer; says whether anything in it was new.
async fn store_page(node: &Node, peer: dingo_net::Peer, envs: Vec<Vec<u8>>) -> bool {
    let n = envs.len();
    let statuses = accept_envelopes(node, peer, envs, None, None).await;
    let stored = statuses.iter().filter(|s| matches!(s, DeliveryStatus::Stored(_))).count();
    tracing::debug!(%peer, n, stored, "sync page stored");
    if statuses.iter().any(|s| matches!(s, DeliveryStatus::Retry)) {
        // Not taken now (a channel key still on its way, say): a resync asks again.
        node.inner.carrier.want_resync();
    }
    stored > 0
}

/// Moves each author's mark past the envelopes of an answer that continue it (an answer lists
/// each author's envelopes in order from the asker's first gap).
fn advance(groups: &mut [GroupHave], envs: &[Vec<u8>]) {
    for bytes in envs {
        let Ok(env) = dingo_types::envelope::Envelope::decode(bytes) else { continue };
        let Some(g) = groups.iter_mut().find(|g| g.group == env.group) else { continue };
        match g.have.binary_search_by(|(a, _)| a.0.cmp(&env.sender.0)) {
            Ok(i) if g.have[i].1 + 1 == env.seq => g.have[i].1 = env.seq,
            Err(i) if env.seq == 1 && g.have.len() < MAX_SYNC_AUTHORS => g.have.insert(i, (env.sender, 1)),
            _ => {}
        }
    }
}

/// Answers a peer's sync request (members of shared channels only).
pub(crate) async fn serve_sync(node: &Node, device: [u8; 32], groups: Vec<GroupHave>, responder: Responder) {
    let answer = node.peer_job(move |c, s| c.serve_sync(s, &DeviceKey(device), &groups)).await;
    match answer {
        Ok(served) => {
            node.inner.carrier.carried(device, served.carried);
            responder.respond(Response::Envelopes { envs: served.envs, more: served.more });
            if let Some(uid) = served.push_to {
                node.inner.delivery.enqueued(uid);
                crate::delivery::kick(node, uid);
            }
        }
        Err(e) => {
            tracing::warn!("sync request not answered: {e}");
            responder.respond(Response::Envelopes { envs: Vec::new(), more: true });
        }
    }
}

/// Takes mail to carry from a contact, within its rate and the mailbox bounds, and hands it on
/// at once to recipients connected now.
pub(crate) async fn serve_carry(node: &Node, device: [u8; 32], envs: Vec<Vec<u8>>, responder: Responder) {
    let n = envs.len();
    let allowed = node.inner.carrier.carry_allowance(device, n);
    let mut envs = envs;
    envs.truncate(allowed);
    let now = now_ms();
    let answer = node.peer_job(move |c, s| c.carry(s, &DeviceKey(device), envs, now)).await;
    let (mut statuses, recipients) = match answer {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("mail to carry not taken: {e}");
            (Vec::new(), Vec::new())
        }
    };
    statuses.resize(n, DeliveryStatus::Retry);
    responder.respond(Response::Results(statuses));
    let connected = node.inner.carrier.connected_peers();
    let mut seen = HashSet::new();
    for r in recipients {
        if seen.insert(r.0) && connected.contains(&r.0) {
            let node = node.clone();
            tokio::spawn(async move { push_mail(&node, r.0).await });
        }
    }
}

/// Hands `device` the mail this node carries for it.
pub(crate) async fn push_mail(node: &Node, device: [u8; 32]) {
    if let Err(e) = push_mail_rounds(node, device).await {
        tracing::debug!("carried mail not handed on yet: {e}");
        node.inner.carrier.want_resync();
    }
}

async fn push_mail_rounds(node: &Node, device: [u8; 32]) -> Result<(), NodeError> {
    let net = node.inner.net.get().ok_or(NodeError::Offline)?.clone();
    let peer = peer_id_of(&device).ok_or(NodeError::Crypto(dingo_crypto::CryptoError::BadKey))?;
    loop {
        let items = node.job(move |c, s| c.mail_for(s, &DeviceKey(device))).await?;
        if items.is_empty() {
            return Ok(());
        }
        let (keys, envs): (Vec<Vec<u8>>, Vec<Vec<u8>>) = items.into_iter().unzip();
        let Response::Results(results) = net.request(peer, Request::Deliver(envs)).await? else {
            return Ok(());
        };
        let done: Vec<Vec<u8>> = keys
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| !matches!(r, DeliveryStatus::Retry))
            .map(|(k, _)| k)
            .collect();
        let stored = results.iter().filter(|r| matches!(r, DeliveryStatus::Stored(_))).count();
        tracing::debug!(?results, "carried mail handed on");
        node.inner.carrier.carried(device, stored);
        let finished = done.len() < results.len() || done.is_empty();
        if done.len() < results.len() {
            // The recipient could not take some now: look again soon.
            node.inner.carrier.want_resync();
        }
        node.job(move |c, s| c.mail_done(s, &done)).await?;
        if finished {
            return Ok(());
        }
    }
}

/// `uid` could not be reached: hands its 1:1 mail to up to [`CARRIERS_PER_HANDOFF`] connected
/// contacts, who deliver it when they meet `uid`.
pub(crate) async fn handoff(node: &Node, uid: UserId) {
    // One hand-off per contact at a time and per interval: a burst of sends to someone away
    // must not rescan their queue once per message.
    {
        let mut handing = locked(&node.inner.carrier.handing);
        if handing.get(&uid).is_some_and(|t| t.elapsed() < HANDOFF_INTERVAL) {
            return;
        }
        handing.insert(uid, Instant::now());
    }
    handoff_now(node, uid).await;
}

async fn handoff_now(node: &Node, uid: UserId) {
    let Some(net) = node.inner.net.get().cloned() else { return };
    let mut carriers = Vec::new();
    for device in node.inner.carrier.connected_peers() {
        match node.job(move |c, s| c.is_live_contact(s, &DeviceKey(device))).await {
            Ok(Some(who)) if who != uid => carriers.push(device),
            _ => {}
        }
        if carriers.len() >= CARRIERS_PER_HANDOFF {
            break;
        }
    }
    if carriers.is_empty() {
        return;
    }
    let Ok(batch) = node.job(move |c, s| c.handoff_batch(s, &uid)).await else { return };
    for carrier in carriers {
        let fresh: Vec<(Vec<u8>, Vec<u8>)> = {
            let handed = locked(&node.inner.carrier.handed);
            batch.iter().filter(|(k, _)| !handed.contains(&(carrier, k.clone()))).cloned().collect()
        };
        if fresh.is_empty() {
            continue;
        }
        let Some(peer) = peer_id_of(&carrier) else { continue };
        let (keys, envs): (Vec<Vec<u8>>, Vec<Vec<u8>>) = fresh.into_iter().unzip();
        node.inner.counters.handed_off.fetch_add(envs.len() as u64, Ordering::Relaxed);
        match net.request(peer, Request::Carry(envs)).await {
            Ok(Response::Results(results)) => {
                let mut handed = locked(&node.inner.carrier.handed);
                if handed.len() > HANDED_KEPT {
                    handed.clear();
                }
                for (k, r) in keys.into_iter().zip(results) {
                    if matches!(r, DeliveryStatus::Stored(_) | DeliveryStatus::Duplicate(_)) {
                        handed.insert((carrier, k));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("hand-off to a carrier failed: {e}"),
        }
    }
}

/// Looks again at what earlier syncs could not take, when something asked for it.
pub(crate) async fn resync_loop(node: Node) {
    let mut tick = tokio::time::interval(RESYNC_INTERVAL);
    let mut shutdown = node.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        resync_now(&node);
    }
}

/// Hands on mail and pulls again with every connected peer if an earlier exchange left
/// something behind.
pub(crate) fn resync_now(node: &Node) {
    if !node.inner.carrier.resync.swap(false, Ordering::Relaxed) {
        return;
    }
    for device in node.inner.carrier.connected_peers() {
        let node = node.clone();
        tokio::spawn(async move {
            push_mail(&node, device).await;
            pull(&node, device).await;
        });
    }
}

impl Node {
    /// Every peer device this node knows (contacts and devices met): connection, address,
    /// queues and what it carried.
    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        let live = locked(&self.inner.carrier.peers).clone();
        self.job(move |c, s| c.peers_view(s, &live_views(&live))).await
    }
}

/// What the store job needs of the live peer table.
pub(crate) type LivePeer = (bool, Option<String>, u64, Option<u64>, u64);

fn live_views(live: &HashMap<[u8; 32], PeerLive>) -> HashMap<[u8; 32], LivePeer> {
    live.iter()
        .map(|(d, p)| (*d, (p.connected, p.addr.clone(), p.last_seen, p.last_sync, p.carried_for_others)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dingo_types::ConvId;

    #[test]
    fn connected_authors_are_asked_as_fully_held_and_the_rest_as_they_are() {
        let (a, b, c) = (DeviceKey([1; 32]), DeviceKey([2; 32]), DeviceKey([3; 32]));
        let groups = vec![
            GroupHave { group: ConvId([7; 32]), have: vec![(a, 5), (c, 9)] },
            GroupHave { group: ConvId([8; 32]), have: vec![(c, 2)] },
        ];
        // b is in the first group only; a and b are connected, c is not.
        let authors = vec![vec![a, b, c], vec![c]];
        let connected: HashSet<[u8; 32]> = [a.0, b.0].into_iter().collect();
        let ask = leave_out_connected(&groups, &authors, &connected);
        assert_eq!(ask[0].have, vec![(a, u64::MAX), (b, u64::MAX), (c, 9)]);
        assert_eq!(ask[1], groups[1]);
        assert_eq!(leave_out_connected(&groups, &authors, &HashSet::new()), groups);
    }
}
