//! The network layer on its own: more peers than libp2p's own address book holds.

use dingo_net::{Config, Event, Net};
use dingo_types::wire::{Request, Response};

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
