//! Shared files between in-process nodes over 127.0.0.1: a 100 MB fetch interrupted half way
//! and resumed, a peer serving corrupted chunks caught and routed around, a damaged copy
//! repaired, versions, and a stranger refused by the chunk server.

use crate::support::*;
use dingo_net::{Config, Net};
use dingo_node::{Home, NetConfig, Node, NodeError};
use dingo_types::file::{decode_chunk_answer_head, encode_chunk_request, CHUNK_ANSWER_HEAD, FILE_PROTOCOL};
use futures::{AsyncReadExt, AsyncWriteExt};
use std::path::Path;

/// `len` bytes that do not compress or repeat (an xorshift stream), written to `path`.
fn write_noise(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    std::fs::write(path, out).expect("write test file");
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("read a") == std::fs::read(b).expect("read b")
}

async fn file_id(node: &Node, name: &str) -> String {
    eventually("the file message", async || node.files().await.ok()?.into_iter().find(|f| f.name == name))
        .await
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_file_interrupted_half_way_resumes_and_arrives_intact() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    befriend(&alice, &bob).await;
    let src = dir.path().join("big.bin");
    write_noise(&src, 100 << 20, 7);
    let shared = alice.file_share("bob", &src).await.expect("share");
    assert_eq!((shared.version, shared.chunks, shared.chunks_here), (1, 100, 100));
    let id = file_id(&bob, "big.bin").await;
    assert_eq!(id, shared.id);
    let out = dir.path().join("big-copy.bin");
    let started = bob.file_get_start(&id, &out).await.expect("start");
    // Stop bob's node part way through.
    let seen = eventually("part of the file", async || {
        let t = bob.transfer(&started.transfer)?;
        (t.done_bytes >= 30 << 20 || t.state != "running").then_some(t)
    })
    .await;
    assert_eq!(seen.state, "running", "the fetch ended before it could be interrupted: {seen:?}");
    let bob_home = Home::new(dir.path().join("bob"));
    bob.shutdown().await.expect("stop");
    let stopped = eventually("the fetch to fail", async || {
        bob.transfer(&started.transfer).filter(|t| t.state != "running")
    })
    .await;
    assert_eq!(stopped.state, "failed");
    assert!(!out.exists(), "no partial file under the real name");
    drop(bob);
    // Restarted, bob fetches only what it lacks.
    let bob = Node::open(&bob_home, None).expect("reopen");
    let alice_addr = alice.id().addrs[0].parse().expect("addr");
    bob.start_network(NetConfig::loopback(), vec![alice_addr]).await.expect("net");
    let alice_peer = alice.id().device_id;
    eventually("bob to reach alice", async || {
        bob.peers().await.ok()?.into_iter().find(|p| p.device_id == alice_peer && p.connected).map(|_| ())
    })
    .await;
    let done = bob.file_get(&id, &out).await.expect("resume");
    assert_eq!(done.state, "done");
    assert!(done.chunks_reused > 0 && done.chunks_fetched > 0, "{done:?}");
    assert_eq!(done.chunks_reused + done.chunks_fetched, 100, "{done:?}");
    assert_eq!(done.chunks_rejected, 0);
    assert!(same_file(&src, &out), "the fetched file differs");
    // Bob can now open it without the network, and holds every chunk.
    let listed = bob.files().await.expect("files");
    assert_eq!(listed[0].chunks_here, 100);
    for n in [alice, bob] {
        n.shutdown().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_chunk_from_one_peer_is_fetched_again_from_another_and_versions_are_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob, carol] = team_of(dir.path(), ["alice", "bob", "carol"]).await;
    let src = dir.path().join("plan.bin");
    write_noise(&src, 40 << 20, 11);
    let v1 = alice.file_share("#general", &src).await.expect("share");
    // Bob fetches it whole; then every chunk alice (the sharer) stores goes bad on her disk.
    let id = file_id(&bob, "plan.bin").await;
    assert_eq!(id, v1.id);
    let bob_copy = dir.path().join("bob-plan.bin");
    bob.file_get(&id, &bob_copy).await.expect("bob gets it");
    let mut damaged = 0;
    for entry in walk(&dir.path().join("alice").join("chunks")) {
        let mut bytes = std::fs::read(&entry).expect("chunk");
        bytes[100] ^= 0x55;
        std::fs::write(&entry, bytes).expect("damage");
        damaged += 1;
    }
    assert_eq!(damaged, 40);
    // Bob kept no second, sealed copy: his fetched file is the copy he serves from.
    assert!(
        !dir.path().join("bob").join("chunks").exists()
            || walk(&dir.path().join("bob").join("chunks")).is_empty()
    );
    // Carol asks both; alice's chunks fail their hash and come from bob's copy instead.
    let bob_addr = bob.id().addrs[0].parse().expect("addr");
    carol.net().expect("net").dial(bob_addr).await.expect("dial bob");
    let alice_addr = alice.id().addrs[0].parse().expect("addr");
    carol.net().expect("net").dial(alice_addr).await.expect("dial alice");
    let id = file_id(&carol, "plan.bin").await;
    let out = dir.path().join("carol-plan.bin");
    let done = carol.file_get(&id, &out).await.expect("carol gets it");
    assert!(done.chunks_rejected >= 1, "alice's bad chunk was not caught: {done:?}");
    assert_eq!(done.from_peers.get(&alice.id().device_id), None, "nothing kept from alice: {done:?}");
    assert_eq!(done.from_peers.get(&bob.id().device_id), Some(&40));
    assert!(same_file(&src, &out));
    // Bob's copy is damaged in chunk 3: fetching again reuses the 39 intact chunks and takes
    // chunk 3 from the network (bob no longer serves it: it is not the chunk any more).
    let mut bytes = std::fs::read(&bob_copy).expect("copy");
    bytes[(3 << 20) + 100] ^= 0x55;
    std::fs::write(&bob_copy, bytes).expect("damage");
    let again = bob.file_get(&id, &dir.path().join("bob-again.bin")).await.expect("bob again");
    assert_eq!((again.chunks_reused, again.chunks_fetched), (39, 1), "{again:?}");
    assert!(same_file(&src, &dir.path().join("bob-again.bin")));
    // Alice's damaged chunks are found when she fetches her own file, and repaired.
    let mine = alice.file_get(&id, &dir.path().join("alice-again.bin")).await.expect("alice again");
    assert_eq!((mine.chunks_reused, mine.chunks_fetched), (0, 40), "{mine:?}");
    assert!(same_file(&src, &dir.path().join("alice-again.bin")));
    // Sharing the name again makes version 2, for everyone in the channel.
    write_noise(&src, 1000, 12);
    let v2 = alice.file_share("#general", &src).await.expect("share v2");
    assert_eq!(v2.version, 2);
    let versions = eventually("bob to see both versions", async || {
        bob.file_versions("plan.bin").await.ok().filter(|v| v.len() == 2)
    })
    .await;
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    assert!(versions.iter().all(|v| v.from == "alice" && v.place == "#general"));
    // By name, a fetch takes the newest version.
    let latest = bob.file_get("plan.bin", &dir.path().join("latest.bin")).await.expect("latest");
    assert_eq!(latest.file_id.as_deref(), Some(v2.id.as_str()));
    assert!(same_file(&src, &dir.path().join("latest.bin")));
    // The chat shows the file like a message.
    let msgs = carol.messages("#general").await.expect("messages");
    assert!(msgs.iter().any(|m| m.text.contains("plan.bin")));
    for n in [alice, bob, carol] {
        n.shutdown().await.expect("stop");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_no_chunks_and_bad_requests_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    befriend(&alice, &bob).await;
    let src = dir.path().join("secret.txt");
    std::fs::write(&src, "canary 7f3a").expect("write");
    alice.file_share("bob", &src).await.expect("share");
    // A stranger who somehow knows a chunk's hash asks alice for it: the stream is dropped.
    let chunks = walk(&dir.path().join("alice").join("chunks"));
    let hash: [u8; 32] = {
        let p = &chunks[0];
        let hex = format!(
            "{}{}",
            p.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).expect("dir"),
            p.file_name().and_then(|n| n.to_str()).expect("name")
        );
        let raw: Vec<u8> =
            (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
        raw.try_into().expect("32")
    };
    let (stranger, _events) =
        Net::spawn(libp2p::identity::Keypair::generate_ed25519(), Config::loopback()).await.expect("net");
    stranger.dial(alice.id().addrs[0].parse().expect("addr")).await.expect("dial");
    let peer = alice.id().device_id.parse().expect("peer");
    let got = async {
        let mut s = stranger.open_stream(peer, FILE_PROTOCOL).await.ok()?;
        s.write_all(&encode_chunk_request(&[hash])).await.ok()?;
        s.flush().await.ok()?;
        let mut head = [0u8; CHUNK_ANSWER_HEAD];
        s.read_exact(&mut head).await.ok()?;
        decode_chunk_answer_head(&head).ok()
    }
    .await;
    assert_eq!(got, None, "a stranger was served");
    // Bad input from the user gets clear errors.
    let missing = dir.path().join("nope.txt");
    assert!(matches!(alice.file_share("bob", &missing).await, Err(NodeError::Io { .. })));
    assert!(matches!(alice.file_share("nobody", &src).await, Err(NodeError::UnknownTarget(_))));
    assert!(matches!(alice.file_share("#nowhere", &src).await, Err(NodeError::NoTeam)));
    assert!(matches!(bob.file_get("ffff", dir.path()).await, Err(NodeError::UnknownFile(_))));
    // Into a directory that already has the name, a fetch refuses to overwrite.
    let id = file_id(&bob, "secret.txt").await;
    std::fs::write(dir.path().join("secret.txt.bob"), "x").expect("w");
    let into = dir.path().join("bobdir");
    std::fs::create_dir(&into).expect("mkdir");
    std::fs::write(into.join("secret.txt"), "mine").expect("w");
    assert!(matches!(bob.file_get(&id, &into).await, Err(NodeError::Io { .. })));
    assert_eq!(std::fs::read_to_string(into.join("secret.txt")).expect("r"), "mine");
    bob.file_get(&id, &into.join("copy.txt")).await.expect("get");
    assert_eq!(std::fs::read_to_string(into.join("copy.txt")).expect("r"), "canary 7f3a");
    stranger.shutdown().await;
    for n in [alice, bob] {
        n.shutdown().await.expect("stop");
    }
}
