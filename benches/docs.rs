//! `cargo bench --bench docs`: Dingo's automerge documents beside plain automerge doing the same
//! work in the same run (DESIGN.md §6, issue 5's speed targets).
//!
//! - editing trace: the automerge-perf trace (`../shared/data/editing-traces/automerge-paper
//!   .json.gz`, ~260,000 character edits) applied to a Dingo `TextDoc` and to a plain
//!   `AutoCommit` text, each committed once; then saved and loaded; the result is checked
//!   against the trace's `endContent`;
//! - concurrent trace: `friendsforever` (two people typing at once, each transaction on the
//!   document as its parents left it), replayed on plain automerge and on Dingo `TextDoc`s
//!   written by two devices; every replica must converge to the trace's `endContent`.
//!
//! Task boards are measured between real nodes in `benches/work.rs`.

/// The allocator the `dingo` binary uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ROOT};
use dingo_docs::TextDoc;
use dingo_types::DeviceKey;
use std::io::Read;
use std::time::Instant;

#[derive(serde::Deserialize)]
struct Trace {
    #[serde(rename = "endContent")]
    end: String,
    txns: Vec<Txn>,
}

#[derive(serde::Deserialize)]
struct Txn {
    patches: Vec<(usize, usize, String)>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn trace() -> Trace {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/editing-traces/automerge-paper.json.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut json = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut json).expect("gunzip");
    serde_json::from_str(&json).expect("trace JSON")
}

fn editing_trace() {
    let t = trace();
    let edits: usize = t.txns.iter().map(|x| x.patches.len()).sum();
    // Plain automerge.
    let start = Instant::now();
    let mut plain = AutoCommit::new();
    let text = plain.put_object(ROOT, "body", ObjType::Text).expect("text");
    for txn in &t.txns {
        for (pos, del, ins) in &txn.patches {
            plain.splice_text(&text, *pos, *del as isize, ins).expect("splice");
        }
    }
    plain.commit();
    let plain_apply = ms(start);
    let start = Instant::now();
    let plain_bytes = plain.save();
    let plain_save = ms(start);
    let start = Instant::now();
    let plain_loaded = AutoCommit::load(&plain_bytes).expect("load");
    let plain_load = ms(start);
    let (_, body) = plain_loaded.get(ROOT, "body").expect("get").expect("body");
    assert_eq!(plain_loaded.text(&body).expect("text"), t.end);
    // Dingo.
    let me = DeviceKey([1; 32]);
    let start = Instant::now();
    let mut doc = TextDoc::create(&me, "paper", 0).expect("create");
    for txn in &t.txns {
        for (pos, del, ins) in &txn.patches {
            doc.splice(*pos, *del, ins).expect("splice");
        }
    }
    doc.commit("the paper", 1);
    let dingo_apply = ms(start);
    let start = Instant::now();
    let bytes = doc.replica().save();
    let dingo_save = ms(start);
    let start = Instant::now();
    let loaded = TextDoc::load(&bytes, &me).expect("load");
    let dingo_load = ms(start);
    assert_eq!(loaded.body().expect("body"), t.end);
    println!("| editing trace ({edits} edits) | apply | save | load | size |");
    println!("|---|---|---|---|---|");
    println!(
        "| plain automerge | {plain_apply:.0} ms | {plain_save:.0} ms | {plain_load:.0} ms | {} KB |",
        plain_bytes.len() / 1024
    );
    println!(
        "| Dingo `TextDoc` | {dingo_apply:.0} ms | {dingo_save:.0} ms | {dingo_load:.0} ms | {} KB |",
        bytes.len() / 1024
    );
    println!();
}

#[derive(serde::Deserialize)]
struct ConcurrentTrace {
    #[serde(rename = "endContent")]
    end: String,
    txns: Vec<ConcurrentTxn>,
}

#[derive(serde::Deserialize)]
struct ConcurrentTxn {
    parents: Vec<usize>,
    agent: usize,
    patches: Vec<(usize, usize, String)>,
}

/// The concurrent trace (`friendsforever`, two people typing at once): each transaction is
/// typed by its agent on the document as its parents left it. Each agent keeps a replica; before
/// typing it applies exactly the other's changes its transaction's parents had seen (tracked
/// with version vectors), or, if it is ahead of them, forks at the parents' heads. At the end
/// every replica applies everything. Returns the time and each agent's final text.
#[allow(clippy::too_many_arguments)]
fn concurrent<D: Clone>(
    t: &ConcurrentTrace,
    genesis: D,
    for_agent: impl Fn(&D, usize) -> D,
    fork: impl Fn(&mut D, &[automerge::ChangeHash], usize) -> D,
    splice: impl Fn(&mut D, usize, usize, &str),
    commit: impl Fn(&mut D) -> Vec<u8>,
    apply: impl Fn(&mut D, &[Vec<u8>]),
    text: impl Fn(&D) -> String,
) -> (f64, Vec<String>) {
    let start = Instant::now();
    let agents = t.txns.iter().map(|x| x.agent).max().unwrap_or(0) + 1;
    let mut replicas: Vec<D> = (0..agents).map(|a| for_agent(&genesis, a)).collect();
    let mut seen: Vec<Vec<Option<usize>>> = vec![vec![None; agents]; agents];
    let mut by_agent: Vec<Vec<usize>> = vec![Vec::new(); agents];
    let mut clocks: Vec<Vec<Option<usize>>> = Vec::with_capacity(t.txns.len());
    let mut changes: Vec<Vec<u8>> = Vec::with_capacity(t.txns.len());
    let mut hashes: Vec<automerge::ChangeHash> = Vec::with_capacity(t.txns.len());
    let missing = |from: &[Option<usize>], to: &[Option<usize>], by_agent: &[Vec<usize>]| {
        let mut idx: Vec<usize> = Vec::new();
        for (b, list) in by_agent.iter().enumerate() {
            idx.extend(list.iter().filter(|i| Some(**i) > from[b] && Some(**i) <= to[b]));
        }
        idx.sort_unstable();
        idx
    };
    for (i, txn) in t.txns.iter().enumerate() {
        let mut want = vec![None; agents];
        for p in &txn.parents {
            for (w, c) in want.iter_mut().zip(&clocks[*p]) {
                *w = (*w).max(*c);
            }
        }
        let a = txn.agent;
        if seen[a].iter().zip(&want).all(|(h, w)| h <= w) {
            let idx = missing(&seen[a], &want, &by_agent);
            let batch: Vec<Vec<u8>> = idx.iter().map(|i| changes[*i].clone()).collect();
            if !batch.is_empty() {
                apply(&mut replicas[a], &batch);
            }
        } else {
            // The agent is ahead of its parents (never in friendsforever): rebuild everything
            // typed so far and fork at the parents' heads.
            let mut all = genesis.clone();
            apply(&mut all, &changes);
            let heads: Vec<automerge::ChangeHash> = txn.parents.iter().map(|p| hashes[*p]).collect();
            replicas[a] = fork(&mut all, &heads, a);
        }
        let r = &mut replicas[a];
        for (pos, del, ins) in &txn.patches {
            splice(r, *pos, *del, ins);
        }
        let change = commit(r);
        hashes.push(automerge::Change::from_bytes(change.clone()).expect("change").hash());
        changes.push(change);
        want[a] = Some(i);
        by_agent[a].push(i);
        seen[a] = want.clone();
        clocks.push(want);
    }
    let everything: Vec<Option<usize>> = by_agent.iter().map(|l| l.last().copied()).collect();
    for (a, r) in replicas.iter_mut().enumerate() {
        let idx = missing(&seen[a], &everything, &by_agent);
        let batch: Vec<Vec<u8>> = idx.iter().map(|i| changes[*i].clone()).collect();
        apply(r, &batch);
    }
    (ms(start), replicas.iter().map(text).collect())
}

fn concurrent_trace() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/editing-traces/friendsforever.json.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut json = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut json).expect("gunzip");
    let t: ConcurrentTrace = serde_json::from_str(&json).expect("trace JSON");
    let edits: usize = t.txns.iter().map(|x| x.patches.len()).sum();
    let actor = |a: usize| automerge::ActorId::from(vec![a as u8 + 1; 32]);
    // Plain automerge.
    let mut g = AutoCommit::new().with_actor(automerge::ActorId::from(vec![0xee; 32]));
    g.put_object(ROOT, "body", ObjType::Text).expect("text");
    g.commit();
    let body = |d: &AutoCommit| d.get(ROOT, "body").expect("get").expect("body").1;
    let (plain_ms, plain_texts) = concurrent(
        &t,
        g,
        |d, a| d.clone().with_actor(actor(a)),
        |d, h, a| d.fork_at(h).expect("fork").with_actor(actor(a)),
        |d, pos, del, ins| {
            let b = body(d);
            d.splice_text(&b, pos, del as isize, ins).expect("splice");
        },
        |d| {
            d.commit();
            d.get_last_local_change().expect("a change").raw_bytes().to_vec()
        },
        |d, changes| {
            let decoded = changes.iter().map(|c| automerge::Change::from_bytes(c.clone()).expect("change"));
            d.apply_changes(decoded.collect::<Vec<_>>()).expect("apply");
        },
        |d| d.text(body(d)).expect("text"),
    );
    // Dingo: text documents written by two devices; every change applied as a member's node
    // applies it (author-checked: only the two typists' devices may write).
    let device = |a: usize| DeviceKey([a as u8 + 1; 32]);
    let typists = [dingo_docs::actor_of(&device(0)), dingo_docs::actor_of(&device(1))];
    let genesis =
        <TextDoc as dingo_docs::SharedDoc>::genesis(&[0xee; 32], "friends", &device(0)).expect("genesis");
    let (dingo_ms, dingo_texts) = concurrent(
        &t,
        genesis,
        |d, a| {
            let mut r = d.clone();
            let heads = r.replica().heads();
            TextDoc::from_replica(r.replica().fork_at(&heads, &device(a)).expect("fork")).expect("text doc")
        },
        |d, h, a| TextDoc::from_replica(d.replica().fork_at(h, &device(a)).expect("fork")).expect("text doc"),
        |d, pos, del, ins| d.splice(pos, del, ins).expect("splice"),
        |d| {
            d.commit("typing", 1);
            d.replica().last_local_change().expect("a change")
        },
        |d, changes| d.replica().apply(changes, |x| typists.contains(x)).expect("apply"),
        |d| d.body().expect("body"),
    );
    for text in plain_texts.iter().chain(&dingo_texts) {
        assert_eq!(text, &t.end, "a replica did not converge to the trace's endContent");
    }
    println!("| concurrent trace friendsforever ({} txns, {edits} edits, 2 agents) | replay, merge both ways | converged to endContent |", t.txns.len());
    println!("|---|---|---|");
    println!("| plain automerge | {plain_ms:.0} ms | yes, both agents |");
    println!(
        "| Dingo `TextDoc` (changes applied with author binding) | {dingo_ms:.0} ms | yes, both agents |"
    );
    println!();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    editing_trace();
    concurrent_trace();
}
