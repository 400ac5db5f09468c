//! `cargo bench --bench team_procs`: channel fan-out and rekey after a removal with every member
//! a node in **its own process** (own sled store, own libp2p swarm, own runtime) on 127.0.0.1,
//! as on real devices. The `team` bench runs all nodes in one process, where they share sled's
//! process-wide lock and thread pool and one open-file limit (which stops rekey past 50
//! members: each device here holds only its own N-1 connections). Both run on the same cores,
//! so every member's work still competes with every other's.
//!
//! The bench re-runs its own binary once per member (`DINGO_BENCH_MEMBER` set) and drives the
//! members by line commands on stdin; members report events with `CLOCK_MONOTONIC` times, one
//! clock for all processes, so latencies are measured where things happen, not when the
//! parent hears of them.
//!
//! - fan-out: the admin sends to `#general`; latency is from just before its `send` call until
//!   the last other member's node has decrypted and durably stored the message;
//! - system CPU: the CPU all member processes used per fan-out message;
//! - rekey: after every member has sent once (one after another) and the members have settled
//!   (their CPU use back near zero), the admin removes the last member; measured until
//!   every remaining member knows, until each has sealed a message under a new chain (all send
//!   at once), and until all of those reached every remaining member.
//!
//! Environment: `BENCH_TEAM_SIZES` (default `10,50,100,200`), `BENCH_REKEY_SIZES` (default
//! `10,50,100`; 200 takes long to set up: each of its 200 first messages opens 199
//! connections), `BENCH_FANOUT_N` (messages per size, default 50), `BENCH_FIRST_AT_ONCE` (set:
//! the members' first messages go all at once; the bench prints the envelopes handed over
//! twice, answered "not yet" and handed to carriers while the team settles), `BENCH_SERIES`
//! (set: each fan-out message's time goes to stderr as `series I MS`, to tell steady time
//! from outliers).

mod support;
use dingo_node::{Home, NetConfig, Node, NodeEvent};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;
use support::{cpu_time, env_list, FanOut, Rekey};

const MEMBER_ENV: &str = "DINGO_BENCH_MEMBER";
/// How long the parent waits for any one answer or event before giving up.
const PATIENCE: Duration = Duration::from_secs(600);
/// How long the members must stay (nearly) idle to count as settled.
const QUIET_WINDOW: Duration = Duration::from_millis(500);
/// Commands (and their answers) queued per member: the parent asks one thing at a time.
const COMMANDS_QUEUED: usize = 16;
/// Member events queued for the parent before the members' readers wait.
const EVENTS_QUEUED: usize = 1 << 16;
/// Longest wait for the members to settle.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Nanoseconds on the system-wide monotonic clock (the same in every process).
fn mono_ns() -> u64 {
    // SAFETY: clock_gettime only writes the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

// ---- a member: one node in this process, driven by commands on stdin ----

/// Answers one command; `None` ends the process.
async fn member_command(slot: &mut Option<Node>, home: &Home, line: &str) -> Option<String> {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    if cmd == "offline_cpu" {
        // The sender alone: network stopped, so this process does nothing else.
        let k: usize = rest.parse().expect("count");
        if let Some(old) = slot.take() {
            old.shutdown().await.expect("stop");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let node = slot.insert(Node::open(home, None).expect("reopen"));
        node.send("#general", "warm").await.expect("send");
        let cpu0 = cpu_time();
        for i in 0..k {
            node.send("#general", &format!("queued {i} {}", "x".repeat(200))).await.expect("send");
        }
        return Some(format!("ok {}", (cpu_time() - cpu0).as_nanos() / k as u128));
    }
    let node = slot.as_ref().expect("node");
    Some(match cmd {
        "invite" => format!("ok {}", node.id().invite),
        "team_create" => {
            node.team_create("bench").await.expect("team");
            "ok".into()
        }
        "contact" => {
            node.add_contact(rest, None).await.expect("contact");
            "ok".into()
        }
        "team_add" => {
            node.team_add(rest.split(' ').map(String::from).collect(), None).await.expect("add");
            "ok".into()
        }
        "wait_members" => {
            // Checked on each team change, not polled: a hundred members polling their stores
            // every few milliseconds would slow down the very joins they wait for.
            let n: usize = rest.parse().expect("count");
            let mut changes = node.subscribe();
            let started = std::time::Instant::now();
            while !node.team().await.is_ok_and(|t| t.members.len() == n) {
                assert!(started.elapsed() < PATIENCE, "timed out waiting for {n} members");
                let changed = async {
                    while let Ok(ev) = changes.recv().await {
                        if matches!(ev, NodeEvent::TeamChanged { .. }) {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(500), changed).await;
            }
            "ok".into()
        }
        "send" => {
            let t = mono_ns();
            let id = node.send("#general", rest).await.expect("send").id;
            format!("ok {id} {t} {}", mono_ns())
        }
        "remove" => {
            let t = mono_ns();
            node.team_remove(rest).await.expect("remove");
            format!("ok {t}")
        }
        "cpu" => format!("ok {}", cpu_time().as_nanos()),
        "stats" => {
            let st = node.stats();
            format!("ok {} {} {} {}", st.received, st.duplicates, st.retried, st.handed_off)
        }
        "quit" => {
            node.shutdown().await.expect("stop");
            return None;
        }
        other => panic!("unknown command {other}"),
    })
}

fn member_main(dir: &str) {
    let rt = support::runtime().expect("runtime");
    let home = Home::new(dir);
    let name = std::path::Path::new(dir).file_name().and_then(|n| n.to_str()).unwrap_or("m").to_owned();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = {
        let out = out.clone();
        move |line: String| {
            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
    };
    rt.block_on(async {
        Node::init(&home, &name, None).expect("init");
        let node = Node::open(&home, None).expect("open");
        node.start_network(NetConfig::loopback(), vec![]).await.expect("net");
        let mut events = node.subscribe();
        let mut slot = Some(node);
        let say_ev = say.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Message { id, channel: Some(_), .. }) => {
                        say_ev(format!("msg {id} {}", mono_ns()))
                    }
                    Ok(NodeEvent::TeamChanged { members, .. }) => {
                        say_ev(format!("team {members} {}", mono_ns()))
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => panic!("lost {n} events"),
                    Err(_) => break,
                }
            }
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(COMMANDS_QUEUED);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        say("ready".into());
        while let Some(line) = rx.recv().await {
            match member_command(&mut slot, &home, &line).await {
                Some(answer) => say(answer),
                None => break,
            }
        }
    });
    say("bye".into());
}

// ---- the parent: starts members and measures ----

enum Ev {
    Msg { id: String, at: u64 },
    Team { member: usize, members: usize, at: u64 },
}

struct Member {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
}

impl Member {
    fn spawn(idx: usize, dir: &std::path::Path, events: SyncSender<Ev>) -> Member {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .env(MEMBER_ENV, dir.join(format!("m{idx}")))
            // Logs would go to stdout, which carries the answers.
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn member");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (answer_tx, answers) = sync_channel(COMMANDS_QUEUED);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.split(' ');
                let ev = match parts.next() {
                    Some("msg") => {
                        let id = parts.next().unwrap_or_default().to_owned();
                        let at = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                        Some(Ev::Msg { id, at })
                    }
                    Some("team") => {
                        let members = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                        let at = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                        Some(Ev::Team { member: idx, members, at })
                    }
                    _ => None,
                };
                let sent = match ev {
                    Some(ev) => events.send(ev).is_ok(),
                    None => answer_tx.send(line).is_ok(),
                };
                if !sent {
                    break;
                }
            }
        });
        let m = Member { child, stdin, answers };
        assert_eq!(m.answer(), "ready");
        m
    }

    fn tell(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("member stdin");
        self.stdin.flush().expect("member stdin");
    }

    fn answer(&self) -> String {
        self.answers.recv_timeout(PATIENCE).expect("member answer")
    }

    /// Sends `cmd`, waits for `ok`, returns what follows it.
    fn call(&mut self, cmd: &str) -> String {
        self.tell(cmd);
        let a = self.answer();
        a.strip_prefix("ok").map(|r| r.trim().to_owned()).unwrap_or_else(|| panic!("member said {a}"))
    }
}

struct Team {
    _dir: tempfile::TempDir,
    members: Vec<Member>,
    events: Receiver<Ev>,
}

impl Team {
    fn build(n: usize) -> Team {
        let dir = tempfile::tempdir().expect("tmp");
        let (tx, events) = sync_channel(EVENTS_QUEUED);
        let mut members: Vec<Member> = (0..n).map(|i| Member::spawn(i, dir.path(), tx.clone())).collect();
        members[0].call("team_create");
        let admin_invite = members[0].call("invite");
        for m in &mut members[1..] {
            m.call(&format!("contact {admin_invite}"));
        }
        let invites: Vec<String> = members[1..].iter_mut().map(|m| m.call("invite")).collect();
        members[0].call(&format!("team_add {}", invites.join(" ")));
        for m in &mut members {
            m.tell(&format!("wait_members {n}"));
        }
        for m in &members {
            assert_eq!(m.answer(), "ok");
        }
        let mut team = Team { _dir: dir, members, events };
        team.drain();
        team
    }

    fn next_event(&self) -> Ev {
        match self.events.recv_timeout(PATIENCE) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => panic!("no event for {PATIENCE:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("members gone"),
        }
    }

    fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// CPU used by all members so far.
    fn cpu_ns(&mut self) -> u64 {
        self.members.iter_mut().map(|m| m.call("cpu").parse::<u64>().expect("cpu")).sum()
    }

    /// Waits until each of `ids` reached every member in `receivers` (a count of members each
    /// must reach); returns when the last one arrived.
    fn arrivals(&mut self, ids: &[String], each: usize) -> u64 {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut last = 0;
        while ids.iter().any(|id| seen.get(id).copied().unwrap_or(0) < each) {
            if let Ev::Msg { id, at, .. } = self.next_event() {
                if ids.contains(&id) {
                    *seen.entry(id).or_default() += 1;
                    last = last.max(at);
                }
            }
        }
        last
    }

    /// Over all members so far: envelopes stored, handed again, answered "not yet", and
    /// handed to carriers.
    fn envelope_counts(&mut self) -> [u64; 4] {
        let mut total = [0; 4];
        for m in &mut self.members {
            let a = m.call("stats");
            for (t, n) in total.iter_mut().zip(a.split(' ')) {
                *t += n.parse::<u64>().expect("count");
            }
        }
        total
    }

    /// Waits until the members are back to (nearly) idle: under 1% of a core each over half a
    /// second, checked for at most [`SETTLE_MAX`] (an idle node still runs timers, pings and
    /// sled's flusher, and the connections close after two idle minutes). Returns how long it
    /// took and the last window's CPU (ms).
    fn settle(&mut self) -> (Duration, f64) {
        let started = std::time::Instant::now();
        let quiet = QUIET_WINDOW.as_nanos() as u64 / 100 * self.members.len() as u64;
        let mut before = self.cpu_ns();
        loop {
            std::thread::sleep(QUIET_WINDOW);
            let now = self.cpu_ns();
            let used = now - before;
            if used < quiet || started.elapsed() > SETTLE_MAX {
                return (started.elapsed(), ms(used));
            }
            before = now;
        }
    }

    fn quit(mut self) {
        for m in &mut self.members {
            m.tell("quit");
        }
        for mut m in self.members.drain(..) {
            let _ = m.answer();
            let _ = m.child.wait();
        }
    }
}

fn measure_fan_out(n: usize, k: usize) -> FanOut {
    let mut team = Team::build(n);
    // Warm-up: the first message carries the sender's chain to every member.
    let warm = team.members[0].call("send warm-up");
    let warm_id = warm.split(' ').next().unwrap_or_default().to_owned();
    team.arrivals(&[warm_id], n - 1);
    let mut lat = Vec::new();
    let cpu0 = team.cpu_ns();
    for i in 0..k {
        let sent = team.members[0].call(&format!("send message {i} {}", "x".repeat(200)));
        let mut parts = sent.split(' ');
        let id = parts.next().expect("id");
        let t0: u64 = parts.next().and_then(|t| t.parse().ok()).expect("time");
        let last = team.arrivals(&[id.to_owned()], n - 1);
        lat.push(ms(last - t0));
        if std::env::var("BENCH_SERIES").is_ok() {
            eprintln!("series {i} {:.1}", ms(last - t0));
        }
    }
    // Includes the `cpu` commands' own cost, which is negligible beside a fan-out.
    let system_cpu_ms = ms(team.cpu_ns() - cpu0) / k as f64;
    let sender_cpu_ms = ms(team.members[0].call(&format!("offline_cpu {k}")).parse().expect("cpu"));
    team.quit();
    FanOut { n, p50: pct(&mut lat.clone(), 0.5), p99: pct(&mut lat, 0.99), system_cpu_ms, sender_cpu_ms }
}

fn measure_rekey(n: usize) -> Rekey {
    let mut team = Team::build(n);
    // Everyone sends once, one after another (or with `BENCH_FIRST_AT_ONCE`, all together):
    // pairwise sessions and sender chains are in place, as in a live team.
    if std::env::var("BENCH_FIRST_AT_ONCE").is_ok() {
        for (i, m) in team.members.iter_mut().enumerate() {
            m.tell(&format!("send hello from {i}"));
        }
        let ids: Vec<String> =
            team.members.iter_mut().map(|m| m.answer().split(' ').nth(1).expect("id").to_owned()).collect();
        team.arrivals(&ids, n - 1);
    } else {
        for i in 0..n {
            let sent = team.members[i].call(&format!("send hello from {i}"));
            let id = sent.split(' ').next().expect("id").to_owned();
            team.arrivals(&[id], n - 1);
        }
    }
    // A live team is idle when someone is removed.
    let (settled, last_window_ms) = team.settle();
    let [received, duplicates, retried, handed_off] = team.envelope_counts();
    eprintln!(
        "rekey at {n}: waited {settled:.1?} to settle (last {QUIET_WINDOW:?}: {last_window_ms:.0} ms of CPU); \
         envelopes stored {received}, received again {duplicates}, not yet {retried}, \
         handed to carriers {handed_off}"
    );
    team.drain();
    let remaining = n - 1;
    let t0: u64 = team.members[0].call(&format!("remove m{}", n - 1)).parse().expect("time");
    // Every remaining member's first view of the team without the removed one.
    let mut learned_at: HashMap<usize, u64> = HashMap::new();
    while learned_at.len() < remaining {
        if let Ev::Team { member, members, at } = team.next_event() {
            if members == remaining && member < remaining {
                learned_at.entry(member).or_insert(at);
            }
        }
    }
    let learned = learned_at.values().copied().max().unwrap_or(t0);
    for (i, m) in team.members[..remaining].iter_mut().enumerate() {
        m.tell(&format!("send after removal {i}"));
    }
    let mut new_ids = Vec::new();
    let mut sealed = 0;
    // Per member: when its send started after the removal, and how long the send took.
    let (mut starts, mut sends) = (Vec::new(), Vec::new());
    for m in &team.members[..remaining] {
        // "ok ID STARTED SEALED"
        let a = m.answer();
        let parts: Vec<&str> = a.split(' ').collect();
        new_ids.push(parts[1].to_owned());
        let (started, done): (u64, u64) = (parts[2].parse().expect("time"), parts[3].parse().expect("time"));
        starts.push(ms(started - t0));
        sends.push(ms(done - started));
        sealed = sealed.max(done);
    }
    eprintln!(
        "rekey at {n}: the members' sends started {:.0} / {:.0} / {:.0} ms after the removal (min / \
         median / max) and took {:.1} / {:.1} / {:.1} ms",
        pct(&mut starts, 0.0),
        pct(&mut starts, 0.5),
        pct(&mut starts, 1.0),
        pct(&mut sends, 0.0),
        pct(&mut sends, 0.5),
        pct(&mut sends, 1.0)
    );
    let converged = team.arrivals(&new_ids, remaining - 1);
    let after = team.envelope_counts();
    eprintln!(
        "rekey at {n}, after the removal: envelopes stored {}, received again {}, not yet {}, \
         handed to carriers {}",
        after[0] - received,
        after[1] - duplicates,
        after[2] - retried,
        after[3] - handed_off
    );
    team.quit();
    Rekey { n, learned_ms: ms(learned - t0), sealed_ms: ms(sealed - t0), converged_ms: ms(converged - t0) }
}

fn main() {
    if let Ok(dir) = std::env::var(MEMBER_ENV) {
        member_main(&dir);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes = env_list("BENCH_TEAM_SIZES", "10,50,100,200");
    let rekey_sizes = env_list("BENCH_REKEY_SIZES", "10,50,100");
    let k = env_list("BENCH_FANOUT_N", "50").first().copied().unwrap_or(50);
    println!("One process per member.");
    println!();
    println!("{}", FanOut::HEADER);
    for n in sizes {
        let f = measure_fan_out(n, k);
        println!("{}", f.row());
    }
    println!();
    println!("{}", Rekey::HEADER);
    for n in rekey_sizes {
        let r = measure_rekey(n);
        println!("{}", r.row());
    }
}
