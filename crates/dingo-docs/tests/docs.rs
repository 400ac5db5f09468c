//! Convergence, authorship and blame of Dingo's automerge documents.

use automerge::ActorId;
use dingo_docs::{
    actor_of, Board, DocError, NewTask, Priority, SharedDoc, SyncApplied, SyncState, TaskEdit, TextDoc,
};
use dingo_types::DeviceKey;
use proptest::prelude::*;

fn device(i: u8) -> DeviceKey {
    DeviceKey([i + 1; 32])
}

/// Brings `to` up to date with `from` (changes `to` lacks, any author among `allowed`).
fn sync_board(from: &mut Board, to: &mut Board, allowed: &[ActorId]) {
    let heads = to.replica().heads();
    let changes = from.replica().changes_since(&heads);
    to.replica().apply(&changes, |a| allowed.contains(a)).expect("apply");
}

#[derive(Debug, Clone)]
enum Op {
    Add { title: String, due: Option<u64>, parent: bool },
    Title(usize, String),
    Done(usize, bool),
    Assign(usize, u8, bool),
    Comment(usize, String),
    Due(usize, Option<u64>),
    Priority(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        ("[a-z]{1,6}", proptest::option::of(0u64..1000), any::<bool>())
            .prop_map(|(title, due, parent)| Op::Add { title, due, parent }),
        (any::<usize>(), "[a-z]{1,6}").prop_map(|(i, t)| Op::Title(i, t)),
        (any::<usize>(), any::<bool>()).prop_map(|(i, d)| Op::Done(i, d)),
        (any::<usize>(), 0u8..4, any::<bool>()).prop_map(|(i, u, a)| Op::Assign(i, u, a)),
        (any::<usize>(), "[a-z ]{1,8}").prop_map(|(i, t)| Op::Comment(i, t)),
        (any::<usize>(), proptest::option::of(0u64..1000)).prop_map(|(i, d)| Op::Due(i, d)),
        (any::<usize>(), 0u8..4).prop_map(|(i, p)| Op::Priority(i, p)),
    ]
}

fn run(board: &mut Board, who: usize, n: usize, op: &Op, now: u64) {
    let tasks = board.tasks().expect("tasks");
    let pick = |i: usize| tasks.get(i % tasks.len().max(1)).map(|t| t.id.clone());
    let prio = [Priority::Low, Priority::Normal, Priority::High, Priority::Urgent];
    let _ = match op.clone() {
        Op::Add { title, due, parent } => {
            let parent = if parent { pick(now as usize) } else { None };
            let task = NewTask { title, due, parent, ..NewTask::default() };
            board.add_task(&format!("t{who}-{n}"), task, &format!("user{who}"), now)
        }
        Op::Title(i, t) => pick(i)
            .map_or(Ok(()), |id| board.edit(&id, TaskEdit { title: Some(t), ..Default::default() }, now)),
        Op::Done(i, d) => pick(i).map_or(Ok(()), |id| board.set_done(&id, d, now)),
        Op::Assign(i, u, a) => pick(i).map_or(Ok(()), |id| board.assign(&id, &format!("user{u}"), a, now)),
        Op::Comment(i, t) => pick(i).map_or(Ok(()), |id| board.comment(&id, &format!("user{who}"), &t, now)),
        Op::Due(i, d) => {
            pick(i).map_or(Ok(()), |id| board.edit(&id, TaskEdit { due: Some(d), ..Default::default() }, now))
        }
        Op::Priority(i, p) => pick(i).map_or(Ok(()), |id| {
            board.edit(&id, TaskEdit { priority: Some(prio[p as usize]), ..Default::default() }, now)
        }),
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random concurrent task edits on 3 to 5 replicas, synced pairwise in random orders
    /// (partially along the way, fully at the end), converge to the same board.
    #[test]
    fn concurrent_task_edits_converge(
        replicas in 3usize..=5,
        steps in proptest::collection::vec((0usize..5, op(), proptest::option::of((0usize..5, 0usize..5))), 1..60),
        final_order in proptest::collection::vec((0usize..5, 0usize..5), 0..30),
    ) {
        let mut origin = Board::create(&device(0), "launch", 1).expect("create");
        let saved = origin.replica().save();
        let mut boards: Vec<Board> = (0..replicas).map(|i| Board::load(&saved, &device(i as u8)).expect("load")).collect();
        let allowed: Vec<ActorId> = (0..5).map(|i| actor_of(&device(i))).collect();
        for (n, (who, op, sync)) in steps.iter().enumerate() {
            let who = who % replicas;
            run(&mut boards[who], who, n, op, 10 + n as u64);
            if let Some((a, b)) = sync {
                let (a, b) = (a % replicas, b % replicas);
                if a != b {
                    let mut from = boards[a].clone();
                    sync_board(&mut from, &mut boards[b], &allowed);
                }
            }
        }
        for (a, b) in final_order {
            let (a, b) = (a % replicas, b % replicas);
            if a != b {
                let mut from = boards[a].clone();
                sync_board(&mut from, &mut boards[b], &allowed);
            }
        }
        // Everyone gets everything, each in its own order.
        for b in 0..replicas {
            for a in (0..replicas).rev() {
                if a != b {
                    let mut from = boards[a].clone();
                    sync_board(&mut from, &mut boards[b], &allowed);
                }
            }
        }
        let first = boards[0].tasks().expect("tasks");
        let mut heads0 = boards[0].replica().heads();
        heads0.sort();
        for b in boards.iter_mut().skip(1) {
            prop_assert_eq!(&b.tasks().expect("tasks"), &first);
            let mut heads = b.replica().heads();
            heads.sort();
            prop_assert_eq!(&heads, &heads0);
        }
    }
}

#[test]
fn a_change_from_a_device_without_access_is_refused_and_changes_nothing() {
    let mut alice = Board::create(&device(0), "secret", 1).expect("create");
    let saved = alice.replica().save();
    let mut eve = Board::load(&saved, &device(9)).expect("eve has a copy");
    eve.add_task("x", NewTask { title: "injected".into(), ..NewTask::default() }, "eve", 2).expect("add");
    let heads = alice.replica().heads();
    let forged = eve.replica().changes_since(&heads);
    let members = [actor_of(&device(0)), actor_of(&device(1))];
    let err = alice.replica().apply(&forged, |a| members.contains(a)).expect_err("refused");
    assert!(matches!(err, DocError::ForeignAuthor(_)), "{err}");
    assert!(alice.tasks().expect("tasks").is_empty());
    assert_eq!(alice.replica().heads(), heads);
    let garbage = vec![vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]];
    assert!(matches!(alice.replica().apply(&garbage, |_| true), Err(DocError::Malformed(_))));
}

#[test]
fn two_offline_edits_of_one_document_both_survive_and_blame_names_each_line_right() {
    let base = "title\nline two\nline three\nline four\nline five\n";
    let mut alice = TextDoc::create(&device(0), "plan", 1).expect("create");
    alice.edit(base, "first draft", 2).expect("edit");
    let saved = alice.replica().save();
    let mut bob = TextDoc::load(&saved, &device(1)).expect("load");
    // Offline: alice changes line 2, bob line 4, and both change line 3.
    alice
        .edit("title\nline TWO by alice\nline three, alice\nline four\nline five\n", "alice", 10)
        .expect("edit");
    bob.edit("title\nline two\nline three, bob\nline FOUR by bob\nline five\n", "bob", 20).expect("edit");
    // Reconnect: changes both ways, each checked against the members.
    let members = [actor_of(&device(0)), actor_of(&device(1))];
    let (ha, hb) = (alice.replica().heads(), bob.replica().heads());
    let to_bob = alice.replica().changes_since(&hb);
    let to_alice = bob.replica().changes_since(&ha);
    alice.replica().apply(&to_alice, |a| members.contains(a)).expect("apply");
    bob.replica().apply(&to_bob, |a| members.contains(a)).expect("apply");
    let text = alice.body().expect("body");
    assert_eq!(text, bob.body().expect("body"), "both replicas hold the same text");
    assert!(text.contains("line TWO by alice") && text.contains("line FOUR by bob"), "{text}");
    // The line both changed keeps both edits (automerge merges the two splices).
    assert!(text.contains("alice") && text.contains("bob"));
    let blame = alice.blame().expect("blame");
    assert_eq!(blame, bob.blame().expect("blame"));
    let by = |needle: &str| {
        blame.iter().find(|l| l.text.contains(needle)).map(|l| l.author.clone()).expect(needle)
    };
    let (a, b) = (device(0).to_hex(), device(1).to_hex());
    assert_eq!(by("title"), a, "untouched since alice's first draft");
    assert_eq!(by("line TWO"), a);
    assert_eq!(by("line FOUR"), b);
    assert_eq!(by("line five"), a);
    let history = alice.history().expect("history");
    assert_eq!(history.len(), 4, "{history:?}");
    // The same changes with the same figures on both (concurrent ones may list in either order).
    let sorted = |mut h: Vec<dingo_docs::Revision>| {
        h.sort_by(|a, b| a.hash.cmp(&b.hash));
        h
    };
    assert_eq!(sorted(history.clone()), sorted(bob.history().expect("history")));
    let change = |msg: &str| history.iter().find(|r| r.message == msg).expect(msg);
    // What each change did: the draft wrote five lines; bob rewrote lines 3 and 4.
    let draft = change("first draft");
    assert_eq!((draft.lines_added, draft.lines_removed, draft.chars_added), (5, 0, base.len()));
    let bobs = change("bob");
    assert_eq!((bobs.author.as_str(), bobs.at), (b.as_str(), 20));
    assert_eq!((bobs.lines_added, bobs.lines_removed), (2, 2), "{bobs:?}");
    assert_eq!(
        bobs.chars_added - bobs.chars_removed,
        "line three, bob\nline FOUR by bob\n".len() - "line three\nline four\n".len()
    );
}

#[test]
fn exports_are_standard_automerge_and_saves_load_back() {
    let mut doc = TextDoc::create(&device(0), "notes", 1).expect("create");
    doc.edit("hello\nworld\n", "write", 2).expect("edit");
    let mut bytes = doc.replica().save();
    doc.edit("hello\nthere\nworld\n", "more", 3).expect("edit");
    bytes.extend(doc.replica().save_new());
    // Plain automerge reads it without Dingo.
    let plain = automerge::AutoCommit::load(&bytes).expect("automerge loads it");
    use automerge::ReadDoc;
    let (_, body) = plain.get(automerge::ROOT, "body").expect("get").expect("body");
    assert_eq!(plain.text(&body).expect("text"), "hello\nthere\nworld\n");
    let back = TextDoc::load(&bytes, &device(1)).expect("load");
    assert_eq!(back.body().expect("body"), "hello\nthere\nworld\n");
    assert!(matches!(Board::load(&bytes, &device(1)), Err(DocError::WrongKind(_))));
}

/// Received changes report the tasks they touched (what the node rewrites), whatever the
/// board's size.
#[test]
fn applied_changes_name_the_tasks_they_touched() {
    let a_dev = DeviceKey([1; 32]);
    let b_dev = DeviceKey([2; 32]);
    let mut a = Board::genesis(&[9; 32], "p", &a_dev).expect("genesis");
    let mut b = Board::genesis(&[9; 32], "p", &b_dev).expect("genesis");
    let start = a.replica().heads();
    for i in 0..20 {
        a.add_task(&format!("t{i}"), NewTask { title: format!("task {i}"), ..NewTask::default() }, "u", 1)
            .expect("add");
    }
    let all = a.replica().changes_since(&start);
    let ids = b.apply_tracked(&all, |_| true).expect("apply").expect("tracked");
    assert_eq!(ids.len(), 20);
    assert_eq!(b.tasks().expect("tasks").len(), 20);
    let before = a.replica().heads();
    a.comment("t3", "u", "hi", 2).expect("comment");
    a.set_done("t7", true, 3).expect("done");
    let ids =
        b.apply_tracked(&a.replica().changes_since(&before), |_| true).expect("apply").expect("tracked");
    assert_eq!(ids, ["t3", "t7"]);
}

/// Changes that build on ones not here yet are refused whole, and the board is unchanged.
#[test]
fn changes_ahead_of_their_dependencies_change_nothing() {
    let mut a = Board::genesis(&[9; 32], "p", &DeviceKey([1; 32])).expect("genesis");
    let mut b = Board::genesis(&[9; 32], "p", &DeviceKey([2; 32])).expect("genesis");
    let start = a.replica().heads();
    a.add_task("t1", NewTask { title: "one".into(), ..NewTask::default() }, "u", 1).expect("add");
    let mid = a.replica().heads();
    a.set_done("t1", true, 2).expect("done");
    let first = a.replica().changes_since(&start);
    let second = a.replica().changes_since(&mid);
    let heads = b.replica().heads();
    assert!(matches!(b.apply_tracked(&second, |_| true), Err(DocError::MissingDeps)));
    assert_eq!(b.replica().heads(), heads);
    assert_eq!(b.apply_tracked(&first[..1], |_| true).expect("first"), Some(vec!["t1".to_owned()]));
    assert_eq!(b.apply_tracked(&second, |_| true).expect("second"), Some(vec!["t1".to_owned()]));
    assert!(b.task("t1").expect("t1").done);
}

/// Runs automerge's sync protocol between two boards until neither has anything to say;
/// returns how many messages went and whether a whole document was among them.
fn sync_protocol(a: &mut Board, b: &mut Board, allowed: &[ActorId]) -> (usize, bool) {
    let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
    let (mut sent, mut whole) = (0, false);
    for _ in 0..20 {
        let to_b = a.replica().sync_message(&mut sa);
        if let Some(m) = &to_b {
            sent += 1;
            let applied = b.replica().receive_sync(&mut sb, m, |x| allowed.contains(x)).expect("b takes");
            whole |= matches!(applied, SyncApplied::Whole(_) | SyncApplied::Merged);
        }
        let to_a = b.replica().sync_message(&mut sb);
        if let Some(m) = &to_a {
            sent += 1;
            let applied = a.replica().receive_sync(&mut sa, m, |x| allowed.contains(x)).expect("a takes");
            whole |= matches!(applied, SyncApplied::Whole(_) | SyncApplied::Merged);
        }
        if to_b.is_none() && to_a.is_none() {
            return (sent, whole);
        }
    }
    panic!("the sync protocol did not settle");
}

fn board_with(dev: u8, tasks: usize) -> Board {
    let mut b = Board::genesis(&[9; 32], "p", &device(dev)).expect("genesis");
    for i in 0..tasks {
        let id = format!("d{dev}t{i}");
        b.add_task(&id, NewTask { title: format!("task {i}"), ..NewTask::default() }, "u", 1).expect("add");
    }
    b
}

/// A newcomer holding only the genesis asks; the answer is the whole board (a compressed
/// document it becomes, not a replay of changes), and both settle.
#[test]
fn a_newcomer_gets_the_whole_board_in_one_sync_answer() {
    let allowed: Vec<ActorId> =
        (0..3).map(|i| actor_of(&device(i))).chain([actor_of(&DeviceKey([9; 32]))]).collect();
    let mut old = board_with(0, 300);
    let mut new = Board::genesis(&[9; 32], "p", &device(1)).expect("genesis");
    let mut s_new = SyncState::new();
    let ask = new.replica().sync_message(&mut s_new).expect("ask");
    let mut s_old = SyncState::new();
    let heard = old.replica().receive_sync(&mut s_old, &ask, |x| allowed.contains(x)).expect("old");
    assert_eq!(heard, SyncApplied::Nothing);
    let first = old.replica().sync_message(&mut s_old).expect("answer");
    let applied = new.replica().receive_sync(&mut s_new, &first, |x| allowed.contains(x)).expect("take");
    let SyncApplied::Whole(bytes) = applied else { panic!("expected the whole document, got {applied:?}") };
    assert_eq!(Board::load(&bytes, &device(1)).expect("saved bytes load").tasks().expect("tasks").len(), 300);
    assert_eq!(new.tasks().expect("tasks"), old.tasks().expect("tasks"));
    // The newcomer writes as itself, and the old member learns it is up to date.
    new.set_done("d0t5", true, 2).expect("edit");
    let answer = new.replica().sync_message(&mut s_new).expect("answer");
    old.replica().receive_sync(&mut s_old, &answer, |x| allowed.contains(x)).expect("old takes");
    assert!(old.task("d0t5").expect("task").done);
    let next = old.replica().sync_message(&mut s_old);
    if let Some(m) = next {
        new.replica().receive_sync(&mut s_new, &m, |x| allowed.contains(x)).expect("new takes");
        assert!(
            new.replica().sync_message(&mut s_new).is_none()
                || old.replica().sync_message(&mut s_old).is_none()
        );
    }
}

/// Two boards edited apart converge through the protocol from fresh states, and a
/// message carrying a change by a device without access changes nothing.
#[test]
fn the_sync_protocol_merges_divergent_boards_and_binds_authors() {
    let allowed: Vec<ActorId> =
        (0..3).map(|i| actor_of(&device(i))).chain([actor_of(&DeviceKey([9; 32]))]).collect();
    let mut a = board_with(0, 40);
    let mut b = board_with(1, 3);
    let (sent, whole) = sync_protocol(&mut a, &mut b, &allowed);
    assert!(sent >= 2, "{sent}");
    assert!(whole, "most of a's board is new to b: sent whole");
    assert_eq!(a.tasks().expect("tasks"), b.tasks().expect("tasks"));
    assert_eq!(a.tasks().expect("tasks").len(), 43);
    // Small divergence: changes, not documents.
    a.set_done("d1t0", true, 5).expect("edit");
    b.comment("d0t1", "u", "hi", 6).expect("comment");
    let (_, whole) = sync_protocol(&mut a, &mut b, &allowed);
    assert!(!whole);
    assert_eq!(a.tasks().expect("tasks"), b.tasks().expect("tasks"));

    // A stranger's (device 7) board: its sync message is refused, the board unchanged.
    let mut stranger = board_with(7, 2);
    let heads = b.replica().heads();
    let mut sb = SyncState::new();
    let ask = b.replica().sync_message(&mut sb).expect("ask");
    let mut st = SyncState::new();
    stranger.replica().receive_sync(&mut st, &ask, |_| true).expect("stranger takes the ask");
    let m = stranger.replica().sync_message(&mut st).expect("message");
    assert!(matches!(
        b.replica().receive_sync(&mut sb, &m, |x| allowed.contains(x)),
        Err(DocError::ForeignAuthor(_))
    ));
    assert_eq!(b.replica().heads(), heads);
    assert!(b.replica().receive_sync(&mut sb, b"\x42garbage", |_| true).is_err());
}

/// Sync messages automerge itself would panic on (found by the `docsync` fuzz target) are
/// refused with an error, the board unchanged.
#[test]
fn malformed_sync_messages_are_refused_not_fatal() {
    let mut b = board_with(0, 2);
    let heads = b.replica().heads();
    // A Bloom filter with entries but no bits (automerge divides by its size).
    let zero_bits = [0x43, 0x00, 0x00, 0x01, 0x00, 0x04, 0x04, 0x00, 0x00, 0x00, 0x00];
    for bytes in [&zero_bits[..], b"", b"\x43", &[0x42; 64][..]] {
        let mut st = SyncState::new();
        assert!(b.replica().receive_sync(&mut st, bytes, |_| true).is_err(), "{bytes:?}");
        assert_eq!(b.replica().heads(), heads);
    }
}
