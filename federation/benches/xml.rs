//! Per-stanza cost of reading and writing XML: Tern's own reader and
//! writer against minidom's (rxml underneath), for a 600-byte OMEMO
//! message. `cargo bench -p tern-federation --bench xml` prints µs per
//! stanza.

use std::hint::black_box;
use std::time::Instant;

use minidom::Element;
use tern_federation::xml_reader::{Read, StanzaReader};

const STANZA: &str = "<message to='b@bench.test/r' from='a@bench.test/r' type='chat' id='1763855661000000'>\
    <encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'>\
    <key rid='2'>MwohBQpnWb1TXt0p8ee4vGT7fYu0dNk5o7ibCg/1Qa4OJdRsEAAYACIwdOuvE6y2yJS6Y6w6mOb0zN4tE5fRBoJxjB1o9Ko=</key>\
    <key rid='3' prekey='true'>MwohBQpnWb1TXt0p8ee4vGT7fYu0dNk5o7ibCg/1Qa4OJdRsEAAYACIwdOuvE6y2yJS6Y6w6mOb0zN4tE5fRBoJxjB1o9Ko=</key>\
    <iv>Y2Jm4w2cFfKkF8Zt</iv></header>\
    <payload>c2VhbGVkIGJ5IHRoZSBsb2FkIGdlbmVyYXRvciwgZm9yIHRoZSBiZW5jaG1hcmsgb25seSwgc2VhbGVkIGJ5IHRoZSBsb2Fk</payload>\
    </encrypted><store xmlns='urn:xmpp:hints'/><request xmlns='urn:xmpp:receipts'/></message>";

fn per_stanza(label: &str, rounds: u32, mut work: impl FnMut()) {
    for _ in 0..rounds / 10 {
        work();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        work();
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!("{label:<44} {micros:>7.2} µs per stanza");
}

fn main() {
    let rounds = 100_000;
    let in_stream = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>{STANZA}</stream:stream>"
    );
    println!("{} bytes per stanza", STANZA.len());
    per_stanza("read: tern_federation::xml_reader", rounds, || {
        let mut reader = StanzaReader::new("jabber:client");
        let (_, read) = reader.read(black_box(STANZA.as_bytes()));
        assert!(matches!(read, Ok(Read::Element(_))));
    });
    per_stanza("read: minidom (rxml), whole stream", rounds, || {
        let root: Element = black_box(&in_stream).parse().expect("valid");
        black_box(root);
    });
    let element: Element = in_stream
        .parse::<Element>()
        .expect("valid")
        .children()
        .next()
        .cloned()
        .expect("one");
    per_stanza("write: tern_federation::xml_text", rounds, || {
        black_box(tern_federation::xml_text::to_text(black_box(&element)));
    });
    per_stanza("write: minidom String::from", rounds, || {
        black_box(String::from(black_box(&element)));
    });
}
