//! The encodings of an archive chunk: a run of one archive's entries, in
//! seq order, stored as one value. A chunk has one of two formats, by
//! where its stanzas are.
//!
//! **Inline** (chunks written before the message log, `segment` NULL):
//! each entry is a header of five lowercase hexadecimal numbers, then
//! three byte strings:
//!
//! ```text
//! seq:16  stamp:16  id-length:8  with-length:8  stanza-length:8
//! id  with  stanza
//! ```
//!
//! Hexadecimal, not binary, because SQL can write it (`printf('%016x',
//! …)`): the migration that introduced chunks converted the earlier rows
//! in SQL alone.
//!
//! **Logged** (the chunk's `segment` names a segment of the message log):
//! the other parties' JIDs once each, then the entries, in unsigned LEB128
//! varints (`v`; `z`: zigzag-encoded signed) and byte strings:
//!
//! ```text
//! with-count:v  (length:v  JID)…
//! entry…:  seq-step:v  stamp-offset:z  log-step:z  stanza-length:v  id  with-index:v
//! id:      0:v  tag:u32le       (the id is seq in 16 hex digits, then tag in 8)
//!        | length+1:v  text
//! ```
//!
//! - `seq-step`: seq minus the previous entry's seq (the first: minus 0),
//!   modulo 2⁶⁴;
//! - `stamp-offset`: stamp minus seq;
//! - `log-step`: the stanza's offset in the segment minus the end of the
//!   previous entry's stanza (the first: minus 0);
//! - `with-index`: the place of the entry's JID in the chunk's list.
//!
//! Lengths count bytes of UTF-8. Entries take about 12 bytes this way, so
//! the database holds an index of the log and little else.

use super::message_log::Place;
use super::StorageError;

/// Bytes of an inline entry's header.
const HEADER: usize = 16 + 16 + 8 + 8 + 8;

/// Where a chunk's stanzas are, which decides its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// In the chunk.
    Inline,
    /// In the message log.
    Logged,
}

/// An entry's stanza: its text, or its place in the chunk's segment of
/// the message log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stanza<'a> {
    /// The serialised message.
    Inline(&'a str),
    /// Where the serialised message is in the log.
    Logged(Place),
}

/// An entry's stanza id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryId<'a> {
    /// As written.
    Text(&'a str),
    /// This server's format: the entry's seq in 16 lowercase hexadecimal
    /// digits, then this tag in 8.
    Tagged(u32),
}

impl EntryId<'_> {
    /// The id of the entry `seq`, as text.
    pub fn text(&self, seq: i64) -> String {
        match self {
            Self::Text(text) => (*text).to_owned(),
            Self::Tagged(tag) => tagged_id(seq, *tag),
        }
    }

    /// Whether this id of the entry `seq` is `id`.
    pub fn is(&self, seq: i64, id: &str) -> bool {
        match self {
            Self::Text(text) => *text == id,
            Self::Tagged(tag) => tagged(seq, id) == Some(*tag),
        }
    }
}

/// The stanza id of this server's format: `seq` in 16 lowercase
/// hexadecimal digits, then `tag` in 8.
pub fn tagged_id(seq: i64, tag: u32) -> String {
    hex_digits(seq as u64, 16)
        .chain(hex_digits(u64::from(tag), 8))
        .map(char::from)
        .collect()
}

/// The tag of `id` if it is in this server's format for `seq`.
pub fn tagged(seq: i64, id: &str) -> Option<u32> {
    let bytes = id.as_bytes();
    if bytes.len() != 24 || !hex_digits(seq as u64, 16).eq(bytes[..16].iter().copied()) {
        return None;
    }
    bytes[16..].iter().try_fold(0u32, |tag, digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(tag << 4 | u32::from(value))
    })
}

/// One entry of a chunk, borrowed from the chunk's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry<'a> {
    /// The message's place in the archiving order.
    pub seq: i64,
    /// When it was archived, microseconds since the Unix epoch.
    pub stamp: i64,
    /// Its stanza id.
    pub id: EntryId<'a>,
    /// The other party's bare JID.
    pub with: &'a str,
    /// The serialised message, or where it is.
    pub stanza: Stanza<'a>,
}

impl ChunkEntry<'_> {
    /// The bytes of its stanza.
    pub fn stanza_len(&self) -> usize {
        match self.stanza {
            Stanza::Inline(stanza) => stanza.len(),
            Stanza::Logged(place) => place.len as usize,
        }
    }
}

/// The chunk of `entries` (in seq order), in the format of their stanzas
/// (all inline, or all logged); logged places are moved on by `shift`.
pub fn encode(entries: &[ChunkEntry], shift: u64) -> Vec<u8> {
    let logged = entries
        .iter()
        .any(|e| matches!(e.stanza, Stanza::Logged(_)));
    if logged {
        encode_logged(entries, shift)
    } else {
        encode_inline(entries)
    }
}

fn encode_inline(entries: &[ChunkEntry]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in entries {
        let id = entry.id.text(entry.seq);
        let stanza = match entry.stanza {
            Stanza::Inline(stanza) => stanza,
            Stanza::Logged(_) => "",
        };
        // Sign bits are kept: a negative number reads back as itself.
        push_hex(&mut bytes, entry.seq as u64, 16);
        push_hex(&mut bytes, entry.stamp as u64, 16);
        // Stanzas and ids are limited far below 4 GiB.
        for field in [id.as_str(), entry.with, stanza] {
            push_hex(&mut bytes, field.len() as u64, 8);
        }
        for field in [id.as_str(), entry.with, stanza] {
            bytes.extend_from_slice(field.as_bytes());
        }
    }
    bytes
}

fn encode_logged(entries: &[ChunkEntry], shift: u64) -> Vec<u8> {
    let mut withs: Vec<&str> = Vec::new();
    let indexes: Vec<usize> = entries
        .iter()
        .map(|entry| match withs.iter().position(|w| *w == entry.with) {
            Some(at) => at,
            None => {
                withs.push(entry.with);
                withs.len() - 1
            }
        })
        .collect();
    let mut bytes = Vec::with_capacity(16 * entries.len() + 32 * withs.len());
    push_varint(&mut bytes, withs.len() as u64);
    for with in &withs {
        push_varint(&mut bytes, with.len() as u64);
        bytes.extend_from_slice(with.as_bytes());
    }
    let (mut seq, mut end) = (0i64, 0u64);
    for (entry, with) in entries.iter().zip(indexes) {
        let place = match entry.stanza {
            Stanza::Logged(place) => Place {
                offset: place.offset + shift,
                ..place
            },
            Stanza::Inline(_) => Place { offset: 0, len: 0 },
        };
        push_varint(&mut bytes, entry.seq.wrapping_sub(seq) as u64);
        push_varint(&mut bytes, zigzag(entry.stamp.wrapping_sub(entry.seq)));
        push_varint(&mut bytes, zigzag(place.offset.wrapping_sub(end) as i64));
        push_varint(&mut bytes, u64::from(place.len));
        let tag = match entry.id {
            EntryId::Tagged(tag) => Some(tag),
            EntryId::Text(text) => tagged(entry.seq, text),
        };
        match (tag, entry.id) {
            (Some(tag), _) => {
                push_varint(&mut bytes, 0);
                bytes.extend_from_slice(&tag.to_le_bytes());
            }
            (None, id) => {
                let text = id.text(entry.seq);
                push_varint(&mut bytes, text.len() as u64 + 1);
                bytes.extend_from_slice(text.as_bytes());
            }
        }
        push_varint(&mut bytes, with as u64);
        seq = entry.seq;
        end = place.offset + u64::from(place.len);
    }
    bytes
}

/// Appends the last `digits` hexadecimal digits of `value`, lowercase.
fn push_hex(bytes: &mut Vec<u8>, value: u64, digits: u32) {
    bytes.extend(hex_digits(value, digits));
}

/// The last `digits` hexadecimal digits of `value`, lowercase.
fn hex_digits(value: u64, digits: u32) -> impl Iterator<Item = u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..digits)
        .rev()
        .map(move |n| DIGITS[(value >> (4 * n)) as usize & 0xf])
}

fn push_varint(bytes: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        bytes.push(value as u8 | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// The entries of a chunk of `format`, in order.
pub fn decode(bytes: &[u8], format: Format) -> Result<Vec<ChunkEntry<'_>>, StorageError> {
    match format {
        Format::Inline => {
            let mut entries = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let (entry, after) = decode_inline(rest)?;
                entries.push(entry);
                rest = after;
            }
            Ok(entries)
        }
        Format::Logged => decode_logged(bytes),
    }
}

/// The inline entry at the start of `bytes`, and what follows it.
fn decode_inline(bytes: &[u8]) -> Result<(ChunkEntry<'_>, &[u8]), StorageError> {
    let header = bytes
        .get(..HEADER)
        .ok_or_else(|| corrupt("an archive chunk ends inside an entry's header"))?;
    let seq = hex(&header[..16])? as i64;
    let stamp = hex(&header[16..32])? as i64;
    let mut reader = Reader(&bytes[HEADER..]);
    let mut fields = [""; 3];
    for (field, digits) in fields.iter_mut().zip(header[32..].chunks(8)) {
        *field = reader.text(hex(digits)?)?;
    }
    let [id, with, stanza] = fields;
    let entry = ChunkEntry {
        seq,
        stamp,
        id: EntryId::Text(id),
        with,
        stanza: Stanza::Inline(stanza),
    };
    Ok((entry, reader.0))
}

/// The entries of a logged chunk.
fn decode_logged(bytes: &[u8]) -> Result<Vec<ChunkEntry<'_>>, StorageError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = Reader(bytes);
    let with_count = reader.varint()?;
    let mut withs = Vec::new();
    for _ in 0..with_count {
        let length = reader.varint()?;
        withs.push(reader.text(length)?);
    }
    let mut entries = Vec::new();
    let (mut seq, mut end) = (0i64, 0u64);
    while !reader.0.is_empty() {
        seq = seq.wrapping_add(reader.varint()? as i64);
        let stamp = seq.wrapping_add(unzigzag(reader.varint()?));
        let offset = end.wrapping_add(unzigzag(reader.varint()?) as u64);
        let len = u32::try_from(reader.varint()?)
            .map_err(|_| corrupt("an archive chunk's stanza is too long"))?;
        let id = match reader.varint()? {
            0 => EntryId::Tagged(u32::from_le_bytes(reader.array()?)),
            length => EntryId::Text(reader.text(length - 1)?),
        };
        let with = usize::try_from(reader.varint()?)
            .ok()
            .and_then(|at| withs.get(at))
            .ok_or_else(|| corrupt("an archive chunk's entry names no JID of its list"))?;
        entries.push(ChunkEntry {
            seq,
            stamp,
            id,
            with,
            stanza: Stanza::Logged(Place { offset, len }),
        });
        end = offset.wrapping_add(u64::from(len));
    }
    Ok(entries)
}

/// Reads a chunk's bytes from the start.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, length: u64) -> Result<&'a [u8], StorageError> {
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= self.0.len())
            .ok_or_else(|| corrupt("an archive chunk ends inside an entry"))?;
        let (taken, rest) = self.0.split_at(length);
        self.0 = rest;
        Ok(taken)
    }

    fn text(&mut self, length: u64) -> Result<&'a str, StorageError> {
        std::str::from_utf8(self.take(length)?)
            .map_err(|_| corrupt("an archive chunk holds a field that is not UTF-8"))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N as u64)?);
        Ok(array)
    }

    fn varint(&mut self) -> Result<u64, StorageError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.array()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("an archive chunk holds a number too long"))
    }
}

/// A number written in lowercase hexadecimal.
fn hex(digits: &[u8]) -> Result<u64, StorageError> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|digits| {
            digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .and_then(|digits| u64::from_str_radix(digits, 16).ok())
        .ok_or_else(|| corrupt("an archive chunk's header is not hexadecimal"))
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(seq: i64, id: &'a str, stanza: &'a str) -> ChunkEntry<'a> {
        ChunkEntry {
            seq,
            stamp: seq.wrapping_sub(1),
            id: EntryId::Text(id),
            with: "b@x.test",
            stanza: Stanza::Inline(stanza),
        }
    }

    fn logged(seq: i64, id: EntryId<'_>, offset: u64, len: u32) -> ChunkEntry<'_> {
        ChunkEntry {
            id,
            stanza: Stanza::Logged(Place { offset, len }),
            ..entry(seq, "", "")
        }
    }

    #[test]
    fn inline_entries_come_back_as_written() {
        let inline = [
            entry(1, "one", "<message xmlns='jabber:client'/>"),
            entry(i64::MAX, "", ""),
            entry(7, "🦀", "é\n\u{1}<>&"),
        ];
        let bytes = encode(&inline, 0);
        assert_eq!(decode(&bytes, Format::Inline).expect("decodes"), inline);
        assert!(decode(b"", Format::Inline).expect("empty").is_empty());
    }

    #[test]
    fn logged_entries_come_back_as_written_and_small() {
        let mut written = [
            logged(1, EntryId::Text("one"), 10, 300),
            logged(2, EntryId::Tagged(0xdead_beef), 5, 300),
            logged(i64::MAX, EntryId::Text("🦀"), u64::MAX - 9, 9),
            logged(i64::MIN, EntryId::Tagged(0), 0, u32::MAX),
        ];
        written[1].with = "ü@x.test";
        written[2].stamp = i64::MIN;
        let bytes = encode(&written, 0);
        assert_eq!(decode(&bytes, Format::Logged).expect("decodes"), written);

        // An id of this server's format is written as its tag.
        let seq = 0x0006_1f00_0000_0001;
        let ids: Vec<String> = (0..100)
            .map(|n| format!("{:016x}cafebabe", seq + n * 1500))
            .collect();
        let id = &ids[0];
        let run: Vec<ChunkEntry> = (0..100)
            .map(|n| {
                logged(
                    seq + n * 1500,
                    EntryId::Text(&ids[n as usize]),
                    n as u64 * 300,
                    300,
                )
            })
            .collect();
        let bytes = encode(&run, 1 << 30);
        assert!(bytes.len() < 14 * run.len(), "{} bytes", bytes.len());
        let read = decode(&bytes, Format::Logged).expect("decodes");
        assert_eq!(read[0].id, EntryId::Tagged(0xcafe_babe));
        assert!(read[0].id.is(seq, id) && !read[1].id.is(seq + 1500, id));
        assert_eq!(&read[0].id.text(seq), id);
        assert_eq!(
            read[99].stanza,
            Stanza::Logged(Place {
                offset: (1 << 30) + 99 * 300,
                len: 300
            })
        );
    }

    #[test]
    fn ids_of_this_servers_format_are_told_apart() {
        let id = tagged_id(0x0006_1f00_0000_00ab, 0xcafe_babe);
        assert_eq!(id, "00061f00000000abcafebabe");
        assert_eq!(tagged(0x0006_1f00_0000_00ab, &id), Some(0xcafe_babe));
        for other in [
            "00061f00000000accafebabe",
            "00061f00000000abCAFEBABE",
            "00061f00000000abcafebab",
            "00061f00000000abcafebabg",
        ] {
            assert_eq!(tagged(0x0006_1f00_0000_00ab, other), None, "{other}");
        }
        assert_eq!(tagged_id(-1, 0), "ffffffffffffffff00000000");
    }

    #[test]
    fn headers_are_written_as_printf_writes_them() {
        for value in [0, 1, 0xabc, i64::MAX, -1, i64::MIN] {
            let mut bytes = Vec::new();
            push_hex(&mut bytes, value as u64, 16);
            assert_eq!(bytes, format!("{value:016x}").as_bytes());
        }
        let mut bytes = Vec::new();
        push_hex(&mut bytes, 0x1234_5678_9abc, 8);
        assert_eq!(bytes, b"56789abc");
    }

    #[test]
    fn damaged_chunks_are_errors() {
        let bytes = encode(&[entry(1, "one", "<message/>")], 0);
        for damaged in [&bytes[..bytes.len() - 1], &bytes[..HEADER - 1], &bytes[1..]] {
            assert!(decode(damaged, Format::Inline).is_err(), "{damaged:?}");
        }
        let mut capitals = bytes.clone();
        capitals[15] = b'A';
        assert!(decode(&capitals, Format::Inline).is_err());
        let mut not_utf8 = bytes.clone();
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        assert!(decode(&not_utf8, Format::Inline).is_err());

        let bytes = encode(&[logged(1, EntryId::Text("one"), 0, 10)], 0);
        assert!(decode(&bytes[..bytes.len() - 1], Format::Logged).is_err());
        let mut no_such_with = bytes.clone();
        let last = no_such_with.len() - 1;
        no_such_with[last] = 1;
        assert!(decode(&no_such_with, Format::Logged).is_err());
        assert!(
            decode(&[0x80; 11], Format::Logged).is_err(),
            "endless varint"
        );
    }
}
