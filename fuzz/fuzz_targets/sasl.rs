//! SASL PLAIN and SCRAM messages from a client.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_server::fuzzing::sasl(data));
