//! Team ops arrive from members (and their carriers), join codes are pasted by users, group
//! headers ride on every channel envelope: all untrusted.
#![no_main]
use dingo_types::envelope::GroupHeader;
use dingo_types::team::{JoinCode, SignedOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((op, body)) = SignedOp::decode(data) {
        // One encoding per op: what decodes re-encodes to the same bytes (and the same hash).
        assert_eq!(op.encode(), data);
        assert_eq!(SignedOp::encode_body(&body), op.body);
    }
    if let Ok(h) = GroupHeader::decode(data) {
        assert_eq!(h.encode(), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(code) = JoinCode::from_code(text) {
            assert_eq!(JoinCode::from_code(&code.to_code()).ok(), Some(code));
        }
    }
});
