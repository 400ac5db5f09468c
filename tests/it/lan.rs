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

/// `lan.sh up` briefly creates its veth pairs in the host namespace under fixed names, so two
/// LANs must not be made at once.
static ONE_LAN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Lan {
    fn up(n: usize, name: &str) -> Self {
        let _one = ONE_LAN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
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
    let started = std::time::Instant::now();
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
    // Measured, not asserted (BENCHMARKS.md): two processes start on an empty LAN, find each
    // other by mDNS alone, and the first message is delivered.
    eprintln!("LAN: both nodes started → first message delivered in {:?}", started.elapsed());
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

fn channel_texts(lan: &Lan, i: usize, home: &Path) -> Vec<String> {
    let out = lan.dingo(i, home, &["messages", "#general", "--json"]);
    let msgs: Vec<MessageView> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    msgs.into_iter().map(|m| m.text).collect()
}

/// Five hosts, mDNS only: a team forms, everyone finds everyone, messages go every way; then
/// two hosts are unplugged, both sides write, and after the cables go back in everything
/// converges, nothing lost and nothing twice.
#[test]
#[ignore = "needs root and network namespaces; run by .ci/run"]
fn five_hosts_find_each_other_with_mdns_and_heal_a_partition() {
    let n = 5;
    let lan = Lan::up(n, "dgo5");
    let dir = tempfile::tempdir().expect("tmp");
    let homes: Vec<PathBuf> = (1..=n).map(|i| dir.path().join(format!("h{i}"))).collect();
    for (i, h) in homes.iter().enumerate() {
        dingo_ok(h, &["init", "--name", &format!("h{}", i + 1)]);
    }
    let _logs = LogsOnFailure(homes.iter().map(|h| h.join("run.log")).collect());
    let mut nodes: Vec<Child> = homes.iter().enumerate().map(|(i, h)| lan.spawn_run(i + 1, h)).collect();
    for h in &homes {
        eventually_blocking("the nodes' APIs", || h.join("api.json").exists().then_some(()));
    }
    let ok = |out: std::process::Output| -> String {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    ok(lan.dingo(1, &homes[0], &["team", "create", "field"]));
    for i in 2..=n {
        let code = ok(lan.dingo(1, &homes[0], &["team", "invite"]));
        // The admin's node is found by mDNS alone: the code carries no address it could use.
        ok(lan.dingo(i, &homes[i - 1], &["team", "join", &code, "--wait", "60"]));
    }
    for (i, h) in homes.iter().enumerate() {
        eventually_blocking("everyone to know the whole team", || {
            let out = lan.dingo(i + 1, h, &["team", "members", "--json"]);
            let t: dingo_node::TeamView = serde_json::from_slice(&out.stdout).ok()?;
            (t.members.len() == n).then_some(())
        });
    }
    for (i, h) in homes.iter().enumerate() {
        ok(lan.dingo(i + 1, h, &["send", "#general", &format!("hello from h{}", i + 1)]));
    }
    for (i, h) in homes.iter().enumerate() {
        eventually_blocking("every greeting everywhere", || {
            (channel_texts(&lan, i + 1, h).len() == n).then_some(())
        });
    }

    // Unplug hosts 4 and 5; both sides write.
    for i in [4, 5] {
        assert!(Command::new(&lan.script)
            .args(["cut", &i.to_string()])
            .env("LAN_NAME", &lan.name)
            .status()
            .expect("cut")
            .success());
    }
    for k in 0..5 {
        ok(lan.dingo(1, &homes[0], &["send", "#general", &format!("inside {k}")]));
        ok(lan.dingo(4, &homes[3], &["send", "#general", &format!("outside {k}")]));
    }
    eventually_blocking("the connected side to have its writes", || {
        (channel_texts(&lan, 2, &homes[1]).len() == n + 5).then_some(())
    });
    for i in [4, 5] {
        assert!(Command::new(&lan.script)
            .args(["heal", &i.to_string()])
            .env("LAN_NAME", &lan.name)
            .status()
            .expect("heal")
            .success());
    }
    for (i, h) in homes.iter().enumerate() {
        eventually_blocking("every host to converge after the heal", || {
            let texts = channel_texts(&lan, i + 1, h);
            (texts.len() == n + 10).then_some(texts)
        });
    }
    for (i, h) in homes.iter().enumerate() {
        let out = lan.dingo(i + 1, h, &["messages", "#general", "--json"]);
        let msgs: Vec<MessageView> = serde_json::from_slice(&out.stdout).expect("messages");
        let mut ids: Vec<&str> = msgs.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n + 10, "h{}: nothing twice", i + 1);
    }
    let peers = ok(lan.dingo(1, &homes[0], &["peers", "--json"]));
    let peers: Vec<dingo_node::PeerView> = serde_json::from_str(&peers).expect("peers");
    assert_eq!(peers.iter().filter(|p| p.member).count(), n - 1, "{peers:?}");
    for p in &mut nodes {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// A host whose cable is out while the other starts misses its first mDNS query; the periodic
/// re-query finds it once the cable is back, without `--peer`.
#[test]
#[ignore = "needs root and network namespaces; run by .ci/run"]
fn a_host_that_missed_the_first_query_is_found_later() {
    let lan = Lan::up(2, "dgo6");
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    let invite = |home: &Path, name: &str| -> String {
        let out = dingo_ok(home, &["init", "--name", name]);
        out.lines().find_map(|l| l.strip_prefix("invite:")).expect("invite").trim().to_owned()
    };
    let (ia, ib) = (invite(&a, "alice"), invite(&b, "bob"));
    dingo_ok(&a, &["contact", "add", &ib]);
    dingo_ok(&b, &["contact", "add", &ia]);
    let _logs = LogsOnFailure(vec![a.join("run.log"), b.join("run.log")]);
    let cable = |action: &str| {
        let ok = Command::new(&lan.script)
            .args([action, "2"])
            .env("LAN_NAME", &lan.name)
            .status()
            .expect("lan.sh");
        assert!(ok.success());
    };
    cable("cut");
    let mut nodes = vec![lan.spawn_run(1, &a), lan.spawn_run(2, &b)];
    eventually_blocking("both nodes' APIs", || {
        (a.join("api.json").exists() && b.join("api.json").exists()).then_some(())
    });
    // Both have started and queried while bob was unplugged.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = lan.dingo(1, &a, &["send", "bob", "are you there?"]);
    cable("heal");
    let healed = std::time::Instant::now();
    eventually_blocking("bob to be found after the heal", || {
        let out = lan.dingo(1, &a, &["messages", "bob", "--json"]);
        let msgs: Vec<MessageView> = serde_json::from_slice(&out.stdout).ok()?;
        msgs.iter().any(|m| m.status >= Status::Delivered).then_some(())
    });
    eprintln!("LAN: found and delivered {:?} after the cable went back in", healed.elapsed());
    for n in &mut nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
}
