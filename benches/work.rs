//! `cargo bench --bench work`: a project of `BENCH_TASKS` (default 10,000) tasks between real
//! nodes (own sled store, own libp2p swarm, in this process on 127.0.0.1), each figure beside a
//! baseline from the same run (issue 5's speed targets):
//!
//! - cold load: open the home, list every task (what `dingo task list` does after a start), and
//!   the first edit after a start (which loads the automerge board itself), beside plain
//!   automerge loading the same document's bytes;
//! - new member: a member who joins after the 10,000 tasks were written, from being added
//!   (their node then asks for the board: automerge's sync protocol, pairwise) until it lists every task,
//!   beside plain automerge's sync protocol bringing an empty in-memory document up to date;
//! - live edit: one task edit, from the call until each of 9 other members' nodes has stored
//!   and applied it (their `tasks_changed` event), over `BENCH_EDITS` (default 100) edits,
//!   beside a channel message to the same 9 members in the same run.
//!
//! Prints Markdown tables for BENCHMARKS.md.

mod support;
use dingo_node::{Home, NetConfig, Node, NodeEvent, TaskPriority, TaskUpdate};
use std::time::{Duration, Instant};
use support::wait_until;

async fn start(home: &Home) -> Node {
    let node = Node::open(home, None).expect("open");
    node.start_network(NetConfig::loopback(), vec![]).await.expect("net");
    node
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Waits for `n` events matching `want` on `rx`; returns when the last arrived.
async fn events(
    rx: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    want: fn(&NodeEvent) -> bool,
) -> Instant {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Ok(e)) if want(&e) => return Instant::now(),
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("no event: {other:?}"),
        }
    }
}

async fn join(admin: &Node, members: &[&Node]) {
    for m in members {
        m.add_contact(&admin.id().invite, None).await.expect("contact");
    }
    admin.team_add(members.iter().map(|m| m.id().invite).collect(), None).await.expect("add");
    let size = admin.team().await.expect("team").members.len();
    for m in members {
        wait_until("the team", async || m.team().await.map(|t| t.members.len() == size).unwrap_or(false))
            .await;
    }
}

fn plain_sync(bytes: &[u8]) -> (Duration, Duration) {
    use automerge::sync::SyncDoc;
    let full = automerge::AutoCommit::load(bytes).expect("load");
    let t0 = Instant::now();
    let loaded = automerge::AutoCommit::load(bytes).expect("load");
    let load = t0.elapsed();
    drop(loaded);
    let mut full = full;
    let mut empty = automerge::AutoCommit::new();
    let (mut a, mut b) = (automerge::sync::State::new(), automerge::sync::State::new());
    let t0 = Instant::now();
    loop {
        let m1 = full.sync().generate_sync_message(&mut a);
        if let Some(m) = &m1 {
            empty.sync().receive_sync_message(&mut b, m.clone()).expect("receive");
        }
        let m2 = empty.sync().generate_sync_message(&mut b);
        if let Some(m) = &m2 {
            full.sync().receive_sync_message(&mut a, m.clone()).expect("receive");
        }
        if m1.is_none() && m2.is_none() {
            break;
        }
    }
    (load, t0.elapsed())
}

async fn run(n: usize, edits: usize) {
    let dir = tempfile::tempdir().expect("tmp");
    let names: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let homes: Vec<Home> = names.iter().map(|n| Home::new(dir.path().join(n))).collect();
    for (h, name) in homes.iter().zip(&names) {
        Node::init(h, name, None).expect("init");
    }
    let mut nodes = Vec::new();
    for h in &homes {
        nodes.push(start(h).await);
    }
    let admin = nodes[0].clone();
    admin.team_create("bench").await.expect("team");
    admin.project_create("big", vec![], vec![]).await.expect("project");
    // The project's tasks, written by the admin alone.
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let adds = chunk.iter().map(|i| {
            let a = admin.clone();
            async move {
                a.task_add("big", &format!("task number {i}"), vec![], None, TaskPriority::Normal, None)
                    .await
                    .expect("add")
            }
        });
        ids.extend(futures::future::join_all(adds).await);
    }
    let build = t0.elapsed();
    // Cold load: the admin's node restarted.
    admin.shutdown().await.expect("stop");
    drop(admin);
    nodes.remove(0);
    let t0 = Instant::now();
    let admin = Node::open(&homes[0], None).expect("open");
    let listed = admin.tasks(Some("big".into()), false, false).await.expect("tasks");
    let cold_list = t0.elapsed();
    assert_eq!(listed.len(), n);
    let t0 = Instant::now();
    admin.task_update(&ids[0], TaskUpdate::Comment("first edit after a start".into())).await.expect("edit");
    let cold_edit = t0.elapsed();
    admin.start_network(NetConfig::loopback(), vec![]).await.expect("net");
    nodes.insert(0, admin.clone());
    let saved = admin.project_bytes("big").await.expect("bytes");
    let (plain_load, plain_sync) = plain_sync(&saved);

    // A new member: from the admin adding it until it lists every task (its node asks for the
    // board on joining).
    let newcomer = nodes[1].clone();
    let mut rx = newcomer.subscribe();
    let t0 = Instant::now();
    join(&admin, &[&newcomer]).await;
    let joined = t0.elapsed();
    let synced = loop {
        let ok =
            newcomer.tasks(Some("big".into()), false, false).await.map(|t| t.len() == n).unwrap_or(false);
        if ok {
            break t0.elapsed();
        }
        if tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.is_err() {
            let t = newcomer.tasks(Some("big".into()), false, false).await;
            panic!("the newcomer stalled: {:?}", t.map(|t| t.len()));
        }
    };
    for (a, b) in [(&admin, &newcomer)] {
        a.net().expect("net").dial(b.id().addrs[0].parse().expect("addr")).await.expect("dial");
    }

    // Everyone else joins and syncs (not timed).
    let rest: Vec<&Node> = nodes[2..].iter().collect();
    join(&admin, &rest).await;
    for m in &nodes[1..] {
        for o in &nodes {
            if o.id().device_id != m.id().device_id {
                let _ = m.net().expect("net").dial(o.id().addrs[0].parse().expect("addr")).await;
            }
        }
    }
    admin.task_update(&ids[2], TaskUpdate::Done(true)).await.expect("edit");
    admin.send("#general", "hello").await.expect("send");
    for m in &nodes[1..] {
        wait_until("every member synced", async || {
            m.tasks(Some("big".into()), false, false).await.map(|t| t.len() == n).unwrap_or(false)
                && m.messages("#general").await.map(|x| !x.is_empty()).unwrap_or(false)
        })
        .await;
    }
    // Live edits and, as the baseline, channel messages, to the same 9 members.
    let mut edit_times = Vec::new();
    let mut msg_times = Vec::new();
    for i in 0..edits {
        let mut rxs: Vec<_> = nodes[1..].iter().map(|m| m.subscribe()).collect();
        let t0 = Instant::now();
        admin.task_update(&ids[10 + i], TaskUpdate::Done(true)).await.expect("edit");
        for rx in &mut rxs {
            let at = events(rx, |e| matches!(e, NodeEvent::TasksChanged { .. })).await;
            edit_times.push(at - t0);
        }
        let mut rxs: Vec<_> = nodes[1..].iter().map(|m| m.subscribe()).collect();
        let t0 = Instant::now();
        admin.send("#general", &format!("message {i}")).await.expect("send");
        for rx in &mut rxs {
            let at = events(rx, |e| matches!(e, NodeEvent::Message { .. })).await;
            msg_times.push(at - t0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edit_times.sort();
    msg_times.sort();
    for node in nodes {
        let _ = node.shutdown().await;
    }
    println!("| project of {n} tasks, 10 member nodes on 2 cores | Dingo | baseline (same run) |");
    println!("|---|---|---|");
    println!(
        "| cold task list (open the home, list every task) | {:.0} ms | plain automerge load of the board's bytes ({} KB): {:.0} ms |",
        ms(cold_list),
        saved.len() / 1024,
        ms(plain_load)
    );
    println!("| first edit after a start (loads the board) | {:.0} ms | |", ms(cold_edit));
    println!(
        "| new member fully synced (added → every task listed) | {:.0} ms | of which joining the team: {:.0} ms; plain automerge sync protocol, empty → full, in memory: {:.0} ms |",
        ms(synced),
        ms(joined),
        ms(plain_sync)
    );
    println!(
        "| one edit visible at 9 peers ({edits} edits): p50 / p99 | {:.1} / {:.1} ms | channel message to the same 9: {:.1} / {:.1} ms |",
        ms(pct(&edit_times, 0.5)),
        ms(pct(&edit_times, 0.99)),
        ms(pct(&msg_times, 0.5)),
        ms(pct(&msg_times, 0.99))
    );
    println!("| writing the {n} tasks (one edit each, durable) | {:.1} s | |", build.as_secs_f64());
}

fn main() {
    let Some(rt) = support::runtime() else { return };
    let n: usize = std::env::var("BENCH_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let edits: usize = std::env::var("BENCH_EDITS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    rt.block_on(run(n, edits));
}
