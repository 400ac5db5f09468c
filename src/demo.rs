//! `dingo demo`: three nodes in one process on 127.0.0.1 (mDNS off, temporary homes) showing
//! encrypted 1:1 chat, delivery and read receipts, a timed burst, offline delivery, and a team:
//! joining by code, a department channel with per-member receipts, a DING, a removal.

use anyhow::{anyhow, Context};
use dingo_node::{Home, Multiaddr, NetConfig, Node, NodeEvent};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

async fn node(dir: &std::path::Path, name: &str) -> anyhow::Result<Node> {
    let home = Home::new(dir.join(name));
    Node::init(&home, name, None)?;
    Ok(Node::open(&home, None)?)
}

async fn wait_for(
    rx: &mut broadcast::Receiver<NodeEvent>,
    mut want: impl FnMut(&NodeEvent) -> bool,
) -> anyhow::Result<NodeEvent> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match rx.recv().await {
                Ok(e) if want(&e) => return Ok(e),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(anyhow!("event stream ended: {e}")),
            }
        }
    })
    .await
    .context("timed out waiting for the network")?
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn run(burst: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(demo(burst))
}

async fn demo(burst: usize) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    println!("== Dingo demo: three nodes on 127.0.0.1, mDNS off, homes in {}", dir.path().display());
    let alice = node(dir.path(), "alice").await?;
    let bob = node(dir.path(), "bob").await?;
    let carol = node(dir.path(), "carol").await?;
    let alice_addrs = alice.start_network(NetConfig::loopback(), vec![]).await?;
    let bob_addrs = bob.start_network(NetConfig::loopback(), vec![]).await?;
    println!("alice listens on {}", alice_addrs.join(" "));
    println!("bob   listens on {}", bob_addrs.join(" "));
    println!("carol is offline for now");

    alice.add_contact(&bob.id().invite, None).await?;
    alice.add_contact(&carol.id().invite, None).await?;
    bob.add_contact(&alice.id().invite, None).await?;
    carol.add_contact(&alice.id().invite, None).await?;
    let v = alice.verify_contact("bob", false).await?;
    println!("alice and bob would compare safety number {}", v.safety_number);

    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();

    println!("\n== 1:1 chat, end-to-end encrypted (X3DH + Double Ratchet, signed envelopes)");
    let start = Instant::now();
    let sent = alice.send("bob", "Hi Bob! Lunch at noon?").await?;
    println!("[{:>8}] alice -> bob: \"Hi Bob! Lunch at noon?\" (id {})", ms(t0.elapsed()), &sent.id[..8]);
    wait_for(&mut bob_events, |e| matches!(e, NodeEvent::Message { .. })).await?;
    println!("[{:>8}] bob's node stored and decrypted it after {}", ms(t0.elapsed()), ms(start.elapsed()));
    wait_for(&mut alice_events, |e| matches!(e, NodeEvent::Delivered { id, .. } if *id == sent.id)).await?;
    println!(
        "[{:>8}] alice sees DELIVERED after {} (first message: includes the X3DH session start)",
        ms(t0.elapsed()),
        ms(start.elapsed())
    );
    let read_start = Instant::now();
    bob.read("alice").await?;
    wait_for(&mut alice_events, |e| matches!(e, NodeEvent::Read { id, .. } if *id == sent.id)).await?;
    println!("[{:>8}] bob read it; alice sees READ {} later", ms(t0.elapsed()), ms(read_start.elapsed()));
    let reply = bob.send("alice", "Noon works. See you!").await?;
    wait_for(&mut alice_events, |e| matches!(e, NodeEvent::Message { id, .. } if *id == reply.id)).await?;
    println!("[{:>8}] bob -> alice: \"Noon works. See you!\" arrived", ms(t0.elapsed()));

    println!("\n== a burst of {burst} messages alice -> bob, each durable on both sides before it counts");
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(burst);
    let burst_start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..burst {
        let a = alice.clone();
        tasks.spawn(async move {
            let begun = Instant::now();
            a.send("bob", &format!("burst message {i}")).await.map(|r| (r.id, begun))
        });
        if tasks.len() >= 64 {
            if let Some(r) = tasks.join_next().await {
                let (id, begun) = r??;
                sent_at.insert(id, begun);
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        let (id, begun) = r??;
        sent_at.insert(id, begun);
    }
    let mut latencies = Vec::with_capacity(burst);
    while latencies.len() < burst {
        let e = wait_for(&mut alice_events, |e| matches!(e, NodeEvent::Delivered { .. })).await?;
        if let NodeEvent::Delivered { id, .. } = e {
            if let Some(begun) = sent_at.remove(&id) {
                latencies.push(begun.elapsed());
            }
        }
    }
    let total = burst_start.elapsed();
    latencies.sort();
    println!(
        "{burst} messages delivered in {} = {:.0} msg/s; send->delivered p50 {} p99 {} (under load)",
        ms(total),
        burst as f64 / total.as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99))
    );

    println!("\n== offline delivery: carol is offline, alice writes anyway");
    let queued = alice.send("carol", "Carol, the report is due Friday.").await?;
    let status = alice.messages("carol").await?.last().map(|m| format!("{:?}", m.status).to_lowercase());
    println!(
        "[{:>8}] alice -> carol: status {} (sealed and durable in alice's outbox)",
        ms(t0.elapsed()),
        status.unwrap_or_default()
    );
    let mut carol_events = carol.subscribe();
    let online = Instant::now();
    let alice_addr: Vec<Multiaddr> = alice_addrs.iter().filter_map(|a| a.parse().ok()).collect();
    carol.start_network(NetConfig::loopback(), alice_addr).await?;
    println!("[{:>8}] carol comes online and dials alice", ms(t0.elapsed()));
    wait_for(&mut carol_events, |e| matches!(e, NodeEvent::Message { id, .. } if *id == queued.id)).await?;
    println!(
        "[{:>8}] carol received the queued message {} after coming online",
        ms(t0.elapsed()),
        ms(online.elapsed())
    );
    wait_for(&mut alice_events, |e| matches!(e, NodeEvent::Delivered { id, .. } if *id == queued.id)).await?;
    println!("[{:>8}] alice sees DELIVERED", ms(t0.elapsed()));

    println!("\n== a team: alice is admin; bob and carol join; #ops is for the ops department");
    let team_start = Instant::now();
    alice.team_create("acme").await?;
    alice.dept_create("ops").await?;
    for (name, n) in [("bob", &bob), ("carol", &carol)] {
        let code = alice.team_invite(Some("ops".into()), None).await?.code;
        let mut ev = n.subscribe();
        n.team_join(&code).await?;
        wait_for(&mut ev, |e| matches!(e, NodeEvent::Joined { .. })).await?;
        println!("[{:>8}] {name} joined with a one-time code ({}…)", ms(t0.elapsed()), &code[..16]);
    }
    alice.dept_add("ops", "alice").await?;
    alice.channel_create("ops", vec!["ops".into()], vec![]).await?;
    for n in [&bob, &carol] {
        tokio::time::timeout(STEP_TIMEOUT, async {
            while !n.channels().await.map(|c| c.iter().any(|c| c.name == "ops" && c.joined)).unwrap_or(false)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .context("timed out waiting for the channel")?;
    }
    println!("[{:>8}] team of 3 and channel #ops ready after {}", ms(t0.elapsed()), ms(team_start.elapsed()));
    let mut bob_events = bob.subscribe();
    let mut carol_events = carol.subscribe();
    let start = Instant::now();
    let m = alice.send("#ops", "Deploy at 15:00, please review the checklist").await?;
    wait_for(&mut bob_events, |e| matches!(e, NodeEvent::Message { id, .. } if *id == m.id)).await?;
    wait_for(&mut carol_events, |e| matches!(e, NodeEvent::Message { id, .. } if *id == m.id)).await?;
    println!(
        "[{:>8}] alice -> #ops stored by both members after {} (sender keys: encrypted and signed once)",
        ms(t0.elapsed()),
        ms(start.elapsed())
    );
    bob.read("#ops").await?;
    wait_for(&mut alice_events, |e| matches!(e, NodeEvent::Read { id, .. } if *id == m.id)).await?;
    let view = alice.messages("#ops").await?.into_iter().find(|v| v.id == m.id);
    println!(
        "[{:>8}] bob read it: alice sees \"{}\"; not read by: {}",
        ms(t0.elapsed()),
        view.and_then(|v| v.summary).unwrap_or_default(),
        alice.unread("#ops", None).await?.not_read.join(", ")
    );
    let ding = alice.ding("#ops", "Prod is down, join the call", Some(5)).await?;
    wait_for(&mut carol_events, |e| matches!(e, NodeEvent::Ding { id, .. } if *id == ding.id)).await?;
    println!("[{:>8}] alice DINGs #ops: carol's node alerts (and will re-alert every 5 s)", ms(t0.elapsed()));
    carol.ack(&ding.id).await?;
    wait_for(&mut alice_events, |e| matches!(e, NodeEvent::DingAcked { id, .. } if *id == ding.id)).await?;
    let d = alice.dings().await?.into_iter().find(|d| d.id == ding.id);
    let waiting: Vec<String> = d
        .map(|d| d.recipients.into_iter().filter(|r| r.acked_at.is_none()).map(|r| r.member).collect())
        .unwrap_or_default();
    println!("[{:>8}] carol acknowledged; still waiting for: {}", ms(t0.elapsed()), waiting.join(", "));
    bob.ack(&ding.id).await?;

    println!(
        "\n== work: a project's task board and a shared document, as automerge CRDTs in their own groups"
    );
    alice.project_create("launch", vec![], vec!["alice".into(), "bob".into()]).await?;
    let due = dingo_types_now() + 2 * 3_600_000;
    let start = Instant::now();
    let task = alice
        .task_add(
            "launch",
            "Write the release notes",
            vec!["bob".into()],
            Some(due),
            dingo_node::TaskPriority::High,
            None,
        )
        .await?;
    wait_for(&mut bob_events, |e| matches!(e, NodeEvent::TasksChanged { .. })).await?;
    println!(
        "[{:>8}] alice added a task for bob; bob's board has it after {}",
        ms(t0.elapsed()),
        ms(start.elapsed())
    );
    bob.task_update(&task, dingo_node::TaskUpdate::Done(true)).await?;
    wait_for(&mut alice_events, |e| matches!(e, NodeEvent::TasksChanged { .. })).await?;
    let status = alice.project_status("launch").await?;
    println!(
        "[{:>8}] bob marked it done: alice sees {}% of project launch done",
        ms(t0.elapsed()),
        status.percent_done
    );
    alice.doc_create("runbook", vec![], vec![]).await?;
    alice.doc_edit("runbook", "# Runbook\n1. check the dashboards\n", "first draft").await?;
    wait_for(&mut bob_events, |e| matches!(e, NodeEvent::DocChanged { .. })).await?;
    bob.doc_edit("runbook", "# Runbook\n1. check the dashboards\n2. page the on-call\n", "add a step")
        .await?;
    wait_for(&mut alice_events, |e| matches!(e, NodeEvent::DocChanged { .. })).await?;
    for l in alice.doc_blame("runbook").await? {
        println!("           blame: {:<6} {}", l.author, l.text);
    }
    // A file: sealed once in chunks, announced in #ops, fetched by bob from alice's node.
    let file = dir.path().join("handover.bin");
    let bytes: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&file, &bytes)?;
    let shared = alice.file_share("#ops", &file).await?;
    wait_for(
        &mut bob_events,
        |e| matches!(e, NodeEvent::Message { text, .. } if text.contains("handover.bin")),
    )
    .await?;
    let start = Instant::now();
    let copy = dir.path().join("handover-bob.bin");
    let got = bob.file_get(&shared.id, &copy).await?;
    anyhow::ensure!(std::fs::read(&copy)? == bytes, "the fetched file differs");
    println!(
        "[{:>8}] alice shared handover.bin ({}) in #ops; bob fetched it in {}: {} chunks, each BLAKE3-checked",
        ms(t0.elapsed()),
        dingo_node::human_size(shared.size),
        ms(start.elapsed()),
        got.chunks_fetched
    );
    let removed = Instant::now();
    alice.team_remove("carol").await?;
    let after = alice.send("#ops", "Carol has left; new keys from here on").await?;
    wait_for(&mut bob_events, |e| matches!(e, NodeEvent::Message { id, .. } if *id == after.id)).await?;
    println!(
        "[{:>8}] alice removed carol: the next #ops message went out under a new key {} later; carol's node is refused",
        ms(t0.elapsed()),
        ms(removed.elapsed())
    );

    println!("\n== what each node stored");
    for (name, n) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let inbox = n.inbox().await?;
        let summary: Vec<String> =
            inbox.iter().map(|c| format!("{} ({} msgs, {} unread)", c.contact, c.total, c.unread)).collect();
        let s = n.stats();
        println!(
            "{name:<6} conversations: {}; envelopes received {}, rejected {}",
            summary.join(", "),
            s.received,
            s.rejected
        );
    }
    for n in [&alice, &bob, &carol] {
        n.shutdown().await?;
    }
    println!("\ndone in {}", ms(t0.elapsed()));
    Ok(())
}

fn dingo_types_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
