//! What the benchmarks share (each bench includes this module).

use std::time::{Duration, Instant};

/// The allocator the `dingo` binary uses (src/main.rs), so nodes here run as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Polls `f` every 5 ms until it holds; panics after 10 minutes, naming `what`.
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
