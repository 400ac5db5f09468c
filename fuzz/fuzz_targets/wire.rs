//! `/dingo/msg/2` request and response bodies, as read off a peer's request stream.
#![no_main]
use dingo_types::wire::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::decode(data) {
        assert_eq!(req.encode(), data);
    }
    if let Ok(resp) = Response::decode(data) {
        assert_eq!(resp.encode(), data);
    }
});
