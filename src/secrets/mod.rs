//! Secrets at rest and in memory: the master key, and sealing of real tokens
//! and signing keys with AES-256-GCM under it.
//!
//! Every sealed record is bound to its record id (associated data), so a
//! ciphertext copied onto another row does not open. Plaintext lives in
//! `SecretString` / `Zeroizing` buffers: no printing `Debug`, no `Serialize`,
//! zeroized on drop. This module never logs.

pub mod live;
pub mod loaded;
mod master;
mod resolve;

pub use loaded::{RealTokens, TokenStatus};
pub use master::{MasterKey, MasterKeyOrigin, MasterKeySettings, next_key_file, write_private};
pub use resolve::{EnvLookup, ResolveError, resolve};
pub use secrecy::{ExposeSecret, SecretString};

pub use zeroize::Zeroizing;

use std::path::PathBuf;

/// A sealed value as stored: a fresh 96-bit nonce and the ciphertext with its tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "no master key: set VALETKEY_MASTER_KEY or create the file {} ([keys] master_key_file); `valetkey serve --dev` creates one for local use",
        file.display()
    )]
    MasterKeyMissing { file: PathBuf },
    #[error("the master key from {origin} is not base64 of 32 bytes")]
    MasterKeyInvalid { origin: MasterKeyOrigin },
    #[error(
        "master key file {} can be read by other users (mode {mode:o}); run `chmod 600 {}`",
        file.display(),
        file.display()
    )]
    MasterKeyExposed { file: PathBuf, mode: u32 },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("record `{record}` does not open under this master key (wrong key, or the record was altered)")]
    Open { record: String },
    #[error("the system's random number generator failed")]
    Random,
}

impl MasterKey {
    /// Seals `plaintext` for the record `record_id`.
    pub fn seal(&self, record_id: &str, plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        use ring::aead::{Aad, NONCE_LEN, Nonce};
        use ring::rand::SecureRandom;
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretsError::Random)?;
        let mut buf = plaintext.to_vec();
        self.sealing()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record_id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SecretsError::Random)?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext: buf,
        })
    }

    /// Opens a record sealed for `record_id`.
    pub fn open(&self, record_id: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        use ring::aead::{Aad, Nonce};
        let fail = || SecretsError::Open {
            record: record_id.to_owned(),
        };
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| fail())?;
        let mut buf = Zeroizing::new(sealed.ciphertext.clone());
        let len = self
            .sealing()
            .open_in_place(nonce, Aad::from(record_id.as_bytes()), &mut buf)
            .map_err(|_| fail())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens a sealed UTF-8 token.
    pub fn open_string(&self, record_id: &str, sealed: &Sealed) -> Result<SecretString, SecretsError> {
        let bytes = self.open(record_id, sealed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| SecretsError::Open {
            record: record_id.to_owned(),
        })?;
        Ok(SecretString::from(text))
    }
}

/// The record id a stored secret is sealed under.
pub fn secret_record_id(name: &str) -> String {
    format!("secret:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_binds_the_record_id() {
        let (key, _) = MasterKey::generate().unwrap();
        let sealed = key.seal("secret:a", b"ghp_realtoken").unwrap();
        assert_eq!(sealed.nonce.len(), 12);
        assert!(!sealed.ciphertext.windows(13).any(|w| w == b"ghp_realtoken"));
        assert_eq!(&key.open("secret:a", &sealed).unwrap()[..], b"ghp_realtoken");
        assert!(matches!(key.open("secret:b", &sealed), Err(SecretsError::Open { .. })));

        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(key.open("secret:a", &tampered).is_err());

        let (other, _) = MasterKey::generate().unwrap();
        assert!(other.open("secret:a", &sealed).is_err());
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let (key, _) = MasterKey::generate().unwrap();
        let a = key.seal("r", b"same").unwrap();
        let b = key.seal("r", b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn secrets_do_not_print() {
        let token = SecretString::from("ghp_do_not_print_me");
        let shown = format!("{token:?}");
        assert!(!shown.contains("ghp_do_not_print_me"), "{shown}");
        let (key, encoded) = MasterKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(encoded.as_str()), "{shown}");
    }
}
