//! The depth guard in front of recursive parsers: any input, in pieces of
//! any size, gives the same verdict and depth as in one piece, and what
//! it lets through is never nested deeper than its limit for minidom.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_xmpp::DepthGuard;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let limit = u32::from(control % 16) + 1;
    let mut whole = DepthGuard::new(limit);
    let verdict = whole.feed(input);
    let mut pieces = DepthGuard::new(limit);
    let mut split = Ok(());
    for piece in input.chunks(usize::from(control >> 4) + 1) {
        split = pieces.feed(piece);
        if split.is_err() {
            break;
        }
    }
    assert_eq!(verdict, split);
    if verdict.is_ok() {
        assert_eq!(whole.depth(), pieces.depth());
        assert!(whole.depth() <= limit);
    }
});
