//! Teams between in-process nodes over 127.0.0.1: joining with one-time codes, departments,
//! department channels with per-member receipts, DING until acknowledged, and removal that
//! cuts a member off (also for a member who was offline when it happened).

use crate::support::*;
use dingo_node::{Direction, Home, NetConfig, Node, NodeError, NodeEvent, Status, TeamView};
use std::time::Duration;

async fn join(admin: &Node, node: &Node, dept: Option<&str>) {
    let code = admin.team_invite(dept.map(str::to_owned), None).await.expect("invite").code;
    node.team_join(&code).await.expect("join");
    let me = node.id().user_id;
    eventually("the join to complete", async || {
        let t = node.team().await.ok()?;
        t.members.iter().any(|m| m.user_id == me).then_some(())
    })
    .await;
}

async fn members_seen(node: &Node) -> usize {
    node.team().await.map(|t: TeamView| t.members.len()).unwrap_or(0)
}

async fn channel_text(node: &Node, channel: &str, text: &str) -> bool {
    node.messages(channel).await.map(|m| m.iter().any(|m| m.text == text)).unwrap_or(false)
}

/// Counts DING alerts for `id` seen on `rx` until `want` (or the deadline).
async fn alerts(rx: &mut tokio::sync::broadcast::Receiver<NodeEvent>, id: &str, want: u32) -> u32 {
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(NodeEvent::Ding { id: got, alert, .. })) if got == id => seen = seen.max(alert),
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_department_channel_receipts_ding_and_removal() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    let carol = started_node(dir.path(), "carol").await;
    let dave = started_node(dir.path(), "dave").await;
    let erin_home = Home::new(dir.path().join("erin"));
    let erin = started_node(dir.path(), "erin").await;

    alice.team_create("acme").await.expect("create");
    assert!(matches!(alice.team_create("again").await, Err(NodeError::AlreadyInTeam(_))));
    alice.dept_create("eng").await.expect("dept");
    join(&alice, &bob, Some("eng")).await;
    join(&alice, &carol, None).await;
    join(&alice, &dave, None).await;
    join(&alice, &erin, None).await;
    for n in [&alice, &bob, &carol, &dave, &erin] {
        eventually("every member to see five members", async || (members_seen(n).await == 5).then_some(()))
            .await;
    }
    // A code works once.
    let code = alice.team_invite(None, None).await.expect("invite").code;
    let outsider = started_node(dir.path(), "outsider").await;
    outsider.team_join(&code).await.expect("first use");
    eventually("the outsider to join", async || (members_seen(&alice).await == 6).then_some(())).await;
    let late = started_node(dir.path(), "late").await;
    late.team_join(&code).await.expect("request queued");
    eventually("the reused code to be refused", async || {
        late.team().await.ok()?.joining.filter(|j| j.contains("already used")).map(|_| ())
    })
    .await;
    alice.team_remove("outsider").await.expect("remove outsider");
    let expired = alice.team_invite(None, Some(0)).await.expect("invite").code;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let other = started_node(dir.path(), "other").await;
    assert!(matches!(other.team_join(&expired).await, Err(NodeError::BadJoinCode(_))));
    assert!(matches!(other.team_join("dingoteam1AAAA").await, Err(NodeError::BadJoinCode(_))));

    // Non-admins cannot change the team; the last admin cannot leave.
    assert!(matches!(bob.dept_create("x").await, Err(NodeError::Team(_))));
    assert!(matches!(alice.team_remove("alice").await, Err(NodeError::Team(_))));

    alice.dept_add("eng", "carol").await.expect("carol to eng");
    alice.dept_add("eng", "alice").await.expect("alice to eng");
    alice.channel_create("eng", vec!["eng".into()], vec![]).await.expect("channel");
    for n in [&bob, &carol, &dave] {
        eventually("the channel to be known", async || {
            let c = n.channels().await.ok()?;
            c.iter().find(|c| c.name == "eng" && c.members.len() == 3).map(|_| ())
        })
        .await;
    }
    assert!(matches!(dave.send("#eng", "let me in").await, Err(NodeError::NotInChannel(_))));

    // Department channel: read by its three members only.
    let id = bob.send("#eng", "build is green").await.expect("send").id;
    for n in [&alice, &carol] {
        eventually("eng members to get it", async || {
            channel_text(n, "#eng", "build is green").await.then_some(())
        })
        .await;
    }
    eventually("delivered to both", async || {
        let m = bob.messages("#eng").await.ok()?.into_iter().find(|m| m.id == id)?;
        (m.delivered_to == Some(2)).then_some(())
    })
    .await;
    carol.read("#eng").await.expect("read");
    eventually("carol's read receipt", async || {
        let m = bob.messages("#eng").await.ok()?.into_iter().find(|m| m.id == id)?;
        (m.read_by == Some(1)).then_some(m)
    })
    .await;
    let un = bob.unread("#eng", None).await.expect("unread");
    assert_eq!(un.not_read, vec!["alice".to_owned()]);
    assert_eq!(un.summary, "read by 1 of 2");
    alice.read("#eng").await.expect("read");
    let m = eventually("read by both", async || {
        let m = bob.messages("#eng").await.ok()?.into_iter().find(|m| m.id == id)?;
        (m.status == Status::Read).then_some(m)
    })
    .await;
    assert_eq!(m.summary.as_deref(), Some("read by 2 of 2"));
    assert!(m.members.iter().all(|s| s.delivered_at.is_some() && s.read_at.is_some()));
    // Nobody outside eng holds a key that opens it.
    for env in bob.test_support_group_log("#eng").await.expect("log") {
        assert!(dave.test_support_try_open(env).await.is_none(), "a non-member read #eng");
    }

    // Read receipts can be turned off; delivery still shows.
    erin.settings(Some(false)).await.expect("settings");
    let hello = alice.send("#general", "hello team").await.expect("send").id;
    for n in [&bob, &carol, &dave, &erin] {
        eventually("everyone to get #general", async || {
            channel_text(n, "#general", "hello team").await.then_some(())
        })
        .await;
    }
    erin.read("#general").await.expect("read");
    bob.read("#general").await.expect("read");
    let m = eventually("bob's receipt", async || {
        let m = alice.messages("#general").await.ok()?.into_iter().find(|m| m.id == hello)?;
        (m.read_by == Some(1) && m.delivered_to == Some(4)).then_some(m)
    })
    .await;
    assert_eq!(m.recipients, Some(4));

    // DING a channel: both members are alerted until they acknowledge.
    let mut bob_rx = bob.subscribe();
    let mut carol_rx = carol.subscribe();
    let ding = alice.ding("#eng", "prod is down", Some(5)).await.expect("ding").id;
    assert!(alerts(&mut bob_rx, &ding, 2).await >= 2, "bob was alerted again before acknowledging");
    bob.ack(&ding[..8]).await.expect("ack");
    eventually("bob's acknowledgement", async || {
        let d = alice.dings().await.ok()?.into_iter().find(|d| d.id == ding)?;
        (d.acked == 1).then_some(())
    })
    .await;
    let d = alice.dings().await.expect("dings").into_iter().find(|d| d.id == ding).expect("ding");
    let waiting: Vec<_> =
        d.recipients.iter().filter(|r| r.acked_at.is_none()).map(|r| r.member.clone()).collect();
    assert_eq!(waiting, ["carol"]);
    let mut carol_rx2 = carol.subscribe();
    assert_eq!(alice.ding_again(&ding).await.expect("again"), 1, "only carol is alerted again");
    assert!(matches!(alice.ding_again(&ding).await, Err(NodeError::RateLimited(_))));
    assert!(alerts(&mut carol_rx2, &ding, 1).await >= 1);
    assert!(alerts(&mut carol_rx, &ding, 1).await >= 1);
    carol.ack(&ding).await.expect("ack");
    eventually("all acknowledged", async || {
        let d = alice.dings().await.ok()?.into_iter().find(|d| d.id == ding)?;
        (d.acked == 2).then_some(())
    })
    .await;

    // Remove dave while erin is offline.
    let erin_addr = erin.id().addrs[0].clone();
    erin.shutdown().await.expect("erin stops");
    drop(erin);
    alice.team_remove("dave").await.expect("remove dave");
    for n in [&bob, &carol] {
        eventually("the removal to reach online members", async || {
            (members_seen(n).await == 4).then_some(())
        })
        .await;
    }
    assert!(matches!(alice.send("dave", "still there?").await, Err(NodeError::Removed(_))));
    let after = bob.send("#general", "after dave left").await.expect("send").id;
    eventually("carol gets it", async || {
        channel_text(&carol, "#general", "after dave left").await.then_some(())
    })
    .await;
    assert!(!channel_text(&dave, "#general", "after dave left").await);
    let _ = after;

    // Erin comes back, learns the removal, and what she sends dave cannot read.
    let erin = Node::open(&erin_home, None).expect("reopen erin");
    let alice_addr = alice.id().addrs[0].parse().expect("addr");
    erin.start_network(NetConfig::loopback(), vec![alice_addr]).await.expect("network");
    let _ = erin_addr;
    eventually("erin to learn the removal", async || (members_seen(&erin).await == 4).then_some(())).await;
    erin.send("#general", "erin is back").await.expect("send");
    eventually("bob gets erin's message", async || {
        channel_text(&bob, "#general", "erin is back").await.then_some(())
    })
    .await;
    for node in [&alice, &bob, &erin] {
        for env in node.test_support_group_log("#general").await.expect("log") {
            let opened = dave.test_support_try_open(env).await;
            if let Some(p) = opened {
                let text = String::from_utf8_lossy(&p).to_string();
                assert!(
                    !text.contains("after dave left") && !text.contains("erin is back"),
                    "the removed member decrypted a message sent after the removal"
                );
            }
        }
    }
    let from_dave = dave.send("#general", "i am still here").await;
    // Dave's node still believes it is in; the others refuse what it sends.
    if from_dave.is_ok() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!channel_text(&bob, "#general", "i am still here").await);
    }
    let bob_msgs = bob.messages("#general").await.expect("messages");
    assert!(bob_msgs.iter().filter(|m| m.direction == Direction::In).all(|m| m.text != "i am still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_add_members_by_invite_but_strangers_cannot_pull_anyone_into_a_team() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    let carol = started_node(dir.path(), "carol").await;
    alice.team_create("acme").await.expect("team");
    alice.dept_create("ops").await.expect("dept");
    // Bob knows alice (he added her invite); carol never heard of her.
    bob.add_contact(&alice.id().invite, None).await.expect("contact");
    let t = alice.team_add(vec![bob.id().invite, carol.id().invite], Some("ops".into())).await.expect("add");
    assert_eq!(t.members.len(), 3);
    eventually("bob to be in the team", async || {
        let t = bob.team().await.ok()?;
        (t.members.len() == 3).then_some(())
    })
    .await;
    let bob_view = bob.team().await.expect("team");
    let me = bob_view.members.iter().find(|m| m.me).expect("bob");
    assert_eq!(me.departments, ["ops"]);
    // Carol's node refused the unsolicited team (counted as a rejection).
    eventually("carol to refuse", async || (carol.stats().rejected > 0).then_some(())).await;
    assert!(matches!(carol.team().await, Err(NodeError::NoTeam)));
    assert!(matches!(alice.team_add(vec!["dingo1garbage".into()], None).await, Err(NodeError::BadInvite(_))));
    // "Last seen" survives a restart.
    bob.shutdown().await.expect("stop");
    drop(bob);
    let bob = Node::open(&Home::new(dir.path().join("bob")), None).expect("reopen");
    let t = bob.team().await.expect("team");
    let a = t.members.iter().find(|m| m.name == "alice").expect("alice");
    assert!(a.last_seen.is_some(), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_too_big_for_one_message_still_brings_a_new_member_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    alice.team_create("big").await.expect("team");
    for i in 0..300 {
        alice.dept_create(&format!("department-{i:03}")).await.expect("dept");
    }
    bob.add_contact(&alice.id().invite, None).await.expect("contact");
    alice.team_add(vec![bob.id().invite], None).await.expect("add");
    let t = eventually("bob to join from a multi-message log", async || {
        let t = bob.team().await.ok()?;
        (t.members.len() == 2).then_some(t)
    })
    .await;
    assert_eq!(t.departments.len(), 300);
    assert_eq!(t.ops, 302);
}

/// The queue `node` holds for the member named `name`.
async fn queue_to(node: &Node, name: &str) -> usize {
    let peers = node.peers().await.expect("peers");
    peers.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.queue).unwrap_or(0)
}

/// After a removal, a member's next channel message carries its new chain key for each
/// remaining member it shares a session with: one envelope per member, not a key message too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_removal_the_new_channel_key_rides_in_the_next_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob, carol, dave] = team_of(dir.path(), ["alice", "bob", "carol", "dave"]).await;
    // Everyone writes once: every pair shares a session and holds every chain.
    let nodes = [&alice, &bob, &carol, &dave];
    for (i, n) in nodes.iter().enumerate() {
        n.send("#general", &format!("hello {i}")).await.expect("send");
    }
    for n in nodes {
        eventually("every greeting everywhere", async || {
            let texts = n.messages("#general").await.ok()?;
            (texts.iter().filter(|m| m.text.starts_with("hello")).count() == 4).then_some(())
        })
        .await;
    }
    eventually("alice's queue to bob to empty", async || (queue_to(&alice, "bob").await == 0).then_some(()))
        .await;
    bob.shutdown().await.expect("bob stops");
    drop(bob);

    alice.team_remove("dave").await.expect("remove");
    eventually("carol to learn of the removal", async || (members_seen(&carol).await == 3).then_some(()))
        .await;
    let before = queue_to(&alice, "bob").await;
    alice.send("#general", "after dave").await.expect("send");
    assert_eq!(
        queue_to(&alice, "bob").await,
        before + 1,
        "bob's new key rides in the message: nothing else is queued for him"
    );
    eventually("carol to read it", async || {
        channel_text(&carol, "#general", "after dave").await.then_some(())
    })
    .await;

    let bob = Node::open(&Home::new(dir.path().join("bob")), None).expect("reopen");
    let alice_addr = alice.id().addrs[0].parse().expect("addr");
    bob.start_network(NetConfig::loopback(), vec![alice_addr]).await.expect("network");
    eventually("bob, back, to read it", async || {
        channel_text(&bob, "#general", "after dave").await.then_some(())
    })
    .await;
    assert!(!channel_text(&dave, "#general", "after dave").await, "the removed member read it");
    for n in [alice, bob, carol, dave] {
        n.shutdown().await.expect("stop");
    }
}

/// Channel messages for a member who is away wait as one cursor over the sender's group log
/// (not an entry each): they count in the sender's queue, survive its restart, and all arrive
/// once, in order, each answered "delivered" for that member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_messages_wait_for_an_away_member_across_a_restart_and_arrive_once_in_order() {
    const N: usize = 300;
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob] = team_of(dir.path(), ["alice", "bob"]).await;
    // Bob gets alice's chain with her first message.
    alice.send("#general", "first").await.expect("send");
    eventually("bob to get it", async || channel_text(&bob, "#general", "first").await.then_some(())).await;
    eventually("alice's queue to bob to empty", async || (queue_to(&alice, "bob").await == 0).then_some(()))
        .await;
    bob.shutdown().await.expect("bob stops");
    drop(bob);
    for i in 0..N {
        alice.send("#general", &format!("m{i:03}")).await.expect("send");
    }
    assert_eq!(queue_to(&alice, "bob").await, N);
    alice.shutdown().await.expect("alice stops");
    drop(alice);

    let alice = restart(dir.path(), "alice", &[]).await;
    assert_eq!(queue_to(&alice, "bob").await, N, "the queue survives a restart");
    let bob = restart(dir.path(), "bob", &[&alice]).await;
    let want: Vec<String> =
        std::iter::once("first".to_owned()).chain((0..N).map(|i| format!("m{i:03}"))).collect();
    eventually("bob to have every message once, in order", async || {
        let got: Vec<String> = bob.messages("#general").await.ok()?.into_iter().map(|m| m.text).collect();
        (got.len() >= want.len()).then_some(())
    })
    .await;
    let got: Vec<String> =
        bob.messages("#general").await.expect("messages").into_iter().map(|m| m.text).collect();
    assert_eq!(got, want);
    eventually("every message delivered to bob, and the queue empty", async || {
        let all = alice.messages("#general").await.ok()?;
        let done = all.iter().all(|m| m.delivered_to == Some(1));
        (done && all.len() == N + 1 && queue_to(&alice, "bob").await == 0).then_some(())
    })
    .await;
}

/// A department channel follows the department: a member taken out of it gets nothing sent to
/// the channel afterwards (its delivery cursor is ignored, and the senders' next messages are
/// under chains it never gets), while the remaining members do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_taken_out_of_a_department_gets_none_of_its_channel_afterwards() {
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob, carol] = team_of(dir.path(), ["alice", "bob", "carol"]).await;
    alice.dept_create("eng").await.expect("dept");
    for who in ["alice", "bob", "carol"] {
        alice.dept_add("eng", who).await.expect("add");
    }
    alice.channel_create("eng", vec!["eng".into()], vec![]).await.expect("channel");
    for n in [&bob, &carol] {
        eventually("the channel of three to be known", async || {
            n.channels().await.ok()?.iter().find(|c| c.name == "eng" && c.members.len() == 3).map(|_| ())
        })
        .await;
    }
    bob.send("#eng", "before").await.expect("send");
    for n in [&alice, &carol] {
        eventually("both to get it", async || channel_text(n, "#eng", "before").await.then_some(())).await;
    }

    alice.dept_remove("eng", "carol").await.expect("remove from dept");
    eventually("bob to see the channel of two", async || {
        bob.channels().await.ok()?.iter().find(|c| c.name == "eng" && c.members.len() == 2).map(|_| ())
    })
    .await;
    let id = bob.send("#eng", "after").await.expect("send").id;
    eventually("alice to get it", async || channel_text(&alice, "#eng", "after").await.then_some(())).await;
    let m = eventually("delivered to alice", async || {
        let m = bob.messages("#eng").await.ok()?.into_iter().find(|m| m.id == id)?;
        (m.delivered_to == Some(1)).then_some(m)
    })
    .await;
    assert_eq!(m.recipients, Some(1), "only alice is a recipient");
    assert_eq!(queue_to(&bob, "carol").await, 0, "nothing waits for carol");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!channel_text(&carol, "#eng", "after").await, "carol read a message sent after she left");
}
