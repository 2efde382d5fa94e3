//! SCRAM server side (RFC 5802), with SHA-1 and SHA-256 (RFC 7677).
//!
//! Steps: [`ClientFirst::parse`] reads the client-first message and names
//! the user; the caller fetches that user's [`StoredCredentials`];
//! [`ScramServer::start`] returns the server-first message;
//! [`ScramServer::finish`] checks the client proof and returns the
//! server-final message.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::SaslError;

/// The hash function of a SCRAM variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-1.
    Sha1,
    /// SCRAM-SHA-256.
    Sha256,
}

impl ScramHash {
    /// Both variants, in the order they are stored.
    pub const ALL: [ScramHash; 2] = [ScramHash::Sha1, ScramHash::Sha256];

    /// The mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            Self::Sha1 => "SCRAM-SHA-1",
            Self::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// The short name used as a storage key.
    pub fn storage_name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => Sha1::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha1 => run::<Hmac<Sha1>>(key, data),
            Self::Sha256 => run::<Hmac<Sha256>>(key, data),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Self::Sha1 => {
                pbkdf2::pbkdf2_hmac_array::<Sha1, 20>(password, salt, iterations).to_vec()
            }
            Self::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// What the server keeps of a password for one SCRAM variant: enough to
/// verify a login, not enough to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    /// Random per-user salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl StoredCredentials {
    /// Iterations used for new secrets (RFC 7677 asks for at least 4096).
    pub const DEFAULT_ITERATIONS: u32 = 4096;

    /// Derives the stored secret of `password` with a fresh random salt.
    pub fn derive(hash: ScramHash, password: &str) -> Self {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::derive_with_salt(hash, password, salt, Self::DEFAULT_ITERATIONS)
    }

    /// Derives the stored secret of `password` with a given salt.
    pub fn derive_with_salt(
        hash: ScramHash,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        Self {
            stored_key: hash.hash(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// Checks a clear-text password (SASL PLAIN) against this secret in
    /// constant time.
    pub fn verify_password(&self, hash: ScramHash, password: &str) -> bool {
        let candidate = Self::derive_with_salt(hash, password, self.salt.clone(), self.iterations);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key))
    }

    /// Plausible credentials for a user who does not exist, so that the
    /// exchange runs to its end and fails like a wrong password would.
    /// The salt is derived from the name with the server's secret
    /// `key`: the same on every attempt, as a real user's is, so that
    /// asking twice does not tell which names exist.
    pub fn decoy(hash: ScramHash, username: &str, key: &[u8]) -> Self {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(hash.mechanism().as_bytes());
        mac.update(&[0]);
        mac.update(username.as_bytes());
        let salt = mac.finalize().into_bytes()[..16].to_vec();
        let len = hash.hash(b"").len();
        Self {
            salt,
            iterations: Self::DEFAULT_ITERATIONS,
            stored_key: vec![0; len],
            server_key: vec![0; len],
        }
    }
}

/// The parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, unescaped (`=2C` and `=3D` decoded).
    pub username: String,
    /// The authorization identity from the GS2 header, if any.
    pub authzid: Option<String>,
    gs2_header: String,
    bare: String,
    nonce: String,
}

impl ClientFirst {
    /// Parses `gs2-header client-first-message-bare`.
    pub fn parse(message: &[u8]) -> Result<Self, SaslError> {
        let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let mut gs2 = text.splitn(3, ',');
        let (Some(cb_flag), Some(authz), Some(bare)) = (gs2.next(), gs2.next(), gs2.next()) else {
            return Err(SaslError::Malformed("missing GS2 header"));
        };
        match cb_flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(SaslError::ChannelBindingUnsupported),
            _ => return Err(SaslError::Malformed("bad channel-binding flag")),
        }
        let authzid = match authz {
            "" => None,
            a => Some(unescape_saslname(
                a.strip_prefix("a=")
                    .ok_or(SaslError::Malformed("bad authzid"))?,
            )?),
        };
        let mut attrs = bare.split(',');
        let username = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(SaslError::Malformed("missing user name"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::Malformed("missing nonce"))?;
        if username.is_empty() || nonce.is_empty() || !nonce.bytes().all(is_printable) {
            return Err(SaslError::Malformed("empty user name or bad nonce"));
        }
        Ok(Self {
            username: unescape_saslname(username)?,
            authzid,
            gs2_header: format!("{cb_flag},{authz},"),
            bare: bare.to_owned(),
            nonce: nonce.to_owned(),
        })
    }
}

/// A SCRAM exchange waiting for the client-final message.
#[derive(Debug)]
pub struct ScramServer {
    hash: ScramHash,
    client_first: ClientFirst,
    credentials: StoredCredentials,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Starts the exchange; returns the state and the server-first message.
    pub fn start(
        hash: ScramHash,
        client_first: ClientFirst,
        credentials: StoredCredentials,
    ) -> (Self, Vec<u8>) {
        let mut server_nonce = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{}{}", client_first.nonce, B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credentials.salt),
            credentials.iterations
        );
        let message = server_first.clone().into_bytes();
        let server = Self {
            hash,
            client_first,
            credentials,
            server_first,
            nonce,
        };
        (server, message)
    }

    /// Checks the client-final message; on success returns the
    /// server-final message (`v=…`) to send with `<success/>`.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, SaslError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(SaslError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(SaslError::Malformed("missing channel binding"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::Malformed("missing nonce"))?;
        if binding != B64.encode(&self.client_first.gs2_header) {
            return Err(SaslError::Malformed("channel binding does not match"));
        }
        if nonce != self.nonce {
            return Err(SaslError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| SaslError::Malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first.bare, self.server_first, without_proof
        );
        let hash = self.hash;
        let client_signature = hash.hmac(&self.credentials.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(SaslError::NotAuthorized);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if !bool::from(hash.hash(&client_key).ct_eq(&self.credentials.stored_key)) {
            return Err(SaslError::NotAuthorized);
        }
        let server_signature = hash.hmac(&self.credentials.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

fn unescape_saslname(name: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        match rest.get(pos..pos + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::Malformed("bad escape in user name")),
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3 test vector (SCRAM-SHA-256).
    #[test]
    fn rfc7677_vector() {
        let creds = StoredCredentials::derive_with_salt(
            ScramHash::Sha256,
            "pencil",
            B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let first = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let (mut server, _) = ScramServer::start(ScramHash::Sha256, first, creds);
        // Pin the server nonce and server-first of the RFC's example.
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .into();
        let last = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// Runs a whole exchange against the `sasl` crate's client.
    fn exchange(
        hash: ScramHash,
        stored_password: &str,
        client_password: &str,
    ) -> Result<(), SaslError> {
        use sasl::client::mechanisms::Scram;
        use sasl::client::Mechanism;
        use sasl::common::scram::{Sha1 as CSha1, Sha256 as CSha256};
        use sasl::common::Credentials;
        let creds = Credentials::default()
            .with_username("alice")
            .with_password(client_password);
        let mut client: Box<dyn Mechanism> = match hash {
            ScramHash::Sha1 => Box::new(Scram::<CSha1>::from_credentials(creds).unwrap()),
            ScramHash::Sha256 => Box::new(Scram::<CSha256>::from_credentials(creds).unwrap()),
        };
        let first = ClientFirst::parse(&client.initial()).unwrap();
        assert_eq!(first.username, "alice");
        let (server, challenge) = ScramServer::start(
            hash,
            first,
            StoredCredentials::derive(hash, stored_password),
        );
        let response = client.response(&challenge).unwrap();
        let success = server.finish(&response)?;
        client
            .success(&success)
            .expect("client accepts server signature");
        Ok(())
    }

    #[test]
    fn full_exchange_both_hashes() {
        for hash in ScramHash::ALL {
            exchange(hash, "correct horse", "correct horse").unwrap();
            assert_eq!(
                exchange(hash, "correct horse", "wrong").unwrap_err(),
                SaslError::NotAuthorized
            );
        }
    }

    #[test]
    fn plain_password_check() {
        for hash in ScramHash::ALL {
            let creds = StoredCredentials::derive(hash, "pw");
            assert!(creds.verify_password(hash, "pw"));
            assert!(!creds.verify_password(hash, "pW"));
            assert!(!StoredCredentials::decoy(hash, "nobody", b"k").verify_password(hash, "pw"));
        }
    }

    #[test]
    fn client_first_parsing() {
        let f = ClientFirst::parse(b"n,a=x=2Cy,n=we=3Dird=2C,r=abc").unwrap();
        assert_eq!(f.username, "we=ird,");
        assert_eq!(f.authzid.as_deref(), Some("x,y"));
        assert_eq!(
            ClientFirst::parse(b"p=tls-exporter,,n=a,r=b").unwrap_err(),
            SaslError::ChannelBindingUnsupported
        );
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,n=,r=x",
            b"n,,n=a",
            b"x,,n=a,r=b",
            b"n,,n=a=ZZ,r=b",
        ] {
            assert!(ClientFirst::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tampered_final_is_rejected() {
        let first = ClientFirst::parse(b"n,,n=alice,r=abcdef").unwrap();
        let creds = StoredCredentials::derive(ScramHash::Sha256, "pw");
        let (server, _) = ScramServer::start(ScramHash::Sha256, first, creds);
        assert!(server.finish(b"c=biws,r=abcdef,p=AAAA").is_err());
    }

    #[test]
    fn a_decoy_salt_is_stable_per_name_and_secret() {
        for hash in ScramHash::ALL {
            let salt = |name: &str, key: &[u8]| StoredCredentials::decoy(hash, name, key).salt;
            assert_eq!(salt("ghost", b"k1"), salt("ghost", b"k1"));
            assert_eq!(salt("ghost", b"k1").len(), 16);
            assert_ne!(salt("ghost", b"k1"), salt("other", b"k1"));
            assert_ne!(salt("ghost", b"k1"), salt("ghost", b"k2"));
        }
    }
}
