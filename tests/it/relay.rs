//! Store-and-forward between in-process nodes over 127.0.0.1: mail and channel messages reach a
//! member through a teammate when author and recipient are never online together, the carrier
//! cannot read what it carries, receipts come back the same way, and writes made on both sides
//! of a split converge once, in order.

use crate::support::*;
use dingo_node::{Direction, Home, NetConfig, Node, Status};
use std::path::Path;

async fn team_of(dir: &Path, names: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for n in names {
        nodes.push(started_node(dir, n).await);
    }
    nodes[0].team_create("crew").await.expect("create");
    for n in &nodes[1..] {
        join_team(&nodes[0], n).await;
    }
    for n in &nodes {
        eventually("everyone to see the whole team", async || {
            (n.team().await.ok()?.members.len() == names.len()).then_some(())
        })
        .await;
    }
    nodes
}

/// A team whose members have each said hello in `#general`: everyone's channel key has reached
/// everyone while all are together.
async fn greeted_team(dir: &Path, names: &[&str]) -> Vec<Node> {
    let nodes = team_of(dir, names).await;
    for (n, name) in nodes.iter().zip(names) {
        n.send("#general", &format!("{name} hello")).await.expect("send");
    }
    for n in &nodes {
        eventually("the greetings", async || (texts(n, "#general").await.len() == names.len()).then_some(()))
            .await;
    }
    nodes
}

async fn texts(node: &Node, who: &str) -> Vec<String> {
    node.messages(who).await.map(|m| m.into_iter().map(|m| m.text).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_and_channel_messages_travel_through_a_teammate() {
    if std::env::var("DEBUG_RELAY").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("dingo_node=debug").with_test_writer().try_init();
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut nodes = team_of(dir.path(), &["alice", "bob", "carol"]).await;
    let carol = nodes.pop().expect("carol");
    let bob = nodes.pop().expect("bob");
    let alice = nodes.pop().expect("alice");

    // Carol leaves before alice writes anything: alice's channel key has never reached her.
    carol.shutdown().await.expect("carol stops");
    drop(carol);
    let direct = "CANARY direct 7f3a";
    let direct_id = alice.send("carol", direct).await.expect("send").id;
    let group_id = alice.send("#general", "CANARY channel 91bc").await.expect("send").id;
    eventually("bob to get the channel message", async || {
        texts(&bob, "#general").await.contains(&"CANARY channel 91bc".to_owned()).then_some(())
    })
    .await;
    eventually("alice to hand carol's mail to bob", async || {
        let mail = bob.test_support_mailbox().await.ok()?;
        // The direct message. Alice's channel key for carol rides in the channel message
        // itself (they share a session since the direct one), which bob holds as a member.
        (!mail.is_empty()).then_some(mail)
    })
    .await;
    // The carrier holds sealed bytes only.
    for env in bob.test_support_mailbox().await.expect("mailbox") {
        assert!(!env.windows(6).any(|w| w == b"CANARY"), "the carrier can read what it carries");
    }
    assert!(!texts(&bob, "alice").await.iter().any(|t| t.contains("CANARY direct")));
    let peers = alice.peers().await.expect("peers");
    let to_carol = peers.iter().find(|p| p.name.as_deref() == Some("carol")).expect("carol listed");
    assert!(!to_carol.connected && to_carol.queue >= 2, "{to_carol:?}");
    alice.shutdown().await.expect("alice stops");
    drop(alice);

    // Carol comes back and meets only bob.
    let carol = restart(dir.path(), "carol", &[&bob]).await;
    eventually("carol to get alice's direct message through bob", async || {
        texts(&carol, "alice").await.contains(&direct.to_owned()).then_some(())
    })
    .await;
    eventually("carol to get alice's channel message through bob", async || {
        texts(&carol, "#general").await.contains(&"CANARY channel 91bc".to_owned()).then_some(())
    })
    .await;
    eventually("bob to have handed on everything for carol", async || {
        let peers = bob.peers().await.ok()?;
        (peers.iter().find(|p| p.name.as_deref() == Some("carol"))?.mailbox == 0).then_some(())
    })
    .await;
    let bob_view = bob.peers().await.expect("peers");
    let carried = bob_view.iter().find(|p| p.name.as_deref() == Some("carol")).expect("carol");
    assert!(carried.carried_for_others >= 1, "{carried:?}");
    // Carol reads; her receipts (delivered and read) wait for alice, with bob.
    carol.read("alice").await.expect("read");
    carol.read("#general").await.expect("read");
    eventually("carol's receipts to reach bob", async || {
        let waiting =
            carol.peers().await.ok()?.into_iter().find(|p| p.name.as_deref() == Some("alice"))?.queue;
        (waiting >= 3 && bob.test_support_mailbox().await.ok()?.len() >= waiting).then_some(())
    })
    .await;
    carol.shutdown().await.expect("carol stops");
    drop(carol);

    // Alice comes back, meets only bob, and learns that carol got and read both.
    let alice = restart(dir.path(), "alice", &[&bob]).await;
    eventually("alice to learn carol read the direct message", async || {
        let m = alice.messages("carol").await.ok()?.into_iter().find(|m| m.id == direct_id)?;
        (m.status == Status::Read && m.delivered_at.is_some()).then_some(())
    })
    .await;
    eventually("alice to learn carol got and read the channel message", async || {
        let m = alice.messages("#general").await.ok()?.into_iter().find(|m| m.id == group_id)?;
        let c = m.members.iter().find(|s| s.member == "carol")?;
        (c.delivered_at.is_some() && c.read_at.is_some()).then_some(())
    })
    .await;
    // Carol's receipts named everything alice had queued for her (the direct message, the
    // channel message with her channel key): all of it leaves alice's outbox. What may wait is alice's
    // own acknowledgement of carol's receipts (one entry per batch they came in).
    eventually("alice's queue to carol to drop what carol got", async || {
        let peers = alice.peers().await.ok()?;
        (peers.iter().find(|p| p.name.as_deref() == Some("carol"))?.queue <= 2).then_some(())
    })
    .await;
    for n in [alice, bob] {
        n.shutdown().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_both_sides_of_a_split_converge_once_in_order() {
    if std::env::var("DEBUG_RELAY").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("dingo_node=debug").with_test_writer().try_init();
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut nodes = greeted_team(dir.path(), &["ann", "ben", "cat", "dan"]).await;
    // The split: cat and dan go away; ann and ben write.
    let dan = nodes.pop().expect("dan");
    let cat = nodes.pop().expect("cat");
    for n in [cat, dan] {
        n.shutdown().await.expect("stop");
    }
    for i in 0..20 {
        nodes[i % 2].send("#general", &format!("west {i}")).await.expect("send");
    }
    let ben = nodes.pop().expect("ben");
    let ann = nodes.pop().expect("ann");
    eventually("ben to have the west side", async || {
        (texts(&ben, "#general").await.len() == 24).then_some(())
    })
    .await;
    eventually("ann to have the west side", async || {
        (texts(&ann, "#general").await.len() == 24).then_some(())
    })
    .await;
    for n in [&ann, &ben] {
        let log = n.test_support_group_log("#general").await.expect("log");
        assert_eq!(log.len(), 24, "{} keeps every envelope it stored, to serve", n.id().name);
    }
    for n in [ann, ben] {
        n.shutdown().await.expect("stop");
    }
    // The other side, alone together, writes too.
    let cat = Node::open(&Home::new(dir.path().join("cat")), None).expect("reopen");
    cat.start_network(NetConfig::loopback(), vec![]).await.expect("network");
    let dan = restart(dir.path(), "dan", &[&cat]).await;
    for i in 0..20 {
        [&cat, &dan][i % 2].send("#general", &format!("east {i}")).await.expect("send");
    }
    for n in [&cat, &dan] {
        eventually("the east side to have it all", async || {
            (texts(n, "#general").await.len() == 24).then_some(())
        })
        .await;
    }
    dan.shutdown().await.expect("stop");
    drop(dan);
    // Heal: ann comes back and meets only cat.
    let ann = restart(dir.path(), "ann", &[&cat]).await;
    for n in [&ann, &cat] {
        eventually("both sides to converge", async || (texts(n, "#general").await.len() == 44).then_some(()))
            .await;
    }
    for n in [&ann, &cat] {
        let msgs = n.messages("#general").await.expect("messages");
        let mut ids: Vec<&str> = msgs.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 44, "no duplicates");
        // Each author's messages in the order written.
        for side in ["west", "east"] {
            let seq: Vec<usize> =
                msgs.iter().filter_map(|m| m.text.strip_prefix(&format!("{side} "))?.parse().ok()).collect();
            for parity in 0..2 {
                let mine: Vec<usize> = seq.iter().copied().filter(|i| i % 2 == parity).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "{side} out of order: {mine:?}");
            }
        }
        assert!(msgs.iter().filter(|m| m.direction == Direction::Out).count() >= 10);
    }
    for n in [ann, cat] {
        n.shutdown().await.expect("stop");
    }
}

/// A member back from away meets several teammates at once who all hold what it missed: it
/// takes the history once, not once per teammate (pulls take turns, each asking with what the
/// ones before it stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_from_away_takes_the_history_once_from_several_peers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut nodes = greeted_team(dir.path(), &["ann", "ben", "cat", "dan"]).await;
    let dan = nodes.pop().expect("dan");
    dan.shutdown().await.expect("stop");
    drop(dan);
    const MISSED: usize = 100;
    for i in 0..MISSED {
        nodes[0].send("#general", &format!("while dan was away {i}")).await.expect("send");
    }
    for n in &nodes[1..] {
        eventually("ben and cat to hold ann's messages", async || {
            (texts(n, "#general").await.len() == 4 + MISSED).then_some(())
        })
        .await;
    }
    // Ann leaves too: what dan missed is with ben and cat, and dan meets both at once.
    let cat = nodes.pop().expect("cat");
    let ben = nodes.pop().expect("ben");
    let ann = nodes.pop().expect("ann");
    ann.shutdown().await.expect("stop");
    drop(ann);
    let dan = restart(dir.path(), "dan", &[&ben, &cat]).await;
    eventually("dan to catch up", async || (texts(&dan, "#general").await.len() == 4 + MISSED).then_some(()))
        .await;
    // Let a second, overlapping pull (the bug this guards against) finish before counting.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let stats = dan.stats();
    assert!(stats.duplicates < 10, "dan was handed the history more than once: {stats:?}");
    for n in [ben, cat, dan] {
        n.shutdown().await.expect("stop");
    }
}

/// The author is online when a member comes back: its delivery run pushes its own messages
/// from the member's cursor, and neither a teammate's sync answers nor the author's own hand
/// them over a second time (before, every one arrived twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_from_away_gets_the_author_s_messages_once_while_the_author_is_online() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut nodes = greeted_team(dir.path(), &["ann", "ben", "dan"]).await;
    let dan = nodes.pop().expect("dan");
    dan.shutdown().await.expect("stop");
    drop(dan);
    const MISSED: usize = 300;
    for chunk in 0..MISSED / 50 {
        let sends =
            (0..50).map(|i| {
                let ann = nodes[0].clone();
                async move {
                    ann.send("#general", &format!("while dan was away {chunk}/{i}")).await.expect("send")
                }
            });
        futures::future::join_all(sends).await;
    }
    eventually("ben to hold ann's messages", async || {
        (texts(&nodes[1], "#general").await.len() == 3 + MISSED).then_some(())
    })
    .await;
    let dan = restart(dir.path(), "dan", &[&nodes[1], &nodes[0]]).await;
    eventually("dan to catch up", async || (texts(&dan, "#general").await.len() == 3 + MISSED).then_some(()))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let stats = dan.stats();
    assert!(stats.duplicates < 10, "dan was handed ann's messages more than once: {stats:?}");
    for n in nodes.into_iter().chain([dan]) {
        n.shutdown().await.expect("stop");
    }
}

/// Someone who joins after an author wrote more than a replay window's worth (8,192) in a
/// channel gets that author's new messages at once: the author's first key for them says where
/// its log starts for them. Slow (9,000 messages in a debug build): run by `.ci/run` with the
/// ignored tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn a_member_who_joins_after_a_long_history_gets_new_messages_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    alice.team_create("acme").await.expect("team");
    for chunk in 0..90 {
        let sends = (0..100).map(|i| {
            let a = alice.clone();
            async move { a.send("#general", &format!("old {chunk}/{i}")).await.expect("send") }
        });
        futures::future::join_all(sends).await;
    }
    let carol = started_node(dir.path(), "carol").await;
    join_team(&alice, &carol).await;
    alice.send("#general", "after you joined").await.expect("send");
    eventually("carol to get the new message", async || {
        carol.messages("#general").await.ok()?.iter().any(|m| m.text == "after you joined").then_some(())
    })
    .await;
    for n in [alice, carol] {
        n.shutdown().await.expect("stop");
    }
}
