use thiserror::Error;

/// Why a cryptographic operation failed. Deliberately vague: an attacker learns nothing from
/// which check failed beyond what the variant says.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    /// A signature did not verify (forged, tampered or wrong signer).
    #[error("signature check failed")]
    BadSignature,
    /// Authenticated decryption failed (tampered, wrong key, or replayed after its key was used).
    #[error("decryption failed")]
    DecryptFailed,
    /// A Diffie-Hellman result was not contributory (a low-order or zero public key).
    #[error("non-contributory key agreement (low-order public key)")]
    NonContributory,
    /// A message claims to be further ahead in its chain than the skipped-key bound allows.
    #[error("too many skipped messages")]
    TooManySkipped,
    /// A group message older than the chain key held (sent before this member got the key,
    /// or its skipped key was dropped): it can never be opened here.
    #[error("message older than the key held")]
    TooOld,
    /// No session matches and the message does not start one.
    #[error("unknown session")]
    UnknownSession,
    /// A device certificate or prekey is not validly signed or does not match.
    #[error("invalid device certificate or prekey")]
    BadCertificate,
    /// A key was not a valid point or encoding.
    #[error("invalid key")]
    BadKey,
    /// The passphrase is wrong, or the key file is corrupt.
    #[error("wrong passphrase or corrupt key file")]
    WrongPassphrase,
    /// The key file or record is not in a format this build reads.
    #[error("unsupported or corrupt format: {0}")]
    Format(&'static str),
}
