//! The encrypted content: a XEP-0420 Stanza Content Encryption envelope
//! (`urn:xmpp:sce:1`) with Tern's affix profile (spec/mls.md §Envelope):
//!
//! - `<from jid/>`: the sender's bare JID; on receipt it must equal the
//!   JID in the MLS sender's credential ([`EnvelopeError::SenderMismatch`]
//!   is raised by the group layer otherwise);
//! - `<time stamp/>`: when it was written;
//! - `<id/>` (namespace `urn:tern:mls:0`): the message's own id, which
//!   replies, corrections, reactions, receipts and markers refer to;
//! - `<rpad/>`: random padding so that the serialised envelope is exactly
//!   one of the [`BUCKETS`] long.
//!
//! Everything a user writes travels inside: body, reply, correction,
//! retraction, reactions, receipts, displayed markers, encrypted file
//! references, location.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use jid::BareJid;
use minidom::rxml::NcName;
use minidom::Element;
use rand::Rng;

/// The SCE namespace.
pub const NS_SCE: &str = "urn:xmpp:sce:1";
const NS_TERN: &str = crate::wire::NS;
const NS_CLIENT: &str = "jabber:client";
const NS_REPLY: &str = "urn:xmpp:reply:0";
const NS_CORRECT: &str = "urn:xmpp:message-correct:0";
const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
const NS_REACTIONS: &str = "urn:xmpp:reactions:0";
const NS_RECEIPTS: &str = "urn:xmpp:receipts";
const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
const NS_GEOLOC: &str = "http://jabber.org/protocol/geoloc";

/// Serialised envelope sizes; larger envelopes round up to a multiple of
/// the last bucket.
pub const BUCKETS: [usize; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not UTF-8 XML.
    #[error("envelope is not well-formed XML")]
    NotXml,
    /// Elements nested deeper than any stanza may be.
    #[error("envelope nests elements too deeply")]
    TooDeep,
    /// A required part is missing or malformed.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The `from` affix names someone other than the MLS sender.
    #[error("envelope from {claimed} but sent by {actual}")]
    SenderMismatch {
        /// What the envelope says.
        claimed: String,
        /// Who the MLS credential says sent it.
        actual: String,
    },
}

/// A reference to a file encrypted with AES-256-GCM and uploaded as an
/// opaque blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Where the ciphertext is.
    pub url: String,
    /// AES-256-GCM key (32 bytes).
    pub key: Vec<u8>,
    /// AES-GCM nonce (12 bytes).
    pub iv: Vec<u8>,
    /// SHA-256 of the plaintext file.
    pub sha256: Vec<u8>,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Media type, e.g. `image/jpeg`.
    pub media_type: String,
    /// File name.
    pub name: String,
}

/// A geographic location (XEP-0080 subset).
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Accuracy in metres.
    pub accuracy: Option<f64>,
    /// A description.
    pub text: Option<String>,
}

/// One piece of content of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Text (`<body/>`).
    Body(String),
    /// This message replies to message `id` of `to` (XEP-0461).
    Reply {
        /// The author of the message replied to.
        to: Option<BareJid>,
        /// Its envelope id.
        id: String,
    },
    /// This message corrects message `id` (XEP-0308).
    Correction {
        /// The corrected message.
        id: String,
    },
    /// Message `id` is retracted (XEP-0424).
    Retraction {
        /// The retracted message.
        id: String,
    },
    /// The sender's reactions to message `id` (XEP-0444); empty clears.
    Reactions {
        /// The message reacted to.
        id: String,
        /// The emojis.
        emojis: Vec<String>,
    },
    /// The sender asks for a delivery receipt (XEP-0184).
    ReceiptRequest,
    /// Message `id` was delivered (XEP-0184).
    Receipt {
        /// The delivered message.
        id: String,
    },
    /// Message `id` (and those before) were displayed (XEP-0333).
    Displayed {
        /// The displayed message.
        id: String,
    },
    /// An encrypted file.
    File(FileRef),
    /// A location.
    Location(Location),
}

/// A decrypted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The envelope id.
    pub id: String,
    /// The sender's bare JID.
    pub from: BareJid,
    /// When it was written (millisecond precision).
    pub time: DateTime<Utc>,
    /// What it says.
    pub contents: Vec<Content>,
}

impl Envelope {
    /// A new envelope from `from`, now, with a random id.
    pub fn new(from: BareJid, contents: Vec<Content>) -> Self {
        Self {
            id: format!("{:032x}", rand::thread_rng().gen::<u128>()),
            from,
            // Milliseconds are what the stamp carries, so round trips compare equal.
            time: Utc::now().trunc_subsecs(3),
            contents,
        }
    }

    /// The padded serialisation that gets encrypted.
    pub fn to_padded_bytes(&self) -> Vec<u8> {
        let mut bytes = self.serialise();
        let bucket = bucket_for(bytes.len());
        // Grow the one-character pad in place: `<rpad>` occurs once (text
        // content is escaped), and the pad alphabet is ASCII.
        let start = bytes
            .windows(6)
            .position(|w| w == b"<rpad>")
            .expect("the envelope has an <rpad/>")
            + 6;
        let extra = random_pad(bucket - bytes.len());
        bytes.splice(start..start, extra.into_bytes());
        debug_assert_eq!(bytes.len(), bucket);
        bytes
    }

    /// Parses decrypted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| EnvelopeError::NotXml)?;
        // A sender nesting thousands of elements must not overflow the
        // recursive parser's stack.
        tern_xmpp::check_document(bytes).map_err(|_| EnvelopeError::TooDeep)?;
        let root: Element = text.parse().map_err(|_| EnvelopeError::NotXml)?;
        if !root.is("envelope", NS_SCE) {
            return Err(EnvelopeError::Malformed("root is not an SCE envelope"));
        }
        let from = root
            .get_child("from", NS_SCE)
            .and_then(|f| f.attr("jid"))
            .and_then(|j| BareJid::new(j).ok())
            .ok_or(EnvelopeError::Malformed("missing or bad <from/>"))?;
        let time = root
            .get_child("time", NS_SCE)
            .and_then(|t| t.attr("stamp"))
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .ok_or(EnvelopeError::Malformed("missing or bad <time/>"))?
            .with_timezone(&Utc);
        let id = root
            .get_child("id", NS_TERN)
            .map(|i| i.text())
            .filter(|i| !i.is_empty())
            .ok_or(EnvelopeError::Malformed("missing <id/>"))?;
        let content = root
            .get_child("content", NS_SCE)
            .ok_or(EnvelopeError::Malformed("missing <content/>"))?;
        let contents = content
            .children()
            .filter_map(|c| parse_content(c).transpose())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id,
            from,
            time,
            contents,
        })
    }

    /// The text of the first body, if any.
    pub fn body(&self) -> Option<&str> {
        self.contents.iter().find_map(|c| match c {
            Content::Body(text) => Some(text.as_str()),
            _ => None,
        })
    }

    /// The envelope with a one-character pad (grown by the caller).
    fn serialise(&self) -> Vec<u8> {
        let mut content = Element::bare("content", NS_SCE);
        for c in &self.contents {
            content.append_child(content_element(c));
        }
        let pad = random_pad(1);
        let envelope = Element::builder("envelope", NS_SCE)
            .append(content)
            .append(Element::builder("rpad", NS_SCE).append(pad).build())
            .append(with_attrs(
                Element::bare("time", NS_SCE),
                &[(
                    "stamp",
                    self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
                )],
            ))
            .append(with_attrs(
                Element::bare("from", NS_SCE),
                &[("jid", self.from.to_string())],
            ))
            .append(
                Element::builder("id", NS_TERN)
                    .append(self.id.clone())
                    .build(),
            )
            .build();
        String::from(&envelope).into_bytes()
    }
}

/// `len` random characters of the base64 alphabet.
fn random_pad(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn bucket_for(len: usize) -> usize {
    let last = BUCKETS[BUCKETS.len() - 1];
    BUCKETS
        .iter()
        .copied()
        .find(|b| *b >= len)
        .unwrap_or_else(|| len.div_ceil(last) * last)
}

fn nc(name: &'static str) -> NcName {
    NcName::try_from(name).expect("attribute names in this module are valid")
}

fn with_attrs(mut el: Element, attrs: &[(&'static str, String)]) -> Element {
    for (name, value) in attrs {
        el.attrs_mut()
            .insert(minidom::rxml::Namespace::NONE, nc(name), value.clone());
    }
    el
}

fn text_element(name: &str, ns: &str, text: &str) -> Element {
    Element::builder(name, ns).append(text.to_owned()).build()
}

fn content_element(content: &Content) -> Element {
    match content {
        Content::Body(text) => text_element("body", NS_CLIENT, text),
        Content::Reply { to, id } => {
            let mut attrs = vec![("id", id.clone())];
            if let Some(to) = to {
                attrs.push(("to", to.to_string()));
            }
            with_attrs(Element::bare("reply", NS_REPLY), &attrs)
        }
        Content::Correction { id } => {
            with_attrs(Element::bare("replace", NS_CORRECT), &[("id", id.clone())])
        }
        Content::Retraction { id } => {
            with_attrs(Element::bare("retract", NS_RETRACT), &[("id", id.clone())])
        }
        Content::Reactions { id, emojis } => {
            let mut el = with_attrs(
                Element::bare("reactions", NS_REACTIONS),
                &[("id", id.clone())],
            );
            for emoji in emojis {
                el.append_child(text_element("reaction", NS_REACTIONS, emoji));
            }
            el
        }
        Content::ReceiptRequest => Element::bare("request", NS_RECEIPTS),
        Content::Receipt { id } => with_attrs(
            Element::bare("received", NS_RECEIPTS),
            &[("id", id.clone())],
        ),
        Content::Displayed { id } => with_attrs(
            Element::bare("displayed", NS_MARKERS),
            &[("id", id.clone())],
        ),
        Content::File(f) => with_attrs(
            Element::bare("file", NS_TERN),
            &[
                ("url", f.url.clone()),
                ("key", B64.encode(&f.key)),
                ("iv", B64.encode(&f.iv)),
                ("sha256", B64.encode(&f.sha256)),
                ("size", f.size.to_string()),
                ("media-type", f.media_type.clone()),
                ("name", f.name.clone()),
            ],
        ),
        Content::Location(l) => {
            let mut el = Element::bare("geoloc", NS_GEOLOC);
            el.append_child(text_element("lat", NS_GEOLOC, &l.lat.to_string()));
            el.append_child(text_element("lon", NS_GEOLOC, &l.lon.to_string()));
            if let Some(a) = l.accuracy {
                el.append_child(text_element("accuracy", NS_GEOLOC, &a.to_string()));
            }
            if let Some(t) = &l.text {
                el.append_child(text_element("text", NS_GEOLOC, t));
            }
            el
        }
    }
}

/// Reads one content element; `Ok(None)` for unknown elements (ignored,
/// for forward compatibility).
fn parse_content(el: &Element) -> Result<Option<Content>, EnvelopeError> {
    let id = |what| {
        el.attr("id")
            .map(str::to_owned)
            .ok_or(EnvelopeError::Malformed(what))
    };
    Ok(Some(match (el.ns().as_str(), el.name()) {
        (NS_CLIENT, "body") => Content::Body(el.text()),
        (NS_REPLY, "reply") => Content::Reply {
            to: el
                .attr("to")
                .map(BareJid::new)
                .transpose()
                .map_err(|_| EnvelopeError::Malformed("bad reply to"))?,
            id: id("reply without id")?,
        },
        (NS_CORRECT, "replace") => Content::Correction {
            id: id("correction without id")?,
        },
        (NS_RETRACT, "retract") => Content::Retraction {
            id: id("retraction without id")?,
        },
        (NS_REACTIONS, "reactions") => Content::Reactions {
            id: id("reactions without id")?,
            emojis: el
                .children()
                .filter(|c| c.is("reaction", NS_REACTIONS))
                .map(|c| c.text())
                .collect(),
        },
        (NS_RECEIPTS, "request") => Content::ReceiptRequest,
        (NS_RECEIPTS, "received") => Content::Receipt {
            id: id("receipt without id")?,
        },
        (NS_MARKERS, "displayed") => Content::Displayed {
            id: id("marker without id")?,
        },
        (NS_TERN, "file") => Content::File(parse_file(el)?),
        (NS_GEOLOC, "geoloc") => Content::Location(parse_location(el)?),
        _ => return Ok(None),
    }))
}

fn parse_file(el: &Element) -> Result<FileRef, EnvelopeError> {
    let attr = |name| {
        el.attr(name)
            .ok_or(EnvelopeError::Malformed("file reference incomplete"))
    };
    let bytes = |name, len| {
        let value = B64
            .decode(attr(name)?)
            .map_err(|_| EnvelopeError::Malformed("file reference not base64"))?;
        if value.len() == len {
            Ok(value)
        } else {
            Err(EnvelopeError::Malformed(
                "file key, iv or hash of the wrong length",
            ))
        }
    };
    Ok(FileRef {
        url: attr("url")?.to_owned(),
        key: bytes("key", 32)?,
        iv: bytes("iv", 12)?,
        sha256: bytes("sha256", 32)?,
        size: attr("size")?
            .parse()
            .map_err(|_| EnvelopeError::Malformed("bad file size"))?,
        media_type: attr("media-type")?.to_owned(),
        name: attr("name")?.to_owned(),
    })
}

fn parse_location(el: &Element) -> Result<Location, EnvelopeError> {
    let number = |name| -> Result<Option<f64>, EnvelopeError> {
        el.get_child(name, NS_GEOLOC)
            .map(|c| {
                c.text()
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| EnvelopeError::Malformed("bad geoloc number"))
            })
            .transpose()
    };
    Ok(Location {
        lat: number("lat")?.ok_or(EnvelopeError::Malformed("geoloc without lat"))?,
        lon: number("lon")?.ok_or(EnvelopeError::Malformed("geoloc without lon"))?,
        accuracy: number("accuracy")?,
        text: el.get_child("text", NS_GEOLOC).map(|t| t.text()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> BareJid {
        BareJid::new("alice@a.example").unwrap()
    }

    #[test]
    fn a_deeply_nested_envelope_is_refused_before_parsing() {
        let n = 30_000;
        let text = format!(
            "<envelope xmlns='{NS_SCE}'>{}{}</envelope>",
            "<a>".repeat(n),
            "</a>".repeat(n)
        );
        assert!(matches!(
            Envelope::parse(text.as_bytes()),
            Err(EnvelopeError::TooDeep)
        ));
    }

    fn every_kind() -> Vec<Content> {
        vec![
            Content::Body("Hello <world> & \"friends\" 👋".into()),
            Content::Reply {
                to: Some(BareJid::new("bob@b.example").unwrap()),
                id: "m1".into(),
            },
            Content::Reply {
                to: None,
                id: "m0".into(),
            },
            Content::Correction { id: "m2".into() },
            Content::Retraction { id: "m3".into() },
            Content::Reactions {
                id: "m4".into(),
                emojis: vec!["👍".into(), "🎉".into()],
            },
            Content::Reactions {
                id: "m5".into(),
                emojis: vec![],
            },
            Content::ReceiptRequest,
            Content::Receipt { id: "m6".into() },
            Content::Displayed { id: "m7".into() },
            Content::File(FileRef {
                url: "https://upload.a.example/f/abc".into(),
                key: vec![7; 32],
                iv: vec![8; 12],
                sha256: vec![9; 32],
                size: 5 * 1024 * 1024,
                media_type: "image/jpeg".into(),
                name: "holiday photo.jpg".into(),
            }),
            Content::Location(Location {
                lat: 52.52,
                lon: 13.405,
                accuracy: Some(10.0),
                text: Some("Berlin".into()),
            }),
        ]
    }

    #[test]
    fn every_content_kind_round_trips() {
        for content in every_kind() {
            let envelope = Envelope::new(alice(), vec![content]);
            assert_eq!(
                Envelope::parse(&envelope.to_padded_bytes()).unwrap(),
                envelope
            );
        }
        let all = Envelope::new(alice(), every_kind());
        assert_eq!(Envelope::parse(&all.to_padded_bytes()).unwrap(), all);
    }

    #[test]
    fn padding_gives_every_message_of_a_bucket_the_same_length() {
        let lengths: Vec<usize> = ["", "hi", "a message of a few words", &"z".repeat(200)]
            .iter()
            .map(|text| {
                Envelope::new(alice(), vec![Content::Body((*text).into())])
                    .to_padded_bytes()
                    .len()
            })
            .collect();
        assert!(lengths.iter().all(|l| *l == 512), "{lengths:?}");
        let longer = Envelope::new(alice(), vec![Content::Body("y".repeat(400))]).to_padded_bytes();
        assert_eq!(longer.len(), 1024);
        let big = Envelope::new(alice(), vec![Content::Body("x".repeat(3000))]).to_padded_bytes();
        assert_eq!(big.len(), 4096);
        let huge =
            Envelope::new(alice(), vec![Content::Body("x".repeat(100_000))]).to_padded_bytes();
        assert_eq!(huge.len(), 2 * 65536);
        for text in ["x", "héllo wörld ✓"] {
            let bytes =
                Envelope::new(alice(), vec![Content::Body(text.repeat(40))]).to_padded_bytes();
            assert!(BUCKETS.contains(&bytes.len()), "{}", bytes.len());
        }
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        let good = String::from_utf8(
            Envelope::new(alice(), vec![Content::Body("x".into())]).to_padded_bytes(),
        )
        .unwrap();
        assert_eq!(Envelope::parse(b"\xff\xfe"), Err(EnvelopeError::NotXml));
        assert_eq!(Envelope::parse(b"<envelope"), Err(EnvelopeError::NotXml));
        assert!(Envelope::parse(b"<x xmlns='urn:xmpp:sce:1'/>").is_err());
        for (from, to) in [
            ("jid='alice@a.example'", "jid='not a jid @@'"),
            ("<from ", "<xfrom "),
            ("stamp='", "stamp='yesterday"),
        ] {
            assert!(
                Envelope::parse(good.replacen(from, to, 1).as_bytes()).is_err(),
                "{to}"
            );
        }
        let bad_file = "<envelope xmlns='urn:xmpp:sce:1'><content><file xmlns='urn:tern:mls:0' url='u' key='AAAA' iv='AAAA' \
            sha256='AAAA' size='1' media-type='t' name='n'/></content><time stamp='2026-01-01T00:00:00Z'/>\
            <from jid='a@b'/><id xmlns='urn:tern:mls:0'>1</id></envelope>";
        assert!(matches!(
            Envelope::parse(bad_file.as_bytes()),
            Err(EnvelopeError::Malformed(_))
        ));
    }
}
