//! The decrypted content envelope (XEP-0420 style) another device sent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tern_e2ee::envelope::Envelope::parse(data);
});
