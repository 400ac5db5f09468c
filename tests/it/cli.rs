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
