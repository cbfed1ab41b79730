//! Every text a WebSocket client can send goes through `parse_request`: it must answer with a
//! request or an error, never panic, and an error must be a known code with a bounded message.
#![no_main]

use libfuzzer_sys::fuzz_target;

const CODES: &[&str] = &["bad_json", "bad_request", "unknown_op", "unknown_camera"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = ocellus::protocol::parse_request(text) {
        assert!(CODES.contains(&e.code), "unexpected code {}", e.code);
        // The message quotes client input, cut to a fixed size.
        assert!(
            e.message.len() <= ocellus::protocol::MAX_ERROR_MESSAGE,
            "message of {} bytes",
            e.message.len()
        );
    }
});
