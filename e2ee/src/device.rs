//! A device: the MLS client of one device of a user. Its signature key,
//! credential and key packages live in the [`ClientStore`]; conversations
//! are in [`crate::conversation`].

use jid::BareJid;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;

use crate::error::{mls, Error};
use crate::identity::{fingerprint, DeviceId, DeviceName};
use crate::store::{records, Batch, ClientStore, TernProvider};

/// The one ciphersuite Tern uses.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// One device's MLS client.
pub struct Device {
    pub(crate) store: ClientStore,
    pub(crate) crypto: RustCrypto,
    pub(crate) name: DeviceName,
    pub(crate) signer: SignatureKeyPair,
    /// Loaded groups; also serialises operations on conversations.
    pub(crate) groups: tokio::sync::Mutex<crate::conversation::GroupCache>,
    /// Hashes of MLS messages sent in this session, with their kind, to
    /// recognise their echo without a query.
    pub(crate) sent: std::sync::Mutex<std::collections::HashMap<Vec<u8>, &'static str>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Creates a new device for `jid` in an empty store: a fresh signature
    /// key and device id.
    pub async fn create(store: ClientStore, jid: BareJid) -> Result<Self, Error> {
        if let Some((jid, id, _)) = store.with(records::device)? {
            return Err(Error::DeviceExists(format!("{jid}#{id}")));
        }
        let crypto = RustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(mls)?;
        let name = DeviceName {
            jid,
            device: DeviceId::random(),
        };
        let mut batch = Batch::default();
        signer
            .store(TernProvider::new(&crypto, &store, &batch).storage())
            .map_err(mls)?;
        records::insert_device(&mut batch, &name, signer.public());
        store.apply(batch)?;
        Ok(Self::assemble(store, crypto, name, signer))
    }

    /// Opens the device kept in `store`.
    pub async fn open(store: ClientStore) -> Result<Self, Error> {
        let (jid, device, key) = store.with(records::device)?.ok_or(Error::NoDevice)?;
        let name = DeviceName {
            jid: BareJid::new(&jid).map_err(|_| Error::Malformed("stored JID"))?,
            device: DeviceId::parse(&device).ok_or(Error::Malformed("stored device id"))?,
        };
        let crypto = RustCrypto::default();
        let signer = {
            let provider = TernProvider::read_only(&crypto, &store);
            SignatureKeyPair::read(provider.storage(), &key, CIPHERSUITE.signature_algorithm())
        }
        .ok_or(Error::Malformed("signature key missing from the store"))?;
        Ok(Self::assemble(store, crypto, name, signer))
    }

    /// A device with nothing loaded in memory yet.
    fn assemble(
        store: ClientStore,
        crypto: RustCrypto,
        name: DeviceName,
        signer: SignatureKeyPair,
    ) -> Self {
        Self {
            store,
            crypto,
            name,
            signer,
            groups: Default::default(),
            sent: Default::default(),
        }
    }

    /// Who this device is.
    pub fn name(&self) -> &DeviceName {
        &self.name
    }

    /// The device's signature public key.
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The device's fingerprint, for people to compare.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.signer.public())
    }

    /// The store.
    pub fn store(&self) -> &ClientStore {
        &self.store
    }

    pub(crate) fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.name.to_credential_identity()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    /// Generates `count` single-use key packages, TLS-serialised for the
    /// key directory.
    pub async fn generate_key_packages(&self, count: usize) -> Result<Vec<Vec<u8>>, Error> {
        self.new_key_packages(count, false).await
    }

    /// Generates a last-resort key package (reusable, handed out when the
    /// single-use ones are gone).
    pub async fn generate_last_resort_key_package(&self) -> Result<Vec<u8>, Error> {
        let mut packages = self.new_key_packages(1, true).await?;
        packages
            .pop()
            .ok_or(Error::Malformed("no key package generated"))
    }

    /// How many single-use key packages were generated and not consumed.
    pub async fn unconsumed_key_packages(&self) -> Result<u32, Error> {
        Ok(self.store.with(records::unconsumed_key_packages)?)
    }

    /// How many key packages to generate so that `target` are available,
    /// if fewer than `threshold` are (0 otherwise).
    pub async fn key_packages_to_replenish(
        &self,
        threshold: u32,
        target: u32,
    ) -> Result<u32, Error> {
        let left = self.unconsumed_key_packages().await?;
        Ok(if left < threshold {
            target.saturating_sub(left)
        } else {
            0
        })
    }

    async fn new_key_packages(
        &self,
        count: usize,
        last_resort: bool,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let mut batch = Batch::default();
        let mut out = Vec::with_capacity(count);
        let mut refs = Vec::with_capacity(count);
        {
            let provider = TernProvider::new(&self.crypto, &self.store, &batch);
            tokio::task::block_in_place(|| -> Result<(), Error> {
                for _ in 0..count {
                    // Every package says it understands the last-resort
                    // extension, which a last-resort package carries.
                    let mut builder = KeyPackage::builder().leaf_node_capabilities(
                        Capabilities::builder()
                            .extensions(vec![ExtensionType::LastResort])
                            .build(),
                    );
                    if last_resort {
                        builder = builder.mark_as_last_resort();
                    }
                    let bundle = builder
                        .build(CIPHERSUITE, &provider, &self.signer, self.credential())
                        .map_err(mls)?;
                    let package = bundle.key_package();
                    refs.push(
                        package
                            .hash_ref(provider.crypto())
                            .map_err(mls)?
                            .as_slice()
                            .to_vec(),
                    );
                    let message = MlsMessageOut::from(package.clone());
                    out.push(message.tls_serialize_detached().map_err(mls)?);
                }
                Ok(())
            })?;
        }
        for hash_ref in refs {
            records::insert_key_package(&mut batch, hash_ref, last_resort);
        }
        self.store.apply(batch)?;
        Ok(out)
    }
}
