//! Shared helpers: in-process nodes, `dingo` processes, and waiting on conditions.

#![allow(dead_code)]

use dingo_api::Client;
use dingo_node::{Home, MessageView, NetConfig, Node, Status};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any step may take before a test fails (generous: CI machines are slow).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`].
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking version of [`eventually`].
pub fn eventually_blocking<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node in this process, listening on 127.0.0.1 with mDNS off.
pub async fn started_node(dir: &Path, name: &str) -> Node {
    let home = Home::new(dir.join(name));
    Node::init(&home, name, None).expect("init");
    let node = Node::open(&home, None).expect("open");
    node.start_network(NetConfig::loopback(), vec![]).await.expect("network");
    node
}

/// `node` joins `admin`'s team with a fresh join code and waits until it is in.
pub async fn join_team(admin: &Node, node: &Node) {
    let code = admin.team_invite(None, None).await.expect("invite").code;
    node.team_join(&code).await.expect("join");
    let me = node.id().user_id;
    eventually("the join", async || {
        node.team().await.ok()?.members.iter().any(|m| m.user_id == me).then_some(())
    })
    .await;
}

/// A team "acme" made by the first of `names`, with every other one joined in order; all
/// nodes started in `dir`.
pub async fn team_of<const N: usize>(dir: &Path, names: [&str; N]) -> [Node; N] {
    let mut nodes = Vec::with_capacity(N);
    for name in names {
        nodes.push(started_node(dir, name).await);
    }
    if let Some((admin, others)) = nodes.split_first() {
        admin.team_create("acme").await.expect("team");
        for n in others {
            join_team(admin, n).await;
        }
    }
    let Ok(nodes) = nodes.try_into() else { panic!("{N} nodes were started") };
    nodes
}

/// Makes `a` and `b` contacts of each other (using invites with addresses).
pub async fn befriend(a: &Node, b: &Node) {
    let (an, bn) = (a.id().name, b.id().name);
    a.add_contact(&b.id().invite, None).await.expect("a adds b");
    b.add_contact(&a.id().invite, None).await.expect("b adds a");
    assert!(a.contacts().await.expect("contacts").iter().any(|c| c.name == bn));
    assert!(b.contacts().await.expect("contacts").iter().any(|c| c.name == an));
}

/// The path of the `dingo` binary under test.
pub fn dingo_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dingo"))
}

/// Runs a `dingo` command to completion with `--home`.
pub fn dingo(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(dingo_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("DINGO_HOME")
        .env_remove("DINGO_PASSPHRASE_FILE")
        .output()
        .expect("run dingo")
}

/// Runs a command that must succeed; returns stdout.
pub fn dingo_ok(home: &Path, args: &[&str]) -> String {
    let out = dingo(home, args);
    assert!(
        out.status.success(),
        "dingo {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 stdout")
}

/// A `dingo run` process on 127.0.0.1 with mDNS off; killed (SIGKILL) when dropped.
pub struct NodeProc {
    pub home: PathBuf,
    child: Child,
    pub client: Client,
    pub addrs: Vec<String>,
}

impl NodeProc {
    /// Starts `dingo run` on `home` and waits until its API answers.
    pub fn start(home: &Path, listen: &str, peers: &[String]) -> Self {
        let _ = std::fs::remove_file(home.join("api.json"));
        let mut cmd = Command::new(dingo_bin());
        cmd.arg("--home").arg(home).args(["run", "--no-mdns", "--listen", listen]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let stderr = std::fs::File::create(home.join("run.log")).expect("log file");
        let mut child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().expect("spawn dingo run");
        let client = eventually_blocking("the node's API", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "dingo run exited early ({status}): {}",
                    std::fs::read_to_string(home.join("run.log")).unwrap_or_default()
                );
            }
            let c = Client::from_home(&Home::new(home)).ok()?;
            c.get::<dingo_node::IdInfo>("/v1/id", &[]).ok().map(|_| c)
        });
        let id: dingo_node::IdInfo = client.get("/v1/id", &[]).expect("id");
        Self { home: home.to_owned(), child, client, addrs: id.addrs }
    }

    /// The node's invite (with its listen addresses).
    pub fn invite(&self) -> String {
        self.client.get::<dingo_node::IdInfo>("/v1/id", &[]).expect("id").invite
    }

    /// Messages with `who`.
    pub fn messages(&self, who: &str) -> Vec<MessageView> {
        self.client.get("/v1/messages", &[("with", who)]).expect("messages")
    }

    /// SIGKILL, no cleanup: what a crash or power cut looks like.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts outgoing messages at `status` or beyond.
pub fn count_at_least(msgs: &[MessageView], status: Status) -> usize {
    msgs.iter()
        .filter(|m| {
            m.direction == dingo_node::Direction::Out && m.status >= status && m.status != Status::Failed
        })
        .count()
}

/// Reopens a stopped node and dials `peers` (and nobody else).
pub async fn restart(dir: &Path, name: &str, peers: &[&Node]) -> Node {
    let node = Node::open(&Home::new(dir.join(name)), None).expect("reopen");
    let addrs = peers.iter().map(|p| p.id().addrs[0].parse().expect("addr")).collect();
    node.start_network(NetConfig::loopback(), addrs).await.expect("network");
    node
}
