//! What the benchmarks share (each bench includes this module).

use std::time::{Duration, Instant};

/// Polls `f` every 5 ms until it holds; panics after 10 minutes, naming `what`.
pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(600), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
