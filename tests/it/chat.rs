//! 1:1 chat between in-process nodes over 127.0.0.1.

use crate::support::*;
use dingo_node::{Direction, Home, Multiaddr, NetConfig, Node, NodeError, Status};

async fn wait_status(node: &Node, with: &str, id: &str, status: Status) {
    eventually(&format!("{id} to be {status:?}"), async || {
        node.messages(with).await.ok()?.into_iter().find(|m| m.id == id && m.status == status).map(|_| ())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ways_with_delivery_and_read_receipts() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    befriend(&alice, &bob).await;

    let mut to_bob = Vec::new();
    for i in 0..3 {
        to_bob.push(alice.send("bob", &format!("a{i}")).await.expect("send").id);
    }
    let to_alice = bob.send("alice", "b0").await.expect("send").id;
    for id in &to_bob {
        wait_status(&alice, "bob", id, Status::Delivered).await;
    }
    wait_status(&bob, "alice", &to_alice, Status::Delivered).await;

    let at_bob = bob.messages("alice").await.expect("messages");
    let texts: Vec<&str> =
        at_bob.iter().filter(|m| m.direction == Direction::In).map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["a0", "a1", "a2"]);
    assert_eq!(bob.inbox().await.expect("inbox")[0].unread, 3);

    bob.read("alice").await.expect("read");
    for id in &to_bob {
        wait_status(&alice, "bob", id, Status::Read).await;
    }
    alice.read("bob").await.expect("read");
    wait_status(&bob, "alice", &to_alice, Status::Read).await;
    let m = alice.messages("bob").await.expect("messages");
    assert!(m
        .iter()
        .filter(|m| m.direction == Direction::Out)
        .all(|m| m.read_at.is_some() && m.delivered_at.is_some()));
    assert_eq!(alice.stats().rejected + bob.stats().rejected, 0);
}

/// Alice online, and bob, her contact, not yet on the network.
async fn alice_and_offline_bob(dir: &std::path::Path) -> (Node, Node) {
    let alice = started_node(dir, "alice").await;
    let bob_home = Home::new(dir.join("bob"));
    Node::init(&bob_home, "bob", None).expect("init");
    let bob = Node::open(&bob_home, None).expect("open");
    alice.add_contact(&bob.id().invite, None).await.expect("add");
    bob.add_contact(&alice.id().invite, None).await.expect("add");
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_gets_everything_when_it_starts() {
    let dir = tempfile::tempdir().expect("tmp");
    let (alice, bob) = alice_and_offline_bob(dir.path()).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(alice.send("bob", &format!("while you were out {i}")).await.expect("send").id);
    }
    assert!(alice.messages("bob").await.expect("m").iter().all(|m| m.status == Status::Queued));
    let peers: Vec<Multiaddr> = alice.id().addrs.iter().filter_map(|a| a.parse().ok()).collect();
    bob.start_network(NetConfig::loopback(), peers).await.expect("bob online");
    for id in &ids {
        wait_status(&alice, "bob", id, Status::Delivered).await;
    }
    let got: Vec<String> = bob.messages("alice").await.expect("m").into_iter().map(|m| m.id).collect();
    assert_eq!(got, ids, "all delivered, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_concurrent_sends_shares_signatures_and_arrives_once_each() {
    use dingo_types::envelope::{Auth, Envelope};
    let dir = tempfile::tempdir().expect("tmp");
    let (alice, bob) = alice_and_offline_bob(dir.path()).await;
    // Bob is offline: the envelopes wait in alice's outbox, as sealed.
    let sends: Vec<_> = (0..200)
        .map(|i| {
            let alice = alice.clone();
            tokio::spawn(async move { alice.send("bob", &format!("burst {i}")).await.expect("send").id })
        })
        .collect();
    let mut ids = Vec::new();
    for s in sends {
        ids.push(s.await.expect("send task"));
    }
    let outbox: Vec<Envelope> = alice
        .test_support_outbox()
        .await
        .expect("outbox")
        .iter()
        .map(|b| Envelope::decode(b).expect("decode"))
        .collect();
    assert_eq!(outbox.len(), 200);
    let mut signatures: Vec<[u8; 64]> = outbox
        .iter()
        .map(|e| match &e.auth {
            Auth::Single(sig) => *sig,
            Auth::Batch(p) => p.signature,
        })
        .collect();
    signatures.sort();
    signatures.dedup();
    assert!(signatures.len() < 100, "{} signatures for 200 queued sends", signatures.len());

    let peers: Vec<Multiaddr> = alice.id().addrs.iter().filter_map(|a| a.parse().ok()).collect();
    bob.start_network(NetConfig::loopback(), peers).await.expect("bob online");
    for id in &ids {
        wait_status(&alice, "bob", id, Status::Delivered).await;
    }
    let mut got: Vec<String> = bob.messages("alice").await.expect("m").into_iter().map(|m| m.id).collect();
    assert_eq!(got.len(), 200, "each message stored once");
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    assert_eq!(bob.stats().rejected, 0);
}

/// A send whose caller stops waiting (an API client that went away) after its message was
/// sealed still delivers it, with nothing else sent after it to trigger delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cancelled_after_sealing_is_still_delivered() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    befriend(&alice, &bob).await;
    let sealed_count = async || {
        let all = alice.messages("bob").await.expect("messages");
        all.iter().filter(|m| m.direction == Direction::Out).count()
    };
    // Cut sends off ever later until one is cut off after its store job sealed it.
    let mut found = None;
    for i in 0..2000u64 {
        let before = sealed_count().await;
        let cut = std::time::Duration::from_micros(i % 400);
        let text = format!("m{i}");
        let cancelled = tokio::time::timeout(cut, alice.send("bob", &text)).await.is_err();
        // Give a cut-off store job time to finish.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        if cancelled && sealed_count().await > before {
            found = Some(text);
            break;
        }
    }
    let text = found.expect("a send cut off after sealing");
    eventually("the cut-off message to reach bob", async || {
        bob.messages("alice").await.ok()?.into_iter().find(|m| m.text == text).map(|_| ())
    })
    .await;
}

/// A `read` whose caller stops waiting after the messages were marked read still sends the read
/// receipts, with nothing else queued for that contact to trigger delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cancelled_after_marking_still_sends_its_receipts() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    befriend(&alice, &bob).await;
    let unread = async || bob.inbox().await.expect("inbox").first().map_or(0, |c| c.unread);
    // Cut reads off ever later until one is cut off after its store job marked the message read.
    let mut found = None;
    for i in 0..2000u64 {
        let id = alice.send("bob", &format!("m{i}")).await.expect("send").id;
        eventually("bob to have it", async || (unread().await == 1).then_some(())).await;
        let cut = std::time::Duration::from_micros(i % 400);
        let cancelled = tokio::time::timeout(cut, bob.read("alice")).await.is_err();
        // Give a cut-off store job time to finish.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        if cancelled && unread().await == 0 {
            found = Some(id);
            break;
        }
        if cancelled {
            bob.read("alice").await.expect("read");
        }
    }
    let id = found.expect("a read cut off after marking");
    wait_status(&alice, "bob", &id, Status::Read).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_our_invite_becomes_an_unverified_contact() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    alice.add_contact(&bob.id().invite, None).await.expect("add");
    let id = alice.send("bob", "hello, we have not met").await.expect("send").id;
    wait_status(&alice, "bob", &id, Status::Delivered).await;
    let contacts = bob.contacts().await.expect("contacts");
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].name, "alice");
    assert!(!contacts[0].verified);
    let reply = bob.send("alice", "welcome").await.expect("reply over the session alice started").id;
    wait_status(&bob, "alice", &reply, Status::Delivered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_blocks_the_conversation_until_reverified() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob_home = Home::new(dir.path().join("bob"));
    Node::init(&bob_home, "bob", None).expect("init");
    let old_bob = bob_home.load_identity(None).expect("identity");
    let bob = Node::open(&bob_home, None).expect("open");
    bob.start_network(NetConfig::loopback(), vec![]).await.expect("net");
    befriend(&alice, &bob).await;
    let first = alice.send("bob", "before").await.expect("send").id;
    wait_status(&alice, "bob", &first, Status::Delivered).await;
    bob.shutdown().await.expect("shutdown");

    // Bob moves to a new device: same user key, new device key.
    let new_home = Home::new(dir.path().join("bob2"));
    new_home.create_identity(&old_bob.with_new_device(), None).expect("new device");
    let bob2 = Node::open(&new_home, None).expect("open");
    bob2.start_network(NetConfig::loopback(), vec![]).await.expect("net");
    bob2.add_contact(&alice.id().invite, None).await.expect("add alice");
    let from_new = bob2.send("alice", "it's me, on my new laptop").await.expect("send").id;

    let mut events = alice.subscribe();
    eventually("alice to see the key change", async || {
        alice.contacts().await.ok()?.into_iter().find(|c| c.name == "bob" && c.key_changed).map(|_| ())
    })
    .await;
    let _ = events.try_recv();
    assert!(
        alice.messages("bob").await.expect("m").iter().all(|m| m.id != from_new),
        "nothing accepted before re-verification"
    );
    match alice.send("bob", "are you there?").await {
        Err(NodeError::KeyChanged(name)) => assert_eq!(name, "bob"),
        other => panic!("expected a key-change block, got {other:?}"),
    }
    let v = alice.verify_contact("bob", false).await.expect("verify");
    assert!(v.key_changed);
    alice.verify_contact("bob", true).await.expect("confirm");
    wait_status(&bob2, "alice", &from_new, Status::Delivered).await;
    let back = alice.send("bob", "welcome back").await.expect("send after re-verification").id;
    wait_status(&alice, "bob", &back, Status::Delivered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_chat_over_quic_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut nodes = Vec::new();
    for name in ["alice", "bob"] {
        let home = Home::new(dir.path().join(name));
        Node::init(&home, name, None).expect("init");
        let node = Node::open(&home, None).expect("open");
        let mut config = NetConfig::loopback();
        config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")];
        let addrs = node.start_network(config, vec![]).await.expect("network");
        assert!(addrs.iter().all(|a| a.contains("quic-v1")), "{addrs:?}");
        nodes.push(node);
    }
    befriend(&nodes[0], &nodes[1]).await;
    let id = nodes[0].send("bob", "over QUIC").await.expect("send").id;
    wait_status(&nodes[0], "bob", &id, Status::Delivered).await;
    let reply = nodes[1].send("alice", "QUIC back").await.expect("send").id;
    wait_status(&nodes[1], "alice", &reply, Status::Delivered).await;
}
