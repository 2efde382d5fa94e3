//! The client side of SASL SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802,
//! RFC 7677), without channel binding, able to reuse a salted password
//! (as real clients cache it, so repeated logins cost the client no
//! PBKDF2). The `sasl` crate cannot: it refuses a cached password whose
//! salt matches.

use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A SCRAM hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SCRAM-SHA-1.
    Sha1,
    /// SCRAM-SHA-256.
    Sha256,
}

impl Hash {
    /// The hash of a SASL mechanism name.
    pub fn of_mechanism(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-1" => Some(Self::Sha1),
            "SCRAM-SHA-256" => Some(Self::Sha256),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => {
                let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Self::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => Sha1::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// PBKDF2 of the password.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Self::Sha1 => {
                pbkdf2::pbkdf2_hmac_array::<Sha1, 20>(password.as_bytes(), salt, iterations)
                    .to_vec()
            }
            Self::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations)
                    .to_vec()
            }
        }
    }
}

/// One SCRAM exchange.
pub struct ScramClient {
    hash: Hash,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

/// What the server-first message said.
pub struct ServerFirst {
    /// The salt.
    pub salt: Vec<u8>,
    /// The iteration count.
    pub iterations: u32,
    text: String,
    nonce: String,
}

impl ScramClient {
    /// Starts an exchange for `user`; the client-first message.
    pub fn start(hash: Hash, user: &str) -> (Self, String) {
        let nonce: String = BASE64.encode(rand::random::<[u8; 18]>());
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={nonce}");
        let first = format!("n,,{client_first_bare}");
        (
            Self {
                hash,
                client_first_bare,
                nonce,
                server_signature: None,
            },
            first,
        )
    }

    /// Reads the server-first message.
    pub fn server_first(&self, data: &[u8]) -> Result<ServerFirst> {
        let text = String::from_utf8(data.to_vec())?;
        let field = |name: &str| {
            text.split(',')
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("no {name} in the server's first message"))
        };
        let nonce = field("r")?;
        if !nonce.starts_with(&self.nonce) {
            bail!("the server's nonce does not extend ours");
        }
        Ok(ServerFirst {
            salt: BASE64.decode(field("s")?)?,
            iterations: field("i")?.parse()?,
            nonce,
            text,
        })
    }

    /// The client-final message, from the salted password.
    pub fn client_final(&mut self, first: &ServerFirst, salted: &[u8]) -> String {
        let without_proof = format!("c=biws,r={}", first.nonce);
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, first.text);
        let client_key = self.hash.hmac(salted, b"Client Key");
        let stored_key = self.hash.digest(&client_key);
        let signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = self.hash.hmac(salted, b"Server Key");
        self.server_signature = Some(self.hash.hmac(&server_key, auth_message.as_bytes()));
        format!("{without_proof},p={}", BASE64.encode(proof))
    }

    /// Checks the server-final message (`v=` signature).
    pub fn verify(&self, data: &[u8]) -> Result<()> {
        let text = String::from_utf8(data.to_vec())?;
        let signature = text
            .strip_prefix("v=")
            .ok_or_else(|| anyhow!("the server did not prove it knows the password: {text}"))?;
        if Some(BASE64.decode(signature)?) != self.server_signature {
            bail!("the server's signature is wrong");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7677_example() {
        // RFC 7677 §3, with the client nonce it uses.
        let mut client = ScramClient {
            hash: Hash::Sha256,
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".to_owned(),
            nonce: "rOprNGfwEbeRWgbNEkqO".to_owned(),
            server_signature: None,
        };
        let first = client
            .server_first(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .expect("server-first");
        let salted = Hash::Sha256.salted_password("pencil", &first.salt, first.iterations);
        let last = client.client_final(&first, &salted);
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("server signature");
    }
}
