//! `/dingo/file/1` frames (chunk requests and answer heads) and file manifests inside content.
#![no_main]
use dingo_types::content::Content;
use dingo_types::file::{
    decode_chunk_answer_head, decode_chunk_request, encode_chunk_answer_head, encode_chunk_request,
    CHUNK_ANSWER_HEAD,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hashes) = decode_chunk_request(data) {
        assert_eq!(encode_chunk_request(&hashes), data);
    }
    if let Ok(head) = <[u8; CHUNK_ANSWER_HEAD]>::try_from(data) {
        if let Ok(len) = decode_chunk_answer_head(&head) {
            assert_eq!(encode_chunk_answer_head(len), head);
        }
    }
    if let Ok(Content::File { file, .. }) = Content::decode(data) {
        assert!(file.check().is_ok());
        let _ = file.id();
        for i in 0..file.chunks.len() {
            assert!(file.chunk_len(i) <= u64::from(file.chunk_size));
        }
    }
});
