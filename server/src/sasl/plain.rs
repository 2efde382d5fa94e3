//! SASL PLAIN (RFC 4616): only ever offered over TLS.

use super::SaslError;

/// The parsed `[authzid] NUL authcid NUL passwd` message of PLAIN.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainCredentials {
    /// The authorization identity, if the client sent one.
    pub authzid: Option<String>,
    /// The user name (the localpart of the JID).
    pub username: String,
    /// The password in clear; only held for the duration of the check.
    pub password: String,
}

impl PlainCredentials {
    /// Parses the initial response of PLAIN.
    pub fn parse(message: &[u8]) -> Result<Self, SaslError> {
        let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let mut parts = text.split('\0');
        let (Some(authzid), Some(username), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SaslError::Malformed("PLAIN needs exactly three fields"));
        };
        if username.is_empty() || password.is_empty() {
            return Err(SaslError::Malformed("empty user name or password"));
        }
        Ok(Self {
            authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_authzid() {
        let c = PlainCredentials::parse(b"\0alice\0secret").unwrap();
        assert_eq!(
            (c.authzid, c.username.as_str(), c.password.as_str()),
            (None, "alice", "secret")
        );
        let c = PlainCredentials::parse(b"alice@x\0alice\0s").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("alice@x"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"alice\0secret"[..],
            b"\0\0secret",
            b"\0a\0",
            b"\0a\0b\0c",
            b"\xff\0a\0b",
        ] {
            assert!(PlainCredentials::parse(bad).is_err(), "{bad:?}");
        }
    }
}
