//! One XMPP-over-WebSocket message as the server translates it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        tern_server::fuzzing::websocket_message(text);
    }
});
