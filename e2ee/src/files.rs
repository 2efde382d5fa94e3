//! Encrypted files: a file is encrypted with a fresh AES-256-GCM key
//! before it leaves the device; the key, nonce and the plaintext's
//! SHA-256 travel in the MLS-encrypted envelope ([`FileRef`]), the
//! ciphertext goes to the upload service under a meaningless name.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};

use crate::envelope::FileRef;

/// The AES-GCM tag added to every file.
pub const TAG_BYTES: u64 = 16;

/// Why a downloaded file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileError {
    /// The key or nonce in the reference has the wrong length.
    #[error("the file reference is malformed")]
    MalformedReference,
    /// Decryption failed: the blob was altered or is another one.
    #[error("the file does not decrypt: it was altered on the way")]
    Tampered,
    /// It decrypts, but is not the file the sender hashed.
    #[error("the file differs from the one sent (size or SHA-256)")]
    Mismatch,
}

/// A file encrypted for upload.
#[derive(Debug)]
pub struct EncryptedFile {
    /// What to upload.
    pub ciphertext: Vec<u8>,
    /// The reference to send (with an empty `url`, set once uploaded).
    pub reference: FileRef,
}

/// Encrypts `plaintext` with a fresh key; `name` and `media_type` go
/// into the reference only.
pub fn encrypt(plaintext: &[u8], name: &str, media_type: &str) -> EncryptedFile {
    let key: [u8; 32] = rand::random();
    let iv: [u8; 12] = rand::random();
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&iv), plaintext)
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    EncryptedFile {
        ciphertext,
        reference: FileRef {
            url: String::new(),
            key: key.to_vec(),
            iv: iv.to_vec(),
            sha256: Sha256::digest(plaintext).to_vec(),
            size: plaintext.len() as u64,
            media_type: media_type.to_owned(),
            name: name.to_owned(),
        },
    }
}

/// Decrypts a downloaded file and checks it against its reference.
pub fn decrypt(ciphertext: &[u8], reference: &FileRef) -> Result<Vec<u8>, FileError> {
    if reference.key.len() != 32 || reference.iv.len() != 12 {
        return Err(FileError::MalformedReference);
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&reference.key));
    let plaintext = cipher
        .decrypt(Nonce::from_slice(&reference.iv), ciphertext)
        .map_err(|_| FileError::Tampered)?;
    if plaintext.len() as u64 != reference.size
        || Sha256::digest(&plaintext).as_slice() != reference.sha256.as_slice()
    {
        return Err(FileError::Mismatch);
    }
    Ok(plaintext)
}

/// A media type from a file name's extension (for the receiver's display;
/// `application/octet-stream` when unknown).
pub fn media_type_of(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match extension.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("mp4") => "video/mp4",
        Some("mp3") => "audio/mpeg",
        Some("ogg" | "opus") => "audio/ogg",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_tampering_is_caught() {
        let data = b"the quick brown fox".repeat(1000);
        let encrypted = encrypt(&data, "fox.txt", "text/plain");
        assert_eq!(
            encrypted.ciphertext.len() as u64,
            data.len() as u64 + TAG_BYTES
        );
        assert!(!encrypted.ciphertext.windows(9).any(|w| w == b"quick bro"));
        assert_eq!(
            decrypt(&encrypted.ciphertext, &encrypted.reference).unwrap(),
            data
        );

        let mut altered = encrypted.ciphertext.clone();
        altered[10] ^= 1;
        assert_eq!(
            decrypt(&altered, &encrypted.reference),
            Err(FileError::Tampered)
        );

        let other = encrypt(b"other", "x", "y");
        let mut wrong = encrypted.reference.clone();
        wrong.key = other.reference.key.clone();
        assert_eq!(
            decrypt(&encrypted.ciphertext, &wrong),
            Err(FileError::Tampered)
        );

        let mut lying = encrypted.reference.clone();
        lying.sha256[0] ^= 1;
        assert_eq!(
            decrypt(&encrypted.ciphertext, &lying),
            Err(FileError::Mismatch)
        );
        assert_eq!(media_type_of("Photo.JPG"), "image/jpeg");
    }
}
