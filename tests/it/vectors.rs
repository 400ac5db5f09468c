//! Frozen known-answer vectors for the wire formats and the key schedule, and property tests for
//! codec round trips. A change to any constant here is a format change: bump the version.

use dingo_crypto::ratchet;
use dingo_crypto::x3dh;
use dingo_crypto::Secret32;
use dingo_types::content::Content;
use dingo_types::envelope::{Auth, BatchProof, DirectHeader, Envelope, EnvelopeKind, SessionInit};
use dingo_types::invite::{DeviceCert, Invite, SignedPreKey};
use dingo_types::wire::{DeliveryStatus, Request, Response};
use dingo_types::{ConvId, DeviceKey, MsgId};
use proptest::prelude::*;
use x25519_dalek::{PublicKey, StaticSecret};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn cert(b: u8) -> DeviceCert {
    DeviceCert {
        user_key: [b; 32],
        device_key: [b + 1; 32],
        device_dh: [b + 2; 32],
        created_at: 1_764_000_000_000,
        signature: [b + 3; 64],
    }
}

fn sample_envelope() -> Envelope {
    let header = DirectHeader {
        session_id: [0x11; 16],
        ratchet_key: [0x22; 32],
        previous_chain_len: 3,
        message_number: 4,
        init: Some(SessionInit {
            cert: cert(0x30),
            name: "alice".into(),
            ephemeral: [0x44; 32],
            prekey_id: 1,
        }),
    };
    Envelope {
        kind: EnvelopeKind::Direct,
        group: ConvId([0x01; 32]),
        epoch: 0,
        sender: DeviceKey([0x02; 32]),
        recipient: DeviceKey([0x03; 32]),
        seq: 42,
        deps: vec![],
        crypto_header: header.encode(),
        ciphertext: vec![0xCC; 5],
        auth: Auth::Single([0x55; 64]),
    }
}

const ENVELOPE_V1: &str = "01010101010101010101010101010101010101010101010101010101010101010101000000000000000002020202020202020202020202020202020202020202020202020202020202020303030303030303030303030303030303030303030303030303030303030303000000000000002a00010c111111111111111111111111111111112222222222222222222222222222222222222222222222222222222222222222000000030000000401013030303030303030303030303030303030303030303030303030303030303030313131313131313131313131313131313131313131313131313131313131313132323232323232323232323232323232323232323232323232323232323232320000019ab697e8003333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333305616c69636544444444444444444444444444444444444444444444444444444444444444440000000100000005cccccccccc55555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555";
const CONTENT_V1: &str = "01000a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0afbd0dfb4ab330668c3a96c6c6f";
const REQUEST_V1: &str = "010002000000030102030000000104";
const RESPONSE_V1: &str = "010004000000000000000007010000000000000008020000000000000000030000000000000000";
const INVITE_V1: &str = "dingo1AQVhbGljZQEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIAAAGatpfoADMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMAAAABZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZ3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3ARcvaXA0LzEyNy4wLjAuMS90Y3AvNDAwMeeSybU";
const X3DH_SK: &str = "579c6449ef29a8e7fcd23b2c673b15ab7bc63a180b205310ceaf9dbced376d00";
const X3DH_SESSION: &str = "89924bc9ebf12bef90c344be3416aafa";
const RATCHET_MK0: &str = "7972b78a2352c457dc2c1f9ee4a5a92ba44c817f1f045294d36261213267d96c";
const RATCHET_CT0: &str = "680289fd498c8d6271e7daa0566347597a853601c1";

#[test]
fn envelope_codec_v1_is_frozen() {
    let env = sample_envelope();
    assert_eq!(hex(&env.encode()), ENVELOPE_V1);
    assert_eq!(Envelope::decode(&unhex(ENVELOPE_V1)), Ok(env.clone()));
    assert_eq!(DirectHeader::decode(&env.crypto_header).expect("header").encode(), env.crypto_header);
}

/// A batch-signed envelope (version 2): the same fields, then the batch id, leaf index, path and
/// the signature over the root.
const ENVELOPE_BATCH_V2: &str = "02010101010101010101010101010101010101010101010101010101010101010101000000000000000002020202020202020202020202020202020202020202020202020202020202020303030303030303030303030303030303030303030303030303030303030303000000000000002a00010c111111111111111111111111111111112222222222222222222222222222222222222222222222222222222222222222000000030000000401013030303030303030303030303030303030303030303030303030303030303030313131313131313131313131313131313131313131313131313131313131313132323232323232323232323232323232323232323232323232323232323232320000019ab697e8003333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333305616c69636544444444444444444444444444444444444444444444444444444444444444440000000100000005cccccccccc666666666666666666666666666666660002027777777777777777777777777777777777777777777777777777777777777777888888888888888888888888888888888888888888888888888888888888888899999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999";
/// The root that path links that envelope's signed bytes to, and the message its sender signs.
const BATCH_ROOT_V1: &str = "1309f93077c723ec69813460d561f1fc49792419a2f4a6f9eb1aa1b24f01bf88";
const BATCH_ROOT_MESSAGE_V1: &str = "64696e676f2f656e76656c6f70652d62617463682d726f6f742f76310066666666666666666666666666666666021309f93077c723ec69813460d561f1fc49792419a2f4a6f9eb1aa1b24f01bf88";

fn sample_batch_envelope() -> Envelope {
    let mut env = sample_envelope();
    env.auth = Auth::Batch(BatchProof {
        batch_id: [0x66; 16],
        index: 2,
        path: vec![[0x77; 32], [0x88; 32]],
        signature: [0x99; 64],
    });
    env
}

#[test]
fn batch_signed_envelope_v2_and_its_tree_hashes_are_frozen() {
    let env = sample_batch_envelope();
    assert_eq!(hex(&env.encode()), ENVELOPE_BATCH_V2, "batch envelope encoding changed");
    assert_eq!(Envelope::decode(&unhex(ENVELOPE_BATCH_V2)), Ok(env.clone()));
    let Auth::Batch(proof) = &env.auth else { unreachable!("a batch envelope") };
    let root = dingo_crypto::batch::root_of(&env.signed_bytes(), proof);
    assert_eq!(hex(&root), BATCH_ROOT_V1, "batch tree hashing changed");
    let message = dingo_crypto::batch::root_message(&proof.batch_id, proof.path.len() as u8, &root);
    assert_eq!(hex(&message), BATCH_ROOT_MESSAGE_V1, "batch root message changed");
}

#[test]
fn content_and_wire_frames_v1_are_frozen() {
    let c = Content::Text { id: MsgId([0x0A; 16]), sent_at: 1_764_000_000_123, text: "héllo".into() };
    assert_eq!(hex(&c.encode()), CONTENT_V1);
    let req = Request::Deliver(vec![vec![1, 2, 3], vec![4]]);
    assert_eq!(hex(&req.encode()), REQUEST_V1);
    let resp = Response::Results(vec![
        DeliveryStatus::Stored(7),
        DeliveryStatus::Duplicate(8),
        DeliveryStatus::Rejected,
        DeliveryStatus::Retry,
    ]);
    assert_eq!(hex(&resp.encode()), RESPONSE_V1);
}

#[test]
fn request_stream_frame_v2_is_frozen() {
    let body = Request::Deliver(vec![vec![1, 2, 3], vec![4]]).encode();
    let frame = dingo_types::wire::encode_frame(0x0102_0304_0506_0708, &body).expect("frame");
    assert_eq!(hex(&frame), format!("0000000f0102030405060708{REQUEST_V1}"));
}

#[test]
fn invite_code_v1_is_frozen() {
    let inv = Invite {
        name: "alice".into(),
        cert: cert(0x30),
        prekey: SignedPreKey { id: 1, public: [0x66; 32], signature: [0x77; 64] },
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
    };
    assert_eq!(inv.to_code(), INVITE_V1);
    assert_eq!(Invite::from_code(INVITE_V1), Ok(inv));
}

#[test]
fn x3dh_and_ratchet_key_schedule_is_frozen() {
    let ik_a = StaticSecret::from([0x01; 32]);
    let ek_a = StaticSecret::from([0x02; 32]);
    let ik_b = StaticSecret::from([0x03; 32]);
    let spk_b = StaticSecret::from([0x04; 32]);
    let mut a = cert(0x10);
    a.device_dh = PublicKey::from(&ik_a).to_bytes();
    let mut b = cert(0x20);
    b.device_dh = PublicKey::from(&ik_b).to_bytes();
    let spk_pub = PublicKey::from(&spk_b).to_bytes();
    let alice = x3dh::initiate(&ik_a, &ek_a, &a, &b, &spk_pub).expect("initiate");
    let bob = x3dh::respond(&ik_b, &spk_b, &b, &a, &PublicKey::from(&ek_a).to_bytes()).expect("respond");
    assert_eq!(alice.shared, bob.shared);
    assert_eq!(alice.associated_data, bob.associated_data);
    assert_eq!(alice.session_id, bob.session_id);
    assert_eq!(hex(alice.shared.expose()), X3DH_SK);
    assert_eq!(hex(&alice.session_id), X3DH_SESSION);

    let mut ra = ratchet::State::init_initiator(&alice.shared, &spk_pub, StaticSecret::from([0x05; 32]))
        .expect("init");
    let (h, mk) = ra.next_send().expect("send");
    assert_eq!(hex(&mk.expose_for_tests()), RATCHET_MK0);
    let ct = mk.encrypt(b"hello", b"ad");
    assert_eq!(hex(&ct), RATCHET_CT0);
    let mut rb = ratchet::State::init_responder(&bob.shared, &spk_b);
    let mk_b = rb.receive_key(&h, 0).expect("receive");
    assert_eq!(mk_b.decrypt(&ct, b"ad").expect("decrypt"), b"hello");
}

/// RFC 7748 §6.1: the X25519 wrapper computes the published shared secret.
#[test]
fn x25519_matches_rfc7748() {
    let alice: [u8; 32] =
        unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").try_into().expect("32");
    let bob_pub: [u8; 32] =
        unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f").try_into().expect("32");
    let shared = x3dh::dh(&StaticSecret::from(alice), &bob_pub).expect("dh");
    assert_eq!(hex(&shared), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
}

/// RFC 5869 test case 1: HKDF-SHA256 as the key schedule uses it.
#[test]
fn hkdf_sha256_matches_rfc5869() {
    let ikm = unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
    let salt = unhex("000102030405060708090a0b0c");
    let info = unhex("f0f1f2f3f4f5f6f7f8f9");
    let mut okm = [0u8; 42];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &ikm).expand(&info, &mut okm).expect("expand");
    assert_eq!(
        hex(&okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
}

#[test]
fn secrets_compare_by_value() {
    assert_eq!(Secret32::from_bytes([1; 32]), Secret32::from_bytes([1; 32]));
    assert_ne!(Secret32::from_bytes([1; 32]), Secret32::from_bytes([2; 32]));
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        proptest::collection::vec(any::<[u8; 32]>(), 0..16),
        proptest::collection::vec(any::<u8>(), 0..1024),
        proptest::collection::vec(any::<u8>(), 0..4096),
        any::<[u8; 32]>(),
        proptest::option::of((
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..=8),
            any::<u16>(),
        )),
    )
        .prop_map(|(group, epoch, sender, seq, deps, crypto_header, ciphertext, sig_half, batch)| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&sig_half);
            let auth = match batch {
                None => Auth::Single(signature),
                Some((batch_id, path, index)) => {
                    let index = (u32::from(index) % (1u32 << path.len())) as u16;
                    Auth::Batch(BatchProof { batch_id, index, path, signature })
                }
            };
            Envelope {
                kind: EnvelopeKind::Direct,
                group: ConvId(group),
                epoch,
                sender: DeviceKey(sender),
                recipient: DeviceKey(group),
                seq,
                deps,
                crypto_header,
                ciphertext,
                auth,
            }
        })
}

proptest! {
    #[test]
    fn envelopes_round_trip(env in arb_envelope()) {
        prop_assert_eq!(Envelope::decode(&env.encode()), Ok(env));
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Envelope::decode(&bytes);
        let _ = DirectHeader::decode(&bytes);
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
        let _ = Content::decode(&bytes);
        let _ = Invite::decode_payload(&bytes);
    }

    #[test]
    fn content_round_trips(text in ".{0,200}", sent_at in any::<u64>(), id in any::<[u8; 16]>()) {
        let c = Content::Text { id: MsgId(id), sent_at, text };
        prop_assert_eq!(Content::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn wire_frames_round_trip(envs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 0..16)) {
        let req = Request::Deliver(envs);
        prop_assert_eq!(Request::decode(&req.encode()), Ok(req));
    }
}

const STORED_VALUE_V1: &str = "01c57d39e0145130c40398a361dfdef97a04fa6797e4106a526697d0c3fa64b12b9b081bded9ed00cc77b93fe45cd205dc4f3692df1c6b72";
const KEY_FILE_V1: &str = "44494e474f4b455901000000000000000000000000001f96b2852f847aa403c9661b17e074e499a14c2dfe631a5d8a5e95f91ba23db47eccee067674e716bd282f822e1e07b2395a7f04e302448dc011b3563a95f1cdf94531";

/// Values written by format version 1 of the store and key file still open.
#[test]
fn disk_formats_v1_still_open() {
    let key = dingo_crypto::at_rest::StorageKey::new(Secret32::from_bytes([7; 32]));
    assert_eq!(key.open(b"table/key", &unhex(STORED_VALUE_V1)).expect("open"), b"stored value v1");
    assert!(key.open(b"table/other", &unhex(STORED_VALUE_V1)).is_err());
    assert_eq!(
        dingo_crypto::at_rest::unwrap_key_file(&unhex(KEY_FILE_V1), None).expect("unwrap"),
        b"identity v1"
    );
}

fn sample_team_op() -> Vec<u8> {
    use dingo_types::team::*;
    let member = MemberInfo {
        cert: cert(0x40).encode(),
        prekey: SignedPreKey { id: 2, public: [0x45; 32], signature: [0x46; 64] }.encode(),
        name: "bob".into(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4002".into()],
    };
    let body = OpBody {
        team: [0x50; 32],
        author: cert(0x30).encode(),
        lamport: 3,
        deps: vec![[0x51; 32], [0x52; 32]],
        at: 1_764_000_000_456,
        action: Action::Add { member, role: Role::Member, depts: vec!["finance".into()] },
    };
    SignedOp { body: SignedOp::encode_body(&body), signature: [0x53; 64] }.encode()
}

fn sample_join_code() -> dingo_types::team::JoinCode {
    dingo_types::team::JoinCode {
        team: [0x60; 32],
        team_name: "acme".into(),
        admin: Invite {
            name: "alice".into(),
            cert: cert(0x30),
            prekey: SignedPreKey { id: 1, public: [0x66; 32], signature: [0x77; 64] },
            addrs: vec![],
        },
        token: [0x61; 16],
        expires_at: 1_764_600_000_000,
        dept: Some("finance".into()),
    }
}

fn team_contents() -> Vec<Content> {
    use dingo_types::content::MsgRef;
    let r = MsgRef { id: MsgId([0x70; 16]), sent_at: 5, seq: 6 };
    vec![
        Content::TeamOps { team: [0x71; 32], ops: vec![vec![1, 2], vec![3]] },
        Content::SenderKey { group: ConvId([0x72; 32]), chain_id: 2, n: 7, key: [0x73; 32] },
        Content::GroupRead { group: ConvId([0x72; 32]), read: vec![r], read_at: 9 },
        Content::Ding { id: MsgId([0x74; 16]), sent_at: 10, text: "fire".into(), repeat_every: 60 },
        Content::DingAgain { id: MsgId([0x74; 16]) },
        Content::DingAck { id: MsgId([0x74; 16]), acked_at: 11 },
        Content::TeamSync { team: [0x71; 32], heads: vec![[0x75; 32]] },
    ]
}

#[test]
fn team_formats_v1_are_frozen() {
    let op = sample_team_op();
    let (decoded, _) = dingo_types::team::SignedOp::decode(&op).expect("decode");
    assert_eq!(decoded.encode(), op);
    // The hash names the op (and, for a genesis, the team): it pins every byte.
    assert_eq!(hex(&decoded.hash()), TEAM_OP_V1_HASH, "team op encoding changed");
    let code = sample_join_code().to_code();
    assert_eq!(code, JOIN_CODE_V1, "join code changed");
    assert_eq!(dingo_types::team::JoinCode::from_code(&code), Ok(sample_join_code()));
    use dingo_types::envelope::{GroupHeader, KeyWrap};
    let gh = GroupHeader { chain_id: 0x01020304, n: 0x05060708, wraps: Vec::new() };
    assert_eq!(hex(&gh.encode()), "0102030405060708");
    let wrap = KeyWrap {
        recipient: DeviceKey([0x81; 32]),
        header: DirectHeader {
            session_id: [0x82; 16],
            ratchet_key: [0x83; 32],
            previous_chain_len: 4,
            message_number: 5,
            init: None,
        },
        ciphertext: vec![0x84; 48],
    };
    let wrapped = GroupHeader { chain_id: 1, n: 2, wraps: vec![wrap] };
    assert_eq!(hex(&wrapped.encode()), GROUP_HEADER_WITH_WRAP_V1, "group header encoding changed");
    assert_eq!(GroupHeader::decode(&wrapped.encode()), Ok(wrapped));
    // What a key wrap's encryption is bound to.
    let context = dingo_crypto::group::wrap_context(
        &ConvId([0x85; 32]),
        6,
        &DeviceKey([0x86; 32]),
        &DeviceKey([0x81; 32]),
        7,
        (1, 2),
    );
    assert_eq!(hex(&context), KEY_WRAP_CONTEXT_V1, "wrap context changed");
    let all: Vec<String> = team_contents().iter().map(|c| hex(&c.encode())).collect();
    assert_eq!(all, TEAM_CONTENTS_V1);
    for c in team_contents() {
        assert_eq!(Content::decode(&c.encode()), Ok(c));
    }
}

const GROUP_HEADER_WITH_WRAP_V1: &str = "00000001000000020001818181818181818181818181818181818181818181818181818181818181818100398282828282828282828282828282828283838383838383838383838383838383838383838383838383838383838383830000000400000005000030848484848484848484848484848484848484848484848484848484848484848484848484848484848484848484848484";
const KEY_WRAP_CONTEXT_V1: &str = "64696e676f2f67726f75702f6b6579777261702f7631858585858585858585858585858585858585858585858585858585858585858500000000000000068686868686868686868686868686868686868686868686868686868686868686818181818181818181818181818181818181818181818181818181818181818100000000000000070000000100000002";
const TEAM_OP_V1_HASH: &str = "0a3e9ec6e8ed04201be0198b67c6c027df29b1c3a2ec6a1b171b7e216330044e";
const JOIN_CODE_V1: &str = "dingoteam1AWBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgBGFjbWUBFQEFYWxpY2UBMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAxMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyAAABmraX6AAzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzAAAAAWZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmd3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3dwBhYWFhYWFhYWFhYWFhYWFhAAABmtpbLgABB2ZpbmFuY2XzBrkq";
const TEAM_CONTENTS_V1: [&str; 7] = [
    "01027171717171717171717171717171717171717171717171717171717171717171020201020103",
    "0105727272727272727272727272727272727272727272727272727272727272727202077373737373737373737373737373737373737373737373737373737373737373",
    "010672727272727272727272727272727272727272727272727272727272727272720170707070707070707070707070707070050609",
    "0107747474747474747474747474747474740a04666972653c",
    "010874747474747474747474747474747474",
    "0109747474747474747474747474747474740b",
    "010a7171717171717171717171717171717171717171717171717171717171717171017575757575757575757575757575757575757575757575757575757575757575",
];

#[test]
fn store_and_forward_formats_v1_are_frozen() {
    use dingo_types::content::MsgRef;
    use dingo_types::wire::GroupHave;
    let sync = Request::Sync(vec![GroupHave {
        group: ConvId([0x81; 32]),
        have: vec![(DeviceKey([0x82; 32]), 3), (DeviceKey([0x83; 32]), 0x0102)],
    }]);
    let carry = Request::Carry(vec![vec![9, 8]]);
    let answer = Response::Envelopes { envs: vec![vec![7], vec![]], more: true };
    let delivered = Content::Delivered {
        conv: ConvId([0x84; 32]),
        delivered: vec![MsgRef { id: MsgId([0x85; 16]), sent_at: 5, seq: 6 }],
        envelopes: vec![1, 300],
        at: 9,
    };
    let got: Vec<String> =
        [sync.encode(), carry.encode(), answer.encode(), delivered.encode()].iter().map(|b| hex(b)).collect();
    let want = [
        format!(
            "020001{}0002{}0000000000000003{}0000000000000102",
            "81".repeat(32),
            "82".repeat(32),
            "83".repeat(32)
        ),
        "0300010000000209 08".replace(' ', ""),
        "02010002000000010700000000".into(),
        format!("010b{}01{}050602", "84".repeat(32), "85".repeat(16)) + "01ac0209",
    ];
    for (g, w) in got.iter().zip(want.iter()) {
        assert_eq!(g, w, "a store-and-forward format changed");
    }
    for bytes in [sync.encode(), carry.encode()] {
        assert_eq!(Request::decode(&bytes).expect("decode").encode(), bytes);
    }
    assert_eq!(Response::decode(&answer.encode()), Ok(answer));
    assert_eq!(Content::decode(&delivered.encode()), Ok(delivered));
}

#[test]
fn file_formats_v1_are_frozen() {
    use dingo_types::file::*;
    let manifest = FileManifest {
        name: "a.txt".into(),
        size: 3,
        chunk_size: MIN_CHUNK_BYTES,
        chunks: vec![[0xa1; 32]],
        key: [0xa2; 32],
    };
    let content = Content::File { id: MsgId([0xa3; 16]), sent_at: 5, file: manifest.clone() };
    // A chunk sealed with a fixed key: ChaCha20-Poly1305 (RFC 8439), nonce = index (LE).
    let key = dingo_crypto::Secret32::from_bytes([0xa4; 32]);
    let mut chunk = b"abc".to_vec();
    let hash = dingo_crypto::file::seal_chunk(&key, 1, &mut chunk).expect("seal");
    let got = [
        hex(&content.encode()),
        manifest.id().to_hex(),
        hex(&encode_chunk_request(&[[0xa5; 32]])),
        hex(&encode_chunk_answer_head(Some(19))),
        hex(&chunk),
        hex(&hash),
    ];
    let want = [
        // content version | variant 13 (File) | id | sent_at | name | size | chunk size | chunks | key
        format!("010d{}0505612e74787403808040 01{}{}", "a3".repeat(16), "a1".repeat(32), "a2".repeat(32))
            .replace(' ', ""),
        "349281c1202b264a540d2163de2f4c23a9a6bfdf1ba84fac12cff8920beba58f".to_owned(),
        format!("010001{}", "a5".repeat(32)),
        "0100000013".to_owned(),
        // ciphertext (3 bytes) | Poly1305 tag
        "4de824d36eb3367602fcb3a9cce8e3e4920725".to_owned(),
        // BLAKE3 of the sealed chunk
        "de9cb68f375a4f9a8fff6a821f621ca2bcf56e89d064e2ab767c4333ba2b2785".to_owned(),
    ];
    assert_eq!(got, want, "a file format changed");
    let key_at = Content::SenderKeyAt {
        group: ConvId([0xa6; 32]),
        chain_id: 2,
        n: 7,
        key: [0xa7; 32],
        first_seq: 300,
    };
    // content version | variant 14 (SenderKeyAt) | group | chain | n | key | first_seq (varint)
    assert_eq!(hex(&key_at.encode()), format!("010e{}0207{}ac02", "a6".repeat(32), "a7".repeat(32)));
    assert_eq!(Content::decode(&key_at.encode()), Ok(key_at));
    assert_eq!(Content::decode(&content.encode()), Ok(content));
    dingo_crypto::file::open_chunk(&key, 1, &mut chunk).expect("open");
    assert_eq!(chunk, b"abc");
}

#[test]
fn work_formats_v1_are_frozen() {
    use dingo_types::team::{Action, OpBody, SignedOp};
    let body =
        |action| OpBody { team: [0x91; 32], author: vec![1, 2], lamport: 1, deps: vec![], at: 2, action };
    let project = Action::ProjectCreate {
        name: "launch".into(),
        depts: vec!["ops".into()],
        members: vec![dingo_types::UserId([0x92; 16])],
    };
    let doc = Action::DocCreate { name: "plan".into(), depts: vec![], members: vec![] };
    let changes =
        Content::DocChanges { doc: ConvId([0x93; 32]), changes: vec![vec![0x85, 0x6f, 0x4a, 0x83], vec![]] };
    let sync = Content::DocSync {
        doc: ConvId([0x94; 32]),
        message: 0x0102,
        start: true,
        part: 1,
        parts: 3,
        bytes: vec![0x43, 0x00],
    };
    let got = [
        hex(&SignedOp::encode_body(&body(project))),
        hex(&SignedOp::encode_body(&body(doc))),
        hex(&changes.encode()),
        hex(&sync.encode()),
    ];
    let want = [
        // team | author | lamport | deps | at | action 9 (ProjectCreate): name, depts, members
        format!("{}02010201000209066c61756e636801036f707301{}", "91".repeat(32), "92".repeat(16)),
        // action 10 (DocCreate)
        format!("{}0201020100020a04706c616e0000", "91".repeat(32)),
        // content version | variant 12 (DocChanges) | doc | two changes
        format!("010c{}0204856f4a8300", "93".repeat(32)),
        // content version | variant 15 (DocSync) | doc | message (varint) | start | part | parts |
        // bytes
        format!("010f{}820201010302{}", "94".repeat(32), "4300"),
    ];
    assert_eq!(got, want, "a work format changed");
    assert_eq!(Content::decode(&changes.encode()), Ok(changes));
    assert_eq!(Content::decode(&sync.encode()), Ok(sync));
    // A part past the count, or larger than an envelope holds, is refused.
    for bad in [
        Content::DocSync { doc: ConvId([1; 32]), message: 1, start: false, part: 3, parts: 3, bytes: vec![] },
        Content::DocSync {
            doc: ConvId([1; 32]),
            message: 1,
            start: false,
            part: 0,
            parts: 1,
            bytes: vec![0; dingo_types::limits::MAX_DOC_SYNC_PART_BYTES + 1],
        },
    ] {
        assert!(Content::decode(&bad.encode()).is_err());
    }
}
