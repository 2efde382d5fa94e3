//! The stanza reader of every XML stream Tern reads (c2s, s2s, the
//! bridge), fed the input in pieces whose size the input chooses: it
//! never panics, and every element it reads serialises (xml_text) to
//! text it reads back as the same element, and that minidom reads as
//! the same element too (round trip against an oracle).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_federation::xml_reader::{self, Read, StanzaReader};
use tern_federation::xml_text;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(control & 0x3f) + 1;
    let mut reader = if control & 0x40 != 0 {
        StanzaReader::new_stream()
    } else {
        StanzaReader::new("jabber:client")
    };
    let scope = [
        (String::new(), "jabber:client".to_owned()),
        ("stream".to_owned(), xml_reader::NS_STREAM.to_owned()),
    ];
    for chunk in input.chunks(piece) {
        let mut rest = chunk;
        loop {
            let (taken, read) = reader.read(rest);
            rest = &rest[taken..];
            match read {
                Ok(Read::Element(element)) => {
                    let text = xml_text::to_text(&element);
                    let again = xml_reader::parse(text.as_bytes(), &scope)
                        .unwrap_or_else(|e| panic!("{text:?} does not read back: {e}"));
                    assert_eq!(again, element, "{text:?}");
                    let oracle: minidom::Element = text
                        .parse()
                        .unwrap_or_else(|e| panic!("minidom refuses {text:?}: {e}"));
                    assert_eq!(oracle, element, "{text:?}");
                }
                Ok(Read::Header(_)) => {}
                Ok(Read::NeedMore) if rest.is_empty() && !reader.has_pending() => break,
                Ok(Read::NeedMore) if rest.is_empty() => break,
                Ok(Read::NeedMore) => {}
                Ok(Read::Footer) | Err(_) => return,
            }
        }
    }
});
