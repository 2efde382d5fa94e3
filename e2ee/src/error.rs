//! Errors of the client core: one enum for operations, one for
//! processing incoming messages (each rejection cause is its own variant,
//! and a rejected message leaves the group as it was).

use crate::envelope::EnvelopeError;
use crate::store::StoreError;

/// Errors of client operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The store holds no device yet (or a different one).
    #[error("no device in this store: create one first")]
    NoDevice,
    /// The store already holds a device.
    #[error("this store already holds device {0}")]
    DeviceExists(String),
    /// No conversation with that group id.
    #[error("no such conversation")]
    UnknownGroup,
    /// Bytes that should be an MLS message of some kind are not.
    #[error("malformed MLS data: {0}")]
    Malformed(&'static str),
    /// A claimed key package does not verify.
    #[error("invalid key package: {0}")]
    InvalidKeyPackage(String),
    /// The user to remove has no device in the group.
    #[error("{0} is not a member of this conversation")]
    NotAMember(String),
    /// Our previous commit still awaits the hub's answer.
    #[error("a commit of this device is still pending at the hub")]
    CommitPending,
    /// This device was removed from the group.
    #[error("this device is no longer a member of the conversation")]
    Evicted,
    /// A Welcome for another device (another device of ours, say).
    #[error("the welcome is not for this device")]
    WelcomeNotForUs,
    /// A Welcome whose group is not the one its address names: the
    /// address's local part is the group id in lowercase hex.
    #[error("the welcome's group is not the group at {0}")]
    WelcomeForAnotherGroup(String),
    /// A Welcome for a conversation this device is a member of: joining
    /// would replace it (a forged or replayed Welcome).
    #[error("a welcome for a conversation this device is already in")]
    WelcomeForActiveGroup,
    /// openmls refused the operation.
    #[error("MLS: {0}")]
    Mls(String),
}

/// Why an incoming message was rejected. The group state is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// Decryption or signature verification failed: altered in transit,
    /// or not for this group.
    #[error("the message was tampered with or is not for this group")]
    Tampered,
    /// The message's key was already used: a replay.
    #[error("the message was already processed (replay)")]
    Replay,
    /// From an epoch older than the retention window.
    #[error("the message is from epoch {0}, older than the retention window")]
    TooOld(u64),
    /// From an epoch this device has not reached.
    #[error("the message is from a future epoch {0}: process the log in order")]
    FutureEpoch(u64),
    /// The sender is not a member.
    #[error("the sender is not a member of the group")]
    NonMember,
    /// The envelope is malformed, or its `from` is not the MLS sender.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A commit that does not apply.
    #[error("invalid commit: {0}")]
    InvalidCommit(String),
    /// The client failed (storage, unknown group, …).
    #[error(transparent)]
    Client(#[from] Error),
}

impl From<StoreError> for ProcessError {
    fn from(e: StoreError) -> Self {
        Self::Client(Error::Store(e))
    }
}

/// Turns any displayable openmls error into [`Error::Mls`].
pub(crate) fn mls<E: std::fmt::Display>(e: E) -> Error {
    Error::Mls(e.to_string())
}
