//! Envelopes and their 1:1 crypto headers arrive from any peer: decoding must never panic, and
//! anything accepted must re-encode to the same bytes (one encoding per value).
#![no_main]
use dingo_types::envelope::{DirectHeader, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.encode(), data);
        if let Ok(h) = DirectHeader::decode(&env.crypto_header) {
            assert_eq!(h.encode(), env.crypto_header);
        }
    }
    if let Ok(h) = DirectHeader::decode(data) {
        assert_eq!(h.encode(), data);
    }
});
