//! `cargo bench --bench docs`: Dingo's automerge documents beside plain automerge doing the same
//! work in the same run (DESIGN.md §6, issue 5's speed targets).
//!
//! - editing trace: the automerge-perf trace (`../shared/data/editing-traces/automerge-paper
//!   .json.gz`, ~260,000 character edits) applied to a Dingo `TextDoc` and to a plain
//!   `AutoCommit` text, each committed once; then saved and loaded; the result is checked
//!   against the trace's `endContent`;
//! - task board: `BENCH_TASKS` (default 10,000) tasks added to a `Board`, saved into an encrypted
//!   sled store with the task list the node saves beside it; then a cold listing (open the store,
//!   read and decrypt the saved list) and a cold load of the board itself (open, decrypt, load,
//!   read every task), beside plain automerge loading the same bytes.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ROOT};
use dingo_docs::{Board, NewTask, TextDoc};
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

fn task_board(n: usize) {
    let me = DeviceKey([2; 32]);
    let start = Instant::now();
    let mut board = Board::create(&me, "big", 0).expect("board");
    for i in 0..n {
        let task = NewTask {
            title: format!("task number {i}"),
            due: Some(1_800_000_000_000 + i as u64),
            ..NewTask::default()
        };
        board.add_task(&format!("{i:016x}"), task, "someone", i as u64).expect("add");
    }
    let build = ms(start);
    let bytes = board.replica().save();
    let list = board.tasks().expect("tasks");
    // Into an encrypted sled store, as the node keeps it.
    let dir = tempfile::tempdir().expect("tmp");
    let key = dingo_crypto::at_rest::StorageKey::new(dingo_crypto::Secret32::from_bytes([3; 32]));
    {
        let store = dingo_store::Store::open(dir.path(), key.clone()).expect("store");
        let mut b = dingo_store::Batch::default();
        store.put(&mut b, dingo_store::Table::Docs, b"big", &bytes);
        // The node saves the task list beside the board, in the same batch.
        store.put(&mut b, dingo_store::Table::Docs, b"big/tasks", &list);
        store.apply(b).expect("apply");
        store.flush().expect("flush");
    }
    let start = Instant::now();
    let store = dingo_store::Store::open(dir.path(), key.clone()).expect("store");
    let listed: Vec<dingo_docs::Task> =
        store.get(dingo_store::Table::Docs, b"big/tasks").expect("get").expect("list");
    let cold_list = ms(start);
    assert_eq!(listed.len(), n);
    drop(store);
    let start = Instant::now();
    let store = dingo_store::Store::open(dir.path(), key).expect("store");
    let stored: Vec<u8> = store.get(dingo_store::Table::Docs, b"big").expect("get").expect("doc");
    let board = Board::load(&stored, &me).expect("load");
    let tasks = board.tasks().expect("tasks");
    let cold = ms(start);
    assert_eq!(tasks.len(), n);
    let start = Instant::now();
    let plain = AutoCommit::load(&bytes).expect("load");
    let plain_load = ms(start);
    let (_, t) = plain.get(ROOT, "tasks").expect("get").expect("tasks");
    assert_eq!(plain.length(&t), n);
    println!("| task board of {n} tasks | Dingo | baseline |");
    println!("|---|---|---|");
    println!("| cold task list (open sled, decrypt the list saved beside the board: what `task list` reads) | {cold_list:.0} ms | |");
    println!("| cold load of the board itself (open sled, decrypt, load, read every task: what the first edit needs) | {cold:.0} ms | plain automerge load of the same bytes: {plain_load:.0} ms |");
    println!("| size saved | {} KB | |", bytes.len() / 1024);
    println!("| building it ({n} commits) | {build:.0} ms | |");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    editing_trace();
    let n = std::env::var("BENCH_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    task_board(n);
}
