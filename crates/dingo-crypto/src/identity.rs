//! A user's identity on one device (DESIGN.md §3): the user's Ed25519 key, the device's Ed25519
//! key (its libp2p PeerId) and X25519 key certified by it, and a signed X25519 prekey.

use crate::{CryptoError, Secret32};
use dingo_types::invite::{DeviceCert, Invite, SignedPreKey};
use dingo_types::{now_ms, DeviceKey, UserId};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The secret half of an identity, as persisted (encrypted) in the key file.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct IdentitySecrets {
    version: u8,
    #[zeroize(skip)]
    name: String,
    user: Secret32,
    device: Secret32,
    device_dh: Secret32,
    prekey_id: u32,
    prekey: Secret32,
    cert_created_at: u64,
    storage_key: Secret32,
}

/// Everything secret about this user on this device.
pub struct Identity {
    secrets: IdentitySecrets,
    user: SigningKey,
    device: SigningKey,
    cert: DeviceCert,
    prekey: SignedPreKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.secrets.name)
            .field("user_id", &self.user_id())
            .field("device", &self.device_key())
            .finish_non_exhaustive()
    }
}

/// Verifies an Ed25519 signature strictly (rejects small-order keys and malleable signatures).
pub fn verify(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Result<(), CryptoError> {
    let vk = verifying_key(key)?;
    vk.verify_strict(msg, &Signature::from_bytes(sig)).map_err(|_| CryptoError::BadSignature)
}

/// Decompressed keys remembered by [`verifying_key`] (a team's devices, many times over).
const KEYS_REMEMBERED: usize = 4096;

/// `key` as a curve point. Decompressing costs about a fifth of a verification, and a node
/// checks the same few hundred devices' signatures over and over, so points are remembered;
/// the set is cleared when full (an attacker cycling keys only costs the decompressions).
fn verifying_key(key: &[u8; 32]) -> Result<VerifyingKey, CryptoError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    if let Some(vk) = keys.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
        return Ok(*vk);
    }
    let vk = VerifyingKey::from_bytes(key).map_err(|_| CryptoError::BadKey)?;
    let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
    if keys.len() >= KEYS_REMEMBERED {
        keys.clear();
    }
    keys.insert(*key, vk);
    Ok(vk)
}

/// Checks that `cert` is signed by the user key it names.
pub fn verify_cert(cert: &DeviceCert) -> Result<(), CryptoError> {
    verify(&cert.user_key, &cert.signed_bytes(), &cert.signature).map_err(|_| CryptoError::BadCertificate)
}

/// Checks an invite: the certificate by the user key and the prekey by the device key.
pub fn verify_invite(invite: &Invite) -> Result<(), CryptoError> {
    verify_cert(&invite.cert)?;
    verify(&invite.cert.device_key, &invite.prekey.signed_bytes(), &invite.prekey.signature)
        .map_err(|_| CryptoError::BadCertificate)
}

impl Identity {
    /// Makes a new identity with fresh keys.
    pub fn generate(name: &str) -> Self {
        let secrets = IdentitySecrets {
            version: 1,
            name: name.to_owned(),
            user: Secret32::random(),
            device: Secret32::random(),
            device_dh: Secret32::random(),
            prekey_id: 1,
            prekey: Secret32::random(),
            cert_created_at: now_ms(),
            storage_key: Secret32::random(),
        };
        Self::from_secrets(secrets)
    }

    fn from_secrets(secrets: IdentitySecrets) -> Self {
        let user = SigningKey::from_bytes(secrets.user.expose());
        let device = SigningKey::from_bytes(secrets.device.expose());
        let device_dh = StaticSecret::from(*secrets.device_dh.expose());
        let mut cert = DeviceCert {
            user_key: user.verifying_key().to_bytes(),
            device_key: device.verifying_key().to_bytes(),
            device_dh: DhPublic::from(&device_dh).to_bytes(),
            created_at: secrets.cert_created_at,
            signature: [0; 64],
        };
        cert.signature = user.sign(&cert.signed_bytes()).to_bytes();
        let prekey_secret = StaticSecret::from(*secrets.prekey.expose());
        let mut prekey = SignedPreKey {
            id: secrets.prekey_id,
            public: DhPublic::from(&prekey_secret).to_bytes(),
            signature: [0; 64],
        };
        prekey.signature = device.sign(&prekey.signed_bytes()).to_bytes();
        Self { secrets, user, device, cert, prekey }
    }

    /// The same user on a new device: fresh device, X25519 and prekey secrets certified by the
    /// same user key (moving to a new machine; contacts see a key change to re-verify).
    pub fn with_new_device(&self) -> Self {
        let mut secrets = self.secrets.clone();
        secrets.device = Secret32::random();
        secrets.device_dh = Secret32::random();
        secrets.prekey = Secret32::random();
        secrets.storage_key = Secret32::random();
        secrets.cert_created_at = now_ms();
        Self::from_secrets(secrets)
    }

    /// Serializes the secrets for the key file (to be wrapped by [`crate::at_rest::wrap_key_file`]).
    pub fn to_secret_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.secrets).unwrap_or_default()
    }

    /// Restores an identity from [`Identity::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let secrets: IdentitySecrets =
            postcard::from_bytes(bytes).map_err(|_| CryptoError::Format("identity"))?;
        if secrets.version != 1 {
            return Err(CryptoError::Format("identity version"));
        }
        Ok(Self::from_secrets(secrets))
    }

    /// The display name chosen at `init`.
    pub fn name(&self) -> &str {
        &self.secrets.name
    }
    /// The user's public identity key.
    pub fn user_key(&self) -> [u8; 32] {
        self.cert.user_key
    }
    /// The user id derived from the user key.
    pub fn user_id(&self) -> UserId {
        UserId::from_user_key(&self.cert.user_key)
    }
    /// This device's public signing key.
    pub fn device_key(&self) -> DeviceKey {
        DeviceKey(self.cert.device_key)
    }
    /// The device's Ed25519 secret, to build the libp2p keypair (the PeerId is the same key).
    pub fn device_secret_bytes(&self) -> Secret32 {
        self.secrets.device.clone()
    }
    /// The device certificate.
    pub fn cert(&self) -> &DeviceCert {
        &self.cert
    }
    /// The signed prekey published in invites.
    pub fn signed_prekey(&self) -> &SignedPreKey {
        &self.prekey
    }
    /// The storage key that encrypts every stored value.
    pub fn storage_key(&self) -> &Secret32 {
        &self.secrets.storage_key
    }
    /// Signs with the device key.
    pub fn sign_device(&self, msg: &[u8]) -> [u8; 64] {
        self.device.sign(msg).to_bytes()
    }
    /// Signs with the user key.
    pub fn sign_user(&self, msg: &[u8]) -> [u8; 64] {
        self.user.sign(msg).to_bytes()
    }
    pub(crate) fn device_dh(&self) -> StaticSecret {
        StaticSecret::from(*self.secrets.device_dh.expose())
    }
    pub(crate) fn prekey_secret(&self, id: u32) -> Option<StaticSecret> {
        (id == self.secrets.prekey_id).then(|| StaticSecret::from(*self.secrets.prekey.expose()))
    }

    /// An invite for this device reachable at `addrs`.
    pub fn invite(&self, addrs: Vec<String>) -> Invite {
        Invite { name: self.name().to_owned(), cert: self.cert.clone(), prekey: self.prekey.clone(), addrs }
    }

    /// This user's fingerprint (30 digits).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert.user_key)
    }
}

/// A user's 30-digit fingerprint: six groups of five digits from a BLAKE3 XOF of the user key
/// (the shape of Signal's safety numbers).
pub fn fingerprint(user_key: &[u8; 32]) -> String {
    let mut h = blake3::Hasher::new_derive_key("dingo 2026 fingerprint v1");
    h.update(user_key);
    let mut out = [0u8; 30];
    h.finalize_xof().fill(&mut out);
    out.chunks(5)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The safety number two users compare: both fingerprints, ordered by user key, so both sides
/// see the same 60 digits.
pub fn safety_number(a: &[u8; 32], b: &[u8; 32]) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{} {}", fingerprint(lo), fingerprint(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_round_trip_and_signs_its_invite() {
        let id = Identity::generate("alice");
        let back = Identity::from_secret_bytes(&id.to_secret_bytes()).expect("decode");
        assert_eq!(back.cert(), id.cert());
        assert_eq!(back.signed_prekey(), id.signed_prekey());
        let invite = id.invite(vec!["/ip4/127.0.0.1/tcp/1".into()]);
        verify_invite(&invite).expect("valid invite");
        let mut forged = invite.clone();
        forged.prekey.public[0] ^= 1;
        assert_eq!(verify_invite(&forged), Err(CryptoError::BadCertificate));
    }

    #[test]
    fn safety_number_is_symmetric() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(safety_number(&a, &b), safety_number(&b, &a));
        assert_eq!(safety_number(&a, &b).len(), 12 * 5 + 11);
    }

    #[test]
    fn debug_of_identity_prints_no_secret() {
        let id = Identity::generate("bob");
        let shown = format!("{id:?}");
        let secret_hex: String = id.secrets.user.expose().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&secret_hex));
        assert!(!shown.contains(&format!("{:?}", id.secrets.user.expose())));
    }
}
