//! `cargo bench --bench files`: encrypted file transfer between two real nodes on 127.0.0.1,
//! beside a bare libp2p stream (same TCP + Noise + Yamux stack, same process) moving the same
//! number of bytes, in the same run.
//!
//! - share: `file_share` reads the file, seals each chunk once and stores it (durably);
//! - fetch: `file_get` on the other node, from its call until the file is complete on disk
//!   (chunks fetched over `/dingo/file/1`, hash-checked, stored, opened, written, fsynced);
//! - bare stream: one stream, 1 MiB writes, until the reader has every byte.
//!
//! `BENCH_FILE_MB` (default 100) sets the size; each figure is the best of `BENCH_FILE_RUNS`
//! (default 3). Prints a Markdown table for BENCHMARKS.md.

use dingo_net::{Config, Net};
use dingo_node::{Home, NetConfig, Node};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use std::path::Path;
use std::time::{Duration, Instant};

fn write_noise(path: &Path, len: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    std::fs::write(path, out).expect("write");
}

async fn node(dir: &Path, name: &str) -> Node {
    let home = Home::new(dir.join(name));
    Node::init(&home, name, None).expect("init");
    let n = Node::open(&home, None).expect("open");
    n.start_network(NetConfig::loopback(), vec![]).await.expect("net");
    n
}

/// Best (share, fetch) times over `runs` fresh shares of the same bytes.
async fn dingo_transfer(size: usize, runs: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = node(dir.path(), "alice").await;
    let bob = node(dir.path(), "bob").await;
    alice.add_contact(&bob.id().invite, None).await.expect("contact");
    bob.add_contact(&alice.id().invite, None).await.expect("contact");
    let src = dir.path().join("payload.bin");
    write_noise(&src, size);
    let (mut best_share, mut best_fetch) = (Duration::MAX, Duration::MAX);
    for run in 0..runs {
        let t0 = Instant::now();
        let shared = alice.file_share("bob", &src).await.expect("share");
        best_share = best_share.min(t0.elapsed());
        while !bob.files().await.expect("files").iter().any(|f| f.id == shared.id) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let out = dir.path().join(format!("copy-{run}.bin"));
        let t0 = Instant::now();
        let done = bob.file_get(&shared.id, &out).await.expect("get");
        best_fetch = best_fetch.min(t0.elapsed());
        assert_eq!(done.chunks_fetched as usize, size.div_ceil(1 << 20));
        assert_eq!(std::fs::metadata(&out).expect("out").len(), size as u64);
        std::fs::remove_file(&out).expect("rm");
    }
    for n in [alice, bob] {
        n.shutdown().await.expect("stop");
    }
    (best_share, best_fetch)
}

/// Best time for a bare libp2p stream to move `size` bytes.
async fn bare_stream(size: usize, runs: usize) -> Duration {
    const PROTO: &str = "/dingo-bench/raw/1";
    let (a, _ea) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), Config::loopback()).await.expect("a");
    let (b, _eb) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), Config::loopback()).await.expect("b");
    let mut incoming = b.accept_streams(PROTO).expect("accept");
    a.dial(b.listen_addrs().await.expect("addrs")[0].clone()).await.expect("dial");
    let reader = tokio::spawn(async move {
        let mut times = Vec::new();
        while let Some((_, mut s)) = incoming.next().await {
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0;
            while got < size {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "stream ended early");
                got += n;
            }
            times.push(Instant::now());
            if times.len() == runs {
                break;
            }
        }
        times
    });
    let chunk = vec![7u8; 1 << 20];
    let mut starts = Vec::new();
    for _ in 0..runs {
        starts.push(Instant::now());
        let mut s = a.open_stream(b.local_peer_id(), PROTO).await.expect("open");
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            s.write_all(&chunk[..n]).await.expect("write");
            sent += n;
        }
        s.flush().await.expect("flush");
        // Let the reader finish before the next run starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = s.close().await;
    }
    let ends = reader.await.expect("reader");
    a.shutdown().await;
    b.shutdown().await;
    starts.iter().zip(&ends).map(|(s, e)| *e - *s).min().unwrap_or(Duration::MAX)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mb: usize = std::env::var("BENCH_FILE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let runs: usize = std::env::var("BENCH_FILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let size = mb << 20;
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let bare = rt.block_on(bare_stream(size, runs));
    let (share, fetch) = rt.block_on(dingo_transfer(size, runs));
    let rate = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    println!("| {mb} MiB, best of {runs} | time | MB/s |");
    println!("|---|---|---|");
    println!("| bare libp2p stream (baseline) | {:.0} ms | {:.0} |", bare.as_secs_f64() * 1e3, rate(bare));
    println!(
        "| Dingo fetch (encrypted chunks, verified, on disk) | {:.0} ms | {:.0} ({:.0}% of the baseline) |",
        fetch.as_secs_f64() * 1e3,
        rate(fetch),
        100.0 * bare.as_secs_f64() / fetch.as_secs_f64()
    );
    println!(
        "| Dingo share (seal once, store durably) | {:.0} ms | {:.0} |",
        share.as_secs_f64() * 1e3,
        rate(share)
    );
}
