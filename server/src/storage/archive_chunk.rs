//! The encoding of an archive chunk: a run of one archive's entries, in
//! seq order, stored as one value. Each entry is a header of five
//! lowercase hexadecimal numbers, then three byte strings:
//!
//! ```text
//! seq:16  stamp:16  id-length:8  with-length:8  stanza-length:8
//! id  with  stanza
//! ```
//!
//! Lengths count bytes of UTF-8. Hexadecimal, not binary, because SQL can
//! write it (`printf('%016x', …)`): the migration that introduced chunks
//! converted the earlier rows in SQL alone.

use super::StorageError;

/// Bytes of an entry's header.
const HEADER: usize = 16 + 16 + 8 + 8 + 8;

/// One entry of a chunk, borrowed from the chunk's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry<'a> {
    /// The message's place in the archiving order.
    pub seq: i64,
    /// When it was archived, microseconds since the Unix epoch.
    pub stamp: i64,
    /// Its stanza id.
    pub id: &'a str,
    /// The other party's bare JID.
    pub with: &'a str,
    /// The serialised message.
    pub stanza: &'a str,
}

impl ChunkEntry<'_> {
    /// The bytes this entry takes in a chunk.
    pub fn encoded_len(&self) -> usize {
        HEADER + self.id.len() + self.with.len() + self.stanza.len()
    }

    /// Appends this entry to the chunk `bytes`.
    pub fn encode_into(&self, bytes: &mut Vec<u8>) {
        bytes.reserve(self.encoded_len());
        // Sign bits are kept: a negative number reads back as itself.
        push_hex(bytes, self.seq as u64, 16);
        push_hex(bytes, self.stamp as u64, 16);
        for field in [self.id, self.with, self.stanza] {
            // Stanzas are limited far below 4 GiB.
            debug_assert!(u32::try_from(field.len()).is_ok());
            push_hex(bytes, field.len() as u64, 8);
        }
        for field in [self.id, self.with, self.stanza] {
            bytes.extend_from_slice(field.as_bytes());
        }
    }
}

/// Appends the last `digits` hexadecimal digits of `value`, lowercase.
fn push_hex(bytes: &mut Vec<u8>, value: u64, digits: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.extend(
        (0..digits)
            .rev()
            .map(|n| DIGITS[(value >> (4 * n)) as usize & 0xf]),
    );
}

/// The entries of a chunk, in order.
pub fn decode(mut bytes: &[u8]) -> Result<Vec<ChunkEntry<'_>>, StorageError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let (entry, rest) = decode_one(bytes)?;
        entries.push(entry);
        bytes = rest;
    }
    Ok(entries)
}

/// The entry at the start of `bytes`, and what follows it.
fn decode_one(bytes: &[u8]) -> Result<(ChunkEntry<'_>, &[u8]), StorageError> {
    let header = bytes
        .get(..HEADER)
        .ok_or_else(|| corrupt("an archive chunk ends inside an entry's header"))?;
    let seq = hex(&header[..16])? as i64;
    let stamp = hex(&header[16..32])? as i64;
    let mut rest = &bytes[HEADER..];
    let mut fields = [""; 3];
    for (field, length) in fields.iter_mut().zip(header[32..].chunks(8)) {
        let length = usize::try_from(hex(length)?)
            .map_err(|_| corrupt("an archive chunk's field is too long"))?;
        if rest.len() < length {
            return Err(corrupt("an archive chunk ends inside an entry"));
        }
        let (value, after) = rest.split_at(length);
        *field = std::str::from_utf8(value)
            .map_err(|_| corrupt("an archive chunk holds a field that is not UTF-8"))?;
        rest = after;
    }
    let [id, with, stanza] = fields;
    let entry = ChunkEntry {
        seq,
        stamp,
        id,
        with,
        stanza,
    };
    Ok((entry, rest))
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
            stamp: seq - 1,
            id,
            with: "b@x.test",
            stanza,
        }
    }

    #[test]
    fn entries_come_back_as_written() {
        let written = [
            entry(1, "one", "<message xmlns='jabber:client'/>"),
            entry(i64::MAX, "", ""),
            entry(7, "🦀", "é\n\u{1}<>&"),
        ];
        let mut bytes = Vec::new();
        for e in &written {
            e.encode_into(&mut bytes);
        }
        assert_eq!(
            bytes.len(),
            written.iter().map(ChunkEntry::encoded_len).sum::<usize>()
        );
        assert_eq!(decode(&bytes).expect("decodes"), written);
        assert!(decode(b"").expect("empty").is_empty());
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
        let mut bytes = Vec::new();
        entry(1, "one", "<message/>").encode_into(&mut bytes);
        for damaged in [&bytes[..bytes.len() - 1], &bytes[..HEADER - 1], &bytes[1..]] {
            assert!(decode(damaged).is_err(), "{damaged:?}");
        }
        let mut capitals = bytes.clone();
        capitals[15] = b'A';
        assert!(decode(&capitals).is_err());
        let mut not_utf8 = bytes.clone();
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        assert!(decode(&not_utf8).is_err());
    }
}
