//! Times `Node::send` alone (no network): how fast messages get sealed and durably queued.
use dingo_node::{Home, Node};
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ha, hb) = (Home::new(dir.path().join("a")), Home::new(dir.path().join("b")));
    Node::init(&ha, "a", None).expect("init");
    Node::init(&hb, "b", None).expect("init");
    let b = Node::open(&hb, None).expect("open");
    let a = Node::open(&ha, None).expect("open");
    a.add_contact(&b.id().invite, None).await.expect("add");
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let text = "z".repeat(256);
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (a, t) = (a.clone(), text.clone());
        tasks.spawn(async move { a.send("b", &t).await.expect("send") });
        while tasks.len() >= 512 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    let e = t.elapsed();
    println!("{n} sends in {:?}: {:.0}/s", e, n as f64 / e.as_secs_f64());
}
