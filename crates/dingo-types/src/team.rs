//! Team membership operations and join codes.
//!
//! A team is a signed, causally ordered log of [`SignedOp`]s. Wire format (version 1):
//!
//! ```text
//! op = version u8 | body_len u32 | body (postcard of OpBody) | signature [64]
//! ```
//! The author's device key signs `TEAM_OP_SIGNING_CONTEXT | body`; an op is named by the BLAKE3
//! hash of its whole encoding, and a team by the hash of its first (`Create`) op, so nobody can
//! mint a second genesis for an existing team. Evaluation (who is a member) lives in
//! `dingo-crypto::membership`; this module only parses, bounded.
//!
//! A join code is `dingoteam1` + unpadded base64url of `payload | blake3(payload)[..4]`.

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::UserId;
use crate::invite::{DeviceCert, Invite, SignedPreKey};
use crate::limits::*;
use serde::{Deserialize, Serialize};

/// The team op format this build writes and reads.
pub const TEAM_OP_VERSION: u8 = 1;
/// Domain separation for team op signatures.
pub const TEAM_OP_SIGNING_CONTEXT: &[u8] = b"dingo/team-op/v1\0";
/// Every join code starts with this.
pub const JOIN_CODE_PREFIX: &str = "dingoteam1";
/// The join code payload version.
pub const JOIN_CODE_VERSION: u8 = 1;

/// A team: the hash of its genesis op.
pub type TeamId = [u8; 32];
/// An op: the hash of its encoding.
pub type OpHash = [u8; 32];

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// May author membership operations.
    Admin,
    /// May read and write the groups they belong to.
    Member,
}

/// What the team needs to know to reach and encrypt to a member's device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The device certificate (encoded [`DeviceCert`]).
    pub cert: Vec<u8>,
    /// The device's signed prekey (encoded [`SignedPreKey`]).
    pub prekey: Vec<u8>,
    /// Display name chosen by the member.
    pub name: String,
    /// Addresses the device was reachable at (hints only).
    pub addrs: Vec<String>,
}

impl MemberInfo {
    /// The member info an invite describes.
    pub fn from_invite(inv: &Invite) -> Self {
        Self {
            cert: inv.cert.encode(),
            prekey: inv.prekey.encode(),
            name: inv.name.clone(),
            addrs: inv.addrs.iter().take(MAX_INVITE_ADDRS).cloned().collect(),
        }
    }
    /// The decoded certificate.
    pub fn device_cert(&self) -> Result<DeviceCert, DecodeError> {
        DeviceCert::decode(&self.cert)
    }
    /// The decoded prekey.
    pub fn signed_prekey(&self) -> Result<SignedPreKey, DecodeError> {
        let mut r = Reader::new(&self.prekey);
        let pk = SignedPreKey::read(&mut r)?;
        r.finish("prekey")?;
        Ok(pk)
    }
    /// The member's user id.
    pub fn user_id(&self) -> Result<UserId, DecodeError> {
        Ok(UserId::from_user_key(&self.device_cert()?.user_key))
    }
    fn check(&self) -> Result<(), DecodeError> {
        self.device_cert()?;
        self.signed_prekey()?;
        check_name(&self.name)?;
        if self.addrs.len() > MAX_INVITE_ADDRS || self.addrs.iter().any(|a| a.len() > MAX_ADDR_BYTES) {
            return Err(DecodeError::TooLarge("member addresses"));
        }
        Ok(())
    }
}

/// What an op does. Only admins' ops take effect (see `dingo-crypto::membership`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// The genesis op: the author becomes the first admin.
    Create {
        /// The team's name.
        name: String,
        /// The creator.
        creator: MemberInfo,
    },
    /// Adds a member (a removed user may be added again by a later op).
    Add {
        /// The new member.
        member: MemberInfo,
        /// Their role.
        role: Role,
        /// Departments they join at once.
        depts: Vec<String>,
    },
    /// Removes a member: strong removal (their concurrent ops are void).
    Remove {
        /// Who.
        user: UserId,
    },
    /// Makes a member an admin.
    Promote {
        /// Who.
        user: UserId,
    },
    /// Makes an admin a plain member (never the last admin).
    Demote {
        /// Who.
        user: UserId,
    },
    /// Creates a department.
    DeptCreate {
        /// Its name.
        name: String,
    },
    /// Puts a member in a department.
    DeptAdd {
        /// The department.
        dept: String,
        /// Who.
        user: UserId,
    },
    /// Takes a member out of a department.
    DeptRemove {
        /// The department.
        dept: String,
        /// Who.
        user: UserId,
    },
    /// Creates a channel: readable by the listed departments' and users' members, or by the
    /// whole team when both lists are empty.
    ChannelCreate {
        /// Its name (without '#').
        name: String,
        /// Departments whose members belong (following the departments as they change).
        depts: Vec<String>,
        /// Individual members.
        members: Vec<UserId>,
    },
    /// Creates a project (a task board with its own keys), scoped like a channel.
    ProjectCreate {
        /// Its name.
        name: String,
        /// Departments whose members belong.
        depts: Vec<String>,
        /// Individual members.
        members: Vec<UserId>,
    },
    /// Creates a shared text document with its own keys, scoped like a channel.
    DocCreate {
        /// Its name.
        name: String,
        /// Departments whose members belong.
        depts: Vec<String>,
        /// Individual members.
        members: Vec<UserId>,
    },
}

/// The signed part of an op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpBody {
    /// The team (all zero in the genesis op, whose hash names the team).
    pub team: TeamId,
    /// The author's device certificate (encoded [`DeviceCert`]).
    pub author: Vec<u8>,
    /// 1 + the largest `lamport` of `deps` (0 for genesis).
    pub lamport: u64,
    /// The ops this one causally follows (the author's heads when writing it).
    pub deps: Vec<OpHash>,
    /// The author's clock, ms since the epoch (shown only; never trusted for ordering).
    pub at: u64,
    /// What it does.
    pub action: Action,
}

fn check_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(DecodeError::Invalid("name"));
    }
    Ok(())
}

impl OpBody {
    /// The author's certificate.
    pub fn author_cert(&self) -> Result<DeviceCert, DecodeError> {
        DeviceCert::decode(&self.author)
    }

    fn check(&self) -> Result<(), DecodeError> {
        self.author_cert()?;
        if self.deps.len() > MAX_OP_DEPS {
            return Err(DecodeError::TooLarge("op deps"));
        }
        match &self.action {
            Action::Create { name, creator } => {
                check_name(name)?;
                creator.check()?;
            }
            Action::Add { member, depts, .. } => {
                member.check()?;
                if depts.len() > MAX_DEPTS_PER_OP {
                    return Err(DecodeError::TooLarge("departments"));
                }
                depts.iter().try_for_each(|d| check_name(d))?;
            }
            Action::DeptCreate { name } | Action::DeptAdd { dept: name, .. } => check_name(name)?,
            Action::DeptRemove { dept, .. } => check_name(dept)?,
            Action::ChannelCreate { name, depts, members }
            | Action::ProjectCreate { name, depts, members }
            | Action::DocCreate { name, depts, members } => {
                check_name(name)?;
                if depts.len() > MAX_DEPTS_PER_OP || members.len() > MAX_TEAM_MEMBERS {
                    return Err(DecodeError::TooLarge("channel scope"));
                }
                depts.iter().try_for_each(|d| check_name(d))?;
            }
            Action::Remove { .. } | Action::Promote { .. } | Action::Demote { .. } => {}
        }
        Ok(())
    }
}

/// A signed membership operation, kept as the exact bytes that were signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOp {
    /// postcard encoding of [`OpBody`].
    pub body: Vec<u8>,
    /// The author device's Ed25519 signature over `TEAM_OP_SIGNING_CONTEXT | body`.
    pub signature: [u8; 64],
}

impl SignedOp {
    /// Encodes a body for signing.
    pub fn encode_body(body: &OpBody) -> Vec<u8> {
        postcard::to_allocvec(body).unwrap_or_default()
    }

    /// The bytes the author signs.
    pub fn signed_bytes(body: &[u8]) -> Vec<u8> {
        [TEAM_OP_SIGNING_CONTEXT, body].concat()
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(TEAM_OP_VERSION).long_bytes(&self.body).bytes(&self.signature);
        w.into_bytes()
    }

    /// The op's name.
    pub fn hash(&self) -> OpHash {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// Decodes untrusted bytes and checks the body's structure and limits (not the signature).
    pub fn decode(bytes: &[u8]) -> Result<(Self, OpBody), DecodeError> {
        if bytes.len() > MAX_TEAM_OP_BYTES {
            return Err(DecodeError::TooLarge("team op"));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("team op version")?;
        if version != TEAM_OP_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "team op", version });
        }
        let body = r.long_bytes(MAX_TEAM_OP_BYTES, "team op body")?.to_vec();
        let signature = r.array("team op signature")?;
        r.finish("team op")?;
        let parsed: OpBody = postcard::from_bytes(&body).map_err(|_| DecodeError::Invalid("team op body"))?;
        // One encoding per body: what is signed and hashed is exactly what re-encodes.
        if Self::encode_body(&parsed) != body {
            return Err(DecodeError::Invalid("team op body (non-canonical)"));
        }
        parsed.check()?;
        Ok((Self { body, signature }, parsed))
    }
}

/// A one-time code that lets its holder ask an admin to add them to a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinCode {
    /// The team.
    pub team: TeamId,
    /// The team's name (for display before joining).
    pub team_name: String,
    /// The admin who issued the code and will add the joiner.
    pub admin: Invite,
    /// The secret the joiner presents; the admin accepts it once.
    pub token: [u8; 16],
    /// When the code stops working, ms since the epoch.
    pub expires_at: u64,
    /// The department the joiner is put in, if any.
    pub dept: Option<String>,
}

impl JoinCode {
    fn encode_payload(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(JOIN_CODE_VERSION).bytes(&self.team).short_str(&self.team_name);
        let admin = self.admin.encode_payload();
        w.u16(admin.len() as u16).bytes(&admin).bytes(&self.token).u64(self.expires_at);
        match &self.dept {
            None => w.u8(0),
            Some(d) => w.u8(1).short_str(d),
        };
        w.into_bytes()
    }

    fn decode_payload(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("join code version")?;
        if version != JOIN_CODE_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "join code", version });
        }
        let team = r.array("team")?;
        let team_name = r.short_str(MAX_NAME_BYTES, "team name")?;
        let admin_len = r.u16("admin invite length")? as usize;
        let admin = Invite::decode_payload(r.bytes(admin_len, "admin invite")?)?;
        let token = r.array("token")?;
        let expires_at = r.u64("expiry")?;
        let dept = match r.u8("department flag")? {
            0 => None,
            1 => Some(r.short_str(MAX_NAME_BYTES, "department")?),
            _ => return Err(DecodeError::Invalid("department flag")),
        };
        r.finish("join code")?;
        Ok(Self { team, team_name, admin, token, expires_at, dept })
    }

    /// The printable code.
    pub fn to_code(&self) -> String {
        crate::codec::to_checked_code(JOIN_CODE_PREFIX, &self.encode_payload())
    }

    /// Parses a printable code (surrounding whitespace allowed).
    pub fn from_code(code: &str) -> Result<Self, DecodeError> {
        let names = crate::codec::CodeNames {
            prefix: "join code prefix (codes start with \"dingoteam1\")",
            code: "join code",
            encoding: "join code encoding",
            checksum: "join code checksum (the code is mistyped or cut short)",
        };
        Self::decode_payload(&crate::codec::from_checked_code(code, JOIN_CODE_PREFIX, 8192, names)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> DeviceCert {
        DeviceCert {
            user_key: [1; 32],
            device_key: [2; 32],
            device_dh: [3; 32],
            created_at: 9,
            signature: [4; 64],
        }
    }

    fn member() -> MemberInfo {
        MemberInfo {
            cert: cert().encode(),
            prekey: SignedPreKey { id: 1, public: [5; 32], signature: [6; 64] }.encode(),
            name: "bob".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        }
    }

    #[test]
    fn ops_round_trip_and_reject_truncation() {
        let body = OpBody {
            team: [7; 32],
            author: cert().encode(),
            lamport: 3,
            deps: vec![[8; 32]],
            at: 11,
            action: Action::Add { member: member(), role: Role::Member, depts: vec!["ops".into()] },
        };
        let op = SignedOp { body: SignedOp::encode_body(&body), signature: [9; 64] };
        let bytes = op.encode();
        assert_eq!(SignedOp::decode(&bytes), Ok((op, body)));
        for cut in 0..bytes.len() {
            assert!(SignedOp::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn ops_with_bad_names_or_certs_are_refused() {
        let mut body = OpBody {
            team: [7; 32],
            author: vec![1, 2, 3],
            lamport: 1,
            deps: vec![],
            at: 0,
            action: Action::DeptCreate { name: "x".into() },
        };
        let enc = |b: &OpBody| SignedOp { body: SignedOp::encode_body(b), signature: [0; 64] }.encode();
        assert!(SignedOp::decode(&enc(&body)).is_err(), "bad author cert");
        body.author = cert().encode();
        body.action = Action::DeptCreate { name: String::new() };
        assert!(SignedOp::decode(&enc(&body)).is_err(), "empty name");
        body.action = Action::DeptCreate { name: "a\nb".into() };
        assert!(SignedOp::decode(&enc(&body)).is_err(), "control character");
    }

    #[test]
    fn join_codes_round_trip_and_catch_typos() {
        let code = JoinCode {
            team: [1; 32],
            team_name: "acme".into(),
            admin: Invite {
                name: "alice".into(),
                cert: cert(),
                prekey: SignedPreKey { id: 1, public: [5; 32], signature: [6; 64] },
                addrs: vec![],
            },
            token: [2; 16],
            expires_at: 99,
            dept: Some("finance".into()),
        };
        let text = code.to_code();
        assert_eq!(JoinCode::from_code(&text), Ok(code));
        let mut chars: Vec<char> = text.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        assert!(JoinCode::from_code(&chars.into_iter().collect::<String>()).is_err());
        assert!(JoinCode::from_code("dingo1abc").is_err());
    }
}
