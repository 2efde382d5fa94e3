//! JIDs as they come in `to` and `from`: what parses prints to a JID
//! that parses to the same one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jid) = jid::Jid::new(text) {
        let again = jid::Jid::new(jid.as_str()).expect("a printed JID parses");
        assert_eq!(again, jid);
        let bare = jid.to_bare();
        assert_eq!(jid::BareJid::new(bare.as_str()).expect("bare"), bare);
    }
});
