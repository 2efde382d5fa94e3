//! SASL (RFC 4422) for c2s authentication: SCRAM-SHA-256, SCRAM-SHA-1
//! (RFC 5802 / RFC 7677) and PLAIN (RFC 4616).
//!
//! Sans-I/O: each mechanism takes the client's bytes and returns the
//! server's bytes; the caller looks up credentials between steps and does
//! all socket work. Only salted SCRAM secrets are ever stored
//! ([`StoredCredentials`]); PLAIN is checked against them too.

mod plain;
mod scram;

pub use plain::PlainCredentials;
pub use scram::{ClientFirst, ScramHash, ScramServer, StoredCredentials};

/// Why a SASL exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// The client's message does not follow the mechanism's syntax.
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which this server does not
    /// offer.
    #[error("channel binding is not supported")]
    ChannelBindingUnsupported,
    /// The client wants to act as another identity.
    #[error("authorization identity differs from the authenticated one")]
    InvalidAuthzid,
    /// Wrong password or unknown user (deliberately indistinguishable).
    #[error("not authorized")]
    NotAuthorized,
    /// The client gave up the exchange (`<abort/>`).
    #[error("aborted by the client")]
    Aborted,
}

/// The secret decoy salts are derived from (32 random bytes in `path`,
/// created readable by the server only on first use).
pub fn decoy_key(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use rand::RngCore as _;
    match std::fs::read(path) {
        Ok(key) if key.len() == 32 => return Ok(key),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    tern_xmpp::private::private_file(path)?;
    std::fs::write(path, &key)?;
    Ok(key)
}

/// The SASL mechanisms this server offers, strongest first.
pub const MECHANISMS: [&str; 3] = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"];
