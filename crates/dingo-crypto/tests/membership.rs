//! Convergence and security of the team membership CRDT: random concurrent ops from several
//! admins on partitioned replicas, delivered in random orders, always give one membership; a
//! removed member's concurrent, later and backdated ops never count.

use dingo_crypto::membership::{TeamError, TeamLog};
use dingo_crypto::Identity;
use dingo_types::team::{Action, MemberInfo, OpBody, Role, SignedOp};
use proptest::prelude::*;
use std::sync::OnceLock;

const PEOPLE: usize = 6;
const DEPTS: [&str; 2] = ["ops", "finance"];

fn people() -> &'static Vec<Identity> {
    static P: OnceLock<Vec<Identity>> = OnceLock::new();
    P.get_or_init(|| (0..PEOPLE).map(|i| Identity::generate(&format!("p{i}"))).collect())
}

fn info(id: &Identity) -> MemberInfo {
    MemberInfo::from_invite(&id.invite(Vec::new()))
}

/// One step of a scenario: someone tries an op on their replica, or two replicas sync.
#[derive(Debug, Clone)]
enum Step {
    Act { who: usize, what: u8, target: usize, dept: usize },
    Sync { from: usize, to: usize, seed: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..PEOPLE, 0u8..7, 0..PEOPLE, 0..DEPTS.len())
            .prop_map(|(who, what, target, dept)| Step::Act { who, what, target, dept }),
        2 => (0..PEOPLE, 0..PEOPLE, any::<u64>()).prop_map(|(from, to, seed)| Step::Sync { from, to, seed }),
    ]
}

fn action(what: u8, target: &Identity, dept: &str) -> Action {
    let user = target.user_id();
    match what {
        0 => Action::Add { member: info(target), role: Role::Member, depts: vec![] },
        1 => Action::Remove { user },
        2 => Action::Promote { user },
        3 => Action::Demote { user },
        4 => Action::DeptCreate { name: dept.to_owned() },
        5 => Action::DeptAdd { dept: dept.to_owned(), user },
        _ => Action::DeptRemove { dept: dept.to_owned(), user },
    }
}

/// A deterministic shuffle (xorshift), so a failing case replays exactly.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Everyone starts with the same team: p0 created it, added and promoted p1 and p2, added the
/// rest.
fn start() -> (Vec<TeamLog>, Vec<u8>) {
    let p = people();
    let (mut log, genesis) = TeamLog::create(&p[0], "acme", 1).expect("test step");
    for (i, id) in p.iter().enumerate().skip(1) {
        log.author(&p[0], Action::Add { member: info(id), role: Role::Member, depts: vec![] }, 2)
            .expect("test step");
        if i <= 2 {
            log.author(&p[0], Action::Promote { user: id.user_id() }, 3).expect("test step");
        }
    }
    (vec![log; PEOPLE], genesis)
}

fn fresh_replica(genesis: &[u8], ops: &[Vec<u8>]) -> TeamLog {
    let mut log = TeamLog::from_genesis(genesis).expect("test step");
    let (_, errors) = log.receive_many(ops.iter().map(Vec::as_slice));
    assert!(errors.is_empty(), "{errors:?}");
    log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_whatever_the_order(steps in prop::collection::vec(step(), 1..40), seeds in prop::collection::vec(any::<u64>(), 3)) {
        let p = people();
        let (mut replicas, genesis) = start();
        for s in steps {
            match s {
                Step::Act { who, what, target, dept } => {
                    // Authoring refuses ops that would not take effect locally; that is fine.
                    let _ = replicas[who].author(&p[who], action(what, &p[target], DEPTS[dept]), 10);
                }
                Step::Sync { from, to, seed } => {
                    let mut ops = replicas[from].all_ops();
                    shuffle(&mut ops, seed);
                    let (_, errors) = replicas[to].receive_many(ops.iter().map(Vec::as_slice));
                    prop_assert!(errors.is_empty(), "{errors:?}");
                }
            }
        }
        // Everyone gets everything, each in a different order, some one op at a time.
        let mut all: Vec<Vec<u8>> = replicas.iter().flat_map(TeamLog::all_ops).collect();
        all.sort();
        all.dedup();
        for (i, r) in replicas.iter_mut().enumerate() {
            let mut ops = all.clone();
            shuffle(&mut ops, seeds[i % seeds.len()].wrapping_add(i as u64));
            if i % 2 == 0 {
                for op in &ops {
                    r.receive(op).expect("test step");
                }
            } else {
                let (_, errors) = r.receive_many(ops.iter().map(Vec::as_slice));
                prop_assert!(errors.is_empty(), "{errors:?}");
            }
            prop_assert_eq!(r.pending_len(), 0);
        }
        let reference = fresh_replica(&genesis, &all);
        for r in &replicas {
            prop_assert_eq!(r.state(), reference.state());
            prop_assert_eq!(r.void_ops(), reference.void_ops());
        }
        prop_assert!(reference.state().admins() >= 1, "the team always keeps an admin");
    }
}

#[test]
fn concurrent_mutual_removal_resolves_the_same_way_everywhere() {
    let p = people();
    let (replicas, genesis) = start();
    let (mut a, mut b) = (replicas[1].clone(), replicas[2].clone());
    let ra = a.author(&p[1], Action::Remove { user: p[2].user_id() }, 20).expect("test step");
    let rb = b.author(&p[2], Action::Remove { user: p[1].user_id() }, 20).expect("test step");
    a.receive(&rb).expect("test step");
    b.receive(&ra).expect("test step");
    assert_eq!(a.state(), b.state());
    let members = &a.state().members;
    assert!(
        members.contains_key(&p[1].user_id()) ^ members.contains_key(&p[2].user_id()),
        "exactly one of the two admins is removed"
    );
    let mut all = a.all_ops();
    all.reverse();
    assert_eq!(fresh_replica(&genesis, &all).state(), a.state());
}

#[test]
fn removed_members_concurrent_later_and_backdated_ops_are_void() {
    let p = people();
    let (replicas, _) = start();
    let mut admin = replicas[0].clone();
    let mut removed = replicas[1].clone(); // p1 is an admin about to be removed
    let before_removal = removed.heads();
    // Concurrent: p1 acts before hearing of its removal.
    let concurrent =
        removed.author(&p[1], Action::DeptCreate { name: "shadow".into() }, 30).expect("test step");
    admin.author(&p[0], Action::Remove { user: p[1].user_id() }, 30).expect("test step");
    admin.receive(&concurrent).expect("test step");
    assert!(!admin.state().depts.contains("shadow"), "concurrent op of a removed admin is void");
    assert!(admin.state().removed.contains_key(&p[1].user_id()));

    // Later: p1 learns of the removal, then tries anyway (the op follows the removal).
    removed.receive_many(admin.all_ops().iter().map(Vec::as_slice));
    assert_eq!(removed.check(&p[1], &Action::DeptCreate { name: "late".into() }), Err(TeamError::NotAdmin));
    let late = forge(&p[1], &admin, admin.heads(), Action::DeptCreate { name: "late".into() });
    admin.receive(&late).expect("test step");
    assert!(!admin.state().depts.contains("late"));

    // Backdated: p1 names only deps from before its removal, to look concurrent.
    let backdated = forge(
        &p[1],
        &admin,
        before_removal,
        Action::Add { member: info(&p[5]), role: Role::Admin, depts: vec![] },
    );
    admin.receive(&backdated).expect("test step");
    assert_eq!(admin.state().members.get(&p[5].user_id()).map(|m| m.role), Some(Role::Member));
    assert!(admin.void_ops().len() >= 3);
}

#[test]
fn non_admin_and_foreign_ops_are_rejected_and_replays_change_nothing() {
    let p = people();
    let (replicas, _) = start();
    let mut log = replicas[0].clone();
    // p3 is a plain member: its signed op is kept but void.
    let op = forge(&p[3], &log, log.heads(), Action::Promote { user: p[3].user_id() });
    log.receive(&op).expect("test step");
    assert_eq!(log.state().members[&p[3].user_id()].role, Role::Member);
    // A replay is a duplicate and changes nothing.
    let before = log.state().clone();
    assert_eq!(log.receive(&op), Ok(dingo_crypto::membership::Received::Duplicate));
    assert_eq!(log.state(), &before);
    // An op for another team is refused.
    let (mut other, _) = TeamLog::create(&p[4], "other", 1).expect("test step");
    let foreign = other.author(&p[4], Action::DeptCreate { name: "x".into() }, 2).expect("test step");
    assert_eq!(log.receive(&foreign), Err(TeamError::WrongTeam));
}

/// Signs an op the way a malicious but key-holding client could, skipping local checks.
fn forge(who: &Identity, log: &TeamLog, deps: Vec<[u8; 32]>, action: Action) -> Vec<u8> {
    let lamport = 1 + deps.iter().map(|d| lamport_of(log, d)).max().unwrap_or(0);
    let body = OpBody { team: log.id(), author: who.cert().encode(), lamport, deps, at: 40, action };
    let encoded = SignedOp::encode_body(&body);
    let signature = who.sign_device(&SignedOp::signed_bytes(&encoded));
    SignedOp { body: encoded, signature }.encode()
}

fn lamport_of(log: &TeamLog, hash: &[u8; 32]) -> u64 {
    log.all_ops()
        .iter()
        .map(|b| SignedOp::decode(b).expect("test step"))
        .find(|(op, _)| op.hash() == *hash)
        .map(|(_, body)| body.lamport)
        .expect("test step")
}
