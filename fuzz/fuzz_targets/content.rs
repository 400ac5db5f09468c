//! Decrypted content still comes from another user: it must decode without panicking.
#![no_main]
use dingo_types::content::Content;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Content::decode(data) {
        let again = Content::decode(&c.encode());
        assert_eq!(again.ok(), Some(c));
    }
});
