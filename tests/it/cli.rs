//! The CLI between two homes on one machine, as a user drives it.

use crate::support::*;
use dingo_node::{ConversationView, MessageView, SendResult, Status, Verification};

fn json<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

#[test]
fn two_homes_chat_with_delivery_and_read_receipts() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    let init = dingo_ok(&a, &["init", "--name", "alice"]);
    assert!(init.contains("invite:") && init.contains("dingo1"), "{init}");
    dingo_ok(&b, &["init", "--name", "bob"]);
    let again = dingo(&a, &["init", "--name", "alice"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let alice = NodeProc::start(&a, "/ip4/127.0.0.1/tcp/0", &[]);
    let bob = NodeProc::start(&b, "/ip4/127.0.0.1/tcp/0", &[]);
    let second = dingo(&a, &["run", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"), "{second:?}");

    let id: dingo_node::IdInfo = json(&dingo_ok(&a, &["id", "--json"]));
    assert_eq!(id.name, "alice");
    assert!(id.device_id.starts_with("12D3KooW"), "{}", id.device_id);
    dingo_ok(&a, &["contact", "add", &bob.invite()]);
    dingo_ok(&b, &["contact", "add", &alice.invite()]);
    let list = dingo_ok(&a, &["contact", "list"]);
    assert!(list.contains("bob"), "{list}");

    let sent: SendResult = json(&dingo_ok(&a, &["send", "bob", "hello bob", "--json"]));
    let delivered = eventually_blocking("delivery to bob", || {
        let msgs: Vec<MessageView> = json(&dingo_ok(&a, &["messages", "bob", "--json"]));
        msgs.into_iter().find(|m| m.id == sent.id && m.status == Status::Delivered)
    });
    assert!(delivered.delivered_at.is_some());
    assert_eq!(delivered.from, "me");

    let inbox: Vec<ConversationView> = json(&dingo_ok(&b, &["inbox", "--json"]));
    assert_eq!(inbox.len(), 1);
    assert_eq!((inbox[0].contact.as_str(), inbox[0].unread), ("alice", 1));
    let seen: Vec<MessageView> = json(&dingo_ok(&b, &["messages", "alice", "--json"]));
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].text, "hello bob");
    assert_eq!(seen[0].direction, dingo_node::Direction::In);
    assert_eq!(seen[0].read_at, None, "messages must not mark read");
    let inbox: Vec<ConversationView> = json(&dingo_ok(&b, &["inbox", "--json"]));
    assert_eq!(inbox[0].unread, 1);

    let read: Vec<MessageView> = json(&dingo_ok(&b, &["read", "alice", "--json"]));
    assert_eq!(read[0].status, Status::Read);
    let inbox: Vec<ConversationView> = json(&dingo_ok(&b, &["inbox", "--json"]));
    assert_eq!(inbox[0].unread, 0);
    let read_back = eventually_blocking("the read receipt", || {
        let msgs: Vec<MessageView> = json(&dingo_ok(&a, &["messages", "bob", "--json"]));
        msgs.into_iter().find(|m| m.id == sent.id && m.status == Status::Read)
    });
    assert!(read_back.read_at.is_some());

    let reply = dingo_ok(&b, &["send", "alice", "hi alice"]);
    let reply_id = reply.trim().to_owned();
    eventually_blocking("bob's reply at alice", || {
        let msgs: Vec<MessageView> = json(&dingo_ok(&a, &["messages", "bob", "--json"]));
        msgs.into_iter().find(|m| m.id == reply_id)
    });
    let human = dingo_ok(&a, &["messages", "bob"]);
    assert!(human.contains("hello bob") && human.contains("hi alice"), "{human}");

    let va: Verification = json(&dingo_ok(&a, &["contact", "verify", "bob", "--json"]));
    let vb: Verification = json(&dingo_ok(&b, &["contact", "verify", "alice", "--json"]));
    assert_eq!(va.safety_number, vb.safety_number);
    let confirmed: Verification = json(&dingo_ok(&a, &["contact", "verify", "bob", "--confirm", "--json"]));
    assert!(confirmed.verified);

    assert!(alice.stop().success());
    assert!(!a.join("api.json").exists(), "a clean stop removes the API file");
    bob.kill9();
}

#[test]
fn a_message_sent_while_no_node_runs_is_delivered_by_the_next_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    dingo_ok(&a, &["init", "--name", "alice"]);
    dingo_ok(&b, &["init", "--name", "bob"]);
    let bob = NodeProc::start(&b, "/ip4/127.0.0.1/tcp/0", &[]);
    dingo_ok(&a, &["contact", "add", &bob.invite()]);
    let out = dingo(&a, &["send", "bob", "written offline"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("queued"));
    let msgs: Vec<MessageView> = json(&dingo_ok(&a, &["messages", "bob", "--json"]));
    assert_eq!(msgs[0].status, Status::Queued);
    let _alice = NodeProc::start(&a, "/ip4/127.0.0.1/tcp/0", &[]);
    eventually_blocking("the queued message at bob", || {
        let msgs: Vec<MessageView> = bob.client.get("/v1/messages", &[("with", "alice")]).ok()?;
        msgs.into_iter().find(|m| m.text == "written offline")
    });
}

#[test]
fn bad_input_gets_a_clear_error_and_the_right_exit_code() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = dir.path().join("alice");
    let b = dir.path().join("bob");
    dingo_ok(&a, &["init", "--name", "alice"]);
    let bob_init = dingo_ok(&b, &["init", "--name", "bob"]);
    let bob_invite =
        bob_init.lines().find_map(|l| l.strip_prefix("invite:")).expect("invite").trim().to_owned();

    let expect_fail = |home: &std::path::Path, args: &[&str], code: i32, needle: &str| {
        let out = dingo(home, args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "dingo {args:?}: {stderr}");
        assert!(stderr.to_lowercase().contains(needle), "dingo {args:?}: expected {needle:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    expect_fail(&a, &["contact", "add", "dingo1garbage"], 1, "malformed invite");
    expect_fail(&a, &["contact", "add", "hello"], 1, "malformed invite");
    let mut typo = bob_invite.clone();
    typo.insert(20, 'x');
    expect_fail(&a, &["contact", "add", &typo], 1, "malformed invite");
    expect_fail(&a, &["send", "nobody", "hi"], 1, "unknown contact");
    expect_fail(&dir.path().join("noname"), &["init", "--name", " "], 1, "invalid name");
    expect_fail(&a, &["contact", "add", &bob_invite, "--name", "#general"], 1, "invalid name");
    dingo_ok(&a, &["contact", "add", &bob_invite]);
    let long = "x".repeat(64 * 1024 + 1);
    expect_fail(&a, &["send", "bob", &long], 1, "too long");
    dingo_ok(&a, &["send", "bob", &"x".repeat(64 * 1024)]);
    expect_fail(&a, &["frobnicate"], 2, "unrecognized subcommand");
    expect_fail(&a, &["send", "bob"], 2, "required");
    expect_fail(&a, &["run", "--listen", "not-an-address"], 2, "invalid value");
    expect_fail(&dir.path().join("nobody"), &["inbox"], 1, "no identity");

    // Passphrases.
    let p = dir.path().join("carol");
    let good = dir.path().join("good.pass");
    let bad = dir.path().join("bad.pass");
    std::fs::write(&good, "correct horse battery staple\n").expect("write");
    std::fs::write(&bad, "wrong\n").expect("write");
    dingo_ok(&p, &["--passphrase-file", good.to_str().expect("utf8"), "init", "--name", "carol"]);
    expect_fail(&p, &["--passphrase-file", bad.to_str().expect("utf8"), "id"], 1, "wrong passphrase");
    expect_fail(&p, &["id"], 1, "passphrase");
    let id = dingo_ok(&p, &["--passphrase-file", good.to_str().expect("utf8"), "id"]);
    assert!(id.contains("carol"));

    // A store that belongs to someone else, and one that is garbage: errors, nothing lost.
    let before = dingo_ok(&a, &["messages", "bob", "--json"]);
    std::fs::rename(a.join("store"), dir.path().join("alice-store")).expect("move");
    let copy = std::process::Command::new("cp").arg("-r").arg(b.join("store")).arg(a.join("store")).status();
    assert!(copy.expect("cp").success());
    expect_fail(&a, &["inbox"], 1, "another identity");
    std::fs::remove_dir_all(a.join("store")).expect("rm");
    std::fs::create_dir(a.join("store")).expect("mkdir");
    std::fs::write(a.join("store/db"), vec![0xA5u8; 4096]).expect("garbage");
    std::fs::write(a.join("store/conf"), b"garbage").expect("garbage");
    let out = dingo(&a, &["inbox"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(a.join("store")).expect("rm");
    std::fs::rename(dir.path().join("alice-store"), a.join("store")).expect("restore");
    assert_eq!(dingo_ok(&a, &["messages", "bob", "--json"]), before);
}

#[test]
fn three_homes_team_department_channel_ding_and_removal_from_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let homes: Vec<_> = ["alice", "bob", "carol"].iter().map(|n| dir.path().join(n)).collect();
    for (h, n) in homes.iter().zip(["alice", "bob", "carol"]) {
        dingo_ok(h, &["init", "--name", n]);
    }
    let (a, b, c) = (&homes[0], &homes[1], &homes[2]);
    let nodes: Vec<NodeProc> =
        homes.iter().map(|h| NodeProc::start(h, "/ip4/127.0.0.1/tcp/0", &[])).collect();

    let no_team = dingo(a, &["team", "members"]);
    assert_eq!(no_team.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_team.stderr).contains("not in a team"));
    dingo_ok(a, &["team", "create", "acme"]);
    dingo_ok(a, &["dept", "create", "finance"]);
    let code = dingo_ok(a, &["team", "invite", "--dept", "finance"]).trim().to_owned();
    assert!(code.starts_with("dingoteam1"), "{code}");
    let joined: dingo_node::TeamView = json(&dingo_ok(b, &["team", "join", &code, "--json"]));
    assert!(joined.joining.is_none() && joined.members.len() == 2, "{joined:?}");
    let reused = dingo(c, &["team", "join", &code]);
    assert_eq!(reused.status.code(), Some(1), "a used code is refused");
    assert!(String::from_utf8_lossy(&reused.stderr).contains("already used"), "{reused:?}");
    let bad = dingo(c, &["team", "join", "dingoteam1garbage"]);
    assert_eq!(bad.status.code(), Some(1));
    // A failed join leaves the home free to join with a good code.
    let code = dingo_ok(a, &["team", "invite"]).trim().to_owned();
    dingo_ok(c, &["team", "join", &code]);
    let members: dingo_node::TeamView = json(&dingo_ok(a, &["team", "members", "--json"]));
    let names: Vec<&str> = members.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let bob = members.members.iter().find(|m| m.name == "bob").expect("bob");
    assert_eq!((bob.role.as_str(), bob.departments.clone()), ("member", vec!["finance".to_owned()]));
    assert_eq!(bob.devices.len(), 1);

    let denied = dingo(b, &["dept", "create", "x"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("only admins"), "{denied:?}");
    let last = dingo(a, &["team", "demote", "alice"]);
    assert!(String::from_utf8_lossy(&last.stderr).contains("at least one admin"), "{last:?}");
    let unknown = dingo(a, &["team", "remove", "zed"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown team member"), "{unknown:?}");

    dingo_ok(a, &["dept", "add", "finance", "alice"]);
    dingo_ok(a, &["channel", "create", "money", "--dept", "finance"]);
    eventually_blocking("bob to see #money", || {
        let list: Vec<dingo_node::ChannelView> = json(&dingo_ok(b, &["channel", "list", "--json"]));
        list.into_iter().find(|c| c.name == "money" && c.joined)
    });
    let sent: SendResult = json(&dingo_ok(b, &["send", "#money", "budget is approved", "--json"]));
    eventually_blocking("alice to get it", || {
        let msgs: Vec<MessageView> = json(&dingo_ok(a, &["messages", "#money", "--json"]));
        msgs.into_iter().find(|m| m.text == "budget is approved")
    });
    let carol_denied = dingo(c, &["send", "#money", "let me in"]);
    assert!(String::from_utf8_lossy(&carol_denied.stderr).contains("not a member"), "{carol_denied:?}");
    dingo_ok(a, &["read", "#money"]);
    let m = eventually_blocking("alice's read receipt", || {
        let msgs: Vec<MessageView> = json(&dingo_ok(b, &["messages", "#money", "--json"]));
        msgs.into_iter().find(|m| m.id == sent.id && m.status == Status::Read)
    });
    assert_eq!(m.summary.as_deref(), Some("read by 1 of 1"));
    assert_eq!(m.members[0].member, "alice");
    assert!(m.members[0].delivered_at.is_some() && m.members[0].read_at.is_some());

    dingo_ok(a, &["send", "#general", "all hands at 3"]);
    dingo_ok(b, &["read", "#general"]);
    let unread = eventually_blocking("bob's receipt", || {
        let u: dingo_node::UnreadView = json(&dingo_ok(a, &["unread", "#general", "--json"]));
        (u.read == ["bob"]).then_some(u)
    });
    assert_eq!(unread.not_read, ["carol"]);

    let ding: SendResult = json(&dingo_ok(a, &["ding", "bob", "call me", "--repeat-every", "5", "--json"]));
    eventually_blocking("bob to have the DING", || {
        let d: Vec<dingo_node::DingView> = json(&dingo_ok(b, &["dings", "--json"]));
        d.into_iter().find(|d| d.id == ding.id)
    });
    dingo_ok(b, &["ack", &ding.id[..10]]);
    eventually_blocking("alice to see the acknowledgement", || {
        let d: Vec<dingo_node::DingView> = json(&dingo_ok(a, &["dings", "--json"]));
        d.into_iter().find(|d| d.id == ding.id && d.acked == 1)
    });
    let log = std::fs::read_to_string(b.join("run.log")).expect("bob's log");
    assert!(log.contains("\x07DING from alice"), "the running node rings the bell: {log}");
    let usage = dingo(a, &["ding", "bob"]);
    assert_eq!(usage.status.code(), Some(2));

    dingo_ok(b, &["settings", "--read-receipts", "off"]);
    let s: dingo_node::SettingsView = json(&dingo_ok(b, &["settings", "--json"]));
    assert!(!s.read_receipts);

    dingo_ok(a, &["team", "remove", "carol"]);
    eventually_blocking("bob to see the removal", || {
        let t: dingo_node::TeamView = json(&dingo_ok(b, &["team", "members", "--json"]));
        (t.members.len() == 2).then_some(())
    });
    let to_removed = dingo(b, &["send", "carol", "psst"]);
    assert!(String::from_utf8_lossy(&to_removed.stderr).contains("removed"), "{to_removed:?}");
    drop(nodes);
}

#[test]
fn projects_and_tasks_from_the_cli_between_two_homes() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    dingo_ok(&a, &["init", "--name", "alice"]);
    dingo_ok(&b, &["init", "--name", "bob"]);
    let _nodes: Vec<NodeProc> =
        [&a, &b].iter().map(|h| NodeProc::start(h, "/ip4/127.0.0.1/tcp/0", &[])).collect();
    dingo_ok(&a, &["team", "create", "acme"]);
    let code = dingo_ok(&a, &["team", "invite"]).trim().to_owned();
    dingo_ok(&b, &["team", "join", &code]);
    dingo_ok(&a, &["project", "create", "launch", "--member", "alice", "--member", "bob"]);
    let id = dingo_ok(
        &a,
        &[
            "task",
            "add",
            "launch",
            "write the press release",
            "--assignee",
            "bob",
            "--due",
            "+2h",
            "--priority",
            "high",
        ],
    )
    .trim()
    .to_owned();
    assert_eq!(id.len(), 16, "{id}");
    let tasks: Vec<dingo_node::TaskView> = eventually_blocking("bob to get the task", || {
        let t: Vec<dingo_node::TaskView> = json(&dingo_ok(&b, &["task", "list", "--mine", "--json"]));
        (!t.is_empty()).then_some(t)
    });
    assert_eq!(tasks[0].title, "write the press release");
    assert_eq!(tasks[0].priority, dingo_node::TaskPriority::High);
    assert!(!tasks[0].overdue && tasks[0].due.is_some());
    let nudged = dingo_ok(&a, &["task", "remind", &id[..6]]);
    assert!(nudged.contains("reminded bob"), "{nudged}");
    eventually_blocking("bob to get the nudge as a DING", || {
        let d: Vec<dingo_node::DingView> = json(&dingo_ok(&b, &["dings", "--json"]));
        d.into_iter().find(|d| d.text.contains("write the press release"))
    });
    dingo_ok(&b, &["task", "comment", &id[..6], "on it"]);
    dingo_ok(&b, &["task", "done", &id[..6]]);
    let status: dingo_node::ProjectStatus = eventually_blocking("alice to see it done", || {
        let st: dingo_node::ProjectStatus = json(&dingo_ok(&a, &["project", "status", "launch", "--json"]));
        (st.done == 1).then_some(st)
    });
    assert_eq!(status.percent_done, 100);
    let report = dingo_ok(&b, &["report", "weekly"]);
    assert!(report.starts_with("# Weekly report: bob"), "{report}");
    assert!(
        report.contains("## Done (1)") && report.contains("- [launch] write the press release"),
        "{report}"
    );
    let theirs: dingo_node::WeeklyReport =
        json(&dingo_ok(&a, &["report", "weekly", "--member", "bob", "--json"]));
    assert_eq!(theirs.done.len(), 1);
    let human = dingo_ok(&a, &["task", "list", "launch"]);
    assert!(human.contains("done") && human.contains("write the press release"), "{human}");

    // Bad input: a clear error, and the right exit code.
    let bad_due = dingo(&a, &["task", "add", "launch", "x", "--due", "next blursday"]);
    assert_eq!(bad_due.status.code(), Some(2), "{bad_due:?}");
    let unknown = dingo(&a, &["task", "done", "ffffffff"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown task"), "{unknown:?}");
    let no_project = dingo(&a, &["task", "add", "nope", "x"]);
    assert!(String::from_utf8_lossy(&no_project.stderr).contains("unknown project"), "{no_project:?}");
    // Any member may start a project (departments, channels and membership stay with admins).
    dingo_ok(&b, &["project", "create", "bobs-side-project", "--member", "bob"]);
    let denied = dingo(&b, &["channel", "create", "mine"]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("only admins"), "{denied:?}");
}

#[test]
fn documents_from_the_cli_with_an_editor_history_blame_and_exports() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    dingo_ok(&a, &["init", "--name", "alice"]);
    dingo_ok(&b, &["init", "--name", "bob"]);
    let _nodes: Vec<NodeProc> =
        [&a, &b].iter().map(|h| NodeProc::start(h, "/ip4/127.0.0.1/tcp/0", &[])).collect();
    dingo_ok(&a, &["team", "create", "acme"]);
    let code = dingo_ok(&a, &["team", "invite"]).trim().to_owned();
    dingo_ok(&b, &["team", "join", &code]);
    dingo_ok(&a, &["doc", "create", "plan"]);
    dingo_ok(&a, &["doc", "edit", "plan", "--text", "# Plan\nline two\nline three\n", "-m", "draft"]);
    eventually_blocking("bob to get the draft", || {
        let out = dingo(&b, &["doc", "cat", "plan"]);
        (String::from_utf8_lossy(&out.stdout) == "# Plan\nline two\nline three\n").then_some(())
    });
    // $EDITOR edits the file in place; the changed line becomes the edit.
    let out = std::process::Command::new(dingo_bin())
        .arg("--home")
        .arg(&b)
        .args(["doc", "edit", "plan", "-m", "bob's fix"])
        .env("EDITOR", "sed -i s/three/THREE/")
        .env_remove("VISUAL")
        .output()
        .expect("run dingo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let blame: Vec<dingo_node::BlameView> = eventually_blocking("alice to see bob's line", || {
        let l: Vec<dingo_node::BlameView> = json(&dingo_ok(&a, &["doc", "blame", "plan", "--json"]));
        l.iter().any(|l| l.text == "line THREE").then_some(l)
    });
    assert_eq!(blame.iter().map(|l| l.author.as_str()).collect::<Vec<_>>(), ["alice", "alice", "bob"]);
    let report = dingo_ok(&b, &["report", "weekly"]);
    assert!(report.contains("- plan: 1 change"), "{report}");
    let history = dingo_ok(&a, &["doc", "history", "plan"]);
    assert!(history.contains("bob's fix") && history.contains("draft"), "{history}");
    // Bob's line changed: one line out, one in.
    let fix = history.lines().find(|l| l.contains("bob's fix")).expect("bob's change");
    assert!(fix.contains("bob") && fix.contains("+1 -1 lines"), "{history}");
    let file = dir.path().join("plan.automerge");
    dingo_ok(&a, &["doc", "export", "plan", "--format", "automerge", "-o", file.to_str().expect("path")]);
    let loaded =
        dingo_docs::TextDoc::load(&std::fs::read(&file).expect("read"), &dingo_types::DeviceKey([7; 32]))
            .expect("a standard automerge document");
    assert_eq!(loaded.body().expect("body"), "# Plan\nline two\nline THREE\n");
    assert_eq!(dingo_ok(&a, &["doc", "export", "plan", "--format", "md"]), "# Plan\nline two\nline THREE\n");
    let unknown = dingo(&a, &["doc", "cat", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown document"), "{unknown:?}");
    let bad_format = dingo(&a, &["doc", "export", "plan", "--format", "pdf"]);
    assert_eq!(bad_format.status.code(), Some(2));
}

/// Files between two homes: share into a channel, fetch it elsewhere, share a new version,
/// list versions, and attach a file to a task.
#[test]
fn files_from_the_cli_share_get_versions_and_task_attachments() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    dingo_ok(&a, &["init", "--name", "alice"]);
    dingo_ok(&b, &["init", "--name", "bob"]);
    let _nodes: Vec<NodeProc> =
        [&a, &b].iter().map(|h| NodeProc::start(h, "/ip4/127.0.0.1/tcp/0", &[])).collect();
    dingo_ok(&a, &["team", "create", "acme"]);
    let code = dingo_ok(&a, &["team", "invite"]).trim().to_owned();
    dingo_ok(&b, &["team", "join", &code]);
    let report = dir.path().join("report.txt");
    std::fs::write(&report, "first draft\n").expect("write");
    let path = report.to_str().expect("path");
    let shared = dingo_ok(&a, &["file", "share", "#general", path]);
    assert!(shared.contains("report.txt") && shared.contains("version 1"), "{shared}");
    let v1: dingo_node::FileView = eventually_blocking("bob to hear of the file", || {
        let l: Vec<dingo_node::FileView> = json(&dingo_ok(&b, &["file", "list", "--json"]));
        l.into_iter().find(|f| f.name == "report.txt")
    });
    let out = dir.path().join("fetched.txt");
    let got = dingo_ok(&b, &["file", "get", &v1.id[..8], "-o", out.to_str().expect("out")]);
    assert!(got.contains("fetched report.txt"), "{got}");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "first draft\n");
    // Into the current directory by default, never over an existing file.
    let cwd = dir.path().join("downloads");
    std::fs::create_dir(&cwd).expect("mkdir");
    let run_in = |args: &[&str]| {
        std::process::Command::new(dingo_bin())
            .arg("--home")
            .arg(&b)
            .args(args)
            .current_dir(&cwd)
            .output()
            .expect("run dingo")
    };
    assert!(run_in(&["file", "get", "report.txt"]).status.success());
    assert_eq!(std::fs::read_to_string(cwd.join("report.txt")).expect("read"), "first draft\n");
    let again = run_in(&["file", "get", "report.txt"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "{again:?}");
    // A new share of the same name is version 2.
    std::fs::write(&report, "final\n").expect("write");
    let shared = dingo_ok(&a, &["file", "share", "#general", path]);
    assert!(shared.contains("version 2"), "{shared}");
    let versions: Vec<dingo_node::FileView> = eventually_blocking("bob to see version 2", || {
        let l: Vec<dingo_node::FileView> = json(&dingo_ok(&b, &["file", "versions", "report.txt", "--json"]));
        (l.len() == 2).then_some(l)
    });
    assert_eq!((versions[0].version, versions[1].version), (1, 2));
    assert!(versions.iter().all(|v| v.from == "alice" && v.place == "#general"));
    let table = dingo_ok(&b, &["file", "versions", "report.txt"]);
    assert!(table.contains("v1") && table.contains("v2") && table.contains("alice"), "{table}");
    // A task with a file attached: the file is shared into the project.
    dingo_ok(&a, &["project", "create", "ops"]);
    let spec = dir.path().join("spec.md");
    std::fs::write(&spec, "# spec\n").expect("write");
    let task = dingo_ok(&a, &["task", "add", "ops", "read the spec", "--attach", spec.to_str().expect("p")]);
    let tasks: Vec<dingo_node::TaskView> = eventually_blocking("bob to get the task", || {
        let l: Vec<dingo_node::TaskView> = json(&dingo_ok(&b, &["task", "list", "--json"]));
        l.iter().any(|t| t.id == task.trim()).then_some(l)
    });
    let attached = &tasks.iter().find(|t| t.id == task.trim()).expect("task").attachments;
    assert_eq!(attached.len(), 1);
    let file_id = attached[0].strip_prefix("file:").expect("a file attachment");
    let spec_out = dir.path().join("spec-copy.md");
    eventually_blocking("bob to fetch the attached file", || {
        dingo(&b, &["file", "get", file_id, "-o", spec_out.to_str().expect("p")])
            .status
            .success()
            .then_some(())
    });
    assert_eq!(std::fs::read_to_string(&spec_out).expect("read"), "# spec\n");
    let bad = dingo(&a, &["task", "add", "ops", "x", "--attach", "not-a-thing"]);
    assert_eq!(bad.status.code(), Some(1));
    let missing = dingo(&a, &["file", "share", "#general", "/nonexistent/file"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"), "{missing:?}");
}

/// The README's run command: the demo runs three nodes on 127.0.0.1 end to end.
#[test]
fn the_demo_runs_to_the_end() {
    let out = std::process::Command::new(dingo_bin()).arg("demo").output().expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "alice sees DELIVERED",
        "read by 1 of 2",
        "carol acknowledged",
        "blame: bob",
        "bob fetched it",
        "under a new key",
        "done in",
    ] {
        assert!(stdout.contains(line), "the demo did not show {line:?}:\n{stdout}");
    }
}
