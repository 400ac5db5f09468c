//! Automerge sync messages from a teammate (`Content::DocSync`, reassembled): any bytes give
//! an error or a change, never a panic, and a refused message leaves the board as it was.
#![no_main]

use dingo_docs::{Board, SharedDoc, SyncState};
use dingo_types::DeviceKey;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A board with a few tasks, built once (each run works on a copy).
fn board() -> Board {
    static BOARD: OnceLock<Board> = OnceLock::new();
    BOARD
        .get_or_init(|| {
            let mut b = Board::genesis(&[7; 32], "fuzz", &DeviceKey([1; 32])).expect("genesis");
            for i in 0..3 {
                let task = dingo_docs::NewTask { title: format!("t{i}"), ..Default::default() };
                b.add_task(&format!("id{i}"), task, "u", 1).expect("add");
            }
            b
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut board = board();
    let before = board.replica().heads();
    let mut state = SyncState::new();
    // Only the board's own writers may write: anything else must be refused untouched.
    let allowed = [dingo_docs::actor_of(&DeviceKey([7; 32])), dingo_docs::actor_of(&DeviceKey([1; 32]))];
    match board.replica().receive_sync(&mut state, data, |a| allowed.contains(a)) {
        Ok(_) => {
            let _ = board.tasks();
            let _ = board.replica().sync_message(&mut state);
        }
        Err(_) => assert_eq!(board.replica().heads(), before),
    }
});
