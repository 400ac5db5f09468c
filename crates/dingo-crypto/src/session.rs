//! A pair's sessions and the 1:1 envelope: seal (X3DH if needed, ratchet, encrypt, sign) and
//! open (verify, X3DH as responder if needed, ratchet, decrypt).
//!
//! When both sides start a session at once there are two; both sides then send on the one whose
//! initiator has the smaller device key, so they converge on one. Each side keeps at most
//! [`MAX_SESSIONS`] per peer.

use crate::identity::{verify, verify_cert, Identity};
use crate::ratchet::{self, Header, MessageKey};
use crate::{x3dh, CryptoError};
use dingo_types::envelope::{Auth, BatchProof, DirectHeader, Envelope, EnvelopeKind, KeyWrap, SessionInit};
use dingo_types::invite::{DeviceCert, SignedPreKey};
use dingo_types::{ConvId, DeviceKey};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

/// Most sessions kept per peer device.
pub const MAX_SESSIONS: usize = 4;

#[derive(Clone, Serialize, Deserialize)]
struct PendingInit {
    ephemeral: [u8; 32],
    prekey_id: u32,
}

#[derive(Clone, Serialize, Deserialize)]
struct Session {
    id: [u8; 16],
    initiator: [u8; 32],
    ad: Vec<u8>,
    ratchet: ratchet::State,
    pending_init: Option<PendingInit>,
}

/// All sessions with one peer device; persisted by the caller after every seal and open.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct PeerSessions {
    sessions: Vec<Session>,
    active: Option<[u8; 16]>,
}

impl std::fmt::Debug for PeerSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSessions").field("count", &self.sessions.len()).finish_non_exhaustive()
    }
}

/// An envelope whose signature has been checked against its `sender`.
#[derive(Debug, Clone)]
pub struct VerifiedEnvelope(pub(crate) Envelope);

impl VerifiedEnvelope {
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.0
    }
}

/// Checks the sender's signature over header and ciphertext (`verify_strict`), alone or through
/// its batch root. To check many envelopes, [`crate::batch::Verifier`] checks each root once.
pub fn verify_envelope(env: Envelope) -> Result<VerifiedEnvelope, CryptoError> {
    crate::batch::Verifier::default().verify(env)
}

/// What opening an envelope produced.
#[derive(Debug)]
pub struct Opened {
    /// The decrypted content bytes.
    pub plaintext: Vec<u8>,
    /// Present when this message started a new session: the sender's certificate (verified,
    /// and naming the envelope's sender device) and self-chosen name. The caller pins or checks it.
    pub new_peer: Option<(DeviceCert, String)>,
}

/// What the caller knows about the recipient when sealing.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// The recipient's pinned device certificate.
    pub cert: &'a DeviceCert,
    /// Their signed prekey, if known (needed only to start a session).
    pub prekey: Option<&'a SignedPreKey>,
}

impl PeerSessions {
    /// Whether any session exists.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn choose_active(&mut self) {
        let min_initiator = self.sessions.iter().map(|s| s.initiator).min();
        self.active = self
            .sessions
            .iter()
            .rev()
            .find(|s| Some(s.initiator) == min_initiator && s.ratchet.can_send())
            .map(|s| s.id);
    }

    fn insert(&mut self, session: Session) {
        self.sessions.retain(|s| s.id != session.id);
        self.sessions.push(session);
        while self.sessions.len() > MAX_SESSIONS {
            self.sessions.remove(0);
        }
        self.choose_active();
    }

    /// The session to send on: the active one, or (if `may_start`) a new one started with X3DH.
    fn sending_session(
        &mut self,
        me: &Identity,
        to: Recipient<'_>,
        may_start: bool,
    ) -> Result<usize, CryptoError> {
        if let Some(i) = self.active.and_then(|id| self.sessions.iter().position(|s| s.id == id)) {
            return Ok(i);
        }
        if !may_start {
            return Err(CryptoError::UnknownSession);
        }
        let prekey = to.prekey.ok_or(CryptoError::UnknownSession)?;
        verify(&to.cert.device_key, &prekey.signed_bytes(), &prekey.signature)
            .map_err(|_| CryptoError::BadCertificate)?;
        let ek = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let agreed = x3dh::initiate(&me.device_dh(), &ek, me.cert(), to.cert, &prekey.public)?;
        let fresh = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let ratchet = ratchet::State::init_initiator(&agreed.shared, &prekey.public, fresh)?;
        self.insert(Session {
            id: agreed.session_id,
            initiator: me.device_key().0,
            ad: agreed.associated_data,
            ratchet,
            pending_init: Some(PendingInit {
                ephemeral: PublicKey::from(&ek).to_bytes(),
                prekey_id: prekey.id,
            }),
        });
        Ok(self.sessions.len() - 1)
    }

    /// Steps session `idx`'s sending chain: the message's header and key, and the session's
    /// associated data.
    fn next_message(
        &mut self,
        me: &Identity,
        idx: usize,
    ) -> Result<(DirectHeader, MessageKey, &[u8]), CryptoError> {
        let session = &mut self.sessions[idx];
        let (header, mk) = session.ratchet.next_send()?;
        let direct = DirectHeader {
            session_id: session.id,
            ratchet_key: header.dh,
            previous_chain_len: header.pn,
            message_number: header.n,
            init: session.pending_init.as_ref().map(|p| SessionInit {
                cert: me.cert().clone(),
                name: me.name().to_owned(),
                ephemeral: p.ephemeral,
                prekey_id: p.prekey_id,
            }),
        };
        Ok((direct, mk, &session.ad))
    }

    /// Encrypts and signs `plaintext` for the recipient as envelope `seq` of conversation
    /// `group`, starting a session with X3DH if there is none. Persist `self` before sending.
    pub fn seal(
        &mut self,
        me: &Identity,
        to: Recipient<'_>,
        group: ConvId,
        seq: u64,
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        let mut env = self.seal_unsigned(me, to, group, seq, plaintext, Auth::Single([0; 64]))?;
        env.auth = Auth::Single(me.sign_device(&env.signed_bytes()));
        Ok(env)
    }

    /// Like [`PeerSessions::seal`], for an envelope to be signed with others by
    /// [`crate::batch::sign_batch`] before it leaves.
    pub fn seal_for_batch(
        &mut self,
        me: &Identity,
        to: Recipient<'_>,
        group: ConvId,
        seq: u64,
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        self.seal_unsigned(me, to, group, seq, plaintext, Auth::Batch(BatchProof::pending()))
    }

    /// Encrypts with the header (naming `auth`'s form) as associated data; signs nothing.
    fn seal_unsigned(
        &mut self,
        me: &Identity,
        to: Recipient<'_>,
        group: ConvId,
        seq: u64,
        plaintext: &[u8],
        auth: Auth,
    ) -> Result<Envelope, CryptoError> {
        let idx = self.sending_session(me, to, true)?;
        let (direct, mk, ad) = self.next_message(me, idx)?;
        let mut env = Envelope {
            kind: EnvelopeKind::Direct,
            group,
            epoch: 0,
            sender: me.device_key(),
            recipient: DeviceKey(to.cert.device_key),
            seq,
            deps: Vec::new(),
            crypto_header: direct.encode(),
            ciphertext: Vec::new(),
            auth,
        };
        let aad = [ad, &env.header_bytes()].concat();
        env.ciphertext = mk.encrypt(plaintext, &aad);
        Ok(env)
    }

    /// Encrypts `plaintext` (a chain key) for the recipient as a [`KeyWrap`] to ride in a group
    /// envelope, bound to `context` (which names that envelope). Needs a session already: a
    /// wrap never starts one. Persist `self` before the group envelope leaves.
    pub fn wrap(
        &mut self,
        me: &Identity,
        to: Recipient<'_>,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<KeyWrap, CryptoError> {
        let idx = self.sending_session(me, to, false)?;
        let (header, mk, ad) = self.next_message(me, idx)?;
        let ciphertext = mk.encrypt(plaintext, &[ad, context].concat());
        Ok(KeyWrap { recipient: DeviceKey(to.cert.device_key), header, ciphertext })
    }

    /// Decrypts a verified envelope addressed to `me`. On any error `self` is unchanged.
    pub fn open(
        &mut self,
        me: &Identity,
        verified: &VerifiedEnvelope,
        now_ms: u64,
    ) -> Result<Opened, CryptoError> {
        let env = verified.envelope();
        if env.recipient != me.device_key() || env.kind != EnvelopeKind::Direct || env.epoch != 0 {
            return Err(CryptoError::UnknownSession);
        }
        let direct =
            DirectHeader::decode(&env.crypto_header).map_err(|_| CryptoError::Format("direct header"))?;
        self.open_message(me, &env.sender, &direct, &env.ciphertext, &env.header_bytes(), now_ms)
    }

    /// Decrypts the key wrap for `me` in a verified group envelope from `sender`, whose context
    /// is `context` (see [`PeerSessions::wrap`]). On any error `self` is unchanged.
    pub fn open_wrap(
        &mut self,
        me: &Identity,
        sender: &DeviceKey,
        wrap: &KeyWrap,
        context: &[u8],
        now_ms: u64,
    ) -> Result<Opened, CryptoError> {
        if wrap.recipient != me.device_key() {
            return Err(CryptoError::UnknownSession);
        }
        self.open_message(me, sender, &wrap.header, &wrap.ciphertext, context, now_ms)
    }

    /// Opens one Double Ratchet message from `sender` whose associated data beyond the
    /// session's is `aad_tail`, answering a session start if it carries one.
    fn open_message(
        &mut self,
        me: &Identity,
        sender: &DeviceKey,
        direct: &DirectHeader,
        ciphertext: &[u8],
        aad_tail: &[u8],
        now_ms: u64,
    ) -> Result<Opened, CryptoError> {
        let header =
            Header { dh: direct.ratchet_key, pn: direct.previous_chain_len, n: direct.message_number };
        if let Some(pos) = self.sessions.iter().position(|s| s.id == direct.session_id) {
            let mut session = self.sessions[pos].clone();
            let mk = session.ratchet.receive_key(&header, now_ms)?;
            let aad = [session.ad.as_slice(), aad_tail].concat();
            let plaintext = mk.decrypt(ciphertext, &aad)?;
            session.pending_init = None;
            self.sessions[pos] = session;
            self.choose_active();
            return Ok(Opened { plaintext, new_peer: None });
        }

        let init = direct.init.as_ref().ok_or(CryptoError::UnknownSession)?;
        if init.cert.device_key != sender.0 {
            return Err(CryptoError::BadCertificate);
        }
        verify_cert(&init.cert)?;
        let spk = me.prekey_secret(init.prekey_id).ok_or(CryptoError::UnknownSession)?;
        let agreed = x3dh::respond(&me.device_dh(), &spk, me.cert(), &init.cert, &init.ephemeral)?;
        if agreed.session_id != direct.session_id {
            return Err(CryptoError::UnknownSession);
        }
        let mut ratchet = ratchet::State::init_responder(&agreed.shared, &spk);
        let mk = ratchet.receive_key(&header, now_ms)?;
        let aad = [agreed.associated_data.as_slice(), aad_tail].concat();
        let plaintext = mk.decrypt(ciphertext, &aad)?;
        self.insert(Session {
            id: agreed.session_id,
            initiator: init.cert.device_key,
            ad: agreed.associated_data,
            ratchet,
            pending_init: None,
        });
        Ok(Opened { plaintext, new_peer: Some((init.cert.clone(), init.name.clone())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dingo_types::UserId;

    fn conv(a: &Identity, b: &Identity) -> ConvId {
        ConvId::direct(&a.user_id(), &b.user_id())
    }

    fn deliver(
        from: &mut PeerSessions,
        me: &Identity,
        to_id: &Identity,
        to: &mut PeerSessions,
        seq: u64,
        text: &[u8],
    ) {
        let env = from
            .seal(
                me,
                Recipient { cert: to_id.cert(), prekey: Some(to_id.signed_prekey()) },
                conv(me, to_id),
                seq,
                text,
            )
            .expect("seal");
        let verified = verify_envelope(env).expect("signature");
        let opened = to.open(to_id, &verified, 0).expect("open");
        assert_eq!(opened.plaintext, text);
    }

    #[test]
    fn simultaneous_session_starts_converge_on_one_session() {
        let (alice, bob) = (Identity::generate("alice"), Identity::generate("bob"));
        let (mut at_alice, mut at_bob) = (PeerSessions::default(), PeerSessions::default());
        // Both start a session before hearing from the other.
        let a1 = at_alice
            .seal(
                &alice,
                Recipient { cert: bob.cert(), prekey: Some(bob.signed_prekey()) },
                conv(&alice, &bob),
                1,
                b"a1",
            )
            .expect("seal");
        let b1 = at_bob
            .seal(
                &bob,
                Recipient { cert: alice.cert(), prekey: Some(alice.signed_prekey()) },
                conv(&bob, &alice),
                1,
                b"b1",
            )
            .expect("seal");
        assert_eq!(at_bob.open(&bob, &verify_envelope(a1).expect("sig"), 0).expect("open").plaintext, b"a1");
        assert_eq!(
            at_alice.open(&alice, &verify_envelope(b1).expect("sig"), 0).expect("open").plaintext,
            b"b1"
        );
        assert_eq!(at_alice.active, at_bob.active, "both pick the same session");
        for i in 2..10u64 {
            deliver(&mut at_alice, &alice, &bob, &mut at_bob, i, format!("a{i}").as_bytes());
            deliver(&mut at_bob, &bob, &alice, &mut at_alice, i, format!("b{i}").as_bytes());
        }
        assert_ne!(UserId::from_user_key(&alice.user_key()), UserId::from_user_key(&bob.user_key()));
    }

    #[test]
    fn a_failed_open_leaves_the_sessions_unchanged() {
        let (alice, bob) = (Identity::generate("alice"), Identity::generate("bob"));
        let (mut at_alice, mut at_bob) = (PeerSessions::default(), PeerSessions::default());
        deliver(&mut at_alice, &alice, &bob, &mut at_bob, 1, b"first");
        let mut env = at_alice
            .seal(&alice, Recipient { cert: bob.cert(), prekey: None }, conv(&alice, &bob), 2, b"second")
            .expect("seal");
        let good = env.clone();
        env.ciphertext[0] ^= 1;
        env.auth = Auth::Single(alice.sign_device(&env.signed_bytes()));
        let before = postcard::to_allocvec(&at_bob).expect("ser");
        assert_eq!(
            at_bob.open(&bob, &verify_envelope(env).expect("sig"), 0).err(),
            Some(CryptoError::DecryptFailed)
        );
        assert_eq!(postcard::to_allocvec(&at_bob).expect("ser"), before);
        assert_eq!(
            at_bob.open(&bob, &verify_envelope(good).expect("sig"), 0).expect("open").plaintext,
            b"second"
        );
    }
}
