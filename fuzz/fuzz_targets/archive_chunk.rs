//! Archive chunks as read back from the database, both formats.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_server::fuzzing::archive_chunk(data));
