//! `cargo bench --bench files`: encrypted file transfer between two real nodes on 127.0.0.1,
//! beside a bare libp2p stream (same TCP + Noise + Yamux stack, same process) moving the same
//! number of bytes, in the same run.
//!
//! - share: `file_share` reads the file, seals each chunk once and stores it (durably);
//! - fetch: `file_get` on the other node, from its call until the file is complete on disk
//!   (chunks fetched over `/dingo/file/1`, hash-checked, stored, opened, written);
//! - bare stream: one stream, 1 MiB writes, until the reader has every byte.
//!
//! `BENCH_FILE_MB` (default 100) sets the size; `BENCH_FILE_RUNS` (default 5) how many times
//! each is measured. Prints the median and best of each with the process CPU time it took
//! (both nodes are in this process), as a Markdown table for BENCHMARKS.md.

mod support;
use dingo_net::{Config, Net};
use dingo_node::{Home, NetConfig, Node};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{cpu_time, wait_until};

/// Wall and process CPU time of one transfer.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

/// The median and the best of some samples (by wall time); every sample goes to stderr.
fn median_and_best(what: &str, mut v: Vec<Sample>) -> (Sample, Sample) {
    let all: Vec<String> = v
        .iter()
        .map(|s| format!("{:.0}/{:.0}", s.wall.as_secs_f64() * 1e3, s.cpu.as_secs_f64() * 1e3))
        .collect();
    eprintln!("{what} runs, wall/CPU ms: {}", all.join(" "));
    v.sort_by_key(|s| s.wall);
    (v[v.len() / 2], v[0])
}

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

/// (share, fetch) samples of `runs` fresh shares of the same bytes.
async fn dingo_transfer(size: usize, runs: usize) -> (Vec<Sample>, Vec<Sample>) {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = node(dir.path(), "alice").await;
    let bob = node(dir.path(), "bob").await;
    alice.add_contact(&bob.id().invite, None).await.expect("contact");
    bob.add_contact(&alice.id().invite, None).await.expect("contact");
    let src = dir.path().join("payload.bin");
    write_noise(&src, size);
    let (mut shares, mut fetches) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let (t0, c0) = (Instant::now(), cpu_time());
        let shared = alice.file_share("bob", &src).await.expect("share");
        shares.push(Sample { wall: t0.elapsed(), cpu: cpu_time() - c0 });
        wait_until("bob hears of the file", async || {
            bob.files().await.expect("files").iter().any(|f| f.id == shared.id)
        })
        .await;
        let out = dir.path().join(format!("copy-{run}.bin"));
        let (t0, c0) = (Instant::now(), cpu_time());
        let done = bob.file_get(&shared.id, &out).await.expect("get");
        fetches.push(Sample { wall: t0.elapsed(), cpu: cpu_time() - c0 });
        assert_eq!(done.chunks_fetched as usize, size.div_ceil(1 << 20));
        assert_eq!(std::fs::metadata(&out).expect("out").len(), size as u64);
        std::fs::remove_file(&out).expect("rm");
    }
    for n in [alice, bob] {
        n.shutdown().await.expect("stop");
    }
    (shares, fetches)
}

/// Samples of a bare libp2p stream moving `size` bytes.
async fn bare_stream(size: usize, runs: usize) -> Vec<Sample> {
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
            times.push((Instant::now(), cpu_time()));
            if times.len() == runs {
                break;
            }
        }
        times
    });
    let chunk = vec![7u8; 1 << 20];
    let mut starts = Vec::new();
    for _ in 0..runs {
        starts.push((Instant::now(), cpu_time()));
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
    starts.iter().zip(&ends).map(|(s, e)| Sample { wall: e.0 - s.0, cpu: e.1 - s.1 }).collect()
}

fn main() {
    let Some(rt) = support::runtime() else { return };
    let mb: usize = std::env::var("BENCH_FILE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let runs: usize = std::env::var("BENCH_FILE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let size = mb << 20;
    let bare = median_and_best("bare", rt.block_on(bare_stream(size, runs)));
    let (share, fetch) = rt.block_on(dingo_transfer(size, runs));
    let (share, fetch) = (median_and_best("share", share), median_and_best("fetch", fetch));
    let rate = |s: Sample| size as f64 / s.wall.as_secs_f64() / 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |s: Sample, b: Sample| 100.0 * b.wall.as_secs_f64() / s.wall.as_secs_f64();
    println!("| {mb} MiB, {runs} runs | median: time, MB/s, CPU | best: time, MB/s, CPU |");
    println!("|---|---|---|");
    let row = |what: &str, (m, b): (Sample, Sample), vs: Option<(Sample, Sample)>| {
        let of = |s: Sample, base: Option<Sample>| {
            base.map(|base| format!(" ({:.0}% of the baseline)", pct(s, base))).unwrap_or_default()
        };
        println!(
            "| {what} | {:.0} ms, {:.0} MB/s{}, {:.0} ms | {:.0} ms, {:.0} MB/s{}, {:.0} ms |",
            ms(m.wall),
            rate(m),
            of(m, vs.map(|v| v.0)),
            ms(m.cpu),
            ms(b.wall),
            rate(b),
            of(b, vs.map(|v| v.1)),
            ms(b.cpu)
        );
    };
    row("bare libp2p stream (baseline)", bare, None);
    row("Dingo fetch (encrypted chunks, verified, on disk)", fetch, Some(bare));
    row("Dingo share (seal once, store durably)", share, None);
}
