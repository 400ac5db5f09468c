//! Size limits on everything that crosses the network or the disk. Decoders check them first.

/// Longest chat text a user may send, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Largest ciphertext an envelope may carry (text limit plus room for the content encoding).
pub const MAX_CIPHERTEXT_BYTES: usize = MAX_TEXT_BYTES + 1024;
/// Largest per-envelope crypto header: a ratchet header plus an optional session start, or a
/// group header with the chain keys it carries for members who lack them ([`MAX_KEY_WRAPS`]).
pub const MAX_CRYPTO_HEADER_BYTES: usize = 48 * 1024;
/// Most chain keys one group envelope carries; members beyond get theirs pairwise.
pub const MAX_KEY_WRAPS: usize = 1000;
/// Most causal dependencies an envelope may name.
pub const MAX_DEPS: usize = 16;
/// Largest encoded envelope (fixed fields, a batch signature's tallest path, and the parts above).
pub const MAX_ENVELOPE_BYTES: usize =
    256 + (16 + 3 + 8 * 32) + MAX_DEPS * 32 + MAX_CRYPTO_HEADER_BYTES + MAX_CIPHERTEXT_BYTES;
/// Most envelopes in one delivery request.
pub const MAX_ENVELOPES_PER_REQUEST: usize = 512;
/// Largest request or response frame on the `/dingo/msg` protocol.
pub const MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;
/// Longest display name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most addresses an invite may carry.
pub const MAX_INVITE_ADDRS: usize = 16;
/// Longest multiaddr string in an invite.
pub const MAX_ADDR_BYTES: usize = 256;
/// Most message ids in one read receipt.
pub const MAX_RECEIPT_IDS: usize = 1024;
/// Largest encoded team membership op.
pub const MAX_TEAM_OP_BYTES: usize = 16 * 1024;
/// Most causal dependencies a team op may name.
pub const MAX_OP_DEPS: usize = 64;
/// Most departments one op may name.
pub const MAX_DEPTS_PER_OP: usize = 32;
/// Most members a team may have.
pub const MAX_TEAM_MEMBERS: usize = 1000;
/// Most ops a team's log may hold.
pub const MAX_TEAM_OPS: usize = 20_000;
/// Most team ops carried in one message.
pub const MAX_OPS_PER_MESSAGE: usize = 256;
/// Most groups one sync request may name.
pub const MAX_SYNC_GROUPS: usize = 256;
/// Most authors one group's "have" vector may name.
pub const MAX_SYNC_AUTHORS: usize = 1024;
/// Most bytes of one part of an automerge sync message (a whole document travels in parts that
/// each fit an envelope).
pub const MAX_DOC_SYNC_PART_BYTES: usize = 60 * 1024;
/// Most parts of one automerge sync message (so at most 60 MiB).
pub const MAX_DOC_SYNC_PARTS: u32 = 1024;
