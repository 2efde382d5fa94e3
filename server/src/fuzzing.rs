//! Entry points for the fuzz targets in `fuzz/` (not an API): each feeds
//! bytes from the network, or from the disk, to one parser of the server
//! and checks what must hold whatever the input. A failed check panics,
//! which the fuzzer reports as a crash.

use crate::sasl::{ClientFirst, PlainCredentials, ScramHash, ScramServer, StoredCredentials};
use crate::storage::archive_chunk::{self, Format};

/// One XMPP-over-WebSocket message (RFC 7395) as the server translates it
/// into its XML stream: whatever comes out is one element that, read in
/// the stream (`jabber:client` the default namespace), is the element
/// the message held.
pub fn websocket_message(text: &str) {
    let Ok(translated) = crate::c2s::websocket::translate_inbound(text) else {
        return;
    };
    if translated.starts_with("<?xml") || translated == "</stream:stream>" {
        return;
    }
    let in_stream = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
         {translated}</stream:stream>"
    );
    let read = in_stream
        .parse::<minidom::Element>()
        .ok()
        .and_then(|stream| stream.children().next().cloned());
    let original = text.parse::<minidom::Element>().ok();
    assert!(
        read.is_some() && read == original,
        "{text:?} became {translated:?}"
    );
}

/// SASL PLAIN and SCRAM messages from a client: parsed, and a SCRAM
/// exchange run to its end with whatever the client sends, against
/// stored credentials; only the right password may succeed.
pub fn sasl(data: &[u8]) {
    let _ = PlainCredentials::parse(data);
    let (first, last) = data.split_at(data.len() / 2);
    static STORED: std::sync::OnceLock<[StoredCredentials; 2]> = std::sync::OnceLock::new();
    let stored = STORED.get_or_init(|| {
        let derive =
            |hash| StoredCredentials::derive_with_salt(hash, "pencil", b"salt".to_vec(), 4096);
        [derive(ScramHash::Sha1), derive(ScramHash::Sha256)]
    });
    for (hash, stored) in [ScramHash::Sha1, ScramHash::Sha256].into_iter().zip(stored) {
        let Ok(client_first) = ClientFirst::parse(first) else {
            continue;
        };
        let (server, _challenge) = ScramServer::start(hash, client_first, stored.clone());
        // Random bytes cannot hold the proof of a password.
        assert!(server.finish(last).is_err(), "a proof out of nothing");
    }
}

/// An archive chunk as read back from the database, in both formats:
/// decoding never panics, and what decodes encodes to a chunk that
/// decodes to the same entries (an id in this server's format may come
/// back as its tag: the same id).
pub fn archive_chunk(bytes: &[u8]) {
    for format in [Format::Inline, Format::Logged] {
        let Ok(entries) = archive_chunk::decode(bytes, format) else {
            continue;
        };
        if entries.is_empty() {
            continue;
        }
        let encoded = archive_chunk::encode(&entries, 0);
        let again = archive_chunk::decode(&encoded, format).expect("an encoded chunk decodes");
        assert_eq!(plain(&again), plain(&entries), "{format:?}");
    }
}

/// A chunk's entries with their ids as text, to compare.
fn plain(entries: &[archive_chunk::ChunkEntry<'_>]) -> Vec<(i64, i64, String, String, String)> {
    entries
        .iter()
        .map(|e| {
            let stanza = format!("{:?}", e.stanza);
            (e.seq, e.stamp, e.id.text(e.seq), e.with.to_owned(), stanza)
        })
        .collect()
}

/// A message sent to a group, as the hub reads it before anything else:
/// the first 16 bytes are the group id, the rest the MLS message.
pub fn hub_message(data: &[u8]) {
    let (group_id, message) = data.split_at(data.len().min(16));
    if let Ok((epoch, _)) = crate::hub::classify(message, group_id) {
        // An accepted message names the group and an epoch it carries.
        let _ = epoch;
    }
}
