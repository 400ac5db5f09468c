//! Session start, following Signal's X3DH specification without one-time prekeys (the signed
//! prekey travels in the invite):
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
//! SK  = HKDF-SHA256(salt = 0^32, ikm = 0xFF^32 | DH1 | DH2 | DH3, info = "dingo/x3dh/v1")
//! AD  = initiator cert keys | responder cert keys
//! ```
//! Every DH output must be contributory, so low-order public keys are refused.

use crate::{CryptoError, Secret32};
use dingo_types::invite::DeviceCert;
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

const X3DH_INFO: &[u8] = b"dingo/x3dh/v1";

/// The shared secret and associated data both sides derive.
pub struct Agreement {
    /// X3DH output `SK`, the Double Ratchet's first root key.
    pub shared: Secret32,
    /// `AD`, bound into every message's associated data.
    pub associated_data: Vec<u8>,
    /// Names the session (hash of the ephemeral and prekey).
    pub session_id: [u8; 16],
}

/// `DH(secret, public)`, refusing non-contributory results.
pub fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<[u8; 32], CryptoError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(CryptoError::NonContributory);
    }
    Ok(*shared.as_bytes())
}

fn associated_data(initiator: &DeviceCert, responder: &DeviceCert) -> Vec<u8> {
    let mut ad = Vec::with_capacity(192);
    for c in [initiator, responder] {
        ad.extend_from_slice(&c.user_key);
        ad.extend_from_slice(&c.device_key);
        ad.extend_from_slice(&c.device_dh);
    }
    ad
}

/// The session id both sides compute from the initiator's ephemeral key and the prekey used.
pub fn session_id(ephemeral: &[u8; 32], prekey: &[u8; 32]) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key("dingo 2026 session id v1");
    h.update(ephemeral);
    h.update(prekey);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    id
}

fn derive(dh1: [u8; 32], dh2: [u8; 32], dh3: [u8; 32]) -> Secret32 {
    let mut ikm = [0u8; 128];
    ikm[..32].fill(0xFF);
    ikm[32..64].copy_from_slice(&dh1);
    ikm[64..96].copy_from_slice(&dh2);
    ikm[96..].copy_from_slice(&dh3);
    let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm);
    let mut sk = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand(X3DH_INFO, &mut sk);
    let out = Secret32::from_bytes(sk);
    zeroize::Zeroize::zeroize(&mut ikm);
    zeroize::Zeroize::zeroize(&mut sk);
    out
}

/// The initiator's side: `ik` its X25519 identity secret, `ek` a fresh ephemeral secret.
pub fn initiate(
    ik: &StaticSecret,
    ek: &StaticSecret,
    own: &DeviceCert,
    peer: &DeviceCert,
    peer_prekey: &[u8; 32],
) -> Result<Agreement, CryptoError> {
    let dh1 = dh(ik, peer_prekey)?;
    let dh2 = dh(ek, &peer.device_dh)?;
    let dh3 = dh(ek, peer_prekey)?;
    Ok(Agreement {
        shared: derive(dh1, dh2, dh3),
        associated_data: associated_data(own, peer),
        session_id: session_id(&PublicKey::from(ek).to_bytes(), peer_prekey),
    })
}

/// The responder's side, from the initiator's certificate and ephemeral public key.
pub fn respond(
    ik: &StaticSecret,
    spk: &StaticSecret,
    own: &DeviceCert,
    peer: &DeviceCert,
    peer_ephemeral: &[u8; 32],
) -> Result<Agreement, CryptoError> {
    let dh1 = dh(spk, &peer.device_dh)?;
    let dh2 = dh(ik, peer_ephemeral)?;
    let dh3 = dh(spk, peer_ephemeral)?;
    Ok(Agreement {
        shared: derive(dh1, dh2, dh3),
        associated_data: associated_data(peer, own),
        session_id: session_id(peer_ephemeral, &PublicKey::from(spk).to_bytes()),
    })
}
