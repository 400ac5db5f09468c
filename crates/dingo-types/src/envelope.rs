//! The envelope: what travels between devices and what carriers store. Format version 1:
//!
//! ```text
//! header  = version u8 | kind u8 | group [32] | epoch u64 | sender [32] | recipient [32]
//!         | seq u64 | deps_count u8 | deps [32]*count | crypto_header_len u16 | crypto_header
//! envelope = header | ciphertext_len u32 | ciphertext | auth
//! auth (version 1) = signature [64]
//! auth (version 2) = batch_id [16] | index u16 | height u8 | path [32]*height | signature [64]
//! ```
//! The header is the AEAD associated data; the sender's device key signs
//! `ENVELOPE_SIGNING_CONTEXT | header | ciphertext_len | ciphertext` (encrypt-then-sign), so any
//! node can drop a forgery without decrypting. Version 2 signs the same bytes as leaf `index` of
//! a Merkle tree over a batch of envelopes, and the signature covers the tree's root
//! ([`BatchProof`]; `dingo_crypto::batch` builds and checks it). The version byte is part of the
//! header, so an envelope cannot be moved from one form to the other. For 1:1 messages the
//! crypto header is a [`DirectHeader`].

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{ConvId, DeviceKey};
use crate::invite::DeviceCert;
use crate::limits::*;

/// The envelope format signed on its own.
pub const ENVELOPE_VERSION: u8 = 1;
/// The envelope format signed as one leaf of a batch.
pub const ENVELOPE_BATCH_VERSION: u8 = 2;
/// Tallest batch tree an envelope may name (at most 2^8 envelopes share a signature).
pub const MAX_BATCH_HEIGHT: usize = 8;
/// Domain separation for envelope signatures.
pub const ENVELOPE_SIGNING_CONTEXT: &[u8] = b"dingo/envelope/v1\0";

/// What kind of conversation an envelope belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EnvelopeKind {
    /// A pairwise (1:1) Double Ratchet message.
    Direct = 1,
    /// A group message under the sender's sender-key chain, the same bytes for every member.
    Group = 2,
}

impl EnvelopeKind {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(Self::Direct),
            2 => Ok(Self::Group),
            _ => Err(DecodeError::Invalid("envelope kind")),
        }
    }
}

/// A signed, encrypted message between devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Conversation kind.
    pub kind: EnvelopeKind,
    /// The conversation (group) it belongs to.
    pub group: ConvId,
    /// The group key epoch (0 for 1:1).
    pub epoch: u64,
    /// The signing device.
    pub sender: DeviceKey,
    /// The device it is addressed to.
    pub recipient: DeviceKey,
    /// The sender's sequence number in this conversation, from 1.
    pub seq: u64,
    /// Hashes of envelopes this one causally follows.
    pub deps: Vec<[u8; 32]>,
    /// Per-scheme crypto header (for 1:1: an encoded [`DirectHeader`]).
    pub crypto_header: Vec<u8>,
    /// AEAD ciphertext with tag.
    pub ciphertext: Vec<u8>,
    /// The sender's signature over this envelope, alone or as part of a batch.
    pub auth: Auth,
}

/// How an envelope is signed; the choice is its format version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// An Ed25519 signature by `sender` over [`Envelope::signed_bytes`] (version 1).
    Single([u8; 64]),
    /// One leaf of a signed batch (version 2).
    Batch(BatchProof),
}

impl Auth {
    /// The format version this form of signature belongs to.
    pub fn version(&self) -> u8 {
        match self {
            Self::Single(_) => ENVELOPE_VERSION,
            Self::Batch(_) => ENVELOPE_BATCH_VERSION,
        }
    }
}

/// Where an envelope sits in a batch whose Merkle root its sender signed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchProof {
    /// Chosen at random per batch; every hash of the tree is keyed by it.
    pub batch_id: [u8; 16],
    /// The envelope's leaf position, below `2^path.len()`.
    pub index: u16,
    /// Sibling hashes from the leaf up to the root (the tree's height is their number).
    pub path: Vec<[u8; 32]>,
    /// Ed25519 signature by `sender` over the root.
    pub signature: [u8; 64],
}

impl BatchProof {
    /// A proof to be filled in once the batch is complete (only its kind is read before then:
    /// the header's version byte, which the AEAD binds).
    pub fn pending() -> Self {
        Self { batch_id: [0; 16], index: 0, path: Vec::new(), signature: [0; 64] }
    }
}

impl Envelope {
    /// The header bytes: the AEAD associated data and the first part of what is signed.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.auth.version())
            .u8(self.kind as u8)
            .bytes(&self.group.0)
            .u64(self.epoch)
            .bytes(&self.sender.0)
            .bytes(&self.recipient.0)
            .u64(self.seq)
            .u8(self.deps.len().min(MAX_DEPS) as u8);
        for d in self.deps.iter().take(MAX_DEPS) {
            w.bytes(d);
        }
        w.u16(self.crypto_header.len() as u16).bytes(&self.crypto_header);
        w.into_bytes()
    }

    /// The bytes the sender signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(ENVELOPE_SIGNING_CONTEXT).bytes(&self.header_bytes()).long_bytes(&self.ciphertext);
        w.into_bytes()
    }

    /// The full wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.header_bytes()).long_bytes(&self.ciphertext);
        match &self.auth {
            Auth::Single(signature) => {
                w.bytes(signature);
            }
            Auth::Batch(p) => {
                w.bytes(&p.batch_id).u16(p.index).u8(p.path.len().min(MAX_BATCH_HEIGHT) as u8);
                for h in p.path.iter().take(MAX_BATCH_HEIGHT) {
                    w.bytes(h);
                }
                w.bytes(&p.signature);
            }
        }
        w.into_bytes()
    }

    /// A content hash naming this exact envelope.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// Decodes untrusted bytes; checks structure and limits only (not the signature).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DecodeError::TooLarge("envelope"));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("envelope version")?;
        if version != ENVELOPE_VERSION && version != ENVELOPE_BATCH_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "envelope", version });
        }
        let kind = EnvelopeKind::from_u8(r.u8("envelope kind")?)?;
        let group = ConvId(r.array("group")?);
        let epoch = r.u64("epoch")?;
        let sender = DeviceKey(r.array("sender")?);
        let recipient = DeviceKey(r.array("recipient")?);
        let seq = r.u64("seq")?;
        let ndeps = r.u8("deps count")? as usize;
        if ndeps > MAX_DEPS {
            return Err(DecodeError::TooLarge("deps"));
        }
        let deps = (0..ndeps).map(|_| r.array("dep")).collect::<Result<Vec<_>, _>>()?;
        let ch_len = r.u16("crypto header length")? as usize;
        if ch_len > MAX_CRYPTO_HEADER_BYTES {
            return Err(DecodeError::TooLarge("crypto header"));
        }
        let crypto_header = r.bytes(ch_len, "crypto header")?.to_vec();
        let ciphertext = r.long_bytes(MAX_CIPHERTEXT_BYTES, "ciphertext")?.to_vec();
        let auth = if version == ENVELOPE_VERSION {
            Auth::Single(r.array("signature")?)
        } else {
            let batch_id = r.array("batch id")?;
            let index = r.u16("batch index")?;
            let height = r.u8("batch height")? as usize;
            if height > MAX_BATCH_HEIGHT {
                return Err(DecodeError::TooLarge("batch height"));
            }
            if u32::from(index) >> height != 0 {
                return Err(DecodeError::Invalid("batch index"));
            }
            let path = (0..height).map(|_| r.array("batch path")).collect::<Result<Vec<_>, _>>()?;
            Auth::Batch(BatchProof { batch_id, index, path, signature: r.array("signature")? })
        };
        r.finish("envelope")?;
        Ok(Self { kind, group, epoch, sender, recipient, seq, deps, crypto_header, ciphertext, auth })
    }
}

/// The X3DH session start that rides on a 1:1 envelope until the initiator hears back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInit {
    /// The initiator's device certificate (carries its user key).
    pub cert: DeviceCert,
    /// The initiator's self-chosen display name.
    pub name: String,
    /// The initiator's X3DH ephemeral public key.
    pub ephemeral: [u8; 32],
    /// Which of the recipient's signed prekeys was used.
    pub prekey_id: u32,
}

/// The Double Ratchet message header of a 1:1 envelope (Signal's `HEADER(dh, pn, n)`), plus the
/// session it belongs to and, until answered, the session start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectHeader {
    /// Which of the pair's sessions this message uses.
    pub session_id: [u8; 16],
    /// The sender's current ratchet public key.
    pub ratchet_key: [u8; 32],
    /// Messages in the sender's previous sending chain.
    pub previous_chain_len: u32,
    /// This message's number in the current sending chain.
    pub message_number: u32,
    /// Present until the initiator has received a reply.
    pub init: Option<SessionInit>,
}

impl DirectHeader {
    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.session_id)
            .bytes(&self.ratchet_key)
            .u32(self.previous_chain_len)
            .u32(self.message_number);
        match &self.init {
            None => {
                w.u8(0);
            }
            Some(init) => {
                w.u8(1)
                    .bytes(&init.cert.encode())
                    .short_str(&init.name)
                    .bytes(&init.ephemeral)
                    .u32(init.prekey_id);
            }
        }
        w.into_bytes()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let session_id = r.array("session id")?;
        let ratchet_key = r.array("ratchet key")?;
        let previous_chain_len = r.u32("previous chain length")?;
        let message_number = r.u32("message number")?;
        let init = match r.u8("init flag")? {
            0 => None,
            1 => Some(SessionInit {
                cert: DeviceCert::read(&mut r)?,
                name: r.short_str(MAX_NAME_BYTES, "name")?,
                ephemeral: r.array("ephemeral key")?,
                prekey_id: r.u32("prekey id")?,
            }),
            _ => return Err(DecodeError::Invalid("init flag")),
        };
        r.finish("direct header")?;
        Ok(Self { session_id, ratchet_key, previous_chain_len, message_number, init })
    }
}

/// A sender's chain key for one member, carried in the group envelope that first uses the
/// chain: a Double Ratchet message of the pair's session (so the key has that session's forward
/// secrecy), without an envelope or signature of its own, since the group envelope's signature
/// covers it. One group envelope thus rekeys every member instead of one 1:1 envelope each.
///
/// ```text
/// key wrap = recipient [32] | header_len u16 | DirectHeader | ciphertext_len u16 | ciphertext
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrap {
    /// The member's device this key is for.
    pub recipient: DeviceKey,
    /// The pair's ratchet header for this message (the session start too, until answered).
    pub header: DirectHeader,
    /// The chain key, encrypted under the ratchet's message key.
    pub ciphertext: Vec<u8>,
}

/// Longest ciphertext of one key wrap (a 32-byte key and its tag, with room to grow).
const MAX_WRAP_CIPHERTEXT: usize = 256;

impl KeyWrap {
    fn write(&self, w: &mut Writer) {
        let header = self.header.encode();
        w.bytes(&self.recipient.0)
            .u16(header.len() as u16)
            .bytes(&header)
            .u16(self.ciphertext.len() as u16)
            .bytes(&self.ciphertext);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let recipient = DeviceKey(r.array("wrap recipient")?);
        let header_len = r.u16("wrap header length")? as usize;
        let header = DirectHeader::decode(r.bytes(header_len, "wrap header")?)?;
        let ct_len = r.u16("wrap ciphertext length")? as usize;
        if ct_len > MAX_WRAP_CIPHERTEXT {
            return Err(DecodeError::TooLarge("wrap ciphertext"));
        }
        let ciphertext = r.bytes(ct_len, "wrap ciphertext")?.to_vec();
        Ok(Self { recipient, header, ciphertext })
    }

    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_bytes().len()
    }
}

/// The crypto header of a group envelope: which of the sender's chains, the message's number in
/// it, and (on the first message of a chain) the chain key for members who lack it.
///
/// ```text
/// group header = chain_id u32 | n u32 [| wrap_count u16 (≥ 1) | key wrap * wrap_count]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeader {
    /// The sender's chain generation in this group (a new one after every rekey).
    pub chain_id: u32,
    /// The message number in that chain.
    pub n: u32,
    /// The chain key at `n` for members who lack it, one per member device.
    pub wraps: Vec<KeyWrap>,
}

impl GroupHeader {
    /// Encoded length without key wraps.
    pub const LEN: usize = 8;

    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.chain_id).u32(self.n);
        if !self.wraps.is_empty() {
            w.u16(self.wraps.len() as u16);
            for wrap in &self.wraps {
                wrap.write(&mut w);
            }
        }
        w.into_bytes()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let chain_id = r.u32("chain id")?;
        let n = r.u32("message number")?;
        let mut wraps = Vec::new();
        if r.remaining() > 0 {
            let count = r.u16("wrap count")? as usize;
            if count == 0 {
                return Err(DecodeError::Invalid("wrap count"));
            }
            if count > MAX_KEY_WRAPS {
                return Err(DecodeError::TooLarge("key wraps"));
            }
            for _ in 0..count {
                wraps.push(KeyWrap::read(&mut r)?);
            }
        }
        r.finish("group header")?;
        Ok(Self { chain_id, n, wraps })
    }

    /// The key wrap for `device`, if this header carries one.
    pub fn wrap_for(&self, device: &DeviceKey) -> Option<&KeyWrap> {
        self.wraps.iter().find(|w| w.recipient == *device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            kind: EnvelopeKind::Direct,
            group: ConvId([1; 32]),
            epoch: 0,
            sender: DeviceKey([2; 32]),
            recipient: DeviceKey([3; 32]),
            seq: 42,
            deps: vec![[4; 32]],
            crypto_header: vec![5; 60],
            ciphertext: vec![6; 100],
            auth: Auth::Single([7; 64]),
        }
    }

    #[test]
    fn envelope_round_trips_and_rejects_every_truncation() {
        let env = sample();
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes), Ok(env));
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "accepted a {cut}-byte prefix");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Envelope::decode(&longer), Err(DecodeError::Trailing("envelope")));
    }

    #[test]
    fn batch_signed_envelopes_round_trip_and_reject_every_truncation_and_bad_index() {
        let mut env = sample();
        env.auth = Auth::Batch(BatchProof {
            batch_id: [8; 16],
            index: 5,
            path: vec![[9; 32], [10; 32], [11; 32]],
            signature: [12; 64],
        });
        let bytes = env.encode();
        assert_eq!(bytes[0], ENVELOPE_BATCH_VERSION);
        assert_eq!(bytes.len(), sample().encode().len() + 16 + 2 + 1 + 3 * 32);
        assert_eq!(Envelope::decode(&bytes), Ok(env.clone()));
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "accepted a {cut}-byte prefix");
        }
        // The index must name a leaf of a tree that tall.
        let at = bytes.len() - 64 - 3 * 32 - 1 - 2;
        let mut bad = bytes.clone();
        bad[at..at + 2].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(Envelope::decode(&bad), Err(DecodeError::Invalid("batch index")));
        let mut tall = bytes;
        tall[at + 2] = MAX_BATCH_HEIGHT as u8 + 1;
        assert_eq!(Envelope::decode(&tall), Err(DecodeError::TooLarge("batch height")));
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut bytes = sample().encode();
        bytes[0] = 9;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(DecodeError::UnsupportedVersion { what: "envelope", version: 9 })
        );
    }

    #[test]
    fn group_headers_with_key_wraps_round_trip_and_reject_every_truncation() {
        let plain = GroupHeader { chain_id: 3, n: 9, wraps: Vec::new() };
        assert_eq!(plain.encode().len(), GroupHeader::LEN);
        let wrap = |r: u8| KeyWrap {
            recipient: DeviceKey([r; 32]),
            header: DirectHeader {
                session_id: [1; 16],
                ratchet_key: [2; 32],
                previous_chain_len: 3,
                message_number: 4,
                init: None,
            },
            ciphertext: vec![r; 48],
        };
        let header = GroupHeader { chain_id: 3, n: 9, wraps: vec![wrap(5), wrap(6)] };
        let bytes = header.encode();
        assert_eq!(GroupHeader::decode(&bytes), Ok(header.clone()));
        assert_eq!(header.wrap_for(&DeviceKey([6; 32])), Some(&wrap(6)));
        assert_eq!(header.wrap_for(&DeviceKey([7; 32])), None);
        for cut in GroupHeader::LEN + 1..bytes.len() {
            assert!(GroupHeader::decode(&bytes[..cut]).is_err(), "accepted a {cut}-byte prefix");
        }
        let mut empty = plain.encode();
        empty.extend_from_slice(&0u16.to_be_bytes());
        assert_eq!(GroupHeader::decode(&empty), Err(DecodeError::Invalid("wrap count")));
    }
}
