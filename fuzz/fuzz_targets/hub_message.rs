//! A message sent to a group, as the hub reads it before anything else.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_server::fuzzing::hub_message(data));
