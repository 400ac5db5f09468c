//! Device certificates, signed prekeys and invite codes.
//!
//! An invite code is `dingo1` followed by unpadded base64url of
//! `payload | blake3(payload)[..4]`, where payload (version 1) is
//! `version u8 | name | DeviceCert | SignedPreKey | addr_count u8 | addrs`.
//! The checksum catches typos before any signature is checked.

use crate::codec::{DecodeError, Reader, Writer};
use crate::limits::*;

/// The device certificate format version.
pub const CERT_VERSION: u8 = 1;
/// The invite format version.
pub const INVITE_VERSION: u8 = 1;
/// Every invite code starts with this.
pub const INVITE_PREFIX: &str = "dingo1";
/// Domain separation for device certificates (signed by the user key).
pub const CERT_SIGNING_CONTEXT: &[u8] = b"dingo/device-cert/v1\0";
/// Domain separation for signed prekeys (signed by the device key).
pub const PREKEY_SIGNING_CONTEXT: &[u8] = b"dingo/signed-prekey/v1\0";

/// A user's statement that a device (signing key + X25519 key) is theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCert {
    /// The user's Ed25519 identity key.
    pub user_key: [u8; 32],
    /// The device's Ed25519 key (its libp2p PeerId key).
    pub device_key: [u8; 32],
    /// The device's X25519 identity key (X3DH `IK`).
    pub device_dh: [u8; 32],
    /// When the certificate was made, ms since the epoch.
    pub created_at: u64,
    /// The user key's signature over [`DeviceCert::signed_bytes`].
    pub signature: [u8; 64],
}

/// Encoded length of a [`DeviceCert`].
pub const DEVICE_CERT_LEN: usize = 1 + 32 * 3 + 8 + 64;

impl DeviceCert {
    /// The bytes the user key signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(CERT_SIGNING_CONTEXT)
            .u8(CERT_VERSION)
            .bytes(&self.user_key)
            .bytes(&self.device_key)
            .bytes(&self.device_dh)
            .u64(self.created_at);
        w.into_bytes()
    }

    /// Encodes the certificate.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(CERT_VERSION)
            .bytes(&self.user_key)
            .bytes(&self.device_key)
            .bytes(&self.device_dh)
            .u64(self.created_at)
            .bytes(&self.signature);
        w.into_bytes()
    }

    /// Decodes a whole certificate.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let cert = Self::read(&mut r)?;
        r.finish("device certificate")?;
        Ok(cert)
    }

    /// Reads a certificate from the middle of a larger structure.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("cert version")?;
        if version != CERT_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "device certificate", version });
        }
        Ok(Self {
            user_key: r.array("user key")?,
            device_key: r.array("device key")?,
            device_dh: r.array("device dh key")?,
            created_at: r.u64("cert time")?,
            signature: r.array("cert signature")?,
        })
    }
}

/// A medium-term X25519 prekey signed by the device key (X3DH `SPK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPreKey {
    /// Distinguishes prekeys when they rotate.
    pub id: u32,
    /// The X25519 public key.
    pub public: [u8; 32],
    /// The device key's signature over [`SignedPreKey::signed_bytes`].
    pub signature: [u8; 64],
}

impl SignedPreKey {
    /// Encodes the prekey (`id u32 | public [32] | signature [64]`).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.id).bytes(&self.public).bytes(&self.signature);
        w.into_bytes()
    }

    /// Reads a prekey from the middle of a larger structure.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u32("prekey id")?,
            public: r.array("prekey")?,
            signature: r.array("prekey signature")?,
        })
    }

    /// The bytes the device key signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(PREKEY_SIGNING_CONTEXT).u32(self.id).bytes(&self.public);
        w.into_bytes()
    }
}

/// Everything needed to start an encrypted conversation with someone and to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The inviter's display name (a suggestion; the user may rename the contact).
    pub name: String,
    /// The inviter's device certificate.
    pub cert: DeviceCert,
    /// The inviter's signed prekey.
    pub prekey: SignedPreKey,
    /// Multiaddrs (as strings) where the inviter's node listens.
    pub addrs: Vec<String>,
}

impl Invite {
    /// The binary payload (without prefix or checksum).
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(INVITE_VERSION).short_str(&self.name).bytes(&self.cert.encode());
        w.bytes(&self.prekey.encode());
        let addrs: Vec<&String> =
            self.addrs.iter().filter(|a| a.len() <= MAX_ADDR_BYTES).take(MAX_INVITE_ADDRS).collect();
        w.u8(addrs.len() as u8);
        for a in addrs {
            w.short_str(a);
        }
        w.into_bytes()
    }

    /// Decodes the binary payload.
    pub fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("invite version")?;
        if version != INVITE_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "invite", version });
        }
        let name = r.short_str(MAX_NAME_BYTES, "name")?;
        let cert = DeviceCert::read(&mut r)?;
        let prekey = SignedPreKey::read(&mut r)?;
        let n = r.u8("address count")? as usize;
        if n > MAX_INVITE_ADDRS {
            return Err(DecodeError::TooLarge("addresses"));
        }
        let addrs = (0..n).map(|_| r.short_str(MAX_ADDR_BYTES, "address")).collect::<Result<Vec<_>, _>>()?;
        r.finish("invite")?;
        Ok(Self { name, cert, prekey, addrs })
    }

    /// The printable invite code.
    pub fn to_code(&self) -> String {
        crate::codec::to_checked_code(INVITE_PREFIX, &self.encode_payload())
    }

    /// Parses a printable invite code (surrounding whitespace allowed).
    pub fn from_code(code: &str) -> Result<Self, DecodeError> {
        let names = crate::codec::CodeNames {
            prefix: "invite prefix (codes start with \"dingo1\")",
            code: "invite code",
            encoding: "invite encoding",
            checksum: "invite checksum (the code is mistyped or cut short)",
        };
        Self::decode_payload(&crate::codec::from_checked_code(code, INVITE_PREFIX, 4096, names)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Invite {
        Invite {
            name: "alice".into(),
            cert: DeviceCert {
                user_key: [1; 32],
                device_key: [2; 32],
                device_dh: [3; 32],
                created_at: 1_700_000_000_000,
                signature: [4; 64],
            },
            prekey: SignedPreKey { id: 1, public: [5; 32], signature: [6; 64] },
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        }
    }

    #[test]
    fn invite_code_round_trips() {
        let inv = sample();
        let code = inv.to_code();
        assert!(code.starts_with(INVITE_PREFIX));
        assert_eq!(Invite::from_code(&format!("  {code}\n")), Ok(inv));
    }

    #[test]
    fn mistyped_invite_is_caught_by_checksum() {
        let code = sample().to_code();
        let mut chars: Vec<char> = code.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let bad: String = chars.into_iter().collect();
        assert!(Invite::from_code(&bad).is_err());
        assert!(Invite::from_code("hello").is_err());
        assert!(Invite::from_code("dingo1").is_err());
        assert!(Invite::from_code(&code[..code.len() - 3]).is_err());
    }
}
