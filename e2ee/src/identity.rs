//! Device identity: each device of a user has its own ed25519 signature
//! key and a random device id, and is one MLS leaf whose BasicCredential
//! names the user's bare JID and the device id (`alice@a.example#<id>`).
//!
//! People compare identities with a [`fingerprint`] per device and a
//! [`safety_number`] per pair of users.

use std::fmt;

use jid::BareJid;
use rand::Rng;
use sha2::{Digest, Sha256, Sha512};

/// Errors reading an identity from a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The credential is not `bare-jid#device-id`.
    #[error("credential does not name a JID and a device: {0:?}")]
    Malformed(String),
}

/// A device id: 16 lowercase hex digits, random.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(format!("{:016x}", rand::thread_rng().gen::<u64>()))
    }

    /// Parses an id (16 hex digits).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a device is: the user's bare JID and the device id, as carried in
/// the MLS credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceName {
    /// The user.
    pub jid: BareJid,
    /// The device.
    pub device: DeviceId,
}

impl DeviceName {
    /// The credential identity bytes: `bare-jid#device-id` in UTF-8. A
    /// domain cannot contain `#`, so the last `#` separates the two.
    pub fn to_credential_identity(&self) -> Vec<u8> {
        format!("{}#{}", self.jid, self.device).into_bytes()
    }

    /// Reads the credential identity bytes.
    pub fn from_credential_identity(bytes: &[u8]) -> Result<Self, IdentityError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| IdentityError::Malformed(format!("{bytes:?}")))?;
        let malformed = || IdentityError::Malformed(text.to_owned());
        let (jid, device) = text.rsplit_once('#').ok_or_else(malformed)?;
        let jid = BareJid::new(jid).map_err(|_| malformed())?;
        if jid.node().is_none() || jid.as_str() != text[..text.len() - device.len() - 1].to_owned()
        {
            return Err(malformed());
        }
        Ok(Self {
            jid,
            device: DeviceId::parse(device).ok_or_else(malformed)?,
        })
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.jid, self.device)
    }
}

/// The fingerprint of a device's signature key, for people to compare:
/// the SHA-256 of the key as 8 groups of 4 hex digits (128 bits).
pub fn fingerprint(signature_key: &[u8]) -> String {
    let digest = Sha256::digest(signature_key);
    digest[..16]
        .chunks(2)
        .map(|c| format!("{:02X}{:02X}", c[0], c[1]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The safety number of two users, the same on both sides: 60 digits in
/// 12 groups of 5, 30 derived from each user's JID and all of their
/// device keys (so any device change changes it). Users compare it
/// out of band to verify each other.
pub fn safety_number(a: (&BareJid, &[Vec<u8>]), b: (&BareJid, &[Vec<u8>])) -> String {
    let mut halves = [user_digits(a.0, a.1), user_digits(b.0, b.1)];
    halves.sort();
    halves
        .concat()
        .chunks(5)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// 30 digits for one user: iterated SHA-512 over version, JID and the
/// sorted device keys, read as six 40-bit numbers mod 100000.
fn user_digits(jid: &BareJid, keys: &[Vec<u8>]) -> Vec<char> {
    let mut sorted: Vec<&Vec<u8>> = keys.iter().collect();
    sorted.sort();
    let mut seed = Sha512::new();
    seed.update(b"tern-safety-number-v1\0");
    seed.update(jid.as_str().as_bytes());
    for key in &sorted {
        seed.update([0u8]);
        seed.update(key);
    }
    let mut digest = seed.finalize();
    // Stretch, as Signal does, to make targeted collisions costlier.
    for _ in 0..1024 {
        digest = Sha512::digest(digest);
    }
    digest[..30]
        .chunks(5)
        .flat_map(|chunk| {
            let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) % 100_000;
            format!("{n:05}").chars().collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[test]
    fn credential_identity_round_trips_and_rejects_junk() {
        let name = DeviceName {
            jid: jid("alice@a.example"),
            device: DeviceId::random(),
        };
        let bytes = name.to_credential_identity();
        assert_eq!(DeviceName::from_credential_identity(&bytes).unwrap(), name);
        for bad in [
            &b"alice@a.example"[..],
            b"a.example#0123456789abcdef",
            b"alice@a.example#xyz",
            b"\xff#0123456789abcdef",
        ] {
            assert!(
                DeviceName::from_credential_identity(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn safety_number_is_symmetric_and_changes_with_devices() {
        let (alice, bob) = (jid("alice@a.example"), jid("bob@b.example"));
        let ka = vec![vec![1u8; 32], vec![2u8; 32]];
        let kb = vec![vec![3u8; 32]];
        let n1 = safety_number((&alice, &ka), (&bob, &kb));
        assert_eq!(n1, safety_number((&bob, &kb), (&alice, &ka)));
        assert_eq!(n1.len(), 60 + 11);
        assert!(n1
            .split(' ')
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
        let reordered = vec![vec![2u8; 32], vec![1u8; 32]];
        assert_eq!(n1, safety_number((&alice, &reordered), (&bob, &kb)));
        let kb2 = vec![vec![3u8; 32], vec![4u8; 32]];
        assert_ne!(n1, safety_number((&alice, &ka), (&bob, &kb2)));
    }

    #[test]
    fn fingerprints_differ_per_key() {
        let f = fingerprint(&[1u8; 32]);
        assert_eq!(f.len(), 8 * 4 + 7);
        assert_ne!(f, fingerprint(&[2u8; 32]));
    }
}
