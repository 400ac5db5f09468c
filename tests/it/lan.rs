//! Real LAN discovery: two nodes in network namespaces on a private bridge (made by
//! `tests/netns/lan.sh`, a copy of the team's `../shared/netns/lan.sh`), mDNS on, no `--peer`.
//! Needs root and iproute2, so it is ignored by default; `.ci/run` runs it.

use crate::support::*;
use dingo_node::{MessageView, Status};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Lan {
    name: String,
    script: PathBuf,
}

impl Lan {
    fn up(n: usize, name: &str) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/netns/lan.sh");
        let ok = Command::new(&script).args(["up", &n.to_string(), name]).status().expect("run lan.sh");
        assert!(ok.success(), "lan.sh up failed: this test needs root and iproute2");
        Self { name: name.to_owned(), script }
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    fn dingo(&self, i: usize, home: &Path, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .arg(dingo_bin())
            .arg("--home")
            .arg(home)
            .args(args)
            .output()
            .expect("dingo in namespace")
    }

    fn spawn_run(&self, i: usize, home: &Path) -> Child {
        let log = std::fs::File::create(home.join("run.log")).expect("log");
        // The product default: all interfaces of this namespace, TCP and QUIC, mDNS on.
        Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .arg(dingo_bin())
            .arg("--home")
            .arg(home)
            .arg("run")
            .env("RUST_LOG", "info,dingo_node=debug,dingo_net=debug,libp2p_mdns=debug,libp2p_swarm=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dingo run")
    }
}

/// Prints the nodes' logs if the test fails, so a flaky discovery can be diagnosed from CI output.
struct LogsOnFailure(Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.0 {
                eprintln!("---- {} ----\n{}", p.display(), std::fs::read_to_string(p).unwrap_or_default());
            }
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new(&self.script).args(["down", &self.name]).status();
    }
}

#[test]
#[ignore = "needs root and network namespaces; run by .ci/run"]
fn two_nodes_find_each_other_with_mdns_and_chat_without_peer_flags() {
    let lan = Lan::up(2, "dgo2");
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    let invite = |home: &Path, name: &str| -> String {
        let out = dingo_ok(home, &["init", "--name", name]);
        out.lines().find_map(|l| l.strip_prefix("invite:")).expect("invite").trim().to_owned()
    };
    let (ia, ib) = (invite(&a, "alice"), invite(&b, "bob"));
    // Invites made before any run carry no addresses: only discovery can connect them.
    dingo_ok(&a, &["contact", "add", &ib]);
    dingo_ok(&b, &["contact", "add", &ia]);
    let _logs = LogsOnFailure(vec![a.join("run.log"), b.join("run.log")]);
    let mut nodes = vec![lan.spawn_run(1, &a), lan.spawn_run(2, &b)];

    eventually_blocking("both nodes' APIs", || {
        (a.join("api.json").exists() && b.join("api.json").exists()).then_some(())
    });
    let sent = eventually_blocking("alice's node API", || {
        let out = lan.dingo(1, &a, &["send", "bob", "found you over mDNS", "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        (out.status.success() && !stderr.contains("queued"))
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });
    let id = serde_json::from_str::<serde_json::Value>(&sent).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    eventually_blocking("delivery over the namespace LAN", || {
        let out = lan.dingo(1, &a, &["messages", "bob", "--json"]);
        let msgs: Vec<MessageView> = serde_json::from_slice(&out.stdout).ok()?;
        msgs.iter().any(|m| m.id == id && m.status >= Status::Delivered).then_some(())
    });
    let reply = lan.dingo(2, &b, &["send", "alice", "and you"]);
    assert!(reply.status.success());
    eventually_blocking("the reply", || {
        let out = lan.dingo(1, &a, &["messages", "bob", "--json"]);
        let msgs: Vec<MessageView> = serde_json::from_slice(&out.stdout).ok()?;
        msgs.iter().any(|m| m.text == "and you").then_some(())
    });
    for n in &mut nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
}
