//! Moving envelopes: the outbox loop that retries each contact's queue until the recipient's
//! node answers "stored", and the handler that verifies, opens and stores each inbound batch in
//! one store job that flushes before it answers, so "delivered" always means durable.
//!
//! Sends hand their sealed, durable envelopes to the contact's run in memory ([`State`]'s
//! `fresh`), so the common case (one new message to a contact whose outbox was empty) costs no
//! read of the outbox; the outbox stays the record, read whenever the hand-over does not
//! account for everything queued.

use crate::carrier;
use crate::chat::{AcceptCtx, Accepted, Core, Effects};
use crate::fanout::{RunCursor, Source};
use crate::records::ContactRec;
use crate::{Counters, Node, NodeError, NodeEvent};
use dingo_crypto::batch::Verifier;
use dingo_crypto::session::VerifiedEnvelope;
use dingo_net::{device_key_of, peer_id_of, Event, Net, Responder};
use dingo_store::Lane;
use dingo_types::envelope::Envelope;
use dingo_types::wire::{DeliveryStatus, Request, Response};
use dingo_types::{now_ms, DeviceKey, UserId};
use futures::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

/// Inbound requests processed at once (beyond this they wait; libp2p bounds the streams).
pub(crate) const INBOUND_CONCURRENCY: usize = 64;
/// Batches up to this size have their signatures checked on the runtime thread.
pub(crate) const INLINE_VERIFY_MAX: usize = 2;
/// First retry delay after a failed delivery; doubles up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An inbound delivery that waited this long for its turn (half the 10 s request timeout) is
/// answered "not yet" instead of stored: its sender has likely stopped waiting and will send it
/// again, and storing it now would only make that second copy a duplicate (at 100 member nodes
/// on 2 cores, tens of thousands of them).
pub(crate) const STALE_DELIVERY: Duration = Duration::from_secs(5);

/// Which contacts have mail waiting, which are being served, and when to retry the others.
#[derive(Default)]
pub(crate) struct State {
    /// Contact → generation, bumped on every enqueue (so a worker that found the queue empty
    /// cannot race a new message into oblivion).
    pending: Mutex<HashMap<UserId, u64>>,
    /// Contacts with a delivery run, each with the run's wake-up for newly queued mail.
    in_flight: Mutex<HashMap<UserId, Arc<Notify>>>,
    backoff: Mutex<HashMap<UserId, Backoff>>,
    /// Outbox entries just made durable, handed over in memory so a delivery run can send them
    /// without reading them back: per contact, each with the generation its enqueue produced.
    /// A run uses them only when they account for every enqueue since its last complete read
    /// of the outbox; otherwise it reads the outbox, which holds them too. Locked after
    /// `pending`, never before.
    fresh: Mutex<HashMap<UserId, Vec<Fresh>>>,
    /// Recipients' answers waiting to be recorded, from every contact's run.
    answers: Arc<Burst<ToRecord>>,
    wake: Notify,
}

/// Store work that many delivery runs ask for at once (a channel message's answers from every
/// member): the first request queues one store job, which does every request that came before
/// it runs. At 50 members a message's 49 answers then take a few store jobs, not 49. (Reading
/// the runs' next batches this way too was tried: no difference measured.)
struct Burst<T>(Mutex<(Vec<T>, bool)>);

impl<T> Default for Burst<T> {
    fn default() -> Self {
        Self(Mutex::new((Vec::new(), false)))
    }
}

impl<T: Send + 'static> Burst<T> {
    /// Adds `item`; true if no job is queued for this burst yet (the caller queues one).
    fn push(&self, item: T) -> bool {
        let mut burst = locked(&self.0);
        burst.0.push(item);
        !std::mem::replace(&mut burst.1, true)
    }

    /// Everything asked so far; the next request queues a new job.
    fn take(&self) -> Vec<T> {
        let mut burst = locked(&self.0);
        burst.1 = false;
        std::mem::take(&mut burst.0)
    }

    /// Queues `item`, and if it is the first of a burst, the store job that does the burst with
    /// `work`. Each item carries its own reply; a job that never runs drops them, unanswered.
    fn join(self: &Arc<Self>, node: &Node, item: T, work: fn(&Core, &dingo_store::Store, Vec<T>)) {
        if !self.push(item) {
            return;
        }
        // Spawned, so the job is queued even if the caller is dropped meanwhile.
        let (node, burst) = (node.clone(), self.clone());
        tokio::spawn(async move {
            let for_job = burst.clone();
            let job = move |c: &Core, s: &dingo_store::Store| {
                work(c, s, for_job.take());
                Ok(())
            };
            if node.job(job).await.is_err() {
                drop(burst.take());
            }
        });
    }
}

/// One batch's answers, and who waits for them to be recorded.
struct ToRecord {
    uid: UserId,
    sent: Sent,
    results: Vec<DeliveryStatus>,
    done: oneshot::Sender<Result<Vec<NodeEvent>, NodeError>>,
}

/// An outbox entry handed over by the job that wrote it ([`State::enqueued_fresh`]).
struct Fresh {
    generation: u64,
    sent: crate::fanout::Sent,
    envelope: Vec<u8>,
}

/// An envelope handed to a delivery run: where it came from, and its bytes.
type Handed = (crate::fanout::Sent, Vec<u8>);

/// An outbox entry as written (its key and the entry), to hand over.
fn handed_entry(key: Vec<u8>, item: crate::records::OutboxItem) -> Handed {
    let sent =
        crate::fanout::Sent { source: Source::Outbox(key), msg_id: item.msg_id, msg_key: item.msg_key };
    (sent, item.envelope)
}

/// Hands the envelopes `effects` made durable to their contacts' delivery runs, each
/// contact's in the order written, queues the contacts with other new outbox entries, and
/// moves all of them to `effects.handed`. Called on the store thread right after the flush, so
/// a run under way sends them without waiting for the job's caller to be scheduled; runs still
/// to start are left to [`crate::Node::apply_effects`].
pub(crate) fn hand_over(state: &State, effects: &mut Effects) {
    let mut fresh: HashMap<UserId, Vec<Handed>> = HashMap::new();
    for (uid, key, item) in std::mem::take(&mut effects.fresh) {
        // Every outbox entry of the job was handed back: the outbox need not be read.
        effects.kick.remove(&uid);
        fresh.entry(uid).or_default().push(handed_entry(key, item));
    }
    for (members, sent, envelope) in std::mem::take(&mut effects.group_fresh) {
        for uid in members {
            fresh.entry(uid).or_default().push((sent.clone(), envelope.clone()));
        }
    }
    for (uid, items) in fresh {
        state.enqueued_fresh(uid, items);
        if !effects.kick.contains(&uid) {
            effects.handed.push(uid);
        }
    }
    // After the hand-over: an outbox entry written beside it forces a read of the outbox.
    for uid in std::mem::take(&mut effects.kick) {
        state.enqueued(uid);
        effects.handed.push(uid);
    }
}

/// Most bytes of handed-over entries kept per contact; beyond it they are read from the outbox.
const MAX_FRESH_BYTES: usize = 4 * 1024 * 1024;

/// When to try a contact again, and why the last try failed.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
    /// No address of theirs answered (rather than: they answered "not yet", or a request
    /// failed on a live connection). Only then do carriers get their mail.
    unreachable: bool,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub(crate) fn enqueued(&self, uid: UserId) {
        *locked(&self.pending).entry(uid).or_insert(0) += 1;
        self.nudge(&uid);
        self.wake.notify_one();
    }

    /// Tells `uid`'s delivery run, if one is active, that mail was queued.
    fn nudge(&self, uid: &UserId) {
        if let Some(run) = locked(&self.in_flight).get(uid) {
            run.notify_one();
        }
    }

    /// The wake-up of `uid`'s active delivery run.
    fn run_wakeup(&self, uid: &UserId) -> Arc<Notify> {
        locked(&self.in_flight).get(uid).cloned().unwrap_or_default()
    }

    /// Like [`State::enqueued`], for envelopes that are durable already (outbox entries, in key
    /// order, and my group envelopes, in sequence order per group).
    pub(crate) fn enqueued_fresh(&self, uid: UserId, items: Vec<Handed>) {
        let mut pending = locked(&self.pending);
        let generation = pending.entry(uid).or_insert(0);
        *generation += 1;
        // Only a run under way can use them: a run that starts later reads the outbox first,
        // which has them. (Kept for a member away for days, they would only fill memory.)
        if !locked(&self.in_flight).contains_key(&uid) {
            drop(pending);
            self.wake.notify_one();
            return;
        }
        let mut fresh = locked(&self.fresh);
        let queue = fresh.entry(uid).or_default();
        // Past the cap the entries are only in the outbox, and this enqueue forces a read.
        let held: usize = queue.iter().map(|f| f.envelope.len()).sum();
        let adding: usize = items.iter().map(|(_, envelope)| envelope.len()).sum();
        if held + adding <= MAX_FRESH_BYTES {
            for (sent, envelope) in items {
                queue.push(Fresh { generation: *generation, sent, envelope });
            }
        }
        drop(fresh);
        drop(pending);
        self.nudge(&uid);
        self.wake.notify_one();
    }

    /// The handed-over entries for `uid`, if they are all that was enqueued since generation
    /// `read_at` (when a read found the outbox exhausted); with the generation they bring the
    /// run up to. Entries from before `read_at` were in that read, and are dropped.
    fn take_fresh(&self, uid: &UserId, read_at: u64) -> Option<(u64, Vec<Fresh>)> {
        let pending = locked(&self.pending);
        let mut fresh = locked(&self.fresh);
        let queue = fresh.get_mut(uid)?;
        queue.retain(|f| f.generation > read_at);
        let now = pending.get(uid).copied().unwrap_or(0);
        // Every enqueue since the read must be one of these (generations read_at+1..=now).
        let mut expected = read_at;
        for f in queue.iter() {
            if f.generation != expected && f.generation != expected + 1 {
                return None;
            }
            expected = f.generation;
        }
        if queue.is_empty() || expected != now {
            return None;
        }
        Some((now, std::mem::take(queue)))
    }

    /// Forgets the handed-over entries for `uid` (its run failed; the outbox has them).
    fn drop_fresh(&self, uid: &UserId) {
        locked(&self.fresh).remove(uid);
    }

    /// How many enqueues for `uid` since its mail was last all delivered (0: none).
    fn generation(&self, uid: &UserId) -> u64 {
        locked(&self.pending).get(uid).copied().unwrap_or(0)
    }

    /// Ends `uid`'s run: nothing is pending.
    fn finished(&self, uid: &UserId) {
        let mut pending = locked(&self.pending);
        pending.remove(uid);
        // Whatever is left here was found by a read of the outbox.
        locked(&self.fresh).remove(uid);
    }

    /// Ends `uid`'s run if nothing was enqueued after `generation`; says whether it did.
    fn finish_if_at(&self, uid: &UserId, generation: u64) -> bool {
        let mut pending = locked(&self.pending);
        if pending.get(uid).copied().unwrap_or(0) != generation {
            return false;
        }
        pending.remove(uid);
        locked(&self.fresh).remove(uid);
        true
    }

    pub(crate) fn wake_all(&self) {
        locked(&self.backoff).clear();
        self.wake.notify_one();
    }

    fn clear_backoff(&self, uid: &UserId) {
        if locked(&self.backoff).remove(uid).is_some() {
            self.wake.notify_one();
        }
    }

    fn fail(&self, uid: UserId, unreachable: bool) {
        let mut b = locked(&self.backoff);
        let delay = b.get(&uid).map(|b| (b.delay * 2).min(MAX_BACKOFF)).unwrap_or(MIN_BACKOFF);
        b.insert(uid, Backoff { until: Instant::now() + delay, delay, unreachable });
    }

    fn backing_off(&self, uid: &UserId) -> bool {
        locked(&self.backoff).get(uid).is_some_and(|b| b.until > Instant::now())
    }

    /// Whether `uid` is backing off because it could not be reached at all.
    fn unreachable(&self, uid: &UserId) -> bool {
        locked(&self.backoff).get(uid).is_some_and(|b| b.unreachable && b.until > Instant::now())
    }

    /// Claims `uid` for a delivery run now, unless one is running or it is backing off.
    fn try_claim(&self, uid: UserId) -> bool {
        if self.backing_off(&uid) {
            return false;
        }
        match locked(&self.in_flight).entry(uid) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Arc::default());
                true
            }
        }
    }

    fn due(&self) -> Vec<UserId> {
        let now = Instant::now();
        let pending = locked(&self.pending);
        let mut in_flight = locked(&self.in_flight);
        let backoff = locked(&self.backoff);
        let due: Vec<UserId> = pending
            .keys()
            .filter(|u| !in_flight.contains_key(*u))
            .filter(|u| backoff.get(*u).is_none_or(|b| b.until <= now))
            .copied()
            .collect();
        in_flight.extend(due.iter().map(|u| (*u, Arc::default())));
        due
    }
}

pub(crate) async fn learn_addresses(net: &Net, rec: &ContactRec) {
    let Ok(device) = rec.device_key() else { return };
    let Some(peer) = peer_id_of(&device.0) else { return };
    for a in &rec.addrs {
        if let Ok(addr) = a.parse() {
            let _ = net.add_address(peer, addr).await;
        }
    }
}

pub(crate) async fn start(
    node: &Node,
    config: dingo_net::Config,
    peers: Vec<dingo_net::Addr>,
) -> Result<Vec<String>, NodeError> {
    let secret = node.inner.core.me.device_secret_bytes();
    let mut bytes = *secret.expose();
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(&mut bytes)
        .map_err(|_| NodeError::Crypto(dingo_crypto::CryptoError::BadKey))?;
    let (net, events) = Net::spawn(keypair, config).await?;
    let addrs: Vec<String> = net.listen_addrs().await?.iter().map(|a| a.to_string()).collect();
    *locked(&node.inner.listen_addrs) = addrs.clone();
    if node.inner.net.set(net.clone()).is_err() {
        return Err(NodeError::Offline);
    }
    // Who is at each address this node knows (to tell whom a dial by bare address reaches).
    let mut known_at: HashMap<String, [u8; 32]> = HashMap::new();
    for rec in node.job(|c, s| c.contacts(s)).await?.iter() {
        learn_addresses(&net, rec).await;
        if let Ok(device) = rec.device_key() {
            known_at.extend(rec.addrs.iter().map(|a| (a.clone(), device.0)));
        }
    }
    for uid in node.job(|c, s| c.pending_contacts(s)).await? {
        node.inner.delivery.enqueued(uid);
    }
    // Removed members stay shut out across restarts.
    let removed = node
        .job(|c, s| Ok(c.team_state(s)?.map(|(_, st)| st.removed.values().copied().collect::<Vec<_>>())))
        .await?
        .unwrap_or_default();
    for device in removed {
        if let Some(peer) = peer_id_of(&device) {
            let _ = net.block(peer).await;
        }
    }
    let loops = [
        tokio::spawn(event_loop(node.clone(), events)),
        tokio::spawn(delivery_loop(node.clone())),
        tokio::spawn(alert_loop(node.clone())),
        tokio::spawn(carrier::resync_loop(node.clone())),
        tokio::spawn(crate::files::serve_loop(
            node.clone(),
            net.accept_streams(dingo_types::file::FILE_PROTOCOL)?,
        )),
    ];
    locked(&node.inner.tasks).extend(loops);
    for addr in peers {
        let (net, node) = (net.clone(), node.clone());
        let named = dingo_net::peer_of_addr(&addr).as_ref().and_then(device_key_of);
        let device = named.or_else(|| known_at.get(&addr.to_string()).copied());
        if let Some(d) = device {
            node.inner.carrier.dialing(d, true);
        }
        tokio::spawn(async move {
            if let Err(e) = net.dial(addr.clone()).await {
                tracing::warn!(%addr, "could not dial peer: {e}");
                if let Some(d) = device {
                    // Pulls left this peer's envelopes to it: now others must hand them over.
                    node.inner.carrier.dialing(d, false);
                    node.inner.carrier.want_resync();
                    carrier::resync_now(&node);
                }
            }
        });
    }
    Ok(addrs)
}

async fn event_loop(node: Node, mut events: mpsc::Receiver<Event>) {
    let limit = Arc::new(Semaphore::new(INBOUND_CONCURRENCY));
    let mut shutdown = node.inner.shutdown.subscribe();
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            e = events.recv() => match e { Some(e) => e, None => break },
        };
        match event {
            Event::Request { peer, request, responder } => {
                let Ok(permit) = limit.clone().acquire_owned().await else { break };
                let node = node.clone();
                tokio::spawn(async move {
                    let device = device_key_of(&peer);
                    if let Some(d) = device {
                        node.inner.carrier.heard_from(d);
                    }
                    match (request, device) {
                        (Request::Deliver(envs), _) => {
                            let deadline = Instant::now() + STALE_DELIVERY.saturating_sub(responder.waited());
                            accept_envelopes(&node, peer, envs, Some(deadline), Some(responder)).await;
                        }
                        (Request::Sync(groups), Some(d)) => {
                            carrier::serve_sync(&node, d, groups, responder).await
                        }
                        (Request::Carry(envs), Some(d)) => {
                            carrier::serve_carry(&node, d, envs, responder).await
                        }
                        (Request::Sync(_), None) => {
                            responder.respond(Response::Envelopes { envs: Vec::new(), more: false })
                        }
                        (Request::Carry(envs), None) => {
                            responder.respond(Response::Results(vec![DeliveryStatus::Rejected; envs.len()]))
                        }
                    }
                    drop(permit);
                });
            }
            Event::Connected { peer, addr } => {
                let _ = node.inner.events.send(NodeEvent::PeerConnected { peer: peer.to_string() });
                if let Some(key) = device_key_of(&peer) {
                    node.inner.carrier.connected(key, addr.to_string());
                    if let Ok(Some(c)) = node.job(move |c, s| c.contact_by_device(s, &DeviceKey(key))).await {
                        node.inner.delivery.clear_backoff(&c.user_id);
                        node.inner.core.note_seen(&c.user_id);
                    }
                    // Team members compare logs whenever they meet.
                    match node.durable_job(move |c, s| c.sync_with(s, &DeviceKey(key))).await {
                        Ok(effects) => node.apply_effects(effects).await,
                        Err(e) => tracing::debug!("team sync not started: {e}"),
                    }
                    carrier::on_connected(&node, key);
                }
            }
            Event::Discovered { peer, addr } => {
                if let Some(key) = device_key_of(&peer) {
                    let addr = addr.to_string();
                    let _ = node.job(move |c, s| c.note_address(s, &DeviceKey(key), &addr)).await;
                }
            }
            Event::Disconnected { peer } => {
                if let Some(key) = device_key_of(&peer) {
                    node.inner.carrier.disconnected(key);
                }
            }
        }
    }
}

/// Decodes and checks each envelope's signature; a batch's signature is checked once.
fn check_signatures(envs: &[Vec<u8>]) -> Vec<Result<VerifiedEnvelope, String>> {
    let mut verifier = Verifier::default();
    envs.iter()
        .map(|bytes| {
            let env = Envelope::decode(bytes).map_err(|e| format!("malformed envelope: {e}"))?;
            verifier.verify(env).map_err(|e| format!("{e}"))
        })
        .collect()
}

/// Verifies signatures off the runtime, then opens and stores the batch in one store job that
/// also makes it durable, then answers: "stored" is only ever said of flushed data.
/// `peer` is whoever handed the batch over: the author, a carrier, or a member answering a sync.
/// A request past its `deadline` when the store gets to it is answered "not yet", untouched
/// ([`STALE_DELIVERY`]). With a `responder`, the answer goes out from the store thread as soon
/// as the batch is durable (and its events with it); the statuses are returned either way.
pub(crate) async fn accept_envelopes(
    node: &Node,
    peer: dingo_net::Peer,
    envs: Vec<Vec<u8>>,
    deadline: Option<Instant>,
    responder: Option<Responder>,
) -> Vec<DeliveryStatus> {
    // Taken by whichever answers first: the store thread once the batch is durable, or this
    // task on any other way out.
    let responder = Arc::new(Mutex::new(responder));
    let statuses = accept_durably(node, peer, envs, deadline, responder.clone()).await;
    answer_once(&responder, &statuses);
    statuses
}

/// Answers the request in `slot`, unless it was answered already.
fn answer_once(slot: &Mutex<Option<Responder>>, statuses: &[DeliveryStatus]) {
    if let Some(r) = locked(slot).take() {
        r.respond(Response::Results(statuses.to_vec()));
    }
}

/// [`accept_envelopes`] up to the answer, which the store thread gives through `responder` as
/// soon as the batch is durable; returns the statuses (all `Retry` when nothing was stored).
async fn accept_durably(
    node: &Node,
    peer: dingo_net::Peer,
    envs: Vec<Vec<u8>>,
    deadline: Option<Instant>,
    responder: Arc<Mutex<Option<Responder>>>,
) -> Vec<DeliveryStatus> {
    let n = envs.len();
    let stale = move || deadline.is_some_and(|d| Instant::now() >= d);
    let not_yet = || {
        node.inner.counters.retried.fetch_add(n as u64, Ordering::Relaxed);
        vec![DeliveryStatus::Retry; n]
    };
    if stale() {
        return not_yet();
    }
    let started = Instant::now();
    // One or two signatures cost less than a hop to the blocking pool; larger batches are
    // checked there, split across cores, so a runtime thread is never held for milliseconds.
    let checked = if n <= INLINE_VERIFY_MAX {
        check_signatures(&envs)
    } else {
        let mut envs = envs;
        let tail = envs.split_off(n / 2);
        let (a, b) = tokio::join!(
            tokio::task::spawn_blocking(move || check_signatures(&envs)),
            tokio::task::spawn_blocking(move || check_signatures(&tail))
        );
        match (a, b) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                a
            }
            _ => Vec::new(),
        }
    };
    let verified_at = started.elapsed();
    if checked.len() != n {
        return vec![DeliveryStatus::Retry; n];
    }
    let via = device_key_of(&peer).map(DeviceKey);
    let now = now_ms();
    let (counters, events, delivery) =
        (node.inner.counters.clone(), node.inner.events.clone(), node.inner.delivery.clone());
    let durable = move |done: &mut Option<Inbound>| {
        let Some(inbound) = done else { return };
        let (statuses, events_now) = tally(&counters, peer, now, std::mem::take(&mut inbound.outcome));
        answer_once(&responder, &statuses);
        crate::emit_to(&events, events_now);
        hand_over(&delivery, &mut inbound.effects);
        inbound.statuses = statuses;
    };
    let outcome = node
        .durable_job_then(
            Lane::Peer,
            move |core: &Core, s| {
                if stale() {
                    return Ok(None);
                }
                let mut ctx = via.map(AcceptCtx::from_peer).unwrap_or_default();
                let mut outcome = Vec::with_capacity(checked.len());
                for item in checked {
                    outcome.push(match item {
                        Err(reason) => Accepted::Rejected(reason),
                        Ok(v) => core.accept(s, &mut ctx, &v, now)?,
                    });
                }
                let effects = core.commit(s, ctx)?;
                Ok(Some(Inbound { outcome, effects, statuses: Vec::new() }))
            },
            durable,
        )
        .await;
    let Inbound { effects, statuses, .. } = match outcome {
        Ok(Some(o)) => o,
        Ok(None) => {
            tracing::debug!(n, waited = ?started.elapsed(), "inbound batch too late to store: not yet");
            return not_yet();
        }
        Err(e) => {
            tracing::warn!("store unavailable: {e}");
            return vec![DeliveryStatus::Retry; n];
        }
    };
    tracing::debug!(n, ?verified_at, total = ?started.elapsed(), "inbound batch stored");
    node.apply_effects(effects).await;
    statuses
}

/// An inbound batch as stored: what became of each envelope, and then the answer's statuses.
struct Inbound {
    outcome: Vec<Accepted>,
    effects: Effects,
    statuses: Vec<DeliveryStatus>,
}

/// Counts what became of each envelope of a stored batch; its statuses and its events.
fn tally(
    counters: &Counters,
    peer: dingo_net::Peer,
    now: u64,
    outcome: Vec<Accepted>,
) -> (Vec<DeliveryStatus>, Vec<NodeEvent>) {
    let mut statuses = Vec::with_capacity(outcome.len());
    let mut events = Vec::new();
    for a in outcome {
        statuses.push(match a {
            Accepted::Stored(ev) => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                events.extend(ev);
                DeliveryStatus::Stored(now)
            }
            Accepted::Duplicate => {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                DeliveryStatus::Duplicate(now)
            }
            Accepted::Rejected(reason) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "dropped an envelope: {reason}");
                events.push(NodeEvent::Rejected { peer: peer.to_string(), reason });
                DeliveryStatus::Rejected
            }
            Accepted::Retry(ev) => {
                counters.retried.fetch_add(1, Ordering::Relaxed);
                events.extend(ev);
                DeliveryStatus::Retry
            }
        });
    }
    (statuses, events)
}

/// Rings unacknowledged DINGs again when due, and gives task reminders when due.
async fn alert_loop(node: Node) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = node.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        match node.job(|c, s| c.due_dings(s, now_ms())).await {
            Ok(events) => node.emit(events),
            Err(e) => tracing::debug!("DING alerts skipped: {e}"),
        }
        match node.job(|c, s| c.due_reminders(s, now_ms())).await {
            Ok(events) => node.emit(events),
            Err(e) => tracing::debug!("task reminders skipped: {e}"),
        }
    }
}

async fn delivery_loop(node: Node) {
    let state = &node.inner.delivery;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut shutdown = node.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = state.wake.notified() => {}
            _ = tick.tick() => {}
        }
        for uid in state.due() {
            spawn_delivery(node.clone(), uid);
        }
    }
}

/// How long a delivery run with nothing left to send waits for more before it ends.
pub(crate) const RUN_LINGER: Duration = Duration::from_secs(3);

/// Requests in flight to one contact: the next batch travels while the recipient stores the
/// previous one.
pub(crate) const PIPELINE: usize = 2;

type Sent = Vec<crate::fanout::Sent>;

/// Starts delivering to `uid` at once (no hop through the delivery loop) if the network runs
/// and no run for `uid` is active or backing off.
/// While `uid` is unreachable (backing off), new mail goes to carriers at once.
pub(crate) fn kick(node: &Node, uid: UserId) {
    if node.inner.net.get().is_none() {
        return;
    }
    if node.inner.delivery.try_claim(uid) {
        spawn_delivery(node.clone(), uid);
    } else if node.inner.delivery.unreachable(&uid) {
        let node = node.clone();
        tokio::spawn(async move { carrier::handoff(&node, uid).await });
    }
}

/// Runs [`deliver_to`] for a claimed `uid` and settles the claim.
fn spawn_delivery(node: Node, uid: UserId) {
    tokio::spawn(async move {
        let ok = deliver_to(&node, uid).await;
        let state = &node.inner.delivery;
        locked(&state.in_flight).remove(&uid);
        match ok {
            Ok(()) => {
                if locked(&state.pending).contains_key(&uid) {
                    state.wake.notify_one();
                }
            }
            Err(e) => {
                tracing::debug!(%uid, "delivery deferred: {e}");
                state.drop_fresh(&uid);
                // Someone else may meet them first; but a recipient who answered, or whose
                // connection is up, gets the mail from us: carriers would only hand it to them
                // again (at 100 members, a loaded team handed ~260,000 envelopes to carriers).
                let unreachable = matches!(e, NodeError::Net(dingo_net::NetError::Unreachable { .. }));
                state.fail(uid, unreachable);
                if unreachable {
                    carrier::handoff(&node, uid).await;
                }
            }
        }
    });
}

/// What became of one delivery request.
enum Answer {
    Recorded(Recorded),
    /// Answered, but not recorded: an earlier batch of the run was not taken whole.
    Dropped,
    Malformed,
    Failed(dingo_net::NetError, Sent),
}

/// A recipient's answers to one batch, recorded.
struct Recorded {
    n: usize,
    delivered: u64,
    must_retry: bool,
    events: Vec<NodeEvent>,
}

/// Records the recipient's answers to one batch (statuses, receipts, cursors).
async fn record_answers(
    node: &Node,
    uid: UserId,
    sent: Sent,
    results: Vec<DeliveryStatus>,
) -> Result<Recorded, NodeError> {
    let n = results.len();
    let must_retry = results.iter().any(|r| matches!(r, DeliveryStatus::Retry));
    let delivered = results
        .iter()
        .filter(|r| matches!(r, DeliveryStatus::Stored(_) | DeliveryStatus::Duplicate(_)))
        .count() as u64;
    let (done, recorded) = oneshot::channel();
    node.inner.delivery.answers.join(node, ToRecord { uid, sent, results, done }, record_together);
    let events = recorded
        .await
        .map_err(|_| NodeError::Unavailable("answers not recorded: store stopped".into()))??;
    Ok(Recorded { n, delivered, must_retry, events })
}

/// Records answers from several contacts in one batch; if that fails, each in its own, so a
/// bad record holds up only its own contact's answers.
fn record_together(core: &Core, s: &dingo_store::Store, waiting: Vec<ToRecord>) {
    let mut batch = dingo_store::Batch::default();
    let together: Result<Vec<Vec<NodeEvent>>, NodeError> = waiting
        .iter()
        .map(|w| core.delivery_results_into(s, &mut batch, &w.uid, &w.sent, &w.results))
        .collect();
    if let Ok(events) = together.and_then(|events| core.apply(s, batch).map(|()| events)) {
        for (w, events) in waiting.into_iter().zip(events) {
            let _ = w.done.send(Ok(events));
        }
        return;
    }
    for w in waiting {
        let _ = w.done.send(core.delivery_results(s, &w.uid, &w.sent, &w.results));
    }
}

/// The next delivery batch out of handed-over entries, skipping any that a read of the outbox
/// found already (outbox entries up to `run`'s key, group envelopes below its position), and
/// moving `run` past the group envelopes taken.
fn fresh_batch(backlog: &mut VecDeque<Fresh>, run: &mut RunCursor) -> crate::chat::OutgoingBatch {
    let mut items = Vec::new();
    let mut bytes = 0;
    while let Some(next) = backlog.front() {
        let read = match &next.sent.source {
            Source::Outbox(key) => Some(key) <= run.outbox.as_ref(),
            Source::Group(group, seq) => run.groups.get(group).is_some_and(|at| seq < at),
        };
        if read {
            backlog.pop_front();
            continue;
        }
        let full = items.len() >= crate::chat::DELIVERY_BATCH
            || bytes + next.envelope.len() > crate::chat::DELIVERY_BATCH_BYTES;
        if full && !items.is_empty() {
            break;
        }
        let Some(next) = backlog.pop_front() else { break };
        bytes += next.envelope.len();
        if let Source::Group(group, seq) = next.sent.source {
            run.groups.insert(group, seq + 1);
        }
        items.push((next.sent, next.envelope));
    }
    items
}

/// Sends `uid`'s outbox in batches, [`PIPELINE`] at a time, until it is empty or a delivery
/// fails (the caller then backs off; the next run starts again from the oldest entry, and
/// anything already stored comes back `Duplicate`).
async fn deliver_to(node: &Node, uid: UserId) -> Result<(), NodeError> {
    let net = node.inner.net.get().ok_or(NodeError::Offline)?.clone();
    let state = &node.inner.delivery;
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let mut run = RunCursor::default();
    // `Some(g)`: the outbox was read to its end after enqueue generation `g` (0: none).
    let mut read_to_end_at: Option<u64> = None;
    // Handed-over entries not sent yet, and the outbox keys sent from them (a later read of
    // the outbox skips those it still finds).
    let mut backlog: VecDeque<Fresh> = VecDeque::new();
    let mut sent_fresh: HashSet<Vec<u8>> = HashSet::new();
    let mut device = None;
    let mut peer_of: Option<(DeviceKey, libp2p::PeerId)> = None;
    let mut shutdown = node.inner.shutdown.subscribe();
    let wakeup = state.run_wakeup(&uid);
    // Requests sent and not answered yet.
    let unanswered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (first, mut last_recorded) = oneshot::channel();
    let _ = first.send(true);
    loop {
        while in_flight.len() < PIPELINE {
            // Mail queued after the outbox was read to its end goes out once everything before
            // it was answered: the recipient takes requests side by side, and must see a
            // sender's envelopes in the order they were sealed.
            if read_to_end_at.is_some() && unanswered.load(Ordering::Acquire) > 0 {
                break;
            }
            if let (true, Some(read_at)) = (backlog.is_empty(), read_to_end_at) {
                if let Some((now, items)) = state.take_fresh(&uid, read_at) {
                    backlog.extend(items);
                    read_to_end_at = Some(now);
                } else if state.generation(&uid) != read_at {
                    // Something was enqueued that was not handed over: read the outbox.
                    read_to_end_at = None;
                }
            }
            let (to, items) = match device {
                Some(to) if !backlog.is_empty() => {
                    let items = fresh_batch(&mut backlog, &mut run);
                    sent_fresh
                        .extend(items.iter().filter_map(|(sent, _)| sent.outbox_key().map(<[u8]>::to_vec)));
                    (to, items)
                }
                _ if read_to_end_at.is_some() => break,
                _ => {
                    let generation = state.generation(&uid);
                    let mut at = run.clone();
                    let Some((found, mut items, exhausted, at)) = node
                        .job(move |c, s| Ok(c.outbox_batch(s, &uid, &mut at)?.map(|(d, i, e)| (d, i, e, at))))
                        .await?
                    else {
                        state.finished(&uid);
                        return Ok(());
                    };
                    device = Some(found);
                    run = at;
                    if exhausted {
                        read_to_end_at = Some(generation);
                    }
                    if !sent_fresh.is_empty() {
                        items.retain(|(sent, _)| !sent.outbox_key().is_some_and(|k| sent_fresh.contains(k)));
                        let read_to = run.outbox.clone();
                        sent_fresh.retain(|k| Some(k) > read_to.as_ref());
                    }
                    (found, items)
                }
            };
            if items.is_empty() {
                continue;
            }
            // A device key's point is checked as it becomes a peer id: once per run, not per batch.
            let peer = match peer_of {
                Some((device, peer)) if device == to => peer,
                _ => peer_id_of(&to.0).ok_or(NodeError::Crypto(dingo_crypto::CryptoError::BadKey))?,
            };
            peer_of = Some((to, peer));
            let (sent, envs): (Sent, Vec<Vec<u8>>) = items.into_iter().unzip();
            let (net, node) = (net.clone(), node.clone());
            let (recorded, next_may_record) = oneshot::channel();
            let may_record = std::mem::replace(&mut last_recorded, next_may_record);
            let (unanswered, wakeup) = (unanswered.clone(), wakeup.clone());
            unanswered.fetch_add(1, Ordering::AcqRel);
            in_flight.push_back(async move {
                let started = Instant::now();
                let result = net.request(peer, Request::Deliver(envs)).await;
                let rtt = started.elapsed();
                unanswered.fetch_sub(1, Ordering::AcqRel);
                wakeup.notify_one();
                // Answers are recorded in the order their batches went out, and only while every
                // earlier batch was taken whole: a group cursor must not move past an envelope
                // still to be sent again. Recording runs beside the run's next requests.
                let answer = match result {
                    Ok(Response::Results(results)) if results.len() == sent.len() => {
                        if may_record.await.unwrap_or(false) {
                            let answer = record_answers(&node, uid, sent, results).await;
                            let _ = recorded.send(answer.as_ref().is_ok_and(|a| !a.must_retry));
                            answer.map(Answer::Recorded)
                        } else {
                            Ok(Answer::Dropped)
                        }
                    }
                    Ok(_) => Ok(Answer::Malformed),
                    Err(e) => Ok(Answer::Failed(e, sent)),
                };
                (peer, answer, rtt)
            });
        }
        // New mail goes out while earlier batches are still answered or recorded.
        let room = in_flight.len() < PIPELINE && !in_flight.is_empty();
        let next = tokio::select! {
            next = in_flight.next() => next,
            () = wakeup.notified(), if room => continue,
        };
        let Some((peer, answer, rtt)) = next else {
            // Nothing in flight and nothing left to load: done, unless something was queued
            // since the outbox was last read to its end.
            let Some(read_at) = read_to_end_at else { continue };
            if state.generation(&uid) == read_at {
                // Idle. The run stays a while for more mail, which then goes out at once, with
                // no read of the outbox (a channel's next message, the next line of a chat).
                tokio::select! {
                    () = wakeup.notified() => continue,
                    () = tokio::time::sleep(RUN_LINGER) => {}
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
            }
            if state.finish_if_at(&uid, read_at) {
                return Ok(());
            }
            continue;
        };
        match answer? {
            Answer::Recorded(Recorded { n, delivered, must_retry, events }) => {
                tracing::debug!(n, ?rtt, "outbound batch answered");
                node.inner.counters.delivered.fetch_add(delivered, Ordering::Relaxed);
                node.emit(events);
                if must_retry {
                    // Entries the recipient could not take now are behind the cursor: start over
                    // after a pause.
                    return Err(NodeError::Net(dingo_net::NetError::Request {
                        peer,
                        reason: "recipient busy".into(),
                    }));
                }
                locked(&state.backoff).remove(&uid);
            }
            // An earlier batch ended the run before this answer could be recorded.
            Answer::Dropped => {
                return Err(NodeError::Net(dingo_net::NetError::Request {
                    peer,
                    reason: "recipient busy".into(),
                }))
            }
            Answer::Malformed => {
                return Err(NodeError::Net(dingo_net::NetError::Request {
                    peer,
                    reason: "malformed response".into(),
                }));
            }
            Answer::Failed(e, sent) => {
                // Anything but "unreachable" may have reached the recipient: say "sent".
                if !matches!(e, dingo_net::NetError::Unreachable { .. }) {
                    let keys: Vec<Vec<u8>> = sent.iter().filter_map(|e| e.msg_key.clone()).collect();
                    let _ = node.job(move |c, s| c.mark_sent(s, &keys)).await;
                }
                return Err(e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::OutboxItem;
    use dingo_types::ConvId;

    #[test]
    fn a_burst_queues_one_job_for_everything_asked_before_it_runs() {
        let burst: Burst<u32> = Burst::default();
        assert!(burst.push(1), "the first request queues the job");
        assert!(!burst.push(2), "later ones ride on it");
        assert!(!burst.push(3));
        assert_eq!(burst.take(), [1, 2, 3], "the job does all three, in order");
        assert!(burst.push(4), "a request after the job took its share queues the next");
        assert_eq!(burst.take(), [4]);
        assert!(burst.take().is_empty());
    }

    fn written(n: u8) -> Handed {
        let item = OutboxItem { envelope: vec![n; 10], msg_id: None, msg_key: None, conv: ConvId([0; 32]) };
        handed_entry(vec![n], item)
    }

    fn group_envelope(group: ConvId, seq: u64) -> Handed {
        let sent = crate::fanout::Sent { source: Source::Group(group, seq), msg_id: None, msg_key: None };
        (sent, vec![seq as u8; 10])
    }

    fn keys(items: &[Fresh]) -> Vec<Vec<u8>> {
        items.iter().filter_map(|f| f.sent.outbox_key().map(<[u8]>::to_vec)).collect()
    }

    #[test]
    fn handed_over_entries_are_used_only_when_they_are_all_that_was_queued() {
        let state = State::default();
        let uid = UserId([1; 16]);
        // No run under way: nothing is kept (a run that starts reads the outbox first).
        state.enqueued_fresh(uid, vec![written(9)]);
        assert!(state.take_fresh(&uid, 0).is_none());
        assert!(locked(&state.fresh).get(&uid).is_none_or(Vec::is_empty));
        assert!(state.finish_if_at(&uid, 1));
        assert!(state.try_claim(uid), "a run starts");
        // Nothing handed over: nothing to take.
        assert!(state.take_fresh(&uid, 0).is_none());
        state.enqueued_fresh(uid, vec![written(1), written(2)]);
        state.enqueued_fresh(uid, vec![written(3)]);
        let (now, items) = state.take_fresh(&uid, 0).expect("all queued mail was handed over");
        assert_eq!((now, keys(&items)), (2, vec![vec![1], vec![2], vec![3]]));
        assert!(state.take_fresh(&uid, now).is_none(), "taken once");

        // An enqueue that was not handed over in between: the outbox must be read instead.
        state.enqueued(uid);
        state.enqueued_fresh(uid, vec![written(4)]);
        assert!(state.take_fresh(&uid, now).is_none());
        assert_eq!(state.generation(&uid), 4);

        // After a read at generation 4 the entry it found is dropped; later ones are taken.
        state.enqueued_fresh(uid, vec![written(5)]);
        let (now, items) = state.take_fresh(&uid, 4).expect("handed over after the read");
        assert_eq!((now, keys(&items)), (5, vec![vec![5]]));
        assert!(state.finish_if_at(&uid, 5));
        assert_eq!(state.generation(&uid), 0);
    }

    #[test]
    fn a_jobs_envelopes_reach_runs_under_way_and_leave_the_rest_to_start() {
        let state = State::default();
        let (alice, bob, carol) = (UserId([1; 16]), UserId([2; 16]), UserId([3; 16]));
        assert!(state.try_claim(alice) && state.try_claim(bob), "alice's and bob's runs are under way");
        let item =
            |n: u8| OutboxItem { envelope: vec![n; 10], msg_id: None, msg_key: None, conv: ConvId([0; 32]) };
        let general = ConvId([10; 32]);
        let mut effects = Effects::default();
        effects.fresh.push((alice, vec![1], item(1)));
        effects.kick.insert(alice);
        let (sent, envelope) = group_envelope(general, 7);
        effects.group_fresh.push((vec![alice, bob, carol], sent, envelope));
        // Bob has an outbox entry beside the group envelope that was not handed back.
        effects.kick.insert(bob);
        hand_over(&state, &mut effects);
        assert!(effects.fresh.is_empty() && effects.group_fresh.is_empty(), "handed over once");
        let (_, items) = state.take_fresh(&alice, 0).expect("alice's run has both");
        assert_eq!(items.len(), 2);
        assert_eq!(keys(&items), vec![vec![1]], "her 1:1 entry first, in the order written");
        assert!(state.take_fresh(&bob, 0).is_none(), "bob's run must read the outbox for the other entry");
        assert!(locked(&state.fresh).get(&carol).is_none(), "no run for carol: nothing kept");
        let mut handed = effects.handed.clone();
        handed.sort_by_key(|u| u.0);
        assert_eq!(handed, vec![alice, bob, carol], "runs to start where none is under way");
        assert!(effects.kick.is_empty());
        // A second hand-over (apply_effects after the store thread's) changes nothing.
        hand_over(&state, &mut effects);
        assert_eq!(effects.handed.len(), 3);
        assert_eq!(state.generation(&bob), 2, "bob's run saw two enqueues, one handed over");
    }

    #[test]
    fn a_batch_of_handed_over_entries_skips_what_a_read_of_the_outbox_found() {
        let (general, eng) = (ConvId([10; 32]), ConvId([11; 32]));
        let handed = [
            written(1),
            written(2),
            group_envelope(general, 7),
            group_envelope(general, 8),
            group_envelope(eng, 3),
            written(3),
        ];
        let mut backlog: VecDeque<Fresh> =
            handed.into_iter().map(|(sent, envelope)| Fresh { generation: 1, sent, envelope }).collect();
        // The read found outbox entry 1 and #general up to 7; #eng not at all.
        let mut run = RunCursor { outbox: Some(vec![1]), groups: [(general, 8)].into() };
        let batch = fresh_batch(&mut backlog, &mut run);
        let sent: Vec<_> = batch.iter().map(|(s, _)| s.source.clone()).collect();
        assert_eq!(
            sent,
            [
                Source::Outbox(vec![2]),
                Source::Group(general, 8),
                Source::Group(eng, 3),
                Source::Outbox(vec![3])
            ]
        );
        assert!(backlog.is_empty());
        assert_eq!(run.groups, [(general, 9), (eng, 4)].into(), "the run is past what it took");
    }
}
