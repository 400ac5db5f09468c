//! Every security claim of the 1:1 layer (DESIGN.md §4), attacked over a real socket: a hostile
//! peer ("mallory") speaks the wire protocol directly to a real node.

use crate::support::*;
use dingo_crypto::session::{PeerSessions, Recipient};
use dingo_crypto::Identity;
use dingo_net::{peer_id_of, Config, Net};
use dingo_node::{Home, NetConfig, Node};
use dingo_types::content::Content;
use dingo_types::envelope::{Auth, DirectHeader, Envelope, SessionInit};
use dingo_types::invite::Invite;
use dingo_types::team::{Action, OpBody, SignedOp};
use dingo_types::wire::{DeliveryStatus, Request, Response};
use dingo_types::{ConvId, DeviceKey, MsgId, UserId};

struct Mallory {
    me: Identity,
    net: Net,
    sessions: PeerSessions,
    victim: Invite,
    seq: u64,
}

impl Mallory {
    async fn new(victim: &Node) -> Self {
        Self::with_identity(victim, Identity::generate("mallory")).await
    }

    async fn with_identity(victim: &Node, me: Identity) -> Self {
        let mut secret = *me.device_secret_bytes().expose();
        let kp = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).expect("keypair");
        let (net, _events) = Net::spawn(kp, Config::loopback()).await.expect("net");
        let victim_invite = Invite::from_code(&victim.id().invite).expect("invite");
        let m = Self { me, net, sessions: PeerSessions::default(), victim: victim_invite, seq: 0 };
        m.learn(victim).await;
        m
    }

    async fn learn(&self, victim: &Node) {
        let peer = peer_id_of(&self.victim.cert.device_key).expect("peer");
        for a in victim.id().addrs {
            self.net.add_address(peer, a.parse().expect("addr")).await.expect("add");
        }
    }

    fn conv(&self) -> ConvId {
        ConvId::direct(&self.me.user_id(), &UserId::from_user_key(&self.victim.cert.user_key))
    }

    fn seal_to(&mut self, group: ConvId, text: &str) -> Envelope {
        self.seq += 1;
        let content = Content::Text { id: MsgId::random(), sent_at: 1, text: text.into() };
        self.sessions
            .seal(
                &self.me,
                Recipient { cert: &self.victim.cert, prekey: Some(&self.victim.prekey) },
                group,
                self.seq,
                &content.encode(),
            )
            .expect("seal")
    }

    fn seal(&mut self, text: &str) -> Envelope {
        self.seal_to(self.conv(), text)
    }

    /// Seals any content pairwise to the victim.
    fn seal_content(&mut self, content: &Content) -> Envelope {
        self.seal_content_as(content, false)
    }

    /// Seals content signed on its own, or left for [`dingo_crypto::batch::sign_batch`].
    fn seal_content_as(&mut self, content: &Content, for_batch: bool) -> Envelope {
        self.seq += 1;
        let (conv, seq, plaintext) = (self.conv(), self.seq, content.encode());
        let to = Recipient { cert: &self.victim.cert, prekey: Some(&self.victim.prekey) };
        let sealed = if for_batch {
            self.sessions.seal_for_batch(&self.me, to, conv, seq, &plaintext)
        } else {
            self.sessions.seal(&self.me, to, conv, seq, &plaintext)
        };
        sealed.expect("seal")
    }

    fn resign(&self, env: &mut Envelope) {
        env.auth = Auth::Single(self.me.sign_device(&env.signed_bytes()));
    }

    /// Rewrites the X3DH session start an envelope carries, and signs the result as mallory.
    fn with_forged_init(&self, mut env: Envelope, edit: impl FnOnce(&mut SessionInit)) -> Envelope {
        let mut h = DirectHeader::decode(&env.crypto_header).expect("header");
        edit(h.init.as_mut().expect("init"));
        env.crypto_header = h.encode();
        self.resign(&mut env);
        env
    }

    /// Delivers, or says the victim refused the connection.
    async fn try_deliver(&self, bytes: Vec<u8>) -> Option<DeliveryStatus> {
        let peer = peer_id_of(&self.victim.cert.device_key).expect("peer");
        match self.net.request(peer, Request::Deliver(vec![bytes])).await {
            Ok(Response::Results(r)) => Some(r[0]),
            Ok(other) => panic!("a delivery answered with {other:?}"),
            Err(_) => None,
        }
    }

    async fn deliver(&self, bytes: Vec<u8>) -> DeliveryStatus {
        self.deliver_all(vec![bytes]).await[0]
    }

    /// Delivers `envs` in one request.
    async fn deliver_all(&self, envs: Vec<Vec<u8>>) -> Vec<DeliveryStatus> {
        let peer = peer_id_of(&self.victim.cert.device_key).expect("peer");
        match self.net.request(peer, Request::Deliver(envs)).await.expect("request") {
            Response::Results(r) => r,
            other => panic!("a delivery answered with {other:?}"),
        }
    }

    /// Seals `texts` as one batch under one signature, as a node's run of sends is.
    fn seal_batch(&mut self, texts: &[&str]) -> Vec<Envelope> {
        let mut envs: Vec<Envelope> = texts
            .iter()
            .map(|text| {
                let content = Content::Text { id: MsgId::random(), sent_at: 1, text: (*text).into() };
                self.seal_content_as(&content, true)
            })
            .collect();
        dingo_crypto::batch::sign_batch(&self.me, &mut envs).expect("sign");
        envs
    }
}

async fn texts(victim: &Node) -> Vec<String> {
    victim.messages("mallory").await.map(|m| m.into_iter().map(|m| m.text).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_any_field_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let victim = started_node(dir.path(), "victim").await;
    let mut mallory = Mallory::new(&victim).await;
    let first = mallory.seal("hello");
    assert!(matches!(mallory.deliver(first.encode()).await, DeliveryStatus::Stored(_)));

    let env = mallory.seal("second");
    let bytes = env.encode();
    let header_len = env.header_bytes().len();
    // Byte offsets of each header field (see dingo_types::envelope).
    let fields: &[(&str, usize)] = &[
        ("version", 0),
        ("kind", 1),
        ("group", 2),
        ("epoch", 34),
        ("sender", 42),
        ("recipient", 74),
        ("seq", 106),
        ("deps count", 114),
        ("crypto header length", 115),
        ("crypto header: session id", 117),
        ("crypto header: ratchet key", 117 + 16),
        ("crypto header: message number", 117 + 16 + 32 + 4),
        ("ciphertext length", header_len),
        ("ciphertext", header_len + 4 + 3),
        ("signature", bytes.len() - 1),
    ];
    let rejected_before = victim.stats().rejected;
    for (name, offset) in fields {
        let mut bad = bytes.clone();
        bad[*offset] ^= 0x01;
        assert_eq!(mallory.deliver(bad).await, DeliveryStatus::Rejected, "flipped {name}");
    }
    // A sender who can sign still cannot change the header: it is the AEAD's associated data.
    let mut resigned_variants = Vec::new();
    let mut e = env.clone();
    e.epoch = 7;
    resigned_variants.push(("epoch", e));
    let mut e = env.clone();
    e.deps.push([9; 32]);
    resigned_variants.push(("deps", e));
    let mut e = env.clone();
    e.ciphertext[0] ^= 1;
    resigned_variants.push(("ciphertext", e));
    let mut e = env.clone();
    e.recipient = DeviceKey([7; 32]);
    resigned_variants.push(("recipient", e));
    let mut e = env.clone();
    let mut h = DirectHeader::decode(&e.crypto_header).expect("header");
    h.message_number += 1;
    e.crypto_header = h.encode();
    resigned_variants.push(("message number", e));
    for (name, mut e) in resigned_variants {
        mallory.resign(&mut e);
        assert_eq!(mallory.deliver(e.encode()).await, DeliveryStatus::Rejected, "re-signed {name}");
    }
    assert_eq!(mallory.deliver(vec![1, 2, 3]).await, DeliveryStatus::Rejected, "garbage");
    assert_eq!(victim.stats().rejected - rejected_before, fields.len() as u64 + 6);

    // Ratchet and replay state are unchanged: the untouched envelope still opens.
    assert!(matches!(mallory.deliver(bytes).await, DeliveryStatus::Stored(_)));
    assert_eq!(texts(&victim).await, ["hello", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_signature_vouches_only_for_its_own_untouched_envelopes() {
    let dir = tempfile::tempdir().expect("tmp");
    let victim = started_node(dir.path(), "victim").await;
    let mut mallory = Mallory::new(&victim).await;
    let envs: Vec<Vec<u8>> =
        mallory.seal_batch(&["one", "two", "three"]).iter().map(|e| e.encode()).collect();
    assert_eq!(envs[0][0], 2, "batch-signed envelopes are format version 2");
    assert!(matches!(mallory.deliver(envs[0].clone()).await, DeliveryStatus::Stored(_)));

    // Flip one bit anywhere in the second envelope's proof or signature: batch id, index,
    // height, each path hash, signature; and the version byte (which would make it version 1).
    // Each copy travels in one request behind the genuine envelope, whose batch root the victim
    // has then checked: a changed proof must not ride on that check.
    let len = envs[1].len();
    let proof_start = len - (16 + 2 + 1 + 2 * 32 + 64);
    let mut offsets: Vec<(&str, usize)> = vec![("version", 0)];
    for (name, at) in [("batch id", 0), ("index", 17), ("height", 18), ("path 0", 19), ("path 1", 19 + 32)] {
        offsets.push((name, proof_start + at));
    }
    offsets.push(("signature", len - 1));
    let rejected_before = victim.stats().rejected;
    let mut request = vec![envs[1].clone()];
    for (_, at) in &offsets {
        let mut bad = envs[1].clone();
        bad[*at] ^= 0x01;
        request.push(bad);
    }
    let statuses = mallory.deliver_all(request).await;
    assert!(matches!(statuses[0], DeliveryStatus::Stored(_)));
    for ((name, _), status) in offsets.iter().zip(&statuses[1..]) {
        assert_eq!(*status, DeliveryStatus::Rejected, "flipped {name}");
    }
    assert_eq!(victim.stats().rejected - rejected_before, offsets.len() as u64);

    // Nothing changed: the genuine third opens, and a replay of the first is a duplicate.
    let statuses = mallory.deliver_all(vec![envs[2].clone(), envs[0].clone()]).await;
    assert!(matches!(statuses[0], DeliveryStatus::Stored(_)));
    assert!(matches!(statuses[1], DeliveryStatus::Duplicate(_)));
    assert_eq!(texts(&victim).await, ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_acknowledged_but_never_stored_twice_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let victim = started_node(dir.path(), "victim").await;
    let mut mallory = Mallory::new(&victim).await;
    let env = mallory.seal("only once").encode();
    assert!(matches!(mallory.deliver(env.clone()).await, DeliveryStatus::Stored(_)));
    assert!(matches!(mallory.deliver(env.clone()).await, DeliveryStatus::Duplicate(_)));
    assert_eq!(texts(&victim).await, ["only once"]);

    victim.shutdown().await.expect("shutdown");
    drop(victim);
    let victim = Node::open(&Home::new(dir.path().join("victim")), None).expect("reopen");
    victim.start_network(NetConfig::loopback(), vec![]).await.expect("net");
    mallory.learn(&victim).await;
    assert!(matches!(mallory.deliver(env).await, DeliveryStatus::Duplicate(_)));
    assert_eq!(texts(&victim).await, ["only once"]);
    let next = mallory.seal("still in sync").encode();
    assert!(matches!(mallory.deliver(next).await, DeliveryStatus::Stored(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_for_another_conversation_or_signer_are_rejected() {
    let dir = tempfile::tempdir().expect("tmp");
    let victim = started_node(dir.path(), "victim").await;
    let bob = started_node(dir.path(), "bob").await;
    befriend(&victim, &bob).await;
    let mut mallory = Mallory::new(&victim).await;
    let hi = mallory.seal("hi").encode();
    assert!(matches!(mallory.deliver(hi).await, DeliveryStatus::Stored(_)));

    // Moved into the victim's conversation with bob.
    let bob_uid = UserId::from_user_key(&Invite::from_code(&bob.id().invite).expect("inv").cert.user_key);
    let victim_uid = UserId::from_user_key(&mallory.victim.cert.user_key);
    let moved = mallory.seal_to(ConvId::direct(&victim_uid, &bob_uid), "injected into bob's chat");
    assert_eq!(mallory.deliver(moved.encode()).await, DeliveryStatus::Rejected);

    // Claims to come from bob's device, signed by mallory.
    let bob_cert = Invite::from_code(&bob.id().invite).expect("inv").cert;
    let mut forged = mallory.seal("I am bob");
    forged.sender = DeviceKey(bob_cert.device_key);
    mallory.resign(&mut forged);
    assert_eq!(mallory.deliver(forged.encode()).await, DeliveryStatus::Rejected);

    // A fresh session start that carries bob's certificate but is signed by mallory's device.
    let mut fresh = Mallory::new(&victim).await;
    let sealed = fresh.seal("I am bob too");
    let env = fresh.with_forged_init(sealed, |init| init.cert = bob_cert);
    assert_eq!(fresh.deliver(env.encode()).await, DeliveryStatus::Rejected);

    let at_bob_conv = victim.messages("bob").await.expect("m");
    assert!(at_bob_conv.is_empty(), "nothing reached the conversation with bob");
    assert_eq!(texts(&victim).await, ["hi"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_order_x25519_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let victim = started_node(dir.path(), "victim").await;
    let low_order: [[u8; 32]; 3] = [
        [0; 32],
        {
            let mut one = [0; 32];
            one[0] = 1;
            one
        },
        // A point of order 8 (from the Curve25519 small-subgroup list).
        [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
            0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
        ],
    ];
    for point in low_order {
        let mut mallory = Mallory::new(&victim).await;
        let sealed = mallory.seal("low order");
        let env = mallory.with_forged_init(sealed, |init| init.ephemeral = point);
        assert_eq!(mallory.deliver(env.encode()).await, DeliveryStatus::Rejected);

        // And a sender cannot be tricked into a session with a low-order prekey.
        let mut victim_invite = mallory.victim.clone();
        victim_invite.prekey.public = point;
        let content = Content::Text { id: MsgId::random(), sent_at: 1, text: "x".into() };
        let res = PeerSessions::default().seal(
            &mallory.me,
            Recipient { cert: &victim_invite.cert, prekey: Some(&victim_invite.prekey) },
            mallory.conv(),
            1,
            &content.encode(),
        );
        assert!(res.is_err(), "sealed to a low-order (or unsigned) prekey");
    }
    assert!(victim.contacts().await.expect("contacts").is_empty());
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_store_shows_no_plaintext() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let bob = started_node(dir.path(), "bob").await;
    befriend(&alice, &bob).await;
    let canary = "CANARY-7f3a9c-the-merger-is-off";
    let id = alice.send("bob", canary).await.expect("send").id;
    eventually("delivery", async || {
        bob.messages("alice").await.ok()?.into_iter().find(|m| m.id == id).map(|_| ())
    })
    .await;
    bob.read("alice").await.expect("read");
    alice.shutdown().await.expect("shutdown");
    bob.shutdown().await.expect("shutdown");
    for name in ["alice", "bob"] {
        let home = dir.path().join(name);
        for needle in [canary.as_bytes(), b"the-merger", "alice".as_bytes()] {
            let store_hits = files_contain(&home.join("store"), needle);
            assert!(store_hits.is_empty(), "{:?} found in {store_hits:?}", String::from_utf8_lossy(needle));
        }
        let key_hits = files_contain(&home, canary.as_bytes());
        assert!(key_hits.is_empty(), "canary in {key_hits:?}");
    }
}

#[test]
fn debug_output_of_secret_holders_prints_no_key_bytes() {
    let id = Identity::generate("dbg");
    let secret = *id.device_secret_bytes().expose();
    let storage = *id.storage_key().expose();
    let shown = format!(
        "{:?} {:?} {:?} {:?}",
        id,
        id.device_secret_bytes(),
        dingo_crypto::at_rest::StorageKey::new(id.storage_key().clone()),
        PeerSessions::default()
    );
    for s in [secret, storage] {
        let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex), "{shown}");
        assert!(!shown.contains(&format!("{:?}", s)), "{shown}");
        assert!(!shown.contains(&format!("{:?}", &s[..8])[1..20]), "{shown}");
    }
}

/// A team op signed by `who` naming `deps`, with no local checks (what a hostile client sends).
fn forged_op(who: &Identity, team: [u8; 32], deps: Vec<[u8; 32]>, lamport: u64, action: Action) -> Vec<u8> {
    let body = OpBody { team, author: who.cert().encode(), lamport, deps, at: 1, action };
    let encoded = SignedOp::encode_body(&body);
    let signature = who.sign_device(&SignedOp::signed_bytes(&encoded));
    SignedOp { body: encoded, signature }.encode()
}

fn hex32(s: &str) -> [u8; 32] {
    s.parse::<ConvId>().expect("hex id").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_member_cannot_forge_ops_read_or_write_other_channels_or_flood_dings() {
    let dir = tempfile::tempdir().expect("tmp");
    let alice = started_node(dir.path(), "alice").await;
    let team = alice.team_create("acme").await.expect("team");
    let team_id = hex32(&team.team_id);
    alice.dept_create("eng").await.expect("dept");
    alice.dept_add("eng", "alice").await.expect("dept add");
    let eng = alice.channel_create("eng", vec!["eng".into()], vec![]).await.expect("channel");
    let eng_id = hex32(&eng.iter().find(|c| c.name == "eng").expect("eng").id);

    // Mallory joins honestly, then her node is replaced by a hand-driven client with her keys.
    let mallory_home = Home::new(dir.path().join("mallory"));
    let real = started_node(dir.path(), "mallory").await;
    let code = alice.team_invite(None, None).await.expect("code").code;
    real.team_join(&code).await.expect("join");
    eventually("mallory to join", async || (alice.team().await.ok()?.members.len() == 2).then_some(())).await;
    real.shutdown().await.expect("stop");
    drop(real);
    let identity = mallory_home.load_identity(None).expect("mallory's keys");
    let mut mallory = Mallory::with_identity(&alice, identity).await;
    mallory.seq = 100; // past what her real node already sent
    let ops_before = alice.team().await.expect("team").ops;

    // A member's self-promotion is kept as a signed op but never takes effect.
    let promote =
        forged_op(&mallory.me, team_id, vec![team_id], 1, Action::Promote { user: mallory.me.user_id() });
    let env = mallory.seal_content(&Content::TeamOps { team: team_id, ops: vec![promote.clone()] });
    let status = mallory.deliver(env.encode()).await;
    assert!(matches!(status, DeliveryStatus::Stored(_)), "{status:?}");
    let t = alice.team().await.expect("team");
    let m = t.members.iter().find(|m| m.name == "mallory").expect("mallory");
    assert_eq!(m.role, "member");
    assert_eq!((t.ops, t.void_ops), (ops_before + 1, 1));
    // Replays: the same envelope is a duplicate; the same op in a new envelope changes nothing.
    assert!(matches!(mallory.deliver(env.encode()).await, DeliveryStatus::Duplicate(_)));
    let again = mallory.seal_content(&Content::TeamOps { team: team_id, ops: vec![promote] });
    mallory.deliver(again.encode()).await;
    assert_eq!(alice.team().await.expect("team").ops, ops_before + 1);
    // An op for another team, and garbage, are refused without harm.
    let foreign = forged_op(&mallory.me, [9; 32], vec![[9; 32]], 1, Action::DeptCreate { name: "x".into() });
    let env = mallory.seal_content(&Content::TeamOps { team: team_id, ops: vec![foreign, vec![1, 2, 3]] });
    mallory.deliver(env.encode()).await;
    assert!(!alice.team().await.expect("team").departments.iter().any(|d| d.name == "x"));

    // Writing into a department channel she is not in: her key and message are never accepted.
    let mut chain = dingo_crypto::group::SenderChain::new(1);
    let (chain_id, n, key) = chain.distribution();
    let env = mallory.seal_content(&Content::SenderKey { group: ConvId(eng_id), chain_id, n, key });
    assert_eq!(mallory.deliver(env.encode()).await, DeliveryStatus::Retry);
    let text = Content::Text { id: MsgId::random(), sent_at: 1, text: "fake news".into() };
    let genv = chain.seal(&mallory.me, ConvId(eng_id), 0, 1, &text.encode()).expect("seal");
    assert!(matches!(mallory.deliver(genv.encode()).await, DeliveryStatus::Retry | DeliveryStatus::Rejected));
    assert!(alice.messages("#eng").await.expect("eng").is_empty());

    // A DING flood in one request: stored, but only the first ones alert.
    let flood: Vec<Vec<u8>> = (0..25)
        .map(|i| {
            let d =
                Content::Ding { id: MsgId::random(), sent_at: 1, text: format!("ding {i}"), repeat_every: 1 };
            mallory.seal_content(&d).encode()
        })
        .collect();
    let peer = peer_id_of(&mallory.victim.cert.device_key).expect("peer");
    let Response::Results(statuses) =
        mallory.net.request(peer, Request::Deliver(flood)).await.expect("flood")
    else {
        panic!("a delivery must be answered with statuses");
    };
    assert!(statuses.iter().all(|s| matches!(s, DeliveryStatus::Stored(_))), "{statuses:?}");
    let dings = alice.dings().await.expect("dings");
    assert_eq!(dings.len(), 25);
    assert_eq!(dings.iter().filter(|d| d.muted).count(), 5, "alerts are rate-limited per sender");
    assert!(dings.iter().all(|d| d.repeat_every >= 5), "re-alert interval has a floor");

    // Removed: anything she sends afterwards, backdated or not, is refused.
    alice.team_remove("mallory").await.expect("remove");
    let backdated =
        forged_op(&mallory.me, team_id, vec![team_id], 1, Action::DeptCreate { name: "shadow".into() });
    let env = mallory.seal_content(&Content::TeamOps { team: team_id, ops: vec![backdated] });
    // Her connection is closed and refused (or, if it slipped through, the envelope is).
    let refused = |s: Option<DeliveryStatus>| matches!(s, None | Some(DeliveryStatus::Rejected));
    assert!(refused(mallory.try_deliver(env.encode()).await));
    let env = mallory.seal("still here");
    assert!(refused(mallory.try_deliver(env.encode()).await));
    assert!(!alice.team().await.expect("team").departments.iter().any(|d| d.name == "shadow"));
}

/// Mail for `carol` sealed by mallory (valid signatures, so only the bounds stop it).
fn mail_for(mallory: &mut Mallory, carol: &Invite, n: usize) -> Vec<Vec<u8>> {
    let conv = ConvId::direct(&mallory.me.user_id(), &UserId::from_user_key(&carol.cert.user_key));
    (0..n)
        .map(|i| {
            mallory.seq += 1;
            let content = Content::Text { id: MsgId::random(), sent_at: 1, text: format!("junk {i}") };
            mallory
                .sessions
                .seal(
                    &mallory.me,
                    Recipient { cert: &carol.cert, prekey: Some(&carol.prekey) },
                    conv,
                    mallory.seq,
                    &content.encode(),
                )
                .expect("seal")
                .encode()
        })
        .collect()
}

async fn carry(mallory: &Mallory, envs: Vec<Vec<u8>>) -> Vec<DeliveryStatus> {
    let peer = peer_id_of(&mallory.victim.cert.device_key).expect("peer");
    match mallory.net.request(peer, Request::Carry(envs)).await.expect("carry") {
        Response::Results(r) => r,
        other => panic!("a carry answered with {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_mail_to_carry_hits_the_rate_limit_and_others_mail_still_gets_through() {
    let dir = tempfile::tempdir().expect("tmp");
    let bob = started_node(dir.path(), "bob").await;
    let alice = started_node(dir.path(), "alice").await;
    let carol = started_node(dir.path(), "carol").await;
    befriend(&alice, &bob).await;
    befriend(&bob, &carol).await;
    befriend(&alice, &carol).await;
    let carol_invite = Invite::from_code(&carol.id().invite).expect("invite");
    let carol_home = Home::new(dir.path().join("carol"));
    carol.shutdown().await.expect("carol stops");
    drop(carol);

    // A stranger's mail is not carried at all.
    let mut stranger = Mallory::new(&bob).await;
    let junk = mail_for(&mut stranger, &carol_invite, 50);
    assert!(carry(&stranger, junk).await.iter().all(|s| *s == DeliveryStatus::Rejected));

    // A contact flooding: past its share of carol's mailbox the carrier refuses, and beyond its
    // per-minute allowance it says "retry later".
    let mut mallory = Mallory::new(&bob).await;
    bob.add_contact(&mallory.me.invite(vec![]).to_code(), None).await.expect("contact");
    let (mut stored, mut refused, mut deferred) = (0, 0, 0);
    for _ in 0..6 {
        let junk = mail_for(&mut mallory, &carol_invite, 500);
        for s in carry(&mallory, junk).await {
            match s {
                DeliveryStatus::Stored(_) => stored += 1,
                DeliveryStatus::Rejected => refused += 1,
                DeliveryStatus::Retry => deferred += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!((stored, refused, deferred), (1000, 1000, 1000), "the mailbox share and the rate limit hold");

    // The carrier stays responsive and takes others' mail for the same recipient.
    let t0 = std::time::Instant::now();
    let id = alice.send("bob", "still there?").await.expect("send").id;
    eventually("bob to answer alice", async || {
        let m = alice.messages("bob").await.ok()?.into_iter().find(|m| m.id == id)?;
        (m.status >= dingo_node::Status::Delivered).then_some(())
    })
    .await;
    eprintln!("a message to the flooded carrier was delivered in {:?}", t0.elapsed());
    alice.send("carol", "the real message").await.expect("send");
    eventually("alice's mail for carol to reach bob's mailbox", async || {
        let peers = bob.peers().await.ok()?;
        (peers.iter().find(|p| p.name.as_deref() == Some("carol"))?.mailbox > 1000).then_some(())
    })
    .await;
    let carol = Node::open(&carol_home, None).expect("reopen");
    let bob_addr = bob.id().addrs[0].parse().expect("addr");
    carol.start_network(NetConfig::loopback(), vec![bob_addr]).await.expect("network");
    eventually("carol to get alice's message through bob", async || {
        let m = carol.messages("alice").await.ok()?;
        m.iter().any(|m| m.text == "the real message").then_some(())
    })
    .await;
    for n in [alice, bob, carol] {
        n.shutdown().await.expect("stop");
    }
}

/// A node's own channel envelope offered back to it (a sync racing its send, or anyone
/// replaying it) is a duplicate: never opened as another member's, never a stuck batch, and
/// the node's own sender chain is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_own_channel_envelope_offered_back_is_a_duplicate() {
    let dir = tempfile::tempdir().expect("tmp");
    let [alice, bob] = team_of(dir.path(), ["alice", "bob"]).await;
    alice.send("#general", "first").await.expect("send");
    let own = alice.test_support_group_log("#general").await.expect("log");
    assert_eq!(own.len(), 1);
    let stranger = Mallory::new(&alice).await;
    for _ in 0..2 {
        let answer = stranger.deliver(own[0].clone()).await;
        assert!(matches!(answer, DeliveryStatus::Duplicate(_)), "{answer:?}");
    }
    alice.send("#general", "second").await.expect("alice still sends under her chain");
    eventually("bob to read both", async || {
        let m = bob.messages("#general").await.ok()?;
        (m.iter().any(|m| m.text == "first") && m.iter().any(|m| m.text == "second")).then_some(())
    })
    .await;
    for n in [alice, bob] {
        n.shutdown().await.expect("stop");
    }
}
