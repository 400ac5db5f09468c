//! A seeded simulation of the sync rules (`dingo_node::sync`, the same functions the node runs
//! against sled) without I/O: 20 nodes in 3 overlapping groups write messages and meet at
//! random, answers are cut short by a small budget, lost, delivered twice or reordered, and the
//! nodes spend a long time split in two. At the end every member of every group holds every
//! message of the group exactly once, with no gaps in any author's sequence.

use dingo_node::sync::{have, missing, Budget, Entry, LogSource, Priority, SeqWindow};
use dingo_types::{ConvId, DeviceKey};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;

const NODES: usize = 20;
const GROUPS: usize = 3;

fn device(i: usize) -> DeviceKey {
    DeviceKey([i as u8 + 1; 32])
}

fn group(g: usize) -> ConvId {
    ConvId([0xa0 + g as u8; 32])
}

/// One node's logs: what it holds per group, and how often each envelope was stored.
#[derive(Default)]
struct MemLog {
    entries: BTreeMap<(ConvId, [u8; 32], u64), Entry>,
    windows: BTreeMap<(ConvId, [u8; 32]), SeqWindow>,
    stored: HashMap<(ConvId, [u8; 32], u64), u32>,
}

impl LogSource for MemLog {
    type Error = Infallible;

    fn windows(&self, g: &ConvId) -> Result<Vec<(DeviceKey, SeqWindow)>, Infallible> {
        Ok(self
            .windows
            .iter()
            .filter(|((gg, _), _)| gg == g)
            .map(|((_, a), w)| (DeviceKey(*a), w.clone()))
            .collect())
    }

    fn entries_after(
        &self,
        g: &ConvId,
        a: &DeviceKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, Infallible> {
        Ok(self
            .entries
            .range((*g, a.0, after + 1)..=(*g, a.0, u64::MAX))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl MemLog {
    /// What the node does with an envelope from the network: the window says whether it is new.
    fn store(&mut self, g: ConvId, e: Entry) {
        let w = self.windows.entry((g, e.author.0)).or_default();
        if w.contains(e.seq) || !w.acceptable(e.seq) {
            return;
        }
        w.insert(e.seq);
        *self.stored.entry((g, e.author.0, e.seq)).or_default() += 1;
        self.entries.insert((g, e.author.0, e.seq), e);
    }
}

struct Sim {
    rng: StdRng,
    logs: Vec<MemLog>,
    members: Vec<BTreeSet<usize>>,
    written: Vec<BTreeSet<(usize, u64)>>,
    next_seq: HashMap<(usize, usize), u64>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // Overlapping groups of 8 to 14 members; everyone is in at least one.
        let mut members: Vec<BTreeSet<usize>> = (0..GROUPS)
            .map(|_| {
                let size = rng.gen_range(8..=14);
                let mut all: Vec<usize> = (0..NODES).collect();
                all.shuffle(&mut rng);
                all.into_iter().take(size).collect()
            })
            .collect();
        for n in 0..NODES {
            if !members.iter().any(|m| m.contains(&n)) {
                members[n % GROUPS].insert(n);
            }
        }
        Self {
            rng,
            logs: (0..NODES).map(|_| MemLog::default()).collect(),
            members,
            written: vec![BTreeSet::new(); GROUPS],
            next_seq: HashMap::new(),
        }
    }

    fn write(&mut self, author: usize, g: usize) {
        let seq = self.next_seq.entry((author, g)).or_insert(0);
        *seq += 1;
        let seq = *seq;
        let priority = [Priority::Ding, Priority::Chat, Priority::Chat, Priority::Work, Priority::File]
            [self.rng.gen_range(0..5)];
        let bytes = format!("{author}/{g}/{seq}").into_bytes();
        self.logs[author].store(group(g), Entry { author: device(author), seq, priority, bytes });
        self.written[g].insert((author, seq));
    }

    /// `asker` pulls from `answerer` for every group both are in, over a lossy link.
    fn pull(&mut self, asker: usize, answerer: usize) {
        let budget = Budget { envelopes: self.rng.gen_range(1..=8), bytes: 64 };
        for g in 0..GROUPS {
            if !(self.members[g].contains(&asker) && self.members[g].contains(&answerer)) {
                continue;
            }
            for _round in 0..50 {
                let mine = have(&self.logs[asker], &group(g)).expect("have");
                let (mut entries, more) =
                    missing(&self.logs[answerer], &group(g), &mine, budget).expect("missing");
                // The answer is lost: the meeting ends here (an interrupted sync).
                if self.rng.gen_bool(0.05) {
                    return;
                }
                if self.rng.gen_bool(0.2) {
                    entries.shuffle(&mut self.rng);
                }
                let twice = self.rng.gen_bool(0.1);
                for e in entries.iter().cloned() {
                    self.logs[asker].store(group(g), e);
                }
                if twice {
                    for e in entries {
                        self.logs[asker].store(group(g), e);
                    }
                }
                if !more {
                    break;
                }
            }
        }
    }

    fn meet(&mut self, a: usize, b: usize) {
        self.pull(a, b);
        self.pull(b, a);
    }

    fn run(&mut self) {
        for round in 0..3000 {
            // A long partition: the two halves do not meet from round 500 to 2000.
            let split = (500..2000).contains(&round);
            if self.rng.gen_bool(0.3) {
                let author = self.rng.gen_range(0..NODES);
                let groups: Vec<usize> = (0..GROUPS).filter(|g| self.members[*g].contains(&author)).collect();
                let g = groups[self.rng.gen_range(0..groups.len())];
                self.write(author, g);
            }
            let a = self.rng.gen_range(0..NODES);
            let b = self.rng.gen_range(0..NODES);
            if a == b || (split && (a < NODES / 2) != (b < NODES / 2)) {
                continue;
            }
            self.meet(a, b);
        }
        // Everyone meets everyone until nothing changes (the links stay lossy).
        for _ in 0..20 {
            for a in 0..NODES {
                for b in 0..NODES {
                    if a != b {
                        self.meet(a, b);
                    }
                }
            }
            if self.converged() {
                return;
            }
        }
    }

    fn converged(&self) -> bool {
        (0..GROUPS).all(|g| {
            self.members[g].iter().all(|n| {
                let held: BTreeSet<(usize, u64)> = self.logs[*n]
                    .entries
                    .keys()
                    .filter(|(gg, _, _)| *gg == group(g))
                    .map(|(_, a, s)| (a[0] as usize - 1, *s))
                    .collect();
                held == self.written[g]
            })
        })
    }
}

#[test]
fn twenty_nodes_meeting_at_random_get_every_message_exactly_once() {
    for seed in 0..8 {
        let mut sim = Sim::new(seed);
        sim.run();
        assert!(sim.converged(), "seed {seed}: some member lacks some message");
        let total: usize = sim.written.iter().map(BTreeSet::len).sum();
        assert!(total > 500, "seed {seed}: the simulation wrote too little ({total})");
        for (n, log) in sim.logs.iter().enumerate() {
            // Exactly once: nothing stored twice however often it arrived.
            assert!(log.stored.values().all(|c| *c == 1), "seed {seed}: node {n} stored something twice");
            // Only groups it belongs to reach a node.
            for (g, _, _) in log.entries.keys() {
                let gi = (g.0[0] - 0xa0) as usize;
                assert!(sim.members[gi].contains(&n), "seed {seed}: node {n} got group {gi}");
            }
            // Every author's sequence is whole: windows are contiguous, nothing above.
            for w in log.windows.values() {
                assert!(w.above.is_empty(), "seed {seed}: node {n} has a gap");
            }
        }
    }
}

#[test]
fn an_answer_keeps_each_authors_order_and_puts_urgent_authors_first() {
    let mut log = MemLog::default();
    let g = group(0);
    let mut put = |author: usize, seq: u64, priority: Priority| {
        log.store(g, Entry { author: device(author), seq, priority, bytes: vec![0; 10] });
    };
    put(1, 1, Priority::File);
    put(1, 2, Priority::Chat);
    put(2, 1, Priority::Chat);
    put(2, 2, Priority::Ding);
    put(3, 1, Priority::Work);
    let big = Budget { envelopes: 100, bytes: 1 << 20 };
    let (all, more) = missing(&log, &g, &[], big).expect("missing");
    assert!(!more);
    let order: Vec<(usize, u64)> = all.iter().map(|e| (e.author.0[0] as usize - 1, e.seq)).collect();
    assert_eq!(order, vec![(2, 1), (2, 2), (1, 1), (1, 2), (3, 1)]);
    // Cut short by the budget, starting at the asker's first gap, nothing it has sent again.
    let small = Budget { envelopes: 1, bytes: 1 << 20 };
    let (some, more) = missing(&log, &g, &[(device(1), 1), (device(2), 2)], small).expect("missing");
    assert!(more);
    assert_eq!(some.iter().map(|e| (e.author, e.seq)).collect::<Vec<_>>(), vec![(device(1), 2)]);
}
