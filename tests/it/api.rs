//! The local API refuses anyone without the token, and browsers on other origins or hostnames
//! (cross-site requests, DNS rebinding), and serves the CLI's calls.

use crate::support::*;
use dingo_node::Home;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_token_a_loopback_host_and_no_foreign_origin() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = started_node(dir.path(), "alice").await;
    let api = dingo_api::serve(node.clone()).await.expect("serve");
    let home = Home::new(dir.path().join("alice"));
    let token = std::fs::read_to_string(home.token_file()).expect("token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.token_file()).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "token file readable by others: {mode:o}");
    }
    assert!(api.addr.ip().is_loopback());
    let url = format!("http://{}/v1/id", api.addr);
    let status = move |headers: Vec<(&'static str, String)>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut req = ureq::get(&url);
                for (k, v) in &headers {
                    req = req.set(k, v);
                }
                match req.call() {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(code, _)) => code,
                    Err(e) => panic!("transport error: {e}"),
                }
            })
            .await
            .expect("join")
        }
    };
    let bearer = format!("Bearer {}", token.trim());
    assert_eq!(status(vec![]).await, 401, "no token");
    assert_eq!(status(vec![("Authorization", "Bearer 00".into())]).await, 401, "wrong token");
    assert_eq!(
        status(vec![("Authorization", bearer.clone()), ("Host", "evil.example:80".into())]).await,
        403
    );
    assert_eq!(
        status(vec![("Authorization", bearer.clone()), ("Origin", "http://evil.example".into())]).await,
        403
    );
    assert_eq!(status(vec![("Authorization", bearer.clone())]).await, 200);
    let client = dingo_api::Client::from_home(&home).expect("client");
    let id: dingo_node::IdInfo =
        tokio::task::spawn_blocking(move || client.get("/v1/id", &[]).expect("id")).await.expect("join");
    assert_eq!(id.name, "alice");
    api.stop();
}
