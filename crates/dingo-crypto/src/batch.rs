//! Batch signatures for envelopes: one Ed25519 signature over the root of a Merkle tree whose
//! leaves are the envelopes' signed bytes, and in each envelope the path from its leaf to that
//! root. A run of sends then costs one signature, and a receiver checks each root once.
//!
//! The construction is the Merkle tree batch signature of draft-joseph-tls-batch-signatures (after
//! draft-ietf-tls-batch-signing): every hash is keyed by a random per-batch id and tweaked with
//! its position, so a path proves one leaf at one position of one batch, and second-preimage
//! security of the hash suffices (no collision has to be ruled out across batches). Here:
//!
//! ```text
//! leaf(i)        = BLAKE3-derive_key(LEAF_CONTEXT,  batch_id | i u16 | signed_bytes)
//! node(l, i)     = BLAKE3-derive_key(NODE_CONTEXT,  batch_id | l u8 | i u16 | left | right)
//! signed message = BATCH_ROOT_CONTEXT | batch_id | height u8 | root
//! ```
//! A tree of height `h` has `2^h` leaf slots; slots past the batch's last envelope hold 32 zero
//! bytes, which no leaf hash equals in practice and which no envelope can claim (a verifier always
//! hashes the envelope it holds). The height is signed, so a path cannot be shortened or extended.

use crate::identity::{verify, Identity};
use crate::session::VerifiedEnvelope;
use crate::CryptoError;
use dingo_types::envelope::{Auth, BatchProof, Envelope, MAX_BATCH_HEIGHT};

/// Domain separation for the signature over a batch root.
pub const BATCH_ROOT_CONTEXT: &[u8] = b"dingo/envelope-batch-root/v1\0";
const LEAF_CONTEXT: &str = "dingo 2026-11-27 envelope batch leaf v1";
const NODE_CONTEXT: &str = "dingo 2026-11-27 envelope batch node v1";

/// Most envelopes that share one signature.
pub const MAX_BATCH: usize = 1 << MAX_BATCH_HEIGHT;

fn leaf_hash(batch_id: &[u8; 16], index: u16, signed: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    h.update(batch_id).update(&index.to_be_bytes()).update(signed);
    *h.finalize().as_bytes()
}

fn node_hash(batch_id: &[u8; 16], level: u8, index: u16, left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    h.update(batch_id).update(&[level]).update(&index.to_be_bytes()).update(left).update(right);
    *h.finalize().as_bytes()
}

/// The message the sender signs for a batch.
pub fn root_message(batch_id: &[u8; 16], height: u8, root: &[u8; 32]) -> Vec<u8> {
    [BATCH_ROOT_CONTEXT, batch_id, &[height], root].concat()
}

/// The root that `proof` links the envelope bytes `signed` to.
pub fn root_of(signed: &[u8], proof: &BatchProof) -> [u8; 32] {
    let mut hash = leaf_hash(&proof.batch_id, proof.index, signed);
    let mut pos = proof.index;
    for (level, sibling) in proof.path.iter().enumerate() {
        let (left, right) = if pos & 1 == 0 { (&hash, sibling) } else { (sibling, &hash) };
        hash = node_hash(&proof.batch_id, level as u8 + 1, pos >> 1, left, right);
        pos >>= 1;
    }
    hash
}

/// Signs `envs` (sealed by `me` as batch envelopes, [`BatchProof::pending`]) with one signature,
/// filling in each one's proof. At most [`MAX_BATCH`] envelopes.
pub fn sign_batch(me: &Identity, envs: &mut [Envelope]) -> Result<(), CryptoError> {
    if envs.is_empty() {
        return Ok(());
    }
    if envs.len() > MAX_BATCH || envs.iter().any(|e| !matches!(e.auth, Auth::Batch(_))) {
        return Err(CryptoError::Format("envelope batch"));
    }
    let batch_id: [u8; 16] = rand::random();
    let height = envs.len().next_power_of_two().trailing_zeros() as usize;
    let mut levels: Vec<Vec<[u8; 32]>> = Vec::with_capacity(height + 1);
    let mut leaves = vec![[0u8; 32]; 1 << height];
    for (i, env) in envs.iter().enumerate() {
        leaves[i] = leaf_hash(&batch_id, i as u16, &env.signed_bytes());
    }
    levels.push(leaves);
    for level in 1..=height {
        let below = &levels[level - 1];
        let above = below
            .chunks_exact(2)
            .enumerate()
            .map(|(i, pair)| node_hash(&batch_id, level as u8, i as u16, &pair[0], &pair[1]))
            .collect();
        levels.push(above);
    }
    let root = levels[height][0];
    let signature = me.sign_device(&root_message(&batch_id, height as u8, &root));
    for (i, env) in envs.iter_mut().enumerate() {
        let path = (0..height).map(|level| levels[level][(i >> level) ^ 1]).collect();
        env.auth = Auth::Batch(BatchProof { batch_id, index: i as u16, path, signature });
    }
    Ok(())
}

/// A batch root whose signature has been checked: sender, batch id, height, root, signature.
type CheckedRoot = ([u8; 32], [u8; 16], u8, [u8; 32], [u8; 64]);

/// Checks envelope signatures (`verify_strict`), checking each batch root once: envelopes of
/// one batch usually arrive together. Remembers the last [`Verifier::REMEMBERED`] roots.
#[derive(Default)]
pub struct Verifier {
    checked: Vec<CheckedRoot>,
}

impl Verifier {
    /// Batch roots remembered.
    pub const REMEMBERED: usize = 16;

    /// Checks the sender's signature over `env`, alone or through its batch root.
    pub fn verify(&mut self, env: Envelope) -> Result<VerifiedEnvelope, CryptoError> {
        match &env.auth {
            Auth::Single(signature) => verify(&env.sender.0, &env.signed_bytes(), signature)?,
            Auth::Batch(proof) => {
                let root = root_of(&env.signed_bytes(), proof);
                let key = (env.sender.0, proof.batch_id, proof.path.len() as u8, root, proof.signature);
                if !self.checked.contains(&key) {
                    verify(&key.0, &root_message(&key.1, key.2, &key.3), &key.4)?;
                    if self.checked.len() == Self::REMEMBERED {
                        self.checked.remove(0);
                    }
                    self.checked.push(key);
                }
            }
        }
        Ok(VerifiedEnvelope(env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dingo_types::envelope::EnvelopeKind;
    use dingo_types::{ConvId, DeviceKey};

    fn identity(name: &str) -> Identity {
        Identity::generate(name)
    }

    fn pending(me: &Identity, seq: u64) -> Envelope {
        Envelope {
            kind: EnvelopeKind::Direct,
            group: ConvId([1; 32]),
            epoch: 0,
            sender: me.device_key(),
            recipient: DeviceKey([3; 32]),
            seq,
            deps: Vec::new(),
            crypto_header: vec![4; 10],
            ciphertext: vec![seq as u8; 40],
            auth: Auth::Batch(BatchProof::pending()),
        }
    }

    fn batch(me: &Identity, n: u64) -> Vec<Envelope> {
        let mut envs: Vec<Envelope> = (1..=n).map(|seq| pending(me, seq)).collect();
        sign_batch(me, &mut envs).expect("sign");
        envs
    }

    fn proof(env: &mut Envelope) -> &mut BatchProof {
        match &mut env.auth {
            Auth::Batch(p) => p,
            Auth::Single(_) => panic!("not a batch envelope"),
        }
    }

    #[test]
    fn every_envelope_of_batches_of_every_size_verifies_alone() {
        let alice = identity("alice");
        for n in [1u64, 2, 3, 5, 8, 16, 17, 256] {
            let envs = batch(&alice, n);
            let height = (n as usize).next_power_of_two().trailing_zeros() as usize;
            for env in envs {
                assert_eq!(proof(&mut env.clone()).path.len(), height);
                let decoded = Envelope::decode(&env.encode()).expect("decode");
                // A fresh verifier each time: no envelope leans on another's check.
                Verifier::default().verify(decoded).expect("verifies");
            }
        }
    }

    #[test]
    fn a_batch_root_is_checked_once_and_tampering_anywhere_fails() {
        let alice = identity("alice");
        let envs = batch(&alice, 5);
        let mut v = Verifier::default();
        for env in &envs {
            v.verify(env.clone()).expect("verifies");
        }
        assert_eq!(v.checked.len(), 1, "one signature check for the whole batch");
        type Tamper = fn(&mut Envelope);
        let tampers: [(&str, Tamper); 9] = [
            ("ciphertext", |e| e.ciphertext[0] ^= 1),
            ("sequence number", |e| e.seq += 1),
            ("recipient", |e| e.recipient = DeviceKey([9; 32])),
            ("index", |e| proof(e).index ^= 1),
            ("path", |e| proof(e).path[1][0] ^= 1),
            ("batch id", |e| proof(e).batch_id[0] ^= 1),
            ("signature", |e| proof(e).signature[0] ^= 1),
            ("shortened path", |e| {
                proof(e).path.pop();
            }),
            ("lengthened path", |e| proof(e).path.push([0; 32])),
        ];
        for (what, tamper) in tampers {
            let mut env = envs[2].clone();
            tamper(&mut env);
            // Even with the genuine root remembered, a changed envelope does not verify.
            assert_eq!(v.verify(env).err(), Some(CryptoError::BadSignature), "{what}");
        }
    }

    #[test]
    fn another_device_cannot_claim_a_batch_or_sign_a_mixed_one() {
        let (alice, mallory) = (identity("alice"), identity("mallory"));
        let mut env = batch(&alice, 4).remove(1);
        env.sender = mallory.device_key();
        assert_eq!(Verifier::default().verify(env).err(), Some(CryptoError::BadSignature));
        let mut mixed = vec![pending(&alice, 1), pending(&alice, 2)];
        mixed[1].auth = Auth::Single([0; 64]);
        assert!(sign_batch(&alice, &mut mixed).is_err());
        let mut too_many: Vec<Envelope> = (0..=MAX_BATCH as u64).map(|s| pending(&alice, s)).collect();
        assert!(sign_batch(&alice, &mut too_many).is_err());
    }

    #[test]
    fn a_single_signature_cannot_pass_as_a_batch_of_one() {
        // A batch of one signs the root message, never the envelope's own bytes, and the header
        // names the form: moving a signature between forms fails.
        let alice = identity("alice");
        let mut env = batch(&alice, 1).remove(0);
        let sig = proof(&mut env).signature;
        env.auth = Auth::Single(sig);
        assert_eq!(Verifier::default().verify(env).err(), Some(CryptoError::BadSignature));
    }
}
