//! Projects and tasks between in-process nodes over 127.0.0.1: a task board kept in sync as an
//! automerge document through the project's encrypted group, offline edits merging, and a
//! member outside the project seeing nothing of it.

use crate::support::*;
use dingo_node::{Home, NetConfig, Node, NodeError, TaskEdit, TaskPriority, TaskUpdate, TaskView};

async fn task(node: &Node, id: &str) -> Option<TaskView> {
    node.tasks(None, false, false).await.ok()?.into_iter().find(|t| t.id == id)
}

/// Alice's team "acme" with bob in it, and alice's project `project` (bob in it too).
async fn alice_and_bob_with_project(dir: &std::path::Path, project: &str) -> (Node, Node) {
    let [alice, bob] = team_of(dir, ["alice", "bob"]).await;
    alice.project_create(project, vec![], vec![]).await.expect("project");
    wait_in_project(&bob, project).await;
    (alice, bob)
}

/// Waits until `node` knows project `name` and is in it.
async fn wait_in_project(node: &Node, name: &str) {
    eventually(&format!("{} to be in project {name}", node.id().name), async || {
        node.projects().await.ok()?.into_iter().find(|p| p.name == name && p.joined).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_board_syncs_between_members_merges_offline_edits_and_stays_private() {
    if std::env::var("DEBUG_PROJECTS").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("dingo_node=debug").with_test_writer().try_init();
    }
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob, carol] = team_of(dir.path(), ["alice", "bob", "carol"]).await;
    for n in [&alice, &bob, &carol] {
        eventually("the team", async || (n.team().await.ok()?.members.len() == 3).then_some(())).await;
    }
    alice.project_create("launch", vec![], vec!["alice".into(), "bob".into()]).await.expect("project");
    let mine = bob
        .project_create("bobs", vec![], vec!["alice".into()])
        .await
        .expect("any member may start a project");
    let bobs = mine.iter().find(|p| p.name == "bobs").expect("listed");
    assert!(bobs.joined && bobs.members.len() == 2, "the starter is in it: {bobs:?}");
    let denied = bob.channel_create("other", vec![], vec![]).await.expect_err("members cannot");
    assert!(denied.to_string().contains("only admins"), "{denied}");
    wait_in_project(&bob, "launch").await;
    let due = dingo_types::now_ms() + 3_600_000;
    let id = alice
        .task_add(
            "launch",
            "write the press release",
            vec!["bob".into()],
            Some(due),
            TaskPriority::High,
            None,
        )
        .await
        .expect("add");
    let t = eventually("bob to get the task", async || task(&bob, &id).await).await;
    assert_eq!(
        (t.title.as_str(), t.assignees.clone(), t.due),
        ("write the press release", vec!["bob".to_owned()], Some(due))
    );
    assert_eq!(bob.tasks(None, true, false).await.expect("mine").len(), 1, "--mine");
    bob.task_update(&id[..6], TaskUpdate::Comment("draft is in the doc".into())).await.expect("comment");
    bob.task_update(&id, TaskUpdate::Done(true)).await.expect("done");
    eventually("alice to see it done with bob's comment", async || {
        let t = task(&alice, &id).await?;
        (t.done && t.comments.iter().any(|c| c.by == "bob" && c.text == "draft is in the doc")).then_some(())
    })
    .await;
    let status = alice.project_status("launch").await.expect("status");
    assert_eq!((status.total, status.done, status.percent_done), (1, 1, 100));

    // Offline edits of the same task on both sides merge.
    bob.task_update(&id, TaskUpdate::Done(false)).await.expect("reopen");
    eventually("alice to see it reopened", async || task(&alice, &id).await.filter(|t| !t.done).map(|_| ()))
        .await;
    let bob_home = Home::new(dir.path().join("bob"));
    bob.shutdown().await.expect("bob stops");
    drop(bob);
    alice
        .task_update(
            &id,
            TaskUpdate::Edit(TaskEdit { title: Some("press release v2".into()), ..TaskEdit::default() }),
        )
        .await
        .expect("edit offline from bob");
    let bob = Node::open(&bob_home, None).expect("reopen");
    bob.task_update(
        &id,
        TaskUpdate::Edit(TaskEdit { priority: Some(TaskPriority::Urgent), ..TaskEdit::default() }),
    )
    .await
    .expect("bob edits offline");
    let second = bob
        .task_add("launch", "book the venue", vec![], None, TaskPriority::Normal, None)
        .await
        .expect("add");
    bob.start_network(NetConfig::loopback(), vec![alice.id().addrs[0].parse().expect("addr")])
        .await
        .expect("net");
    for n in [&alice, &bob] {
        eventually("both edits on both sides", async || {
            let t = task(n, &id).await?;
            (t.title == "press release v2"
                && t.priority == TaskPriority::Urgent
                && task(n, &second).await.is_some())
            .then_some(())
        })
        .await;
    }
    assert_eq!(alice.tasks(Some("launch".into()), false, false).await.expect("tasks").len(), 2);

    // Carol is not in the project: she sees none of it, and cannot write to it.
    assert!(carol.tasks(None, false, false).await.expect("tasks").is_empty());
    assert!(matches!(
        carol.task_add("launch", "sneak in", vec![], None, TaskPriority::Low, None).await,
        Err(NodeError::NotInChannel(_))
    ));
    for env in alice.test_support_project_log("launch").await.expect("log") {
        assert!(carol.test_support_try_open(env).await.is_none(), "a non-member opened a project change");
    }
    for n in [alice, bob, carol] {
        n.shutdown().await.expect("stop");
    }
}

fn reminder_kinds(events: &[dingo_node::NodeEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            dingo_node::NodeEvent::TaskReminder { kind, .. } => Some(kind.clone()),
            _ => None,
        })
        .collect()
}

/// With a controllable clock: a task due in 2 h reminds its assignee 1 h before, then nudges
/// when overdue (and tells the project's owner), each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_fire_before_the_deadline_and_when_overdue_once_each() {
    let dir = tempfile::tempdir().expect("tmp");
    let (alice, bob) = alice_and_bob_with_project(dir.path(), "launch").await;
    let t0 = dingo_types::now_ms();
    let hour = dingo_node::REMIND_BEFORE_MS;
    let due = t0 + 2 * hour;
    let id = alice
        .task_add("launch", "ship it", vec!["bob".into()], Some(due), TaskPriority::Normal, None)
        .await
        .expect("add");
    eventually("bob to get the task", async || task(&bob, &id).await).await;
    let at = |n: &Node, t: u64| {
        let n = n.clone();
        async move { reminder_kinds(&n.task_reminders_at(t).await.expect("reminders")) }
    };
    assert!(at(&bob, t0).await.is_empty(), "nothing yet");
    assert!(at(&bob, due - hour - 60_000).await.is_empty(), "not before the hour");
    assert_eq!(at(&bob, due - hour).await, ["due_soon"]);
    assert!(at(&bob, due - hour / 2).await.is_empty(), "once");
    assert_eq!(at(&bob, due).await, ["overdue"]);
    assert!(at(&bob, due + hour).await.is_empty(), "once");
    assert!(at(&alice, due - hour).await.is_empty(), "the owner is not an assignee");
    assert_eq!(at(&alice, due).await, ["owner_overdue"]);
    assert!(at(&alice, due + 1).await.is_empty());
    // A done task reminds nobody; a new deadline arms the reminders again.
    bob.task_update(
        &id,
        TaskUpdate::Edit(TaskEdit { due: Some(Some(due + 10 * hour)), ..TaskEdit::default() }),
    )
    .await
    .expect("new deadline");
    assert_eq!(at(&bob, due + 9 * hour).await, ["due_soon"]);
    bob.task_update(&id, TaskUpdate::Done(true)).await.expect("done");
    assert!(at(&bob, due + 20 * hour).await.is_empty());
    for n in [alice, bob] {
        n.shutdown().await.expect("stop");
    }
}

/// Two members edit one document offline (different lines, and the same line), reconnect:
/// both edits survive on both sides, blame names each line's author, and a member outside the
/// document reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_edit_a_document_offline_and_blame_attributes_each_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob, carol] = team_of(dir.path(), ["alice", "bob", "carol"]).await;
    alice.doc_create("plan", vec![], vec!["alice".into(), "bob".into()]).await.expect("doc");
    let base = "# Plan\nline two\nline three\nline four\n";
    alice.doc_edit("plan", base, "first draft").await.expect("edit");
    eventually("bob to get the draft", async || (bob.doc_text("plan").await.ok()? == base).then_some(()))
        .await;

    let bob_home = Home::new(dir.path().join("bob"));
    bob.shutdown().await.expect("bob stops");
    drop(bob);
    alice
        .doc_edit("plan", "# Plan\nline TWO (alice)\nline three, alice\nline four\n", "alice's pass")
        .await
        .expect("edit");
    let bob = Node::open(&bob_home, None).expect("reopen");
    bob.doc_edit("plan", "# Plan\nline two\nline three, bob\nline FOUR (bob)\n", "bob's pass")
        .await
        .expect("edit offline");
    bob.start_network(NetConfig::loopback(), vec![alice.id().addrs[0].parse().expect("addr")])
        .await
        .expect("net");
    let merged = eventually("both edits on both sides", async || {
        let (a, b) = (alice.doc_text("plan").await.ok()?, bob.doc_text("plan").await.ok()?);
        (a == b && a.contains("line TWO (alice)") && a.contains("line FOUR (bob)")).then_some(a)
    })
    .await;
    assert!(merged.contains("alice") && merged.contains("bob"), "{merged}");
    let blame = alice.doc_blame("plan").await.expect("blame");
    let by = |needle: &str| {
        blame.iter().find(|l| l.text.contains(needle)).map(|l| l.author.clone()).expect(needle)
    };
    assert_eq!(by("# Plan"), "alice", "the first draft is alice's: {blame:?}");
    assert_eq!(by("line TWO"), "alice");
    assert_eq!(by("line FOUR"), "bob");
    assert_eq!(
        bob.doc_blame("plan").await.expect("blame").iter().map(|l| l.text.clone()).collect::<Vec<_>>(),
        blame.iter().map(|l| l.text.clone()).collect::<Vec<_>>()
    );
    let history = bob.doc_history("plan").await.expect("history");
    assert!(history.iter().any(|r| r.author == "alice" && r.message == "alice's pass"), "{history:?}");
    assert!(history.iter().any(|r| r.author == "bob" && r.message == "bob's pass"), "{history:?}");
    let bytes = alice.doc_bytes("plan").await.expect("export");
    assert_eq!(
        dingo_docs::TextDoc::load(&bytes, &dingo_types::DeviceKey([9; 32]))
            .expect("load")
            .body()
            .expect("body"),
        merged
    );

    assert!(matches!(carol.doc_text("plan").await, Err(NodeError::NotInChannel(_))));
    assert!(matches!(carol.doc_edit("plan", "defaced", "x").await, Err(NodeError::NotInChannel(_))));
    for n in [alice, bob, carol] {
        n.shutdown().await.expect("stop");
    }
}

/// Someone who joins after a project and a document have history gets all of it on joining
/// (automerge's sync protocol, pairwise), then live edits as everyone does, and keeps it all
/// across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_member_gets_projects_and_documents_when_joining_and_keeps_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob] = team_of(dir.path(), ["alice", "bob"]).await;
    alice.project_create("ops", vec![], vec![]).await.expect("project");
    alice.doc_create("handbook", vec![], vec![]).await.expect("doc");
    // Enough (incompressible) history that the document travels in several parts.
    for i in 0..150 {
        let noise: String = (0..800).map(|_| char::from(b'a' + rand::random::<u8>() % 26)).collect();
        let title = format!("backlog item {i}: {noise}");
        alice.task_add("ops", &title, vec![], None, TaskPriority::Normal, None).await.expect("add");
    }
    let first =
        alice.task_add("ops", "first task", vec![], None, TaskPriority::Normal, None).await.expect("add");
    alice.doc_edit("handbook", "chapter one\n", "start").await.expect("edit");
    eventually("bob to have both", async || {
        (task(&bob, &first).await.is_some() && bob.doc_text("handbook").await.ok()? == "chapter one\n")
            .then_some(())
    })
    .await;
    let carol = started_node(dir.path(), "carol").await;
    join_team(&alice, &carol).await;
    // Joining is enough: carol's node asks for what it lacks (automerge's sync protocol; the
    // board comes as one compressed document, in several parts), before anyone edits again.
    eventually("carol to have the work so far", async || {
        let tasks = carol.tasks(Some("ops".into()), false, false).await.ok()?;
        let text = carol.doc_text("handbook").await.ok()?;
        (tasks.len() == 151 && text == "chapter one\n").then_some(())
    })
    .await;
    let second =
        alice.task_add("ops", "second task", vec![], None, TaskPriority::Normal, None).await.expect("add");
    alice.doc_edit("handbook", "chapter one\nchapter two\n", "more").await.expect("edit");
    eventually("carol to have all of it", async || {
        let tasks = carol.tasks(Some("ops".into()), false, false).await.ok()?;
        if tasks.len() != 152 {
            return None;
        }
        let text = carol.doc_text("handbook").await.ok()?;
        (tasks.iter().any(|t| t.id == first)
            && tasks.iter().any(|t| t.id == second)
            && text == "chapter one\nchapter two\n")
            .then_some(())
    })
    .await;
    // What carol received is stored: after a restart it is all there, and her own edits then
    // reach the others as usual.
    carol.shutdown().await.expect("stop");
    drop(carol);
    let carol = Node::open(&Home::new(dir.path().join("carol")), None).expect("reopen");
    assert_eq!(carol.tasks(Some("ops".into()), false, false).await.expect("tasks").len(), 152);
    assert_eq!(carol.doc_text("handbook").await.expect("text"), "chapter one\nchapter two\n");
    carol.start_network(NetConfig::loopback(), vec![]).await.expect("net");
    for n in [&alice, &bob] {
        carol.net().expect("net").dial(n.id().addrs[0].parse().expect("addr")).await.expect("dial");
    }
    carol.task_update(&first, TaskUpdate::Done(true)).await.expect("done");
    eventually("bob to see carol's edit", async || task(&bob, &first).await.filter(|t| t.done).map(|_| ()))
        .await;
    for n in [alice, bob, carol] {
        n.shutdown().await.expect("stop");
    }
}

/// Many members' edits arriving together (one sync page from a teammate) all land: each
/// change builds on the ones before it in the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_by_several_members_caught_up_at_once_all_land() {
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob, carol] = team_of(dir.path(), ["alice", "bob", "carol"]).await;
    alice.project_create("ops", vec![], vec![]).await.expect("project");
    for n in [&bob, &carol] {
        wait_in_project(n, "ops").await;
    }
    // Everyone's key reaches everyone while all are together.
    let mut ids = Vec::new();
    for (i, n) in [&alice, &bob, &carol].iter().enumerate() {
        ids.push(
            n.task_add("ops", &format!("hello {i}"), vec![], None, TaskPriority::Normal, None)
                .await
                .expect("add"),
        );
    }
    for n in [&alice, &bob, &carol] {
        eventually("the greetings", async || {
            (n.tasks(None, false, false).await.ok()?.len() == 3).then_some(())
        })
        .await;
    }
    let carol_home = Home::new(dir.path().join("carol"));
    carol.shutdown().await.expect("stop");
    drop(carol);
    for i in 0..10 {
        let n = if i % 2 == 0 { &alice } else { &bob };
        ids.push(
            n.task_add("ops", &format!("while away {i}"), vec![], None, TaskPriority::Normal, None)
                .await
                .expect("add"),
        );
    }
    for n in [&alice, &bob] {
        eventually("both to have all", async || {
            (n.tasks(None, false, false).await.ok()?.len() == 13).then_some(())
        })
        .await;
    }
    alice.shutdown().await.expect("alice stops");
    let carol = Node::open(&carol_home, None).expect("reopen");
    carol
        .start_network(NetConfig::loopback(), vec![bob.id().addrs[0].parse().expect("addr")])
        .await
        .expect("net");
    let got = eventually("carol to get every edit", async || {
        let t = carol.tasks(None, false, false).await.ok()?;
        (t.len() == 13).then_some(t)
    })
    .await;
    for id in &ids {
        assert!(got.iter().any(|t| &t.id == id), "{id} missing");
    }
    for n in [bob, carol] {
        n.shutdown().await.expect("stop");
    }
}

/// Boards are kept loaded and saved as increments, compacted every few hundred edits: after a
/// restart (past a compaction) every task reads back, and edits go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_saved_in_increments_reads_back_whole_after_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    alice.team_create("acme").await.expect("team");
    alice.project_create("ops", vec![], vec![]).await.expect("project");
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            alice
                .task_add("ops", &format!("task {i}"), vec![], None, TaskPriority::Normal, None)
                .await
                .expect("add"),
        );
    }
    alice.task_update(&ids[7], TaskUpdate::Done(true)).await.expect("done");
    let home = Home::new(dir.path().join("alice"));
    alice.shutdown().await.expect("stop");
    drop(alice);
    // The compaction job ran: fewer increments are stored than were written.
    {
        // The store closes as the node's last handle goes.
        let mut tries = 0;
        let db = loop {
            match sled::open(home.store_dir()) {
                Ok(db) => break db,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 100, "sled: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        };
        let incs =
            db.iter().keys().filter_map(Result::ok).filter(|k| k.windows(5).any(|w| w == b"/inc/")).count();
        assert!(incs < 301 - dingo_node::COMPACT_AFTER as usize + 10, "{incs} increments stored");
    }
    let alice = Node::open(&home, None).expect("reopen");
    let tasks = alice.tasks(Some("ops".into()), false, false).await.expect("tasks");
    assert_eq!(tasks.len(), 300);
    assert!(tasks.iter().find(|t| t.id == ids[7]).is_some_and(|t| t.done));
    alice.task_update(&ids[8], TaskUpdate::Comment("still here".into())).await.expect("comment");
    let t = alice.tasks(None, false, false).await.expect("tasks");
    assert_eq!(t.iter().find(|t| t.id == ids[8]).map(|t| t.comments.len()), Some(1));
    // More boards than stay loaded: the first is dropped from memory and reloads as stored.
    let mut others = Vec::new();
    for p in 0..dingo_node::MAX_LOADED_DOCS + 2 {
        alice.project_create(&format!("p{p}"), vec![], vec![]).await.expect("project");
        others.push(
            alice
                .task_add(&format!("p{p}"), "one", vec![], None, TaskPriority::Normal, None)
                .await
                .expect("add"),
        );
    }
    alice.task_update(&ids[9], TaskUpdate::Done(true)).await.expect("done after reload");
    alice.task_update(&others[0], TaskUpdate::Done(true)).await.expect("done");
    let t = alice.tasks(None, false, false).await.expect("tasks");
    assert_eq!(t.len(), 300 + others.len());
    assert!(t.iter().filter(|t| t.done).count() == 3, "ids[7], ids[9] and the first other");
    alice.shutdown().await.expect("stop");
}

/// Changes that arrive ahead of what they build on, where no group log can bring the rest
/// (made before this member joined, by someone its first sync did not ask), are caught up
/// through a sync round with their author.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_no_group_log_can_fill_is_caught_up_from_the_author() {
    let dir = tempfile::tempdir().expect("tmp");
    let (alice, bob) = alice_and_bob_with_project(dir.path(), "ops").await;
    // Bob works offline: alice never sees these before carol joins.
    bob.shutdown().await.expect("stop");
    drop(bob);
    let bob = Node::open(&Home::new(dir.path().join("bob")), None).expect("reopen");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            bob.task_add("ops", &format!("offline {i}"), vec![], None, TaskPriority::Normal, None)
                .await
                .expect("add"),
        );
    }
    let carol = started_node(dir.path(), "carol").await;
    join_team(&alice, &carol).await;
    wait_in_project(&carol, "ops").await;
    // Bob is back; his first key to carol starts after his offline edits, so no log will
    // ever hand them to her, and his next edit builds on them.
    bob.start_network(NetConfig::loopback(), vec![]).await.expect("net");
    for n in [&alice, &carol] {
        bob.net().expect("net").dial(n.id().addrs[0].parse().expect("addr")).await.expect("dial");
    }
    let carol_id = carol.id().user_id;
    eventually("bob to know carol", async || {
        bob.team().await.ok()?.members.iter().any(|m| m.user_id == carol_id).then_some(())
    })
    .await;
    ids.push(
        bob.task_add("ops", "back online", vec![], None, TaskPriority::Normal, None).await.expect("add"),
    );
    eventually("carol to have every task of bob's", async || {
        let tasks = carol.tasks(Some("ops".into()), false, false).await.ok()?;
        ids.iter().all(|id| tasks.iter().any(|t| &t.id == id)).then_some(())
    })
    .await;
    for n in [alice, bob, carol] {
        n.shutdown().await.expect("stop");
    }
}

/// A newcomer whose team ops came from someone outside a project asks the first member of it
/// that it meets, without waiting for anyone to edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_gets_a_project_from_a_member_it_meets() {
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob] = team_of(dir.path(), ["alice", "bob"]).await;
    alice.dept_create("eng").await.expect("dept");
    alice.dept_add("eng", "bob").await.expect("dept add");
    eventually("bob to be in eng", async || {
        let team = bob.team().await.ok()?;
        team.members.iter().any(|m| m.name == "bob" && m.departments.iter().any(|d| d == "eng")).then_some(())
    })
    .await;
    // Alice (not in eng) cannot give this project to anyone.
    bob.project_create("engine", vec!["eng".into()], vec![]).await.expect("project");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            bob.task_add("engine", &format!("part {i}"), vec![], None, TaskPriority::Normal, None)
                .await
                .expect("add"),
        );
    }
    let carol = started_node(dir.path(), "carol").await;
    let code = alice.team_invite(Some("eng".into()), None).await.expect("invite").code;
    carol.team_join(&code).await.expect("join");
    wait_in_project(&carol, "engine").await;
    carol.net().expect("net").dial(bob.id().addrs[0].parse().expect("addr")).await.expect("dial");
    eventually("carol to have bob's tasks", async || {
        let tasks = carol.tasks(Some("engine".into()), false, false).await.ok()?;
        ids.iter().all(|id| tasks.iter().any(|t| &t.id == id)).then_some(())
    })
    .await;
    for n in [alice, bob, carol] {
        n.shutdown().await.expect("stop");
    }
}
