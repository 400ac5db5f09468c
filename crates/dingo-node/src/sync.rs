//! Log sync without I/O: what two nodes that meet send each other so that every member of a
//! group ends up with every envelope of the group's log exactly once (DESIGN.md §6).
//!
//! Each author's envelopes in a group are numbered from 1 (the envelope's `seq`). A node records
//! which numbers it holds per (group, author) in a [`SeqWindow`]: a contiguous prefix plus a
//! bounded set above it, the same record that refuses replays. When two nodes meet, each sends
//! the other its "have" vector (per author, the contiguous prefix) and the other answers with
//! what lies above, most urgent first ([`Priority`]) and in each author's order within one
//! priority, cut at a size budget; the asker repeats while the answer says there is more.
//! Because the have vector is recomputed from what is stored, an interrupted sync resumes where
//! it stopped, and anything sent twice is recognised by the window and stored once.
//!
//! The node runs [`missing`] against its sled store; the simulation in `tests/it/sim.rs` runs
//! the same functions against in-memory logs with 20 nodes meeting at random.

use dingo_types::{ConvId, DeviceKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How far ahead of the contiguous prefix a sequence number may be (a bound on the window).
pub const MAX_SEQ_AHEAD: u64 = 8192;
/// Most sequence numbers held above the contiguous prefix.
pub const MAX_SEQ_ABOVE: usize = 4096;

/// Which sequence numbers of one author in one conversation a node holds: an exact record (a
/// contiguous prefix plus a bounded set above it), persisted so replays fail after restarts too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqWindow {
    /// Every number up to this one is held.
    pub contiguous: u64,
    /// Numbers held above the prefix.
    pub above: BTreeSet<u64>,
}

impl SeqWindow {
    /// Whether `seq` is held (or was given up on).
    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.above.contains(&seq)
    }

    /// Whether `seq` may be taken: positive and not too far ahead.
    pub fn acceptable(&self, seq: u64) -> bool {
        seq > 0 && seq <= self.contiguous.saturating_add(MAX_SEQ_AHEAD)
    }

    /// Records `seq` as held.
    pub fn insert(&mut self, seq: u64) {
        self.above.insert(seq);
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        // A gap that never fills (a message the sender gave up on) must not stall the window:
        // past the bound, the oldest gaps are treated as seen, and their numbers as replays.
        while self.above.len() > MAX_SEQ_ABOVE {
            let Some(lowest) = self.above.pop_first() else { break };
            self.contiguous = lowest;
            while self.above.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        }
    }
}

/// How urgent an envelope is when a sync has to choose (lower goes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// A DING alert and its acknowledgements.
    Ding = 0,
    /// Chat messages and receipts.
    Chat = 1,
    /// Task and document changes.
    Work = 2,
    /// File chunks.
    File = 3,
}

/// One envelope of a group log as a node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The author's device.
    pub author: DeviceKey,
    /// The author's sequence number.
    pub seq: u64,
    /// How urgent it is.
    pub priority: Priority,
    /// The encoded envelope.
    pub bytes: Vec<u8>,
}

/// A group log as one node holds it, read-only.
pub trait LogSource {
    /// The error reading the log may give.
    type Error;
    /// Every author this node holds something from in `group`, with its window.
    fn windows(&self, group: &ConvId) -> Result<Vec<(DeviceKey, SeqWindow)>, Self::Error>;
    /// Up to `limit` held entries of `author` in `group` with a sequence number above `after`,
    /// in ascending order.
    fn entries_after(
        &self,
        group: &ConvId,
        author: &DeviceKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, Self::Error>;
}

/// The "have" vector to send for `group`: per author, the contiguous prefix held (sorted by
/// author, authors with nothing held left out).
pub fn have<L: LogSource>(log: &L, group: &ConvId) -> Result<Vec<(DeviceKey, u64)>, L::Error> {
    let mut v: Vec<(DeviceKey, u64)> = log
        .windows(group)?
        .into_iter()
        .filter(|(_, w)| w.contiguous > 0)
        .map(|(a, w)| (a, w.contiguous))
        .collect();
    v.sort_by_key(|(a, _)| a.0);
    v.dedup_by(|a, b| a.0 == b.0);
    Ok(v)
}

/// How much one answer may carry.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most envelopes.
    pub envelopes: usize,
    /// Most bytes of envelopes (at least one envelope is always sent).
    pub bytes: usize,
}

/// What `theirs` (the asker's have vector for `group`) lacks of this node's log, within
/// `budget`; and whether more is left. Each author's entries go in sequence order from the
/// first one the asker lacks (so every answer fills the asker's lowest gap and the asker's
/// have vector always advances); authors with the most urgent entry pending go first.
pub fn missing<L: LogSource>(
    log: &L,
    group: &ConvId,
    theirs: &[(DeviceKey, u64)],
    budget: Budget,
) -> Result<(Vec<Entry>, bool), L::Error> {
    let their_mark = |a: &DeviceKey| theirs.iter().find(|(t, _)| t == a).map_or(0, |(_, s)| *s);
    let mut runs = Vec::new();
    let mut more = false;
    for (author, window) in log.windows(group)? {
        let after = their_mark(&author);
        let newest = window.above.last().copied().unwrap_or(window.contiguous);
        if newest <= after {
            continue;
        }
        // One more than can be sent tells whether this author has more.
        let mut run = log.entries_after(group, &author, after, budget.envelopes + 1)?;
        if run.len() > budget.envelopes {
            more = true;
            run.truncate(budget.envelopes);
        }
        if let Some(urgency) = run.iter().map(|e| e.priority).min() {
            runs.push((urgency, run));
        }
    }
    // Stable: authors of equal urgency keep the log's order.
    runs.sort_by_key(|(urgency, _)| *urgency);
    let mut out = Vec::new();
    let mut bytes = 0;
    for e in runs.into_iter().flat_map(|(_, run)| run) {
        if out.len() >= budget.envelopes || (!out.is_empty() && bytes + e.bytes.len() > budget.bytes) {
            more = true;
            break;
        }
        bytes += e.bytes.len();
        out.push(e);
    }
    Ok((out, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_exact_and_survives_a_permanent_gap() {
        let mut w = SeqWindow::default();
        for seq in [1, 2, 4, 3, 6] {
            assert!(!w.contains(seq));
            w.insert(seq);
            assert!(w.contains(seq));
        }
        assert_eq!(w.contiguous, 4);
        assert!(!w.contains(5));
        assert!(!w.acceptable(0));
        // Seq 5 never comes: the window keeps accepting, bounded.
        for seq in 7..7 + 3 * MAX_SEQ_ABOVE as u64 {
            assert!(w.acceptable(seq), "{seq}");
            w.insert(seq);
        }
        assert!(w.above.len() <= MAX_SEQ_ABOVE);
        assert!(w.contains(5), "a number given up on counts as a replay");
    }
}
