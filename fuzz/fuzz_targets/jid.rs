//! JIDs as they come in `to` and `from`, and user names at login and
//! registration: parsing never panics, a printed JID parses again, and
//! the server's user-name normalisation gives a name that normalises to
//! itself. (The jid crate's own normalisation is not idempotent for some
//! compatibility characters, "℻" becoming "FAX" and then "fax": found
//! here; the server normalises to a fixed point.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jid) = jid::Jid::new(text) {
        let again = jid::Jid::new(jid.as_str()).expect("a printed JID parses");
        let _ = jid::BareJid::new(again.to_bare().as_str()).expect("its bare JID parses");
    }
    let node = text.split('@').next().unwrap_or_default();
    if let Some(name) = tern_server::c2s::negotiation::normalize_username(node) {
        assert_eq!(
            tern_server::c2s::negotiation::normalize_username(&name).as_deref(),
            Some(name.as_str()),
            "{node:?}"
        );
    }
});
