//! `/dingo/msg/2` frame headers, and request and response bodies, as read off a peer's request
//! stream.
#![no_main]
use dingo_types::wire::{decode_frame_head, encode_frame, Request, Response, FRAME_HEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.get(..FRAME_HEAD).and_then(|h| <[u8; FRAME_HEAD]>::try_from(h).ok()) {
        if let Ok((len, id)) = decode_frame_head(&head) {
            if let Some(body) = data[FRAME_HEAD..].get(..len) {
                assert_eq!(encode_frame(id, body).ok().as_deref(), data.get(..FRAME_HEAD + len));
            }
        }
    }
    if let Ok(req) = Request::decode(data) {
        assert_eq!(req.encode(), data);
    }
    if let Ok(resp) = Response::decode(data) {
        assert_eq!(resp.encode(), data);
    }
});
