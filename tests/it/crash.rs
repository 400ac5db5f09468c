//! Crashes (`kill -9`) of real `dingo run` processes: nothing acknowledged is lost, nothing is
//! delivered twice, and each sender's order is kept.

use crate::support::*;
use dingo_api::SendBody;
use dingo_node::{MessageView, SendResult, Status};

const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

fn init(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let home = dir.join(name);
    dingo_ok(&home, &["init", "--name", name]);
    home
}

fn incoming(node: &NodeProc, from: &str) -> Vec<MessageView> {
    node.client.get::<Vec<MessageView>>("/v1/messages", &[("with", from)]).unwrap_or_default()
}

#[test]
fn recipient_killed_mid_stream_of_1000_gets_each_exactly_once_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let alice = NodeProc::start(&a, LOOPBACK, &[]);
    let bob = NodeProc::start(&b, LOOPBACK, &[]);
    dingo_ok(&a, &["contact", "add", &bob.invite()]);
    dingo_ok(&b, &["contact", "add", &alice.invite()]);

    let total = 1000;
    let mut ids = Vec::with_capacity(total);
    let mut bob = Some(bob);
    for i in 0..total {
        let r: SendResult = alice
            .client
            .post("/v1/send", &SendBody { to: "bob".into(), text: format!("m{i:04}") })
            .expect("send");
        ids.push(r.id);
        if i == 400 {
            // Let some arrive, then pull the plug mid-stream.
            eventually_blocking("some deliveries", || {
                (incoming(bob.as_ref()?, "alice").len() > 50).then_some(())
            });
            bob.take().expect("bob").kill9();
        }
    }
    let bob = NodeProc::start(&b, LOOPBACK, &alice.addrs);
    eventually_blocking("all 1000 delivered", || {
        let msgs = alice.messages("bob");
        (count_at_least(&msgs, Status::Delivered) == total).then_some(())
    });
    let got = incoming(&bob, "alice");
    let got_ids: Vec<&str> = got.iter().map(|m| m.id.as_str()).collect();
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(got.len(), total, "exactly once");
    assert_eq!(got_ids, want, "every message, in the sender's order");
    let texts: Vec<String> = got.iter().map(|m| m.text.clone()).collect();
    assert!(texts.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn sender_killed_with_queued_messages_delivers_them_after_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let bob = NodeProc::start(&b, LOOPBACK, &[]);
    let bob_invite = bob.invite();
    bob.kill9();
    let alice = NodeProc::start(&a, LOOPBACK, &[]);
    dingo_ok(&a, &["contact", "add", &bob_invite]);
    let mut ids = Vec::new();
    for i in 0..50 {
        let r: SendResult = alice
            .client
            .post("/v1/send", &SendBody { to: "bob".into(), text: format!("q{i:02}") })
            .expect("send");
        ids.push(r.id);
    }
    alice.kill9();
    let bob = NodeProc::start(&b, LOOPBACK, &[]);
    let _alice = NodeProc::start(&a, LOOPBACK, &bob.addrs);
    eventually_blocking("the queued messages at bob", || {
        (incoming(&bob, "alice").len() == ids.len()).then_some(())
    });
    let got: Vec<String> = incoming(&bob, "alice").into_iter().map(|m| m.id).collect();
    assert_eq!(got, ids);
}

fn channel_total(node: &NodeProc) -> u64 {
    let convs: Vec<dingo_node::ConversationView> = node.client.get("/v1/inbox", &[]).unwrap_or_default();
    convs.iter().find(|c| c.contact == "#general").map_or(0, |c| c.total)
}

#[test]
fn carrier_killed_mid_sync_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b, c) = (init(dir.path(), "alice"), init(dir.path(), "bob"), init(dir.path(), "carol"));
    let alice = NodeProc::start(&a, LOOPBACK, &[]);
    let bob = NodeProc::start(&b, LOOPBACK, &[]);
    let carol = NodeProc::start(&c, LOOPBACK, &[]);
    dingo_ok(&a, &["team", "create", "crew"]);
    for home in [&b, &c] {
        let code = dingo_ok(&a, &["team", "invite"]).trim().to_owned();
        dingo_ok(home, &["team", "join", &code]);
    }
    // Everyone's channel key reaches everyone while all are together.
    for home in [&a, &b, &c] {
        dingo_ok(home, &["send", "#general", "hello"]);
    }
    for n in [&alice, &bob, &carol] {
        eventually_blocking("the greetings", || (channel_total(n) == 3).then_some(()));
    }
    carol.stop();
    let total = 3000;
    for i in 0..total {
        let body = SendBody { to: "#general".into(), text: format!("m {i}") };
        let _: SendResult = alice.client.post("/v1/send", &body).expect("send");
    }
    eventually_blocking("bob to carry the whole channel", || {
        (channel_total(&bob) == total + 3).then_some(())
    });
    alice.stop();

    // Carol comes back and meets only bob, who dies (kill -9) as soon as the sync has started.
    let carol = NodeProc::start(&c, LOOPBACK, &[bob.addrs[0].clone()]);
    let at_kill = eventually_blocking("the sync to start", || {
        let n = channel_total(&carol);
        (n > 3).then_some(n)
    });
    bob.kill9();
    let bob = NodeProc::start(&b, LOOPBACK, &[carol.addrs[0].clone()]);
    assert_eq!(channel_total(&bob), total + 3, "the carrier lost nothing it had stored");
    eventually_blocking("carol to get the rest from the restarted carrier", || {
        (channel_total(&carol) == total + 3).then_some(())
    });
    let msgs: Vec<MessageView> = carol.client.get("/v1/messages", &[("with", "#general")]).expect("messages");
    let mut ids: Vec<&str> = msgs.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, total + 3, "nothing duplicated");
    let order: Vec<u64> = msgs.iter().filter_map(|m| m.text.strip_prefix("m ")?.parse().ok()).collect();
    assert_eq!(order, (0..total).collect::<Vec<_>>(), "alice's order kept");
    eprintln!("carrier killed with {at_kill} of {} stored at the recipient", total + 3);
}
