//! Invite codes are pasted by users from anywhere: text and binary payloads.
#![no_main]
use dingo_types::invite::Invite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(inv) = Invite::decode_payload(data) {
        assert_eq!(inv.encode_payload(), data);
        assert_eq!(Invite::from_code(&inv.to_code()).ok(), Some(inv));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Invite::from_code(text);
    }
});
