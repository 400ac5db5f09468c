//! Identifiers. Each is a fixed-size byte array shown as lowercase hex.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                data_encoding::HEXLOWER.encode(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = crate::DecodeError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let raw = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(s.as_bytes())
                    .map_err(|_| crate::DecodeError::Invalid(stringify!($name)))?;
                let arr: [u8; $len] = raw
                    .try_into()
                    .map_err(|_| crate::DecodeError::Invalid(stringify!($name)))?;
                Ok(Self(arr))
            }
        }
    };
}

hex_id!(
    /// A user: the first 16 bytes of a domain-separated BLAKE3 hash of the user's Ed25519 key.
    UserId, 16
);
hex_id!(
    /// A device's Ed25519 public key (the same key as its libp2p PeerId).
    DeviceKey, 32
);
hex_id!(
    /// A message, chosen at random by its author.
    MsgId, 16
);
hex_id!(
    /// A conversation (for 1:1 chat, derived from the two users' ids).
    ConvId, 32
);

impl UserId {
    /// The id of the user whose identity key is `user_pk`.
    pub fn from_user_key(user_pk: &[u8; 32]) -> Self {
        let mut h = blake3::Hasher::new_derive_key("dingo 2026 user id v1");
        h.update(user_pk);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Self(out)
    }
}

impl ConvId {
    /// The 1:1 conversation between two users; the same whichever side computes it.
    pub fn direct(a: &UserId, b: &UserId) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = blake3::Hasher::new_derive_key("dingo 2026 direct conversation v1");
        h.update(&lo.0);
        h.update(&hi.0);
        Self(*h.finalize().as_bytes())
    }
}

impl MsgId {
    /// A fresh random message id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex() {
        let id = MsgId([0xab; 16]);
        assert_eq!(id.to_hex().parse::<MsgId>(), Ok(id));
        assert!("zz".parse::<MsgId>().is_err());
        assert!("abab".parse::<MsgId>().is_err());
    }

    #[test]
    fn direct_conversation_is_symmetric() {
        let a = UserId([1; 16]);
        let b = UserId([2; 16]);
        assert_eq!(ConvId::direct(&a, &b), ConvId::direct(&b, &a));
        assert_ne!(ConvId::direct(&a, &b), ConvId::direct(&a, &a));
    }
}
hex_id!(
    /// A shared file version: a domain-separated BLAKE3 hash of its manifest's chunk list.
    FileId, 32
);
