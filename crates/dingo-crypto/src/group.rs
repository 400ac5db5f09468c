//! Group encryption with sender keys: each member has its own chain per group and epoch of
//! membership, whose current key travels to every other member over the pairwise sessions
//! (the `SenderKey` content). A group message is encrypted and signed once, and the same bytes
//! go to every member.
//!
//! - `chain step`: message key = HMAC-SHA256(ck, 0x01), next chain key = HMAC-SHA256(ck, 0x02),
//!   as in the Double Ratchet's symmetric chains (and Signal's sender keys); a member that gets
//!   the chain key at message `n` cannot derive earlier message keys, so a new member reads
//!   nothing sent before it joined.
//! - `ENCRYPT(mk)`: HKDF-SHA256(mk, info `dingo/group/message/v1`) gives a ChaCha20-Poly1305
//!   key and nonce; the envelope header is the associated data; the sender's device signs
//!   header and ciphertext, so members cannot forge each other's messages.
//! - On a removal every remaining member starts a new chain (a new `chain_id`) and sends it only
//!   to the remaining members: the removed member has no key for anything sent after it.
//! - A chain key travels inside the first group envelope of the chain, as one [`KeyWrap`] per
//!   member that lacks it: a message of the pair's Double Ratchet session (forward secrecy as
//!   for any 1:1 message), bound by its associated data to that envelope ([`wrap_context`]) and
//!   covered by the envelope's one signature. A rekey of N members is then N group envelopes,
//!   not N × (N − 1) 1:1 envelopes, each signed, stored and delivered on its own.
//!
//! Receiving works on a copy, as in [`crate::ratchet`]: a forged or replayed message changes
//! nothing. Skipped keys are bounded per step ([`MAX_GROUP_SKIP`]) and in total.

use crate::identity::Identity;
use crate::ratchet::hmac;
use crate::session::VerifiedEnvelope;
use crate::{CryptoError, Secret32};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use dingo_types::envelope::{Auth, Envelope, EnvelopeKind, GroupHeader, KeyWrap};
use dingo_types::{ConvId, DeviceKey};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Most message keys one group message may make a receiver skip.
pub const MAX_GROUP_SKIP: u32 = 2000;
/// Most skipped keys kept per receiving chain.
pub const MAX_GROUP_SKIPPED: usize = 2000;

const MESSAGE_INFO: &[u8] = b"dingo/group/message/v1";
const WRAP_CONTEXT: &[u8] = b"dingo/group/keywrap/v1";

/// What a [`KeyWrap`] for `recipient` is bound to, beyond its pairwise session: the group
/// envelope it rides in (group, epoch, sender, sequence number, chain and position), so it
/// cannot be replayed into another envelope or read as a 1:1 message.
pub fn wrap_context(
    group: &ConvId,
    epoch: u64,
    sender: &DeviceKey,
    recipient: &DeviceKey,
    seq: u64,
    (chain_id, n): (u32, u32),
) -> Vec<u8> {
    [
        WRAP_CONTEXT,
        &group.0,
        &epoch.to_be_bytes(),
        &sender.0,
        &recipient.0,
        &seq.to_be_bytes(),
        &chain_id.to_be_bytes(),
        &n.to_be_bytes(),
    ]
    .concat()
}

/// The recipient of a group envelope: nobody in particular (every member gets the same bytes).
pub const GROUP_RECIPIENT: DeviceKey = DeviceKey([0; 32]);

fn cipher(mk: &Secret32) -> (ChaCha20Poly1305, [u8; 12]) {
    crate::ratchet::message_cipher(mk, MESSAGE_INFO)
}

/// The sending half: my chain in one group.
#[derive(Clone, Serialize, Deserialize)]
pub struct SenderChain {
    chain_id: u32,
    key: Secret32,
    n: u32,
}

impl std::fmt::Debug for SenderChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderChain")
            .field("chain_id", &self.chain_id)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

/// What a member needs to read my chain from now on: `(chain_id, n, chain key at n)`.
pub type Distribution = (u32, u32, [u8; 32]);

impl SenderChain {
    /// A fresh random chain with the given generation number.
    pub fn new(chain_id: u32) -> Self {
        Self { chain_id, key: Secret32::random(), n: 0 }
    }

    /// The chain generation.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The chain's current position, to send to a member (over a pairwise session).
    pub fn distribution(&self) -> Distribution {
        (self.chain_id, self.n, *self.key.expose())
    }

    /// Encrypts and signs `plaintext` as envelope `seq` of `group` under membership `epoch`.
    /// Persist `self` before the envelope leaves, so no key is ever used twice.
    pub fn seal(
        &mut self,
        me: &Identity,
        group: ConvId,
        epoch: u64,
        seq: u64,
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        self.seal_with_keys(me, group, epoch, seq, plaintext, Vec::new())
    }

    /// [`SenderChain::seal`], carrying this chain's key (its [`SenderChain::distribution`] as
    /// it was before this seal) for the members in `wraps`.
    pub fn seal_with_keys(
        &mut self,
        me: &Identity,
        group: ConvId,
        epoch: u64,
        seq: u64,
        plaintext: &[u8],
        wraps: Vec<KeyWrap>,
    ) -> Result<Envelope, CryptoError> {
        if self.n == u32::MAX {
            return Err(CryptoError::TooManySkipped);
        }
        let header = GroupHeader { chain_id: self.chain_id, n: self.n, wraps };
        let crypto_header = header.encode();
        if crypto_header.len() > dingo_types::limits::MAX_CRYPTO_HEADER_BYTES {
            return Err(CryptoError::Format("too many key wraps for one envelope"));
        }
        let mk = hmac(&self.key, 0x01);
        self.key = hmac(&self.key, 0x02);
        self.n += 1;
        let mut env = Envelope {
            kind: EnvelopeKind::Group,
            group,
            epoch,
            sender: me.device_key(),
            recipient: GROUP_RECIPIENT,
            seq,
            deps: Vec::new(),
            crypto_header,
            ciphertext: Vec::new(),
            auth: Auth::Single([0; 64]),
        };
        let (c, nonce) = cipher(&mk);
        env.ciphertext = c
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: &env.header_bytes() })
            .map_err(|_| CryptoError::Format("plaintext too long"))?;
        env.auth = Auth::Single(me.sign_device(&env.signed_bytes()));
        Ok(env)
    }
}

/// The receiving half: one member's chain in one group, as far as I know it.
#[derive(Clone, Serialize, Deserialize)]
pub struct ReceiverChain {
    chain_id: u32,
    key: Secret32,
    n: u32,
    skipped: VecDeque<(u32, Secret32)>,
}

impl std::fmt::Debug for ReceiverChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverChain")
            .field("chain_id", &self.chain_id)
            .field("n", &self.n)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

impl ReceiverChain {
    /// Starts from a member's distribution.
    pub fn from_distribution((chain_id, n, key): Distribution) -> Self {
        Self { chain_id, key: Secret32::from_bytes(key), n, skipped: VecDeque::new() }
    }

    /// The chain generation.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The next message number this chain expects.
    pub fn position(&self) -> u32 {
        self.n
    }

    fn key_for(&mut self, n: u32) -> Result<Secret32, CryptoError> {
        if n < self.n {
            let pos = self.skipped.iter().position(|(k, _)| *k == n).ok_or(CryptoError::TooOld)?;
            return self.skipped.remove(pos).map(|(_, mk)| mk).ok_or(CryptoError::DecryptFailed);
        }
        if n - self.n > MAX_GROUP_SKIP {
            return Err(CryptoError::TooManySkipped);
        }
        while self.n < n {
            self.skipped.push_back((self.n, hmac(&self.key, 0x01)));
            if self.skipped.len() > MAX_GROUP_SKIPPED {
                self.skipped.pop_front();
            }
            self.key = hmac(&self.key, 0x02);
            self.n += 1;
        }
        let mk = hmac(&self.key, 0x01);
        self.key = hmac(&self.key, 0x02);
        self.n += 1;
        Ok(mk)
    }

    /// Decrypts a verified group envelope of this chain. On error `self` is unchanged.
    pub fn open(&mut self, verified: &VerifiedEnvelope) -> Result<Vec<u8>, CryptoError> {
        let env = verified.envelope();
        if env.kind != EnvelopeKind::Group || env.recipient != GROUP_RECIPIENT {
            return Err(CryptoError::UnknownSession);
        }
        let header =
            GroupHeader::decode(&env.crypto_header).map_err(|_| CryptoError::Format("group header"))?;
        if header.chain_id != self.chain_id {
            return Err(CryptoError::UnknownSession);
        }
        let mut next = self.clone();
        let mk = next.key_for(header.n)?;
        let (c, nonce) = cipher(&mk);
        let plaintext = c
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &env.ciphertext, aad: &env.header_bytes() })
            .map_err(|_| CryptoError::DecryptFailed)?;
        *self = next;
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{verify_envelope, PeerSessions, Recipient};

    #[test]
    fn members_read_in_any_order_and_replays_fail() {
        let alice = Identity::generate("alice");
        let mut chain = SenderChain::new(1);
        let mut bob = ReceiverChain::from_distribution(chain.distribution());
        let envs: Vec<_> = (1..=5)
            .map(|i| {
                chain.seal(&alice, ConvId([1; 32]), 7, i, format!("m{i}").as_bytes()).expect("test step")
            })
            .collect();
        for i in [4usize, 0, 2, 1, 3] {
            let v = verify_envelope(envs[i].clone()).expect("test step");
            assert_eq!(bob.open(&v).expect("test step"), format!("m{}", i + 1).as_bytes());
        }
        let again = verify_envelope(envs[2].clone()).expect("test step");
        assert_eq!(bob.open(&again), Err(CryptoError::TooOld));
    }

    #[test]
    fn a_late_joiner_cannot_read_earlier_messages_and_a_new_chain_is_unreadable_to_the_old() {
        let alice = Identity::generate("alice");
        let mut chain = SenderChain::new(1);
        let early = chain.seal(&alice, ConvId([1; 32]), 1, 1, b"before").expect("test step");
        let mut late = ReceiverChain::from_distribution(chain.distribution());
        assert_eq!(late.open(&verify_envelope(early).expect("test step")), Err(CryptoError::TooOld));
        let mut rotated = SenderChain::new(2);
        let after = rotated.seal(&alice, ConvId([1; 32]), 2, 2, b"after").expect("test step");
        assert_eq!(late.open(&verify_envelope(after).expect("test step")), Err(CryptoError::UnknownSession));
    }

    /// Alice and bob with a 1:1 session both sides hold (alice sent, bob opened).
    fn paired() -> (Identity, Identity, PeerSessions, PeerSessions) {
        let (alice, bob) = (Identity::generate("alice"), Identity::generate("bob"));
        let (mut at_alice, mut at_bob) = (PeerSessions::default(), PeerSessions::default());
        let to_bob = Recipient { cert: bob.cert(), prekey: Some(bob.signed_prekey()) };
        let hello = at_alice.seal(&alice, to_bob, ConvId([9; 32]), 1, b"hi").expect("test step");
        at_bob.open(&bob, &verify_envelope(hello).expect("test step"), 0).expect("test step");
        (alice, bob, at_alice, at_bob)
    }

    #[test]
    fn a_chain_key_rides_in_its_first_envelope_for_exactly_the_wrapped_members() {
        let (alice, bob, mut at_alice, mut at_bob) = paired();
        let carol = Identity::generate("carol");
        let group = ConvId([1; 32]);
        let mut chain = SenderChain::new(4);
        let (chain_id, n, key) = chain.distribution();
        let context = wrap_context(&group, 7, &alice.device_key(), &bob.device_key(), 12, (chain_id, n));
        let to_bob = Recipient { cert: bob.cert(), prekey: None };
        let wrap = at_alice.wrap(&alice, to_bob, &context, &key).expect("test step");
        // No session with carol: a wrap never starts one.
        let to_carol = Recipient { cert: carol.cert(), prekey: Some(carol.signed_prekey()) };
        assert_eq!(
            PeerSessions::default().wrap(&alice, to_carol, &context, &key).err(),
            Some(CryptoError::UnknownSession)
        );
        let env = chain.seal_with_keys(&alice, group, 7, 12, b"rekeyed", vec![wrap]).expect("test step");
        let verified = verify_envelope(env).expect("test step");
        let header = GroupHeader::decode(&verified.envelope().crypto_header).expect("test step");
        assert!(header.wrap_for(&carol.device_key()).is_none());
        let wrap = header.wrap_for(&bob.device_key()).expect("bob's wrap");

        // Bound to its envelope: another sequence number, position or recipient opens nothing
        // and changes nothing.
        let before = postcard::to_allocvec(&at_bob).expect("test step");
        for wrong in [
            wrap_context(&group, 7, &alice.device_key(), &bob.device_key(), 13, (chain_id, n)),
            wrap_context(&group, 7, &alice.device_key(), &bob.device_key(), 12, (chain_id, n + 1)),
            wrap_context(&ConvId([2; 32]), 7, &alice.device_key(), &bob.device_key(), 12, (chain_id, n)),
        ] {
            assert_eq!(
                at_bob.open_wrap(&bob, &alice.device_key(), wrap, &wrong, 0).err(),
                Some(CryptoError::DecryptFailed)
            );
            assert_eq!(postcard::to_allocvec(&at_bob).expect("test step"), before);
        }
        assert_eq!(
            PeerSessions::default().open_wrap(&carol, &alice.device_key(), wrap, &context, 0).err(),
            Some(CryptoError::UnknownSession)
        );

        let opened = at_bob.open_wrap(&bob, &alice.device_key(), wrap, &context, 0).expect("test step");
        let key: [u8; 32] = opened.plaintext.try_into().expect("a 32-byte key");
        let mut reader = ReceiverChain::from_distribution((header.chain_id, header.n, key));
        assert_eq!(reader.open(&verified).expect("test step"), b"rekeyed");
        // The wrap's ratchet key was used once: the same wrap never opens again.
        assert!(at_bob.open_wrap(&bob, &alice.device_key(), wrap, &context, 0).is_err());
        // Later messages of the chain need no wrap.
        let next = chain.seal(&alice, group, 7, 13, b"next").expect("test step");
        assert_eq!(reader.open(&verify_envelope(next).expect("test step")).expect("test step"), b"next");
    }

    #[test]
    fn tampering_is_detected_and_changes_nothing() {
        let alice = Identity::generate("alice");
        let mut chain = SenderChain::new(1);
        let mut bob = ReceiverChain::from_distribution(chain.distribution());
        let mut env = chain.seal(&alice, ConvId([1; 32]), 1, 1, b"hello").expect("test step");
        let good = env.clone();
        env.ciphertext[0] ^= 1;
        env.auth = Auth::Single(alice.sign_device(&env.signed_bytes()));
        let before = postcard::to_allocvec(&bob).expect("test step");
        assert!(bob.open(&verify_envelope(env).expect("test step")).is_err());
        assert_eq!(postcard::to_allocvec(&bob).expect("test step"), before);
        assert_eq!(bob.open(&verify_envelope(good).expect("test step")).expect("test step"), b"hello");
    }
}
