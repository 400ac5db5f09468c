//! The network layer on its own: more peers than libp2p's own address book holds, requests
//! sharing one stream, bad frames, idle links.

use dingo_net::{Config, Event, Net};
use dingo_types::wire::{DeliveryStatus, Request, Response, MSG_PROTOCOL};
use std::time::Duration;

async fn answering_peer() -> (Net, libp2p::Multiaddr) {
    let (net, mut events) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), Config::loopback()).await.expect("spawn");
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Event::Request { responder, .. } = e {
                responder.respond(Response::Results(Vec::new()));
            }
        }
    });
    let addr = net.listen_addrs().await.expect("addrs").remove(0);
    (net, addr)
}

/// libp2p's request-response keeps addresses for 100 peers only (least recently used first out);
/// a team is bigger, so `dingo-net` keeps its own book and dials with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_learned_before_120_others_is_still_reachable() {
    let (me, _events) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), Config::loopback()).await.expect("spawn");
    let mut peers = Vec::new();
    for _ in 0..120 {
        let (net, addr) = answering_peer().await;
        me.add_address(net.local_peer_id(), addr).await.expect("learn");
        peers.push(net);
    }
    let first = peers[0].local_peer_id();
    let answer = me.request(first, Request::Deliver(Vec::new())).await.expect("the first peer answers");
    assert_eq!(answer, Response::Results(Vec::new()));
    for p in &peers {
        p.shutdown().await;
    }
}

/// A peer whose node answers each `Deliver` of n envelopes with n `Retry`s, the later requests
/// first: answers travel on the same stream as the requests, matched by id, not by order.
async fn reverse_answering_peer(config: Config) -> (Net, libp2p::Multiaddr) {
    let (net, mut events) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), config).await.expect("spawn");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(e) = events.recv().await {
            if let Event::Request { request: Request::Deliver(envs), responder, .. } = e {
                held.push((envs.len(), responder));
                if held.len() == 3 {
                    for (n, responder) in held.drain(..).rev() {
                        responder.respond(Response::Results(vec![DeliveryStatus::Retry; n]));
                    }
                }
            }
        }
    });
    let addr = net.listen_addrs().await.expect("addrs").remove(0);
    (net, addr)
}

async fn me_and(config: Config) -> (Net, Net) {
    let (me, _events) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), Config::loopback()).await.expect("spawn");
    let (peer, addr) = reverse_answering_peer(config).await;
    me.add_address(peer.local_peer_id(), addr).await.expect("learn");
    (me, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_stream_get_their_own_answers_in_any_order() {
    let (me, peer) = me_and(Config::loopback()).await;
    let to = peer.local_peer_id();
    let ask = |n: usize| me.request(to, Request::Deliver(vec![vec![0u8; 8]; n]));
    let (a, b, c) = tokio::join!(ask(1), ask(2), ask(3));
    for (answer, n) in [(a, 1), (b, 2), (c, 3)] {
        assert_eq!(answer.expect("answered"), Response::Results(vec![DeliveryStatus::Retry; n]));
    }
}

/// Raw bytes on Dingo's request protocol, as a misbehaving peer would send them.
async fn raw_request_stream(me: &Net, to: libp2p::PeerId, bytes: &[u8]) -> Vec<u8> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut stream = me.open_stream(to, MSG_PROTOCOL).await.expect("open");
    stream.write_all(bytes).await.expect("write");
    stream.close().await.expect("close our side");
    let mut answer = Vec::new();
    // The peer closes (or resets) its side instead of answering.
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the peer kept a bad stream open");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_request_frames_close_the_stream_and_nothing_else() {
    let (me, peer) = me_and(Config::loopback()).await;
    let to = peer.local_peer_id();
    let oversized = [&u32::MAX.to_be_bytes()[..], &[0u8; 8]].concat();
    // A body that is no request (tag 9), and a truncated frame.
    let garbage = [&1u32.to_be_bytes()[..], &[0u8; 8], &[9]].concat();
    for bytes in [&oversized[..], &garbage[..], &[0, 0, 0, 5, 1][..]] {
        assert!(raw_request_stream(&me, to, bytes).await.is_empty(), "no answer to bad frames");
    }
    // The peer still serves well-formed requests, on a link of their own.
    let ask = |n: usize| me.request(to, Request::Deliver(vec![vec![1u8; 8]; n]));
    let (a, b, c) = tokio::join!(ask(1), ask(2), ask(3));
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_link_closes_with_its_connection_and_the_next_request_reconnects() {
    let quick = Config { idle_timeout: Duration::from_millis(200), ..Config::loopback() };
    let (me, _events) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), quick.clone()).await.expect("spawn");
    let (peer, addr) = reverse_answering_peer(quick).await;
    let to = peer.local_peer_id();
    me.add_address(to, addr).await.expect("learn");
    for _ in 0..2 {
        let ask = |n: usize| me.request(to, Request::Deliver(vec![vec![2u8; 8]; n]));
        let (a, b, c) = tokio::join!(ask(1), ask(2), ask(3));
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert!(me.is_connected(to).await.expect("net"));
        crate::support::eventually("the idle connection closes", async || {
            (!me.is_connected(to).await.expect("net")).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_open_request_streams_without_bound() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let (me, peer) = me_and(Config::loopback()).await;
    let to = peer.local_peer_id();
    // A request frame (id 0, an empty delivery): the peer sees a stream once bytes arrive.
    let body = Request::Deliver(Vec::new()).encode();
    let frame = [&(body.len() as u32).to_be_bytes()[..], &[0u8; 8], &body].concat();
    // A stream that was reset already fails its write: `None`.
    let open_one = async || {
        let mut stream = me.open_stream(to, MSG_PROTOCOL).await.ok()?;
        stream.write_all(&frame).await.ok()?;
        stream.flush().await.ok()?;
        Some(stream)
    };
    let mut open = Vec::new();
    for _ in 0..dingo_net::MAX_INBOUND_LINKS_PER_PEER {
        // libp2p-stream resets a stream that arrives while its acceptor is not being polled (a
        // loaded machine): such a stream never counted, so open it again.
        open.push(crate::support::eventually("a stream accepted", open_one).await);
    }
    // One more is dropped at once: its write fails, or reading it ends (reset or closed)
    // instead of waiting.
    let mut byte = [0u8; 1];
    if let Some(mut refused) = open_one().await {
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the extra stream was kept: {read:?}");
    }
    // Closing one makes room again.
    drop(open.pop());
    crate::support::eventually("a stream slot frees up", async || {
        let mut again = open_one().await?;
        let read = tokio::time::timeout(Duration::from_millis(300), again.read(&mut byte)).await;
        read.is_err().then_some(again)
    })
    .await;
}

/// A peer that negotiates Dingo's request protocol and drops every stream at once: a request
/// to it fails after a few fresh attempts instead of hanging or retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_drops_every_request_stream_gets_an_error_not_a_hang() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let mut rude = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(Default::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .build();
    rude.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = rude.select_next_some().await {
            break address;
        }
    };
    let rude_id = *rude.local_peer_id();
    let mut incoming =
        rude.behaviour().new_control().accept(libp2p::StreamProtocol::new(MSG_PROTOCOL)).expect("accept");
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = dropped.clone();
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(stream);
        }
    });
    tokio::spawn(async move { while rude.next().await.is_some() {} });
    let (me, _events) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), Config::loopback()).await.expect("spawn");
    me.add_address(rude_id, addr).await.expect("learn");
    let answer =
        tokio::time::timeout(Duration::from_secs(30), me.request(rude_id, Request::Deliver(Vec::new())))
            .await
            .expect("the request gives up");
    assert!(matches!(answer, Err(dingo_net::NetError::Request { .. })), "{answer:?}");
    let streams = dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!((2..=8).contains(&streams), "tried {streams} streams");
}

/// A first request larger than Yamux's flow-control window (256 KiB), on a fresh link that is
/// read while it is written. With the protocol choice sent along with the first bytes
/// (multistream-select `V1Lazy`), about one such request in five stalled until its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_request_larger_than_the_stream_window_is_answered() {
    let quick = Config { request_timeout: Duration::from_secs(3), ..Config::loopback() };
    for _ in 0..20 {
        let (peer, addr) = answering_peer().await;
        let (me, _events) =
            Net::spawn(libp2p::identity::Keypair::generate_ed25519(), quick.clone()).await.expect("spawn");
        me.add_address(peer.local_peer_id(), addr).await.expect("learn");
        let big = Request::Deliver(vec![vec![7u8; 800]; 500]);
        me.request(peer.local_peer_id(), big).await.expect("a 400 KB first request is answered");
        me.shutdown().await;
        peer.shutdown().await;
    }
}
