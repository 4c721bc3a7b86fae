//! Launcher and admin keys, and approvers' enrollment codes: long random bearer keys, shown once, stored as a
//! SHA-256 hash and compared in constant time.
//!
//! Shape: `vkl_<key id>_<secret>` (launcher) or `vka_<key id>_<secret>`
//! (admin). The key id (hex) finds the record; the whole key is what is hashed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;

use crate::secrets::{ExposeSecret, SecretString};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueKind {
    /// Held by whoever launches an agent; mints that agent's credentials.
    Launcher,
    /// Held by ops; admin operations over the API.
    Admin,
    /// Given by an admin to one approver, who redeems it once to register
    /// their own factor.
    Enrollment,
}

impl OpaqueKind {
    fn prefix(self) -> &'static str {
        match self {
            OpaqueKind::Launcher => "vkl_",
            OpaqueKind::Admin => "vka_",
            OpaqueKind::Enrollment => "vke_",
        }
    }
}

pub struct IssuedKey {
    pub key: SecretString,
    pub key_id: String,
    pub hash: Vec<u8>,
}

pub fn issue(kind: OpaqueKind) -> Result<IssuedKey, ring::error::Unspecified> {
    let rng = ring::rand::SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill(&mut id)?;
    rng.fill(secret.as_mut())?;
    let key_id = hex::encode(id);
    let key = zeroize::Zeroizing::new(format!(
        "{}{key_id}_{}",
        kind.prefix(),
        URL_SAFE_NO_PAD.encode(secret.as_ref())
    ));
    Ok(IssuedKey {
        hash: hash(&key),
        key: SecretString::from(key.as_str()),
        key_id,
    })
}

/// The key id of a well-formed key of this kind.
pub fn parse(kind: OpaqueKind, key: &str) -> Option<&str> {
    let rest = key.strip_prefix(kind.prefix())?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() == 43;
    well_formed.then_some(id)
}

pub fn verify(key: &SecretString, stored_hash: &[u8]) -> bool {
    hash(key.expose_secret()).ct_eq(stored_hash).into()
}

pub fn hash(key: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_parse_and_verify_only_against_their_hash() {
        let a = issue(OpaqueKind::Launcher).unwrap();
        let b = issue(OpaqueKind::Launcher).unwrap();
        assert_ne!(a.key_id, b.key_id);
        assert_eq!(
            parse(OpaqueKind::Launcher, a.key.expose_secret()),
            Some(a.key_id.as_str())
        );
        assert_eq!(parse(OpaqueKind::Admin, a.key.expose_secret()), None);
        assert!(verify(&a.key, &a.hash));
        assert!(!verify(&a.key, &b.hash));
        assert!(
            !a.hash
                .windows(8)
                .any(|w| a.key.expose_secret().as_bytes().windows(8).any(|k| k == w))
        );
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in [
            "",
            "vkl_",
            "vkl_zz_x",
            "vkl_0123456789abcdef_short",
            "ghp_0123456789abcdef",
        ] {
            assert_eq!(parse(OpaqueKind::Launcher, bad), None, "{bad}");
        }
    }
}
