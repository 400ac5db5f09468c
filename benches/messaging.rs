//! `cargo bench --bench messaging`: Dingo 1:1 messaging against two bare libp2p baselines on the
//! same machine and transport (TCP + Noise + Yamux on 127.0.0.1), so the results are ratios as
//! well as absolute numbers: request-response (a stream per request, the baseline) and
//! frames on one open stream (how Dingo's `/dingo/msg/2` carries requests). Prints a Markdown
//! table for BENCHMARKS.md.
//!
//! - latency: one message at a time, `send` until the recipient has decrypted and durably
//!   stored it (its `Message` event fires after the flush);
//! - throughput: 256-byte messages sent concurrently, until every one is acknowledged as
//!   durably stored by the recipient ("delivered");
//! - `dingo run`: start until listening, and idle RSS after 3 s.
//!
//! Environment: `BENCH_LATENCY_N` (default 10000), `BENCH_THROUGHPUT_N` (default 20000).

/// The allocator the `dingo` binary uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use dingo_node::{Home, NetConfig, Node, NodeEvent};
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol, Swarm};
use std::time::{Duration, Instant};

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

struct Summary {
    p50: f64,
    p99: f64,
}

fn summarize(mut v: Vec<Duration>) -> Summary {
    v.sort();
    Summary { p50: pct(&v, 0.5), p99: pct(&v, 0.99) }
}

// ---- bare libp2p baseline ----

/// Length-prefixed raw bytes: the least a request-response protocol can do.
#[derive(Clone, Default)]
struct RawCodec;

async fn read_raw<T: futures::AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
    use futures::AsyncReadExt;
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_raw<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, b: &[u8]) -> std::io::Result<()> {
    use futures::AsyncWriteExt;
    io.write_all(&(b.len() as u32).to_be_bytes()).await?;
    io.write_all(b).await?;
    io.close().await
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;
    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_raw(io).await
    }
    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_raw(io).await
    }
    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> std::io::Result<()> {
        write_raw(io, &r).await
    }
    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> std::io::Result<()> {
        write_raw(io, &r).await
    }
}

type Bare = request_response::Behaviour<RawCodec>;

fn bare_swarm() -> Swarm<Bare> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(StreamProtocol::new("/bench/1"), ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| {
            // The fastest set-up libp2p offers for a stream per request (the protocol choice sent
            // with the first bytes), so this baseline is as strong as it gets. Dingo's long-lived
            // streams wait the round trip instead, once per link (dingo-net).
            c.with_idle_connection_timeout(Duration::from_secs(60))
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build()
}

/// Starts `swarm` listening on 127.0.0.1 (a free port) and returns the address.
async fn listen_on_loopback<B: libp2p::swarm::NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    }
}

async fn bare_baseline(n: usize) -> Summary {
    let mut server = bare_swarm();
    let addr = listen_on_loopback(&mut server).await;
    let server_id = *server.local_peer_id();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            }) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().send_response(channel, request);
            }
        }
    });
    let mut client = bare_swarm();
    client.dial(addr.clone()).expect("dial");
    client.add_peer_address(server_id, addr);
    let payload = vec![7u8; 256];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let start = Instant::now();
        client.behaviour_mut().send_request(&server_id, payload.clone());
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { .. },
                    ..
                }) => break,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                    panic!("{error}")
                }
                _ => {}
            }
        }
        if i >= 100 {
            samples.push(start.elapsed());
        }
    }
    summarize(samples)
}

/// Round trips of 256-byte frames on one open stream, echoed by a task on the other side: the
/// transport Dingo's requests use, without Dingo.
async fn bare_stream_baseline(n: usize) -> Summary {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let protocol = StreamProtocol::new("/bench/stream/1");
    let swarm = || {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .expect("tcp")
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .expect("behaviour")
            // As dingo-net: the stream is opened once, with libp2p's default negotiation.
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    };
    let mut server = swarm();
    let addr = listen_on_loopback(&mut server).await;
    let server_id = *server.local_peer_id();
    let mut incoming = server.behaviour().new_control().accept(protocol.clone()).expect("accept");
    tokio::spawn(async move { while server.next().await.is_some() {} });
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                while let Ok(frame) = read_raw(&mut reader).await {
                    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
                    out.extend_from_slice(&frame);
                    if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut client = swarm();
    let mut control = client.behaviour().new_control();
    client.dial(addr).expect("dial");
    while !matches!(client.select_next_some().await, SwarmEvent::ConnectionEstablished { .. }) {}
    tokio::spawn(async move { while client.next().await.is_some() {} });
    let stream = control.open_stream(server_id, protocol).await.expect("open");
    let (mut reader, mut writer) = stream.split();
    let mut frame = 256u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[7u8; 256]);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let start = Instant::now();
        writer.write_all(&frame).await.expect("write");
        writer.flush().await.expect("flush");
        read_raw(&mut reader).await.expect("read");
        if i >= 100 {
            samples.push(start.elapsed());
        }
    }
    summarize(samples)
}

// ---- Dingo ----

async fn pair(dir: &std::path::Path) -> (Node, Node) {
    let mut nodes = Vec::new();
    for name in ["alice", "bob"] {
        let home = Home::new(dir.join(name));
        Node::init(&home, name, None).expect("init");
        let node = Node::open(&home, None).expect("open");
        node.start_network(NetConfig::loopback(), vec![]).await.expect("net");
        nodes.push(node);
    }
    let bob = nodes.pop().expect("bob");
    let alice = nodes.pop().expect("alice");
    alice.add_contact(&bob.id().invite, None).await.expect("add");
    bob.add_contact(&alice.id().invite, None).await.expect("add");
    (alice, bob)
}

async fn dingo_latency(n: usize) -> Summary {
    let dir = tempfile::tempdir().expect("tmp");
    let (alice, bob) = pair(dir.path()).await;
    let mut at_bob = bob.subscribe();
    let text = "x".repeat(256);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let start = Instant::now();
        let id = alice.send("bob", &text).await.expect("send").id;
        loop {
            match at_bob.recv().await.expect("event") {
                NodeEvent::Message { id: got, .. } if got == id => break,
                _ => {}
            }
        }
        if i >= 100 {
            samples.push(start.elapsed());
        }
    }
    alice.shutdown().await.expect("shutdown");
    bob.shutdown().await.expect("shutdown");
    summarize(samples)
}

async fn dingo_throughput(n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let (alice, bob) = pair(dir.path()).await;
    alice.send("bob", "warm-up").await.expect("send");
    let mut delivered = alice.subscribe();
    let text = "y".repeat(256);
    let start = Instant::now();
    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..n {
                let (a, t) = (alice.clone(), text.clone());
                tasks.spawn(async move { a.send("bob", &t).await.expect("send") });
                while tasks.len() >= 512 {
                    tasks.join_next().await;
                }
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let mut count = 0;
    while count < n {
        match delivered.recv().await {
            Ok(NodeEvent::Delivered { .. }) => count += 1,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => panic!("lagged {k}"),
            Err(e) => panic!("{e}"),
        }
    }
    let elapsed = start.elapsed();
    sender.await.expect("sender");
    let _ = bob;
    n as f64 / elapsed.as_secs_f64()
}

fn run_node_startup_and_rss() -> (f64, u64) {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tmp");
    let bin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/dingo");
    let home = dir.path().join("n");
    let ok = std::process::Command::new(&bin)
        .arg("--home")
        .arg(&home)
        .args(["init", "--name", "n"])
        .output()
        .expect("init");
    assert!(ok.status.success(), "build the release binary first: cargo build --release");
    let start = Instant::now();
    let mut child = std::process::Command::new(&bin)
        .arg("--home")
        .arg(&home)
        .args(["run", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut startup = 0.0;
    for line in lines.by_ref() {
        if line.expect("line").contains("listening on") {
            startup = start.elapsed().as_secs_f64() * 1e3;
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    (startup, rss_kb)
}

/// What this machine allows at all: one fsync, one durable store write, one Ed25519 sign and
/// verify. Dingo's latency floor is two durable writes (sender, recipient) plus a round trip.
fn machine_floor() -> (f64, [f64; 2], f64, f64) {
    use ed25519_dalek::{Signer, SigningKey};
    let dir = tempfile::tempdir().expect("tmp");
    let f = std::fs::File::create(dir.path().join("f")).expect("file");
    let n = 500;
    let start = Instant::now();
    for _ in 0..n {
        use std::io::Write;
        (&f).write_all(b"x").expect("write");
        f.sync_data().expect("fsync");
    }
    let fsync_ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    // sled's own flush ends in `sync_file_range` (not power-safe); dingo-store's flush is a
    // `pwrite` of its write-ahead log and an `fdatasync` (crates/dingo-store/src/wal.rs).
    let db = sled::Config::new().path(dir.path().join("db")).cache_capacity(16 << 20).open().expect("sled");
    let start = Instant::now();
    for k in 0..n {
        db.insert((k as u64).to_be_bytes(), vec![0u8; 400]).expect("insert");
        db.flush().expect("flush");
    }
    let sled_flush_ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    let key = dingo_crypto::at_rest::StorageKey::new(dingo_crypto::Secret32::from_bytes([7; 32]));
    let store = dingo_store::Store::open(&dir.path().join("store"), key).expect("store");
    let start = Instant::now();
    for k in 0..n {
        let mut b = dingo_store::Batch::default();
        store.put(&mut b, dingo_store::Table::Messages, &(k as u64).to_be_bytes(), &vec![0u8; 400]);
        store.apply(b).expect("apply");
        store.flush().expect("flush");
    }
    let store_ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    let sled_ms = [sled_flush_ms, store_ms];
    let key = SigningKey::from_bytes(&[7; 32]);
    let msg = [1u8; 600];
    let start = Instant::now();
    for _ in 0..2000 {
        std::hint::black_box(key.sign(&msg));
    }
    let sign_us = start.elapsed().as_secs_f64() * 1e6 / 2000.0;
    let sig = key.sign(&msg);
    let vk = key.verifying_key();
    let start = Instant::now();
    for _ in 0..2000 {
        vk.verify_strict(&msg, &sig).expect("verify");
    }
    let verify_us = start.elapsed().as_secs_f64() * 1e6 / 2000.0;
    (fsync_ms, sled_ms, sign_us, verify_us)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let latency_n = env_n("BENCH_LATENCY_N", 10_000);
    let throughput_n = env_n("BENCH_THROUGHPUT_N", 20_000);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let bare = rt.block_on(bare_baseline(latency_n));
    let bare_stream = rt.block_on(bare_stream_baseline(latency_n));
    let dingo = rt.block_on(dingo_latency(latency_n));
    let tput = rt.block_on(dingo_throughput(throughput_n));
    let (startup, rss) = run_node_startup_and_rss();
    let (fsync_ms, sled_ms, sign_us, verify_us) = machine_floor();
    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!(
        "| bare libp2p request/response RTT, 256 B (n={latency_n}) | p50 {:.3} ms, p99 {:.3} ms | baseline |",
        bare.p50, bare.p99
    );
    println!(
        "| bare libp2p frames on one open stream RTT, 256 B (n={latency_n}) | p50 {:.3} ms, p99 {:.3} ms | baseline |",
        bare_stream.p50, bare_stream.p99
    );
    println!("| Dingo send → decrypted + durably stored at recipient (n={latency_n}) | p50 {:.3} ms, p99 {:.3} ms | p50 ≤ 0.5 ms, p99 ≤ 2 ms |", dingo.p50, dingo.p99);
    println!("| Dingo p50 / bare request/response p50 | {:.1}× | ≤ 3× |", dingo.p50 / bare.p50);
    println!("| Dingo p50 / bare open-stream p50 | {:.1}× | |", dingo.p50 / bare_stream.p50);
    println!("| sustained 1:1 throughput, 256 B, durable + delivery receipts (n={throughput_n}) | {tput:.0} msg/s | ≥ 10,000 msg/s |");
    println!("| `dingo run` start → listening | {startup:.0} ms | ≤ 200 ms |");
    println!("| `dingo run` idle RSS after 3 s | {:.1} MB | ≤ 30 MB |", rss as f64 / 1024.0);
    println!("| machine: 1-byte write + fdatasync | {fsync_ms:.3} ms | (floor) |");
    println!(
        "| machine: one sled insert + flush (`sync_file_range`), 400 B | {:.3} ms | (floor, not power-safe) |",
        sled_ms[0]
    );
    println!(
        "| machine: one durable dingo-store write (sealed, logged, fdatasync), 400 B | {:.3} ms | (floor) |",
        sled_ms[1]
    );
    println!(
        "| machine: Ed25519 sign / verify_strict, 600 B | {sign_us:.0} µs / {verify_us:.0} µs | (floor) |"
    );
}
