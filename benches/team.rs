//! `cargo bench --bench team`: channel fan-out and rekey after a removal, with every member a
//! real node (own sled store, own libp2p swarm) in this process on 127.0.0.1. Prints a Markdown
//! table for BENCHMARKS.md.
//!
//! - fan-out: the admin sends to `#general` (all N members, sender keys: one encryption and one
//!   signature per message); latency is until every other member's node has decrypted and
//!   durably stored it (its `Message` event fires after the flush);
//! - sender CPU: the same sends from the admin's node with its network stopped, so the process
//!   does nothing else: process CPU per message to seal once and queue for N-1 members (durable);
//! - system CPU: process CPU per fan-out message with everyone running (sender, transport and all
//!   N-1 receivers share the 2 cores);
//! - rekey: after every member has sent once (sessions and chains in place) and the nodes have
//!   settled (CPU use back near zero), the admin removes a member; measured until every
//!   remaining member knows, until each has sealed a message under a new chain, and until all
//!   of those reached every remaining member.
//!
//! Environment: `BENCH_TEAM_SIZES` (default `10,50,100,200`), `BENCH_REKEY_SIZES` (default
//! `10,50,100`; a size whose full mesh of connections would not fit under the open-file limit is
//! reported as not run), `BENCH_FANOUT_N` (messages per size, default 50).

mod support;
use dingo_node::{Home, NetConfig, Node, NodeEvent};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{cpu_time, env_list, wait_until, FanOut, Rekey};
use tokio::sync::mpsc;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

struct Team {
    _dir: tempfile::TempDir,
    homes: Vec<Home>,
    nodes: Vec<Node>,
    /// (member index, message id, when its node stored it)
    rx: mpsc::Receiver<(usize, String, Instant)>,
}

async fn build_team(n: usize) -> Team {
    let dir = tempfile::tempdir().expect("tmp");
    let mut homes = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        let home = Home::new(dir.path().join(format!("m{i}")));
        Node::init(&home, &format!("m{i}"), None).expect("init");
        let node = Node::open(&home, None).expect("open");
        node.start_network(NetConfig::loopback(), vec![]).await.expect("net");
        homes.push(home);
        nodes.push(node);
    }
    nodes[0].team_create("bench").await.expect("team");
    // Members accept a team only from an admin they know: they have the admin's invite.
    let admin_invite = nodes[0].id().invite;
    for node in &nodes[1..] {
        node.add_contact(&admin_invite, None).await.expect("contact");
    }
    let invites: Vec<String> = nodes[1..].iter().map(|n| n.id().invite).collect();
    nodes[0].team_add(invites, None).await.expect("add");
    for (i, node) in nodes.iter().enumerate() {
        let t0 = Instant::now();
        wait_until("everyone to know everyone", async || {
            if t0.elapsed() > Duration::from_secs(20) && t0.elapsed().as_millis() % 5000 < 6 {
                eprintln!("member {i} still waiting: {:?}", node.team().await.map(|t| t.members.len()));
            }
            node.team().await.map(|t| t.members.len() == n).unwrap_or(false)
        })
        .await;
    }
    let (tx, rx) = mpsc::channel(1 << 16);
    for (i, node) in nodes.iter().enumerate() {
        let mut events = node.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                if let NodeEvent::Message { id, channel: Some(_), .. } = e {
                    let _ = tx.send((i, id, Instant::now())).await;
                }
            }
        });
    }
    Team { _dir: dir, homes, nodes, rx }
}

/// Sends one message from `from` and returns when all other members stored it.
async fn fan_out(team: &mut Team, from: usize, text: &str) -> Duration {
    let n = team.nodes.len();
    let t0 = Instant::now();
    let id = team.nodes[from].send("#general", text).await.expect("send").id;
    let mut got = 0;
    let mut last = t0;
    while got < n - 1 {
        let (_, mid, at) = team.rx.recv().await.expect("events");
        if mid == id {
            got += 1;
            last = last.max(at);
        }
    }
    last - t0
}

async fn measure_fan_out(n: usize, k: usize) -> FanOut {
    let mut team = build_team(n).await;
    // Warm-up: the first message carries the sender's chain to every member.
    fan_out(&mut team, 0, "warm-up").await;
    let mut lat = Vec::new();
    let cpu0 = cpu_time();
    for i in 0..k {
        lat.push(fan_out(&mut team, 0, &format!("message {i} {}", "x".repeat(200))).await);
    }
    let system_cpu_ms = (cpu_time() - cpu0).as_secs_f64() * 1e3 / k as f64;
    // The sender alone: its network stopped and every other node shut down, so nothing else
    // in this process uses CPU.
    for node in team.nodes.drain(..) {
        node.shutdown().await.expect("stop");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let offline = Node::open(&team.homes[0], None).expect("reopen");
    offline.send("#general", "warm").await.expect("send");
    let cpu0 = cpu_time();
    for i in 0..k {
        offline.send("#general", &format!("queued {i} {}", "x".repeat(200))).await.expect("send");
    }
    let sender_cpu_ms = (cpu_time() - cpu0).as_secs_f64() * 1e3 / k as f64;
    offline.shutdown().await.expect("stop");
    FanOut { n, p50: pct(&mut lat.clone(), 0.5), p99: pct(&mut lat, 0.99), system_cpu_ms, sender_cpu_ms }
}

/// Waits until the `n` nodes are back to (nearly) idle: under 1% of a core each over half a
/// second, checked for at most 30 s (idle nodes still run timers, pings and sled's flusher, and
/// connections close after two idle minutes).
async fn settle(n: usize) {
    const WINDOW: Duration = Duration::from_millis(500);
    let started = Instant::now();
    let mut before = cpu_time();
    while started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(WINDOW).await;
        let now = cpu_time();
        if now - before < WINDOW / 100 * n as u32 {
            return;
        }
        before = now;
    }
}

async fn measure_rekey(n: usize) -> Rekey {
    let mut team = build_team(n).await;
    // Everyone sends once: pairwise sessions and sender chains are in place, as in a live team.
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for (i, node) in team.nodes.iter().enumerate() {
            v.push(node.send("#general", &format!("hello from {i}")).await.expect("send").id);
        }
        v
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    while ids.iter().any(|id| seen.get(id).copied().unwrap_or(0) < n - 1) {
        let (_, id, _) = team.rx.recv().await.expect("events");
        *seen.entry(id).or_default() += 1;
    }
    // A live team is idle when someone is removed; right after everyone's first message at
    // once the members are busy for seconds (envelopes handed over twice; BENCHMARKS.md).
    settle(n).await;
    let victim = team.nodes.pop().expect("victim");
    let victim_name = victim.id().name;
    let mut changed = Vec::new();
    for node in &team.nodes {
        changed.push(node.subscribe());
    }
    let t0 = Instant::now();
    team.nodes[0].team_remove(&victim_name).await.expect("remove");
    for rx in changed.iter_mut() {
        loop {
            if let Ok(NodeEvent::TeamChanged { members, .. }) = rx.recv().await {
                if members == n - 1 {
                    break;
                }
            }
        }
    }
    let learned = t0.elapsed();
    let sends = team.nodes.iter().enumerate().map(|(i, node)| {
        let node = node.clone();
        async move { node.send("#general", &format!("after removal {i}")).await.expect("send").id }
    });
    let new_ids = futures::future::join_all(sends).await;
    let sealed = t0.elapsed();
    let remaining = n - 1;
    let mut seen: HashMap<String, usize> = HashMap::new();
    while new_ids.iter().any(|id| seen.get(id).copied().unwrap_or(0) < remaining - 1) {
        let (_, id, _) = team.rx.recv().await.expect("events");
        *seen.entry(id).or_default() += 1;
    }
    let converged = t0.elapsed();
    victim.shutdown().await.expect("stop");
    for node in &team.nodes {
        node.shutdown().await.expect("stop");
    }
    Rekey {
        n,
        learned_ms: learned.as_secs_f64() * 1e3,
        sealed_ms: sealed.as_secs_f64() * 1e3,
        converged_ms: converged.as_secs_f64() * 1e3,
    }
}

fn main() {
    let Some(rt) = support::runtime() else { return };
    let sizes = env_list("BENCH_TEAM_SIZES", "10,50,100,200");
    let rekey_sizes = env_list("BENCH_REKEY_SIZES", "10,50,100");
    let k = env_list("BENCH_FANOUT_N", "50").first().copied().unwrap_or(50);
    println!("{}", FanOut::HEADER);
    for n in sizes {
        let f = rt.block_on(measure_fan_out(n, k));
        println!("{}", f.row());
    }
    println!();
    println!("{}", Rekey::HEADER);
    for n in rekey_sizes {
        // Every member talks to every other, and two members who dial each other at once keep
        // both connections: up to N·(N-1) connections with both ends in this process, plus
        // each node's store files. Past the open-file limit the last nodes cannot connect and
        // the run would wait forever (a device of a real team holds only its own N-1).
        let needed = (2 * n * (n - 1) + 16 * n) as u64;
        if needed > support::open_files_limit() {
            println!(
                "| {n} | not run: needs ~{needed} open files in one process, the limit here is {} | | |",
                support::open_files_limit()
            );
            continue;
        }
        let r = rt.block_on(measure_rekey(n));
        println!("{}", r.row());
    }
}
