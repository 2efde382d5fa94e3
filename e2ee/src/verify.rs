//! Checks of MLS objects that both clients and the server make, with no
//! client state: key packages, and who a credential names.

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;

use jid::BareJid;

use crate::device::CIPHERSUITE;
use crate::identity::{DeviceName, IdentityError};
use crate::wire::devices::DeviceList;

/// Why a key package was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPackageError {
    /// Not a TLS-serialised `MLSMessage` carrying a key package.
    #[error("not an MLS key package: {0}")]
    Malformed(String),
    /// Its signature, lifetime or ciphersuite is not acceptable.
    #[error("invalid key package: {0}")]
    Invalid(String),
    /// Its credential does not name a device.
    #[error("the key package's credential names no device: {0}")]
    Credential(#[from] IdentityError),
}

/// A key package that verified, with the device it belongs to.
#[derive(Debug, Clone)]
pub struct VerifiedKeyPackage {
    /// The package.
    pub package: KeyPackage,
    /// The device its credential names.
    pub device: DeviceName,
}

impl VerifiedKeyPackage {
    /// Whether it is a last-resort package (reusable).
    pub fn last_resort(&self) -> bool {
        self.package.last_resort()
    }
}

/// Parses and verifies a TLS-serialised key package: its signature and
/// lifetime, Tern's ciphersuite, and a credential naming a device.
pub fn verify_key_package(bytes: &[u8]) -> Result<VerifiedKeyPackage, KeyPackageError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| KeyPackageError::Malformed(e.to_string()))?;
    let MlsMessageBodyIn::KeyPackage(package) = message.extract() else {
        return Err(KeyPackageError::Malformed("not a key package".into()));
    };
    let package = package
        .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
        .map_err(|e| KeyPackageError::Invalid(e.to_string()))?;
    if package.ciphersuite() != CIPHERSUITE {
        return Err(KeyPackageError::Invalid(format!(
            "ciphersuite {:?} is not Tern's",
            package.ciphersuite()
        )));
    }
    let device = device_name(package.leaf_node().credential())?;
    Ok(VerifiedKeyPackage { package, device })
}

/// The device a credential names (`bare-jid#device-id` in a
/// BasicCredential).
pub fn device_name(credential: &Credential) -> Result<DeviceName, IdentityError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| IdentityError::Malformed("not a basic credential".into()))?;
    DeviceName::from_credential_identity(basic.identity())
}

/// Keeps the claimed key packages that are `user`'s published devices':
/// each must verify, its credential must name `user` and a device of
/// `devices`, and its leaf must carry that device's published signature
/// key. A server (or a peer on another one) could otherwise slip in a
/// device of its own. Returns the packages kept and, for each set aside,
/// why.
pub fn published_packages(
    user: &BareJid,
    devices: &DeviceList,
    packages: Vec<Vec<u8>>,
) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for bytes in packages {
        let verified = match verify_key_package(&bytes) {
            Ok(verified) => verified,
            Err(e) => {
                refused.push(e.to_string());
                continue;
            }
        };
        if verified.device.jid != *user {
            refused.push(format!(
                "a key package of {} claimed for {user}",
                verified.device.jid
            ));
            continue;
        }
        let id = verified.device.device.to_string();
        let key = verified.package.leaf_node().signature_key().as_slice();
        match devices.devices.iter().find(|d| d.id == id) {
            None => refused.push(format!("device {id} is not in {user}'s device list")),
            Some(listed) if listed.key != key => {
                refused.push(format!("device {id}'s key is not the one {user} published"))
            }
            Some(_) => kept.push(bytes),
        }
    }
    (kept, refused)
}
