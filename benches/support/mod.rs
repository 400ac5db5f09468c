//! What the benchmarks share (each bench includes this module).

use std::time::{Duration, Instant};

/// The allocator the `dingo` binary uses (src/main.rs), so nodes here run as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Polls `f` every 5 ms until it holds; panics after 10 minutes, naming `what`.
#[allow(dead_code)] // the multi-process team bench waits on events instead
pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(600), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The runtime every bench runs on (2 workers, like the machines it is measured on), after
/// turning on logs when `RUST_LOG` is set; `None` when cargo only lists the benches.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    if std::env::args().any(|a| a == "--list") {
        return None;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    Some(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime"))
}

/// CPU time this process has used so far (user + system, all threads).
#[allow(dead_code)] // not every bench measures CPU
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// How many files this process may have open (the soft limit).
#[allow(dead_code)] // only the team bench needs it
pub fn open_files_limit() -> u64 {
    // SAFETY: getrlimit only writes the struct it is given.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// A comma-separated list of sizes from the environment variable `name`, or `default`.
#[allow(dead_code)] // only the team benches take lists
pub fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// One size's channel fan-out figures (milliseconds), as both team benches report them.
#[allow(dead_code)]
pub struct FanOut {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    /// CPU of every node per fan-out message.
    pub system_cpu_ms: f64,
    /// The sender's CPU per message with nothing else running.
    pub sender_cpu_ms: f64,
}

#[allow(dead_code)]
impl FanOut {
    pub const HEADER: &str =
        "| members | fan-out p50 | fan-out p99 | sender CPU / msg (seal once + queue for all, \
                              durable; alone) | system CPU / msg (all members) |\n|---|---|---|---|---|";

    pub fn row(&self) -> String {
        let f = self;
        format!(
            "| {} | {:.1} ms | {:.1} ms | {:.2} ms | {:.1} ms |",
            f.n, f.p50, f.p99, f.sender_cpu_ms, f.system_cpu_ms
        )
    }
}

/// One size's rekey figures: milliseconds from the removal until each step held everywhere.
#[allow(dead_code)]
pub struct Rekey {
    pub n: usize,
    pub learned_ms: f64,
    pub sealed_ms: f64,
    pub converged_ms: f64,
}

#[allow(dead_code)]
impl Rekey {
    pub const HEADER: &str = "| members | removal known by all | all remaining sealed under new chains | \
                              all new messages received by all |\n|---|---|---|---|";

    pub fn row(&self) -> String {
        format!(
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms |",
            self.n, self.learned_ms, self.sealed_ms, self.converged_ms
        )
    }
}
