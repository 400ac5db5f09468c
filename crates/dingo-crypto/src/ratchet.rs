//! The Double Ratchet, as in Signal's published specification (revision 1, 2016), with:
//!
//! - `KDF_RK(rk, dh)`: HKDF-SHA256, salt `rk`, info `dingo/ratchet/root/v1`, 64 bytes out;
//! - `KDF_CK(ck)`: HMAC-SHA256(ck, 0x01) is the message key, HMAC-SHA256(ck, 0x02) the next
//!   chain key;
//! - `ENCRYPT(mk, ...)`: HKDF-SHA256(mk, info `dingo/ratchet/message/v1`) gives a
//!   ChaCha20-Poly1305 key and nonce; each message key is used once, so the nonce never repeats.
//!
//! Decryption works on a copy of the state and the caller keeps the copy only if the message
//! authenticates, so a forged or replayed message changes nothing. Skipped message keys are
//! bounded per step ([`MAX_SKIP`]) and in total ([`MAX_SKIPPED_KEYS`], oldest evicted), and expire
//! after [`SKIPPED_KEY_TTL_MS`].

use crate::x3dh::dh;
use crate::{CryptoError, Secret32};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::VecDeque;
use x25519_dalek::{PublicKey, StaticSecret};

/// Most message keys one message may make us skip in one chain.
pub const MAX_SKIP: u32 = 2000;
/// Most skipped message keys kept for one session.
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// Skipped message keys older than this are deleted (14 days).
pub const SKIPPED_KEY_TTL_MS: u64 = 14 * 24 * 3600 * 1000;

const ROOT_INFO: &[u8] = b"dingo/ratchet/root/v1";
const MESSAGE_INFO: &[u8] = b"dingo/ratchet/message/v1";

/// Signal's `HEADER(dh, pn, n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's ratchet public key.
    pub dh: [u8; 32],
    /// Length of the sender's previous sending chain.
    pub pn: u32,
    /// Message number in the current sending chain.
    pub n: u32,
}

/// A single-use message key.
pub struct MessageKey(Secret32);

#[derive(Clone, Serialize, Deserialize)]
struct SkippedKey {
    dh: [u8; 32],
    n: u32,
    mk: Secret32,
    stored_at: u64,
}

/// One side's Double Ratchet state (Signal's `state`), serializable for the store.
#[derive(Clone, Serialize, Deserialize)]
pub struct State {
    dhs: Secret32,
    /// Public half of `dhs`, kept so sending needs no scalar multiplication.
    dhs_pub: [u8; 32],
    dhr: Option<[u8; 32]>,
    rk: Secret32,
    cks: Option<Secret32>,
    ckr: Option<Secret32>,
    ns: u32,
    nr: u32,
    pn: u32,
    skipped: VecDeque<SkippedKey>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ratchet::State")
            .field("ns", &self.ns)
            .field("nr", &self.nr)
            .field("pn", &self.pn)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

fn kdf_rk(rk: &Secret32, dh_out: &[u8; 32]) -> (Secret32, Secret32) {
    let hk = Hkdf::<Sha256>::new(Some(rk.expose()), dh_out);
    let mut okm = [0u8; 64];
    // 64 bytes is a valid HKDF-SHA256 output length.
    let _ = hk.expand(ROOT_INFO, &mut okm);
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    a.copy_from_slice(&okm[..32]);
    b.copy_from_slice(&okm[32..]);
    zeroize::Zeroize::zeroize(&mut okm);
    (Secret32::from_bytes(a), Secret32::from_bytes(b))
}

pub(crate) fn hmac(key: &Secret32, byte: u8) -> Secret32 {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(&[byte]);
    Secret32::from_bytes(mac.finalize().into_bytes().into())
}

fn kdf_ck(ck: &Secret32) -> (Secret32, MessageKey) {
    (hmac(ck, 0x02), MessageKey(hmac(ck, 0x01)))
}

/// The ChaCha20-Poly1305 key and nonce for one single-use message key: HKDF-SHA256 with a
/// zero salt and the scheme's `info` (1:1 ratchet and group chains use different labels).
pub(crate) fn message_cipher(mk: &Secret32, info: &[u8]) -> (ChaCha20Poly1305, [u8; 12]) {
    let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), mk.expose());
    let mut okm = [0u8; 44];
    // 44 bytes is a valid HKDF-SHA256 output length.
    let _ = hk.expand(info, &mut okm);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&okm[..32]));
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    zeroize::Zeroize::zeroize(&mut okm);
    (cipher, nonce)
}

impl MessageKey {
    fn cipher(&self) -> (ChaCha20Poly1305, [u8; 12]) {
        message_cipher(&self.0, MESSAGE_INFO)
    }

    /// Encrypts with associated data `ad`.
    pub fn encrypt(&self, plaintext: &[u8], ad: &[u8]) -> Vec<u8> {
        let (cipher, nonce) = self.cipher();
        cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: ad }).unwrap_or_default()
    }

    /// Decrypts and authenticates.
    pub fn decrypt(&self, ciphertext: &[u8], ad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (cipher, nonce) = self.cipher();
        cipher
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: ciphertext, aad: ad })
            .map_err(|_| CryptoError::DecryptFailed)
    }

    /// Exposed for known-answer tests of the key schedule.
    #[doc(hidden)]
    pub fn expose_for_tests(&self) -> [u8; 32] {
        *self.0.expose()
    }
}

impl State {
    /// `RatchetInitAlice`: the initiator, after X3DH, with the responder's prekey as its first
    /// ratchet key. `fresh` is the initiator's first ratchet key pair.
    pub fn init_initiator(
        sk: &Secret32,
        responder_ratchet: &[u8; 32],
        fresh: StaticSecret,
    ) -> Result<Self, CryptoError> {
        let (rk, cks) = kdf_rk(sk, &dh(&fresh, responder_ratchet)?);
        Ok(Self {
            dhs_pub: PublicKey::from(&fresh).to_bytes(),
            dhs: Secret32::from_bytes(fresh.to_bytes()),
            dhr: Some(*responder_ratchet),
            rk,
            cks: Some(cks),
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
        })
    }

    /// `RatchetInitBob`: the responder, whose first ratchet key pair is its signed prekey.
    pub fn init_responder(sk: &Secret32, prekey: &StaticSecret) -> Self {
        Self {
            dhs_pub: PublicKey::from(prekey).to_bytes(),
            dhs: Secret32::from_bytes(prekey.to_bytes()),
            dhr: None,
            rk: sk.clone(),
            cks: None,
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
        }
    }

    /// Whether this side can send yet (the responder cannot until it has received).
    pub fn can_send(&self) -> bool {
        self.cks.is_some()
    }

    /// `RatchetEncrypt` step one: advances the sending chain and returns the header and the key
    /// for the next message. The caller must persist the state before the message leaves.
    pub fn next_send(&mut self) -> Result<(Header, MessageKey), CryptoError> {
        let cks = self.cks.as_ref().ok_or(CryptoError::UnknownSession)?;
        let (next, mk) = kdf_ck(cks);
        let header = Header { dh: self.dhs_pub, pn: self.pn, n: self.ns };
        self.cks = Some(next);
        self.ns = self.ns.checked_add(1).ok_or(CryptoError::TooManySkipped)?;
        Ok((header, mk))
    }

    /// `RatchetDecrypt`: finds or derives the message key for `header`, advancing this state.
    /// Call on a copy and keep it only if the message then authenticates.
    pub fn receive_key(&mut self, header: &Header, now_ms: u64) -> Result<MessageKey, CryptoError> {
        self.skipped.retain(|k| now_ms.saturating_sub(k.stored_at) < SKIPPED_KEY_TTL_MS);
        if let Some(pos) = self.skipped.iter().position(|k| k.dh == header.dh && k.n == header.n) {
            let k = self.skipped.remove(pos).ok_or(CryptoError::UnknownSession)?;
            return Ok(MessageKey(k.mk.clone()));
        }
        if Some(header.dh) != self.dhr {
            self.skip_until(header.pn, now_ms)?;
            self.dh_ratchet(header)?;
        }
        self.skip_until(header.n, now_ms)?;
        let ckr = self.ckr.as_ref().ok_or(CryptoError::UnknownSession)?;
        let (next, mk) = kdf_ck(ckr);
        self.ckr = Some(next);
        self.nr = self.nr.checked_add(1).ok_or(CryptoError::TooManySkipped)?;
        Ok(mk)
    }

    fn skip_until(&mut self, until: u32, now_ms: u64) -> Result<(), CryptoError> {
        if until > self.nr.saturating_add(MAX_SKIP) {
            return Err(CryptoError::TooManySkipped);
        }
        if let (Some(mut ck), Some(dhr)) = (self.ckr.clone(), self.dhr) {
            while self.nr < until {
                let (next, mk) = kdf_ck(&ck);
                self.skipped.push_back(SkippedKey { dh: dhr, n: self.nr, mk: mk.0, stored_at: now_ms });
                if self.skipped.len() > MAX_SKIPPED_KEYS {
                    self.skipped.pop_front();
                }
                ck = next;
                self.nr += 1;
            }
            self.ckr = Some(ck);
        }
        Ok(())
    }

    fn dh_ratchet(&mut self, header: &Header) -> Result<(), CryptoError> {
        self.pn = self.ns;
        self.ns = 0;
        self.nr = 0;
        self.dhr = Some(header.dh);
        let dhs = StaticSecret::from(*self.dhs.expose());
        let (rk, ckr) = kdf_rk(&self.rk, &dh(&dhs, &header.dh)?);
        let fresh = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let (rk2, cks) = kdf_rk(&rk, &dh(&fresh, &header.dh)?);
        self.rk = rk2;
        self.ckr = Some(ckr);
        self.cks = Some(cks);
        self.dhs_pub = PublicKey::from(&fresh).to_bytes();
        self.dhs = Secret32::from_bytes(fresh.to_bytes());
        Ok(())
    }

    /// Number of skipped message keys held (for tests and diagnostics).
    pub fn skipped_len(&self) -> usize {
        self.skipped.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn pair() -> (State, State) {
        let sk = Secret32::from_bytes([7; 32]);
        let bob_prekey = StaticSecret::from([9; 32]);
        let bob_pub = PublicKey::from(&bob_prekey).to_bytes();
        let alice = State::init_initiator(&sk, &bob_pub, StaticSecret::from([3; 32])).expect("init");
        let bob = State::init_responder(&sk, &bob_prekey);
        (alice, bob)
    }

    fn send(s: &mut State, msg: &[u8]) -> (Header, Vec<u8>) {
        let (h, mk) = s.next_send().expect("send");
        (h, mk.encrypt(msg, b"ad"))
    }

    fn recv(s: &mut State, h: &Header, ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut copy = s.clone();
        let pt = copy.receive_key(h, 0)?.decrypt(ct, b"ad")?;
        *s = copy;
        Ok(pt)
    }

    #[test]
    fn ping_pong_and_out_of_order() {
        let (mut a, mut b) = pair();
        let m1 = send(&mut a, b"one");
        let m2 = send(&mut a, b"two");
        let m3 = send(&mut a, b"three");
        assert_eq!(recv(&mut b, &m3.0, &m3.1).expect("m3"), b"three");
        assert_eq!(recv(&mut b, &m1.0, &m1.1).expect("m1"), b"one");
        let r1 = send(&mut b, b"reply");
        assert_eq!(recv(&mut a, &r1.0, &r1.1).expect("r1"), b"reply");
        assert_eq!(recv(&mut b, &m2.0, &m2.1).expect("m2"), b"two");
        assert_eq!(b.skipped_len(), 0);
        // A replay fails and leaves the state as it was.
        assert_eq!(recv(&mut b, &m2.0, &m2.1), Err(CryptoError::DecryptFailed));
        for i in 0..5u8 {
            let m = send(&mut a, &[i]);
            assert_eq!(recv(&mut b, &m.0, &m.1).expect("loop"), vec![i]);
            let r = send(&mut b, &[i]);
            assert_eq!(recv(&mut a, &r.0, &r.1).expect("loop"), vec![i]);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Any arrival order of two chains' worth of messages decrypts every message exactly
        /// once (skipped keys), and a second delivery of any of them fails.
        #[test]
        fn any_arrival_order_decrypts_each_message_once(order in proptest::sample::subsequence((0..24usize).collect::<Vec<_>>(), 24).prop_shuffle()) {
            let (mut a, mut b) = pair();
            let mut sent: Vec<(Header, Vec<u8>)> = (0..12u8).map(|i| send(&mut a, &[i])).collect();
            // A reply makes Alice's second half of messages use a new ratchet step.
            let m = send(&mut a, b"x");
            recv(&mut b, &m.0, &m.1).expect("x");
            let r = send(&mut b, b"r");
            recv(&mut a, &r.0, &r.1).expect("r");
            sent.extend((12..24u8).map(|i| send(&mut a, &[i])));
            for &i in &order {
                let (h, ct) = &sent[i];
                proptest::prop_assert_eq!(recv(&mut b, h, ct).expect("in order or not"), vec![i as u8]);
                proptest::prop_assert!(recv(&mut b, h, ct).is_err());
            }
            proptest::prop_assert_eq!(b.skipped_len(), 0);
        }
    }

    #[test]
    fn skipping_is_bounded() {
        let (mut a, mut b) = pair();
        let mut last = None;
        for _ in 0..=MAX_SKIP + 1 {
            last = Some(send(&mut a, b"x"));
        }
        let (h, ct) = last.expect("sent");
        assert_eq!(recv(&mut b, &h, &ct), Err(CryptoError::TooManySkipped));
    }
}
