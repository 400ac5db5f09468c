//! Dingo's network actor: a libp2p swarm (TCP and QUIC, Noise, Yamux, identify, ping, optional
//! mDNS) driven by one task, with Dingo's requests on long-lived streams (`/dingo/msg/2`, see
//! [`link`]) and plain streams for bulk transfers (`/dingo/file/1`).
//!
//! [`Net`] is a cheap handle: swarm commands go over a bounded channel with a oneshot reply.
//! Inbound requests come out as [`Event::Request`] with a [`Responder`]; the node answers when it
//! has stored what arrived. This crate sees envelopes only as opaque ciphertext frames.

mod codec;
pub mod link;

use dingo_types::wire::{Request, Response, MSG_PROTOCOL};
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use link::{locked, CallError, Link};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

pub use libp2p::{Multiaddr as Addr, PeerId as Peer, Stream};
pub use libp2p_stream::IncomingStreams;
pub use link::Responder;

/// Commands queued to the swarm task before callers wait.
pub const COMMAND_QUEUE: usize = 1024;
/// Events queued to the node before inbound requests are answered "retry".
pub const EVENT_QUEUE: usize = 1024;

/// How the node's network is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Whether to discover peers with mDNS (the product default; never in tests outside
    /// namespaces).
    pub mdns: bool,
    /// How often mDNS re-queries (libp2p's default of 5 minutes misses nodes started together).
    pub mdns_query_interval: Duration,
    /// How long a request may take before it fails and the sender retries.
    pub request_timeout: Duration,
    /// How long an idle connection stays open.
    pub idle_timeout: Duration,
}

impl Config {
    /// The product default: all interfaces, TCP and QUIC, mDNS on.
    pub fn lan_default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().unwrap_or_else(|_| Multiaddr::empty()),
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap_or_else(|_| Multiaddr::empty()),
            ],
            mdns: true,
            mdns_query_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }

    /// Loopback only, mDNS off: for tests, the demo and benchmarks.
    pub fn loopback() -> Self {
        Self {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap_or_else(|_| Multiaddr::empty())],
            mdns: false,
            ..Self::lan_default()
        }
    }
}

/// Why a network operation failed.
#[derive(Debug, Error)]
pub enum NetError {
    /// The transport could not be built or could not listen.
    #[error("network setup failed: {0}")]
    Setup(String),
    /// Dialling failed.
    #[error("dial failed: {0}")]
    Dial(String),
    /// A request failed (peer unreachable, timeout, closed, protocol error).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// The peer could not be reached (no known address answered); nothing was transmitted.
    #[error("{peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// The swarm task has stopped.
    #[error("the network has shut down")]
    Closed,
}

/// What the swarm reports to the node.
#[derive(Debug)]
pub enum Event {
    /// A connection to `peer` is up (the node may flush that peer's outbox).
    Connected {
        /// The peer.
        peer: PeerId,
        /// The remote address.
        addr: Multiaddr,
    },
    /// The last connection to `peer` closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer was found (mDNS or identify).
    Discovered {
        /// The peer.
        peer: PeerId,
        /// Where.
        addr: Multiaddr,
    },
    /// A peer sent a request; answer with the responder.
    Request {
        /// The sender (authenticated by Noise).
        peer: PeerId,
        /// The decoded request.
        request: Request,
        /// Where the answer goes.
        responder: Responder,
    },
}

enum Command {
    Connect { peer: PeerId, reply: oneshot::Sender<Result<(), NetError>> },
    Dial { addr: Multiaddr, reply: oneshot::Sender<Result<(), NetError>> },
    AddAddress { peer: PeerId, addr: Multiaddr },
    ListenAddrs { reply: oneshot::Sender<Vec<Multiaddr>> },
    IsConnected { peer: PeerId, reply: oneshot::Sender<bool> },
    Block { peer: PeerId },
    Shutdown { reply: oneshot::Sender<()> },
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// Refuses (and closes) connections of blocked peers, e.g. removed team members.
    blocked: libp2p::allow_block_list::Behaviour<libp2p::allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    /// Streams: Dingo's request links and bulk transfers (file chunks).
    streams: libp2p_stream::Behaviour,
}

/// A handle to the swarm task.
#[derive(Clone)]
pub struct Net {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    streams: libp2p_stream::Control,
    /// The outbound request link per peer. Each slot's lock is held while its link is opened,
    /// so concurrent requests to a peer share one stream.
    links: Arc<Mutex<HashMap<PeerId, LinkSlot>>>,
    request_timeout: Duration,
    idle_timeout: Duration,
}

type LinkSlot = Arc<tokio::sync::Mutex<Option<Arc<Link>>>>;

/// How often a request is tried on a new link when the previous one ended before answering
/// anything, or before the request went out (a peer drops inbound streams it cannot accept at
/// once, e.g. many peers opening streams together).
const LINK_ATTEMPTS: usize = 4;

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("local", &self.local).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("net::Command")
    }
}

/// The libp2p PeerId of a device's Ed25519 public key.
pub fn peer_id_of(device_key: &[u8; 32]) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(device_key).ok()?;
    Some(PeerId::from_public_key(&identity::PublicKey::from(pk)))
}

/// The peer an address names (its last `/p2p/` part), if it names one.
pub fn peer_of_addr(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().filter_map(|p| if let Protocol::P2p(id) = p { Some(id) } else { None }).last()
}

/// The device key behind a PeerId, if it is an Ed25519 identity.
pub fn device_key_of(peer: &PeerId) -> Option<[u8; 32]> {
    let mh = peer.as_ref();
    // Ed25519 PeerIds are identity multihashes of the protobuf-encoded public key: key type 1
    // (field 1), then the 32 key bytes (field 2). This runs for every request, so the bytes are
    // read where libp2p's canonical encoding puts them, without decompressing the point (the
    // key was checked when the connection's Noise handshake authenticated it).
    const ED25519_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
    if mh.code() == 0 {
        if let Some(key) = mh.digest().strip_prefix(&ED25519_PREFIX[..]) {
            return <[u8; 32]>::try_from(key).ok();
        }
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    pk.try_into_ed25519().ok().map(|k| k.to_bytes())
}

impl Net {
    /// Builds the swarm, starts listening, waits until each listener is up, and starts the task.
    pub async fn spawn(
        keypair: identity::Keypair,
        config: Config,
    ) -> Result<(Net, mpsc::Receiver<Event>), NetError> {
        let local = keypair.public().to_peer_id();
        let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
        let mdns_on = config.mdns;
        let query_interval = config.mdns_query_interval;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_behaviour(|key| {
                let mdns = if mdns_on {
                    let cfg = mdns::Config { query_interval, ..Default::default() };
                    Some(mdns::tokio::Behaviour::new(cfg, key.public().to_peer_id())?)
                } else {
                    None
                };
                Ok(Behaviour {
                    blocked: Default::default(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/dingo/id/1".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::default(),
                    mdns: Toggle::from(mdns),
                    streams: libp2p_stream::Behaviour::new(),
                })
            })
            .map_err(|e| setup(&e))?
            // Streams wait a round trip for the listener to confirm their protocol (libp2p's
            // default): with the protocol choice sent along with the first bytes (`V1Lazy`), a
            // first frame larger than Yamux's window, written while the stream is also being
            // read, sometimes stalled for good (tests/it/net.rs). Request streams are long-lived,
            // so the round trip is paid once per link, not per request.
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();
        for addr in &config.listen {
            swarm.listen_on(addr.clone()).map_err(|e| setup(&e))?;
        }
        // Wait for the listeners; anything else that happens meanwhile (an mDNS answer, an early
        // connection) is kept and handled first by the task: mDNS reports a peer only once, so
        // dropping that event would hide the peer until its record expires.
        let mut up = 0;
        let mut early = Vec::new();
        while up < config.listen.len() {
            match tokio::time::timeout(Duration::from_secs(5), swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { .. }) => up += 1,
                Ok(SwarmEvent::ListenerError { error, .. }) => return Err(setup(&error)),
                Ok(SwarmEvent::ListenerClosed { reason: Err(error), .. }) => return Err(setup(&error)),
                Ok(other) => early.push(other),
                Err(_) => return Err(NetError::Setup("timed out waiting for listeners".into())),
            }
        }
        let mut streams = swarm.behaviour().streams.new_control();
        let incoming = streams
            .accept(StreamProtocol::new(MSG_PROTOCOL))
            .map_err(|_| NetError::Setup(format!("{MSG_PROTOCOL} is already being accepted")))?;
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(accept_requests(incoming, event_tx.clone()));
        tokio::spawn(run(swarm, command_rx, event_tx, early));
        let net = Net {
            commands,
            local,
            streams,
            links: Default::default(),
            request_timeout: config.request_timeout,
            idle_timeout: config.idle_timeout,
        };
        Ok((net, events))
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    async fn send(&self, c: Command) -> Result<(), NetError> {
        self.commands.send(c).await.map_err(|_| NetError::Closed)
    }

    /// Sends a request and waits for its response (dialling the peer first if needed).
    ///
    /// [`NetError::Unreachable`] means nothing was transmitted; any other failure may have
    /// reached the peer, so requests are safe to repeat (delivery answers a repeat "duplicate").
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NetError> {
        let body = request.encode();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let link = self.link(peer).await?;
            match link.call(&body, self.request_timeout).await {
                Ok(response) => return Ok(response),
                Err(CallError::Closed) if attempt >= LINK_ATTEMPTS => {
                    return Err(NetError::Request { peer, reason: "the request stream keeps closing".into() })
                }
                Err(CallError::Closed) => {}
                Err(CallError::Failed(e)) => return Err(e),
                Err(CallError::Ended(e)) if link.has_answered() || attempt >= LINK_ATTEMPTS => return Err(e),
                Err(CallError::Ended(e)) => {
                    tracing::debug!(%peer, %e, "request link ended unanswered; trying a new one");
                    tokio::time::sleep(Duration::from_millis(1 << (2 * attempt))).await;
                }
            }
        }
    }

    /// The open request link to `peer`, or a new one.
    async fn link(&self, peer: PeerId) -> Result<Arc<Link>, NetError> {
        let slot = locked(&self.links).entry(peer).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref().filter(|link| link.is_open()) {
            return Ok(link.clone());
        }
        let stream =
            tokio::time::timeout(self.request_timeout, self.open_stream(peer, MSG_PROTOCOL)).await.map_err(
                |_| NetError::Unreachable { peer, reason: "no connection within the request timeout".into() },
            )??;
        let link = Link::start(peer, stream, self.idle_timeout);
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Waits until a connection to `peer` is open, dialling its known addresses if needed.
    async fn connect(&self, peer: PeerId) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Connect { peer, reply }).await?;
        rx.await.map_err(|_| NetError::Closed)?
    }

    /// Opens a stream of `protocol` to a peer, dialling it first if needed.
    pub async fn open_stream(&self, peer: PeerId, protocol: &'static str) -> Result<Stream, NetError> {
        self.connect(peer).await?;
        self.streams
            .clone()
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .map_err(|e| NetError::Request { peer, reason: e.to_string() })
    }

    /// Takes the inbound streams of `protocol` (once per protocol).
    pub fn accept_streams(&self, protocol: &'static str) -> Result<IncomingStreams, NetError> {
        self.streams
            .clone()
            .accept(StreamProtocol::new(protocol))
            .map_err(|_| NetError::Setup(format!("{protocol} is already being accepted")))
    }

    /// Dials an address and waits for the connection.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { addr, reply }).await?;
        rx.await.map_err(|_| NetError::Closed)?
    }

    /// Remembers an address for a peer (used when a request needs a connection).
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetError> {
        self.send(Command::AddAddress { peer, addr }).await
    }

    /// The addresses this node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ListenAddrs { reply }).await?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// Whether a connection to `peer` is open.
    pub async fn is_connected(&self, peer: PeerId) -> Result<bool, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::IsConnected { peer, reply }).await?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// Refuses every connection with `peer` from now on and closes the open ones.
    pub async fn block(&self, peer: PeerId) -> Result<(), NetError> {
        self.send(Command::Block { peer }).await
    }

    /// Stops the swarm task (connections close).
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Inbound request streams one peer may have open at once. A node opens one per connection;
/// the spare ones cover a reconnect racing the old stream's end.
pub const MAX_INBOUND_LINKS_PER_PEER: usize = 4;

/// Hands each inbound request stream to its own serving task, refusing a peer's streams past
/// [`MAX_INBOUND_LINKS_PER_PEER`] (each may hold [`link::MAX_IN_FLIGHT`] requests).
async fn accept_requests(mut incoming: IncomingStreams, events: mpsc::Sender<Event>) {
    let open: Arc<Mutex<HashMap<PeerId, usize>>> = Default::default();
    while let Some((peer, stream)) = incoming.next().await {
        {
            let mut open = locked(&open);
            let count = open.entry(peer).or_default();
            if *count >= MAX_INBOUND_LINKS_PER_PEER {
                tracing::warn!(%peer, "too many request streams from one peer; refusing another");
                continue;
            }
            *count += 1;
        }
        let (open, events) = (open.clone(), events.clone());
        tokio::spawn(async move {
            link::serve(peer, stream, events).await;
            let mut open = locked(&open);
            if let Some(count) = open.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&peer);
                }
            }
        });
    }
}

struct Task {
    swarm: Swarm<Behaviour>,
    events: mpsc::Sender<Event>,
    dials: HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<(), NetError>>>,
    /// Requests waiting for a connection to a peer being dialled.
    connecting: HashMap<PeerId, Vec<oneshot::Sender<Result<(), NetError>>>>,
    /// Every address learned per peer. A team can be larger than libp2p's own address books and
    /// a peer busy when dialled, so requests to an unconnected peer dial with these addresses.
    book: HashMap<PeerId, Vec<Multiaddr>>,
}

/// Most peers whose addresses are remembered.
pub const MAX_BOOK_PEERS: usize = 10_000;
/// Most addresses remembered per peer (newest kept).
pub const MAX_ADDRS_PER_PEER: usize = 8;

async fn run(
    swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    early: Vec<SwarmEvent<BehaviourEvent>>,
) {
    let mut task =
        Task { swarm, events, dials: HashMap::new(), connecting: HashMap::new(), book: HashMap::new() };
    for event in early {
        task.swarm_event(event);
    }
    loop {
        tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                None => break,
                Some(Command::Shutdown { reply }) => {
                    let _ = reply.send(());
                    break;
                }
                Some(cmd) => task.command(cmd),
            },
            event = task.swarm.select_next_some() => task.swarm_event(event),
        }
    }
}

impl Task {
    fn remember(&mut self, peer: PeerId, addr: Multiaddr) {
        if !self.book.contains_key(&peer) && self.book.len() >= MAX_BOOK_PEERS {
            return;
        }
        let addrs = self.book.entry(peer).or_default();
        if !addrs.contains(&addr) {
            addrs.push(addr);
            if addrs.len() > MAX_ADDRS_PER_PEER {
                addrs.remove(0);
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { peer, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let addrs = self.book.get(&peer).cloned().unwrap_or_default();
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                match self.swarm.dial(opts) {
                    // Already being dialled: wait for that dial.
                    Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                        self.connecting.entry(peer).or_default().push(reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Unreachable { peer, reason: e.to_string() }));
                    }
                }
            }
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id().address(addr).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dial(e.to_string())));
                    }
                }
            }
            Command::AddAddress { peer, addr } => {
                self.remember(peer, addr.clone());
                self.swarm.add_peer_address(peer, addr);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::IsConnected { peer, reply } => {
                let _ = reply.send(self.swarm.is_connected(&peer));
            }
            Command::Block { peer } => {
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn emit(&mut self, event: Event) {
        // A full queue means the node is overloaded: connection and discovery hints are dropped
        // (the node also learns of a peer when it next exchanges anything with it).
        let _ = self.events.try_send(event);
    }

    fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id, connection_id, endpoint, num_established, ..
            } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                for reply in self.connecting.remove(&peer_id).into_iter().flatten() {
                    let _ = reply.send(Ok(()));
                }
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                if num_established.get() == 1 {
                    self.emit(Event::Connected { peer: peer_id, addr });
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.emit(Event::Disconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Dial(error.to_string())));
                }
                if let Some(peer) = peer_id.filter(|peer| !self.swarm.is_connected(peer)) {
                    for reply in self.connecting.remove(&peer).into_iter().flatten() {
                        let reason = error.to_string();
                        let _ = reply.send(Err(NetError::Unreachable { peer, reason }));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.remember(peer_id, addr.clone());
                    self.swarm.add_peer_address(peer_id, addr.clone());
                    self.emit(Event::Discovered { peer: peer_id, addr });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    tracing::debug!(%peer, %addr, "mDNS discovered");
                    self.remember(peer, addr.clone());
                    self.swarm.add_peer_address(peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                    self.emit(Event::Discovered { peer, addr });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_map_to_device_keys_and_back() {
        let kp = identity::Keypair::generate_ed25519();
        let peer = kp.public().to_peer_id();
        let key = device_key_of(&peer).expect("ed25519 peer");
        assert_eq!(peer_id_of(&key), Some(peer));
    }

    #[test]
    fn device_keys_read_from_peer_ids_match_libp2p_s_decoding() {
        for _ in 0..64 {
            let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
            let decoded = identity::PublicKey::try_decode_protobuf(peer.as_ref().digest())
                .expect("protobuf")
                .try_into_ed25519()
                .expect("ed25519")
                .to_bytes();
            assert_eq!(device_key_of(&peer), Some(decoded));
        }
        // A PeerId that is not an Ed25519 key has no device key.
        assert_eq!(device_key_of(&PeerId::random()), None);
    }
}
