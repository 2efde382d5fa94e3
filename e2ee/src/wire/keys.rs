//! The key directory: devices upload KeyPackages to their home server;
//! anyone claims one package per device of a user with an IQ to that
//! user's bare JID; a device asks how many it has left.

use xso::{text::Base64, AsXml, FromXml};

use super::NS;

/// One TLS-serialised `KeyPackage` (in an `MLSMessage`), base64.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "key-package")]
pub struct KeyPackageData {
    /// The device it belongs to (set in claim answers).
    #[xml(attribute(default))]
    pub device: Option<String>,
    /// Whether this is the device's last-resort package (handed out when
    /// the others are used up, and not deleted).
    #[xml(attribute(default, name = "last-resort"))]
    pub last_resort: Option<bool>,
    /// The serialised package.
    #[xml(text = Base64)]
    pub data: Vec<u8>,
}

/// `<iq type='set'>` to one's own server: store these packages for a
/// device. A `last_resort` package replaces the previous one.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "upload")]
pub struct Upload {
    /// The uploading device.
    #[xml(attribute)]
    pub device: String,
    /// Single-use packages.
    #[xml(child(n = ..))]
    pub key_packages: Vec<KeyPackageData>,
    /// The last-resort package, if renewed.
    #[xml(child(default))]
    pub last_resort: Option<LastResort>,
}

impl Upload {
    /// An upload of these single-use packages and, if given, a new
    /// last-resort package for `device`.
    pub fn new(device: String, packages: Vec<Vec<u8>>, last_resort: Option<Vec<u8>>) -> Self {
        Self {
            device,
            key_packages: packages
                .into_iter()
                .map(|data| KeyPackageData {
                    device: None,
                    last_resort: None,
                    data,
                })
                .collect(),
            last_resort: last_resort.map(|data| LastResort { data }),
        }
    }
}

/// The last-resort package in an [`Upload`].
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "last-resort")]
pub struct LastResort {
    /// The serialised package.
    #[xml(text = Base64)]
    pub data: Vec<u8>,
}

/// `<iq type='get'>` for the count of a device's packages, and the answer
/// to it and to an [`Upload`].
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "count")]
pub struct Count {
    /// The device.
    #[xml(attribute)]
    pub device: String,
    /// Single-use packages left (absent in the request).
    #[xml(attribute(default))]
    pub remaining: Option<u32>,
    /// Set by the server when the device should upload more.
    #[xml(attribute(default))]
    pub low: Option<bool>,
}

/// `<iq type='set'>` to a user's bare JID: hand out one package per
/// device of that user (claiming consumes them, hence `set`).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "claim")]
pub struct Claim {}

/// The answer to a [`Claim`]: one package per device.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "key-packages")]
pub struct KeyPackages {
    /// The packages, each naming its device.
    #[xml(child(n = ..))]
    pub key_packages: Vec<KeyPackageData>,
}

/// Application condition of an `item-not-found` error to a [`Claim`]: the
/// user has no device with a package left (not even a last-resort one).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "no-key-packages")]
pub struct NoKeyPackages {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{rejects, round_trip};

    #[test]
    fn key_directory_elements_round_trip() {
        let up: Upload = round_trip(
            "<upload xmlns='urn:tern:mls:0' device='d1'><key-package>AAEC</key-package>\
             <key-package>AwQF</key-package><last-resort>BgcI</last-resort></upload>",
        );
        assert_eq!(up.key_packages.len(), 2);
        assert_eq!(up.last_resort.unwrap().data, vec![6, 7, 8]);
        let c: Count =
            round_trip("<count xmlns='urn:tern:mls:0' device='d1' remaining='3' low='true'/>");
        assert_eq!((c.remaining, c.low), (Some(3), Some(true)));
        round_trip::<Claim>("<claim xmlns='urn:tern:mls:0'/>");
        let kp: KeyPackages = round_trip(
            "<key-packages xmlns='urn:tern:mls:0'><key-package device='d1'>AAEC</key-package>\
             <key-package device='d2' last-resort='true'>AwQF</key-package></key-packages>",
        );
        assert_eq!(kp.key_packages[1].last_resort, Some(true));
        round_trip::<NoKeyPackages>("<no-key-packages xmlns='urn:tern:mls:0'/>");
    }

    #[test]
    fn key_directory_rejects_malformed() {
        rejects::<Upload>(
            "<upload xmlns='urn:tern:mls:0'><key-package>AAEC</key-package></upload>",
        );
        rejects::<Upload>(
            "<upload xmlns='urn:tern:mls:0' device='d'><key-package>!!</key-package></upload>",
        );
        rejects::<Count>("<count xmlns='urn:tern:mls:0' device='d' remaining='lots'/>");
        let kp: KeyPackages = round_trip(
            "<key-packages xmlns='urn:tern:mls:0'><x xmlns='urn:example:ext'/></key-packages>",
        );
        assert!(kp.key_packages.is_empty(), "unknown extensions are ignored");
    }
}
