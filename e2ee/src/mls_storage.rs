//! openmls' state as key/value rows, through a storage provider whose
//! writes collect in the operation's [`Journal`]; the caller writes the
//! journal's changes in its own transaction at the end of the operation.
//! The client store and the server's group hub both keep MLS state this
//! way.
//!
//! openmls calls its storage provider many times per operation (every
//! message rewrites the group's message secrets). Going to SQLite on each
//! call, as `openmls_sqlx_storage` does with a hop to sqlx's worker thread
//! per call, cost several times the cryptography. Here a write costs a
//! serialisation and a map update; reads see the operation's own writes
//! first and go to the [`RowSource`] only for what the operation has not
//! touched yet (loading a group, reading a key package). A failed
//! operation drops its journal.
//!
//! A row's key is a label naming the kind of state, `:`, and the JSON of
//! openmls' key; its value is the JSON of openmls' entity (lists are JSON
//! arrays).

use std::cell::RefCell;
use std::collections::HashMap;

use openmls_traits::storage::{traits, StorageProvider, CURRENT_VERSION};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Where a provider reads the rows its journal does not hold: the
/// committed state.
pub trait RowSource {
    /// The value of the row `key`, if there is one.
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
}

/// Rows loaded beforehand (the hub loads a group's rows before working on
/// it).
impl RowSource for HashMap<Vec<u8>, Vec<u8>> {
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get(key).cloned())
    }
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// State did not serialise or deserialise.
    #[error("MLS state encoding: {0}")]
    Codec(#[from] serde_json::Error),
    /// The rows could not be read.
    #[error("MLS state database: {0}")]
    Source(String),
    /// A write through a provider opened for reading only.
    #[error("MLS state written through a read-only provider")]
    ReadOnly,
}

/// What an operation read or wrote, by row key.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// As in the database (`None`: no row).
    Read(Option<Vec<u8>>),
    /// To be written (`None`: to be deleted).
    Written(Option<Vec<u8>>),
}

impl Entry {
    fn value(&self) -> Option<&[u8]> {
        match self {
            Entry::Read(value) | Entry::Written(value) => value.as_deref(),
        }
    }
}

/// The MLS state an operation read and wrote.
#[derive(Debug, Default)]
pub struct Journal {
    entries: RefCell<HashMap<Vec<u8>, Entry>>,
}

impl Journal {
    /// What the operation changed: each row's new value, `None` for a
    /// deleted row.
    pub fn into_changes(self) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        self.entries
            .into_inner()
            .into_iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Written(value) => Some((key, value)),
                Entry::Read(_) => None,
            })
    }
}

/// openmls' storage provider for one operation: writes go to the
/// operation's journal, reads see the journal first and the database
/// second.
///
/// The caller serialises operations on a group, so nothing changes a
/// group's rows between an operation's reads and its commit.
pub struct MlsStorage<'a, S: RowSource + ?Sized> {
    source: &'a S,
    /// `None`: reading only (loading a group).
    journal: Option<&'a Journal>,
    /// Rows read by a read-only provider, so that one load reads each once.
    reads: Journal,
}

impl<'a, S: RowSource + ?Sized> MlsStorage<'a, S> {
    /// Storage writing into `journal`, reading from `source`.
    pub fn new(source: &'a S, journal: &'a Journal) -> Self {
        Self {
            source,
            journal: Some(journal),
            reads: Journal::default(),
        }
    }

    /// Storage that only reads; a write fails with [`StorageError::ReadOnly`].
    pub fn read_only(source: &'a S) -> Self {
        Self {
            source,
            journal: None,
            reads: Journal::default(),
        }
    }

    fn journal(&self) -> &Journal {
        self.journal.unwrap_or(&self.reads)
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(entry) = self.journal().entries.borrow().get(key) {
            return Ok(entry.value().map(<[u8]>::to_vec));
        }
        let value = self.source.row(key)?;
        self.journal()
            .entries
            .borrow_mut()
            .insert(key.to_vec(), Entry::Read(value.clone()));
        Ok(value)
    }

    fn set_raw(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StorageError> {
        let journal = self.journal.ok_or(StorageError::ReadOnly)?;
        journal
            .entries
            .borrow_mut()
            .insert(key, Entry::Written(value));
        Ok(())
    }

    fn get<V: DeserializeOwned>(
        &self,
        label: &str,
        key: &impl Serialize,
    ) -> Result<Option<V>, StorageError> {
        self.get_raw(&row_key(label, key)?)?
            .map(|bytes| serde_json::from_slice(&bytes))
            .transpose()
            .map_err(Into::into)
    }

    fn put(
        &self,
        label: &str,
        key: &impl Serialize,
        value: &(impl Serialize + ?Sized),
    ) -> Result<(), StorageError> {
        self.set_raw(row_key(label, key)?, Some(serde_json::to_vec(value)?))
    }

    fn delete(&self, label: &str, key: &impl Serialize) -> Result<(), StorageError> {
        self.set_raw(row_key(label, key)?, None)
    }

    fn list<V: DeserializeOwned>(
        &self,
        label: &str,
        key: &impl Serialize,
    ) -> Result<Vec<V>, StorageError> {
        Ok(self.get(label, key)?.unwrap_or_default())
    }

    /// Changes the list stored under `key` (an absent list is empty).
    fn edit_list(
        &self,
        label: &str,
        key: &impl Serialize,
        edit: impl FnOnce(&mut Vec<serde_json::Value>),
    ) -> Result<(), StorageError> {
        let mut list: Vec<serde_json::Value> = self.list(label, key)?;
        edit(&mut list);
        self.put(label, key, &list)
    }

    fn push(
        &self,
        label: &str,
        key: &impl Serialize,
        item: &impl Serialize,
    ) -> Result<(), StorageError> {
        let item = serde_json::to_value(item)?;
        self.edit_list(label, key, |list| list.push(item))
    }

    fn remove_first(
        &self,
        label: &str,
        key: &impl Serialize,
        item: &impl Serialize,
    ) -> Result<(), StorageError> {
        let item = serde_json::to_value(item)?;
        self.edit_list(label, key, |list| {
            if let Some(position) = list.iter().position(|stored| stored == &item) {
                list.remove(position);
            }
        })
    }
}

/// The row key of `key` under `label`.
fn row_key(label: &str, key: &impl Serialize) -> Result<Vec<u8>, serde_json::Error> {
    let mut row = Vec::with_capacity(label.len() + 40);
    row.extend_from_slice(label.as_bytes());
    row.push(b':');
    serde_json::to_writer(&mut row, key)?;
    Ok(row)
}

// The labels of the kinds of state.
const JOIN_CONFIG: &str = "join_config";
const OWN_LEAF_NODES: &str = "own_leaf_nodes";
const PROPOSAL: &str = "proposal";
const PROPOSAL_REFS: &str = "proposal_refs";
const TREE: &str = "tree";
const INTERIM_TRANSCRIPT_HASH: &str = "interim_transcript_hash";
const CONTEXT: &str = "context";
const CONFIRMATION_TAG: &str = "confirmation_tag";
const GROUP_STATE: &str = "group_state";
const MESSAGE_SECRETS: &str = "message_secrets";
const RESUMPTION_PSK_STORE: &str = "resumption_psk_store";
const OWN_LEAF_INDEX: &str = "own_leaf_index";
const EPOCH_SECRETS: &str = "epoch_secrets";
const SIGNATURE_KEY_PAIR: &str = "signature_key_pair";
const ENCRYPTION_KEY_PAIR: &str = "encryption_key_pair";
const EPOCH_KEY_PAIRS: &str = "epoch_key_pairs";
const KEY_PACKAGE: &str = "key_package";
const PSK: &str = "psk";

/// The key of a group's epoch key pairs for one leaf.
fn epoch_key<'k, G: Serialize, E: Serialize>(
    group_id: &'k G,
    epoch: &'k E,
    leaf_index: u32,
) -> (&'k G, &'k E, u32) {
    (group_id, epoch, leaf_index)
}

const V: u16 = CURRENT_VERSION;

impl<Src: RowSource + ?Sized> StorageProvider<V> for MlsStorage<'_, Src> {
    type Error = StorageError;

    fn write_mls_join_config<G: traits::GroupId<V>, C: traits::MlsGroupJoinConfig<V>>(
        &self,
        group_id: &G,
        config: &C,
    ) -> Result<(), Self::Error> {
        self.put(JOIN_CONFIG, group_id, config)
    }

    fn append_own_leaf_node<G: traits::GroupId<V>, L: traits::LeafNode<V>>(
        &self,
        group_id: &G,
        leaf_node: &L,
    ) -> Result<(), Self::Error> {
        self.push(OWN_LEAF_NODES, group_id, leaf_node)
    }

    fn queue_proposal<
        G: traits::GroupId<V>,
        R: traits::ProposalRef<V>,
        P: traits::QueuedProposal<V>,
    >(
        &self,
        group_id: &G,
        proposal_ref: &R,
        proposal: &P,
    ) -> Result<(), Self::Error> {
        self.put(PROPOSAL, &(group_id, proposal_ref), proposal)?;
        self.push(PROPOSAL_REFS, group_id, proposal_ref)
    }

    fn write_tree<G: traits::GroupId<V>, T: traits::TreeSync<V>>(
        &self,
        group_id: &G,
        tree: &T,
    ) -> Result<(), Self::Error> {
        self.put(TREE, group_id, tree)
    }

    fn write_interim_transcript_hash<G: traits::GroupId<V>, H: traits::InterimTranscriptHash<V>>(
        &self,
        group_id: &G,
        hash: &H,
    ) -> Result<(), Self::Error> {
        self.put(INTERIM_TRANSCRIPT_HASH, group_id, hash)
    }

    fn write_context<G: traits::GroupId<V>, C: traits::GroupContext<V>>(
        &self,
        group_id: &G,
        context: &C,
    ) -> Result<(), Self::Error> {
        self.put(CONTEXT, group_id, context)
    }

    fn write_confirmation_tag<G: traits::GroupId<V>, T: traits::ConfirmationTag<V>>(
        &self,
        group_id: &G,
        tag: &T,
    ) -> Result<(), Self::Error> {
        self.put(CONFIRMATION_TAG, group_id, tag)
    }

    fn write_group_state<S: traits::GroupState<V>, G: traits::GroupId<V>>(
        &self,
        group_id: &G,
        state: &S,
    ) -> Result<(), Self::Error> {
        self.put(GROUP_STATE, group_id, state)
    }

    fn write_message_secrets<G: traits::GroupId<V>, S: traits::MessageSecrets<V>>(
        &self,
        group_id: &G,
        secrets: &S,
    ) -> Result<(), Self::Error> {
        self.put(MESSAGE_SECRETS, group_id, secrets)
    }

    fn write_resumption_psk_store<G: traits::GroupId<V>, S: traits::ResumptionPskStore<V>>(
        &self,
        group_id: &G,
        store: &S,
    ) -> Result<(), Self::Error> {
        self.put(RESUMPTION_PSK_STORE, group_id, store)
    }

    fn write_own_leaf_index<G: traits::GroupId<V>, I: traits::LeafNodeIndex<V>>(
        &self,
        group_id: &G,
        index: &I,
    ) -> Result<(), Self::Error> {
        self.put(OWN_LEAF_INDEX, group_id, index)
    }

    fn write_group_epoch_secrets<G: traits::GroupId<V>, S: traits::GroupEpochSecrets<V>>(
        &self,
        group_id: &G,
        secrets: &S,
    ) -> Result<(), Self::Error> {
        self.put(EPOCH_SECRETS, group_id, secrets)
    }

    fn write_signature_key_pair<
        K: traits::SignaturePublicKey<V>,
        P: traits::SignatureKeyPair<V>,
    >(
        &self,
        public_key: &K,
        key_pair: &P,
    ) -> Result<(), Self::Error> {
        self.put(SIGNATURE_KEY_PAIR, public_key, key_pair)
    }

    fn write_encryption_key_pair<K: traits::EncryptionKey<V>, P: traits::HpkeKeyPair<V>>(
        &self,
        public_key: &K,
        key_pair: &P,
    ) -> Result<(), Self::Error> {
        self.put(ENCRYPTION_KEY_PAIR, public_key, key_pair)
    }

    fn write_encryption_epoch_key_pairs<
        G: traits::GroupId<V>,
        E: traits::EpochKey<V>,
        P: traits::HpkeKeyPair<V>,
    >(
        &self,
        group_id: &G,
        epoch: &E,
        leaf_index: u32,
        key_pairs: &[P],
    ) -> Result<(), Self::Error> {
        self.put(
            EPOCH_KEY_PAIRS,
            &epoch_key(group_id, epoch, leaf_index),
            key_pairs,
        )
    }

    fn write_key_package<R: traits::HashReference<V>, P: traits::KeyPackage<V>>(
        &self,
        hash_ref: &R,
        key_package: &P,
    ) -> Result<(), Self::Error> {
        self.put(KEY_PACKAGE, hash_ref, key_package)
    }

    fn write_psk<I: traits::PskId<V>, B: traits::PskBundle<V>>(
        &self,
        psk_id: &I,
        psk: &B,
    ) -> Result<(), Self::Error> {
        self.put(PSK, psk_id, psk)
    }

    fn mls_group_join_config<G: traits::GroupId<V>, C: traits::MlsGroupJoinConfig<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<C>, Self::Error> {
        self.get(JOIN_CONFIG, group_id)
    }

    fn own_leaf_nodes<G: traits::GroupId<V>, L: traits::LeafNode<V>>(
        &self,
        group_id: &G,
    ) -> Result<Vec<L>, Self::Error> {
        self.list(OWN_LEAF_NODES, group_id)
    }

    fn queued_proposal_refs<G: traits::GroupId<V>, R: traits::ProposalRef<V>>(
        &self,
        group_id: &G,
    ) -> Result<Vec<R>, Self::Error> {
        self.list(PROPOSAL_REFS, group_id)
    }

    fn queued_proposals<
        G: traits::GroupId<V>,
        R: traits::ProposalRef<V>,
        P: traits::QueuedProposal<V>,
    >(
        &self,
        group_id: &G,
    ) -> Result<Vec<(R, P)>, Self::Error> {
        let refs: Vec<R> = self.list(PROPOSAL_REFS, group_id)?;
        let mut proposals = Vec::with_capacity(refs.len());
        for proposal_ref in refs {
            // A listed proposal without its row is skipped, as if removed.
            if let Some(proposal) = self.get(PROPOSAL, &(group_id, &proposal_ref))? {
                proposals.push((proposal_ref, proposal));
            }
        }
        Ok(proposals)
    }

    fn tree<G: traits::GroupId<V>, T: traits::TreeSync<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<T>, Self::Error> {
        self.get(TREE, group_id)
    }

    fn group_context<G: traits::GroupId<V>, C: traits::GroupContext<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<C>, Self::Error> {
        self.get(CONTEXT, group_id)
    }

    fn interim_transcript_hash<G: traits::GroupId<V>, H: traits::InterimTranscriptHash<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<H>, Self::Error> {
        self.get(INTERIM_TRANSCRIPT_HASH, group_id)
    }

    fn confirmation_tag<G: traits::GroupId<V>, T: traits::ConfirmationTag<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<T>, Self::Error> {
        self.get(CONFIRMATION_TAG, group_id)
    }

    fn group_state<S: traits::GroupState<V>, G: traits::GroupId<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<S>, Self::Error> {
        self.get(GROUP_STATE, group_id)
    }

    fn message_secrets<G: traits::GroupId<V>, S: traits::MessageSecrets<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<S>, Self::Error> {
        self.get(MESSAGE_SECRETS, group_id)
    }

    fn resumption_psk_store<G: traits::GroupId<V>, S: traits::ResumptionPskStore<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<S>, Self::Error> {
        self.get(RESUMPTION_PSK_STORE, group_id)
    }

    fn own_leaf_index<G: traits::GroupId<V>, I: traits::LeafNodeIndex<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<I>, Self::Error> {
        self.get(OWN_LEAF_INDEX, group_id)
    }

    fn group_epoch_secrets<G: traits::GroupId<V>, S: traits::GroupEpochSecrets<V>>(
        &self,
        group_id: &G,
    ) -> Result<Option<S>, Self::Error> {
        self.get(EPOCH_SECRETS, group_id)
    }

    fn signature_key_pair<K: traits::SignaturePublicKey<V>, P: traits::SignatureKeyPair<V>>(
        &self,
        public_key: &K,
    ) -> Result<Option<P>, Self::Error> {
        self.get(SIGNATURE_KEY_PAIR, public_key)
    }

    fn encryption_key_pair<P: traits::HpkeKeyPair<V>, K: traits::EncryptionKey<V>>(
        &self,
        public_key: &K,
    ) -> Result<Option<P>, Self::Error> {
        self.get(ENCRYPTION_KEY_PAIR, public_key)
    }

    fn encryption_epoch_key_pairs<
        G: traits::GroupId<V>,
        E: traits::EpochKey<V>,
        P: traits::HpkeKeyPair<V>,
    >(
        &self,
        group_id: &G,
        epoch: &E,
        leaf_index: u32,
    ) -> Result<Vec<P>, Self::Error> {
        self.list(EPOCH_KEY_PAIRS, &epoch_key(group_id, epoch, leaf_index))
    }

    fn key_package<R: traits::HashReference<V>, P: traits::KeyPackage<V>>(
        &self,
        hash_ref: &R,
    ) -> Result<Option<P>, Self::Error> {
        self.get(KEY_PACKAGE, hash_ref)
    }

    fn psk<B: traits::PskBundle<V>, I: traits::PskId<V>>(
        &self,
        psk_id: &I,
    ) -> Result<Option<B>, Self::Error> {
        self.get(PSK, psk_id)
    }

    fn remove_proposal<G: traits::GroupId<V>, R: traits::ProposalRef<V>>(
        &self,
        group_id: &G,
        proposal_ref: &R,
    ) -> Result<(), Self::Error> {
        self.remove_first(PROPOSAL_REFS, group_id, proposal_ref)?;
        self.delete(PROPOSAL, &(group_id, proposal_ref))
    }

    fn delete_own_leaf_nodes<G: traits::GroupId<V>>(
        &self,
        group_id: &G,
    ) -> Result<(), Self::Error> {
        self.delete(OWN_LEAF_NODES, group_id)
    }

    fn delete_group_config<G: traits::GroupId<V>>(&self, group_id: &G) -> Result<(), Self::Error> {
        self.delete(JOIN_CONFIG, group_id)
    }

    fn delete_tree<G: traits::GroupId<V>>(&self, group_id: &G) -> Result<(), Self::Error> {
        self.delete(TREE, group_id)
    }

    fn delete_confirmation_tag<G: traits::GroupId<V>>(
        &self,
        group_id: &G,
    ) -> Result<(), Self::Error> {
        self.delete(CONFIRMATION_TAG, group_id)
    }

    fn delete_group_state<G: traits::GroupId<V>>(&self, group_id: &G) -> Result<(), Self::Error> {
        self.delete(GROUP_STATE, group_id)
    }

    fn delete_context<G: traits::GroupId<V>>(&self, group_id: &G) -> Result<(), Self::Error> {
        self.delete(CONTEXT, group_id)
    }

    fn delete_interim_transcript_hash<G: traits::GroupId<V>>(
        &self,
        group_id: &G,
    ) -> Result<(), Self::Error> {
        self.delete(INTERIM_TRANSCRIPT_HASH, group_id)
    }

    fn delete_message_secrets<G: traits::GroupId<V>>(
        &self,
        group_id: &G,
    ) -> Result<(), Self::Error> {
        self.delete(MESSAGE_SECRETS, group_id)
    }

    fn delete_all_resumption_psk_secrets<G: traits::GroupId<V>>(
        &self,
        group_id: &G,
    ) -> Result<(), Self::Error> {
        self.delete(RESUMPTION_PSK_STORE, group_id)
    }

    fn delete_own_leaf_index<G: traits::GroupId<V>>(
        &self,
        group_id: &G,
    ) -> Result<(), Self::Error> {
        self.delete(OWN_LEAF_INDEX, group_id)
    }

    fn delete_group_epoch_secrets<G: traits::GroupId<V>>(
        &self,
        group_id: &G,
    ) -> Result<(), Self::Error> {
        self.delete(EPOCH_SECRETS, group_id)
    }

    fn clear_proposal_queue<G: traits::GroupId<V>, R: traits::ProposalRef<V>>(
        &self,
        group_id: &G,
    ) -> Result<(), Self::Error> {
        let refs: Vec<R> = self.list(PROPOSAL_REFS, group_id)?;
        for proposal_ref in refs {
            self.delete(PROPOSAL, &(group_id, &proposal_ref))?;
        }
        self.delete(PROPOSAL_REFS, group_id)
    }

    fn delete_signature_key_pair<K: traits::SignaturePublicKey<V>>(
        &self,
        public_key: &K,
    ) -> Result<(), Self::Error> {
        self.delete(SIGNATURE_KEY_PAIR, public_key)
    }

    fn delete_encryption_key_pair<K: traits::EncryptionKey<V>>(
        &self,
        public_key: &K,
    ) -> Result<(), Self::Error> {
        self.delete(ENCRYPTION_KEY_PAIR, public_key)
    }

    fn delete_encryption_epoch_key_pairs<G: traits::GroupId<V>, E: traits::EpochKey<V>>(
        &self,
        group_id: &G,
        epoch: &E,
        leaf_index: u32,
    ) -> Result<(), Self::Error> {
        self.delete(EPOCH_KEY_PAIRS, &epoch_key(group_id, epoch, leaf_index))
    }

    fn delete_key_package<R: traits::HashReference<V>>(
        &self,
        hash_ref: &R,
    ) -> Result<(), Self::Error> {
        self.delete(KEY_PACKAGE, hash_ref)
    }

    fn delete_psk<I: traits::PskId<V>>(&self, psk_id: &I) -> Result<(), Self::Error> {
        self.delete(PSK, psk_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_the_operation_s_writes_and_deletes_and_then_the_source() {
        let committed: HashMap<Vec<u8>, Vec<u8>> =
            [(row_key(TREE, &"g0").unwrap(), b"[9]".to_vec())].into();
        let journal = Journal::default();
        let storage = MlsStorage::new(&committed, &journal);
        assert_eq!(storage.get::<Vec<u8>>(TREE, &"g0").unwrap(), Some(vec![9]));
        storage.put(TREE, &"g1", &[1, 2, 3]).unwrap();
        storage.put(TREE, &"g2", &[4]).unwrap();
        storage.push(OWN_LEAF_NODES, &"g1", &"leaf a").unwrap();
        storage.push(OWN_LEAF_NODES, &"g1", &"leaf b").unwrap();
        storage
            .remove_first(OWN_LEAF_NODES, &"g1", &"leaf a")
            .unwrap();
        storage.delete(TREE, &"g2").unwrap();
        storage.delete(TREE, &"g0").unwrap();
        assert_eq!(
            storage.get::<Vec<u8>>(TREE, &"g1").unwrap(),
            Some(vec![1, 2, 3])
        );
        assert_eq!(storage.get::<Vec<u8>>(TREE, &"g2").unwrap(), None);
        assert_eq!(storage.get::<Vec<u8>>(TREE, &"g0").unwrap(), None);
        assert_eq!(
            storage.list::<String>(OWN_LEAF_NODES, &"g1").unwrap(),
            ["leaf b"]
        );
        drop(storage);

        let changes: HashMap<_, _> = journal.into_changes().collect();
        assert_eq!(changes.len(), 4, "reads are not changes");
        assert_eq!(changes[&row_key(TREE, &"g0").unwrap()], None);
        assert_eq!(
            changes[&row_key(TREE, &"g1").unwrap()],
            Some(b"[1,2,3]".to_vec())
        );

        let reader = MlsStorage::read_only(&committed);
        assert!(matches!(
            reader.put(TREE, &"g3", &[0]),
            Err(StorageError::ReadOnly)
        ));
    }
}
