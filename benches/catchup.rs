//! `cargo bench --bench catchup`: a member comes back after `BENCH_CATCHUP_N` (default 10,000)
//! channel messages were written while it was away; measured from its `start_network` until its
//! node has decrypted and durably stored every one of them (its `Message` events fire after the
//! flush). Every node is real (own sled store, own libp2p swarm) in this process on 127.0.0.1.
//!
//! - from a carrier: the author is offline; the returning member meets only a teammate who holds
//!   the channel's log, and pulls it with have-vector sync (512 envelopes per answer);
//! - from the author: the author is online too; its outbox pushes to the member while the
//!   member also pulls from the teammate (duplicates are dropped by the replay window).
//!
//! Prints a Markdown table for BENCHMARKS.md, and on stderr the returning member's counters
//! (envelopes stored, handed again, answered "not yet").

mod support;
use dingo_node::{Home, NetConfig, Node, NodeEvent};
use std::time::{Duration, Instant};
use support::wait_until;

async fn channel_count(node: &Node) -> usize {
    node.messages("#general").await.map(|m| m.len()).unwrap_or(0)
}

async fn start(home: &Home, peers: &[&Node]) -> Node {
    let node = Node::open(home, None).expect("open");
    let addrs = peers.iter().map(|p| p.id().addrs[0].parse().expect("addr")).collect();
    node.start_network(NetConfig::loopback(), addrs).await.expect("net");
    node
}

/// Returns (write time, catch-up time).
async fn catch_up(n: usize, author_online: bool) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("tmp");
    let homes: Vec<Home> =
        ["writer", "carrier", "away"].iter().map(|h| Home::new(dir.path().join(h))).collect();
    for (h, name) in homes.iter().zip(["writer", "carrier", "away"]) {
        Node::init(h, name, None).expect("init");
    }
    let writer = start(&homes[0], &[]).await;
    let carrier = start(&homes[1], &[]).await;
    let away = start(&homes[2], &[]).await;
    writer.team_create("bench").await.expect("team");
    let admin = writer.id().invite;
    for m in [&carrier, &away] {
        m.add_contact(&admin, None).await.expect("contact");
    }
    writer.team_add(vec![carrier.id().invite, away.id().invite], None).await.expect("add");
    for m in [&writer, &carrier, &away] {
        wait_until("the team", async || m.team().await.map(|t| t.members.len() == 3).unwrap_or(false)).await;
    }
    // Everyone's channel key reaches everyone while all are together.
    for (i, m) in [&writer, &carrier, &away].iter().enumerate() {
        m.send("#general", &format!("hello {i}")).await.expect("send");
    }
    for m in [&writer, &carrier, &away] {
        wait_until("greetings", async || channel_count(m).await == 3).await;
    }
    away.shutdown().await.expect("stop");
    drop(away);
    let t0 = Instant::now();
    // Sends in flight together are sealed and flushed together, as in real use.
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let sends = chunk.iter().map(|i| {
            let text = format!("message {i} written while a member was away");
            let writer = writer.clone();
            async move { writer.send("#general", &text).await.expect("send") }
        });
        futures::future::join_all(sends).await;
    }
    wait_until("the carrier to hold everything", async || channel_count(&carrier).await == n + 3).await;
    let written = t0.elapsed();
    if !author_online {
        writer.shutdown().await.expect("stop");
    }
    // The returning member: count its stored channel messages from the moment it starts.
    let away = Node::open(&homes[2], None).expect("open");
    let mut events = away.subscribe();
    let t0 = Instant::now();
    let peers: Vec<&Node> = if author_online { vec![&carrier, &writer] } else { vec![&carrier] };
    let addrs = peers.iter().map(|p| p.id().addrs[0].parse().expect("addr")).collect();
    away.start_network(NetConfig::loopback(), addrs).await.expect("net");
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(120), events.recv()).await {
            Ok(Ok(NodeEvent::Message { channel: Some(_), .. })) => got += 1,
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(k))) => {
                panic!("the event buffer dropped {k} events: raise EVENT_BUFFER or count differently")
            }
            other => panic!("catch-up stalled at {got} of {n}: {other:?}"),
        }
    }
    let caught_up = t0.elapsed();
    assert_eq!(channel_count(&away).await, n + 3, "every message stored once");
    let st = away.stats();
    eprintln!(
        "author online: {author_online}: the returning member stored {}, was handed again {}, answered \"not yet\" {}",
        st.received, st.duplicates, st.retried
    );
    for node in [away, carrier, writer] {
        let _ = node.shutdown().await;
    }
    (written, caught_up)
}

fn main() {
    let Some(rt) = support::runtime() else { return };
    let n: usize = std::env::var("BENCH_CATCHUP_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    println!("| catch-up of {n} channel messages | writing them (baseline: live delivery to the carrier) | catch-up until all stored and decrypted |");
    println!("|---|---|---|");
    for (label, author_online) in
        [("from a carrier (author offline)", false), ("from the author and a carrier", true)]
    {
        let (w, c) = rt.block_on(catch_up(n, author_online));
        println!(
            "| {label} | {:.0} ms ({:.0} msg/s) | {:.0} ms ({:.0} msg/s) |",
            w.as_secs_f64() * 1e3,
            n as f64 / w.as_secs_f64(),
            c.as_secs_f64() * 1e3,
            n as f64 / c.as_secs_f64()
        );
    }
}
