//! The signing key ring. One key is active and signs; retired keys keep
//! verifying until the last credential they signed has expired.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::secrets::{MasterKey, SecretsError};
use crate::store::{SigningKeyRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a signing key")]
    Generate,
    #[error("signing key `{kid}` is not a valid Ed25519 key")]
    Invalid { kid: String },
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sign: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

pub struct SigningKey {
    pub kid: String,
    pub public_key: Vec<u8>,
    pub retired_at: Option<i64>,
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
}

impl SigningKey {
    /// An Ed25519 signature over `message`, base64url (the JWT crate's).
    pub fn sign_bytes(&self, message: &[u8]) -> Result<String, KeyError> {
        jsonwebtoken::crypto::sign(message, &self.encoding, jsonwebtoken::Algorithm::EdDSA).map_err(KeyError::Sign)
    }

    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        jsonwebtoken::crypto::verify(signature, message, &self.decoding, jsonwebtoken::Algorithm::EdDSA)
            .unwrap_or(false)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// The keys that verify, newest first.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    pub fn active(&self) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.retired_at.is_none())
    }

    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// The public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> serde_json::Value {
        jwks(self.keys.iter().map(|k| (k.kid.as_str(), k.public_key.as_slice())))
    }

    /// Opens sealed key records (newest first) into a ring.
    pub fn open(records: &[SigningKeyRecord], master: &MasterKey) -> Result<KeyRing, KeyError> {
        let keys = records.iter().map(|r| open(r, master)).collect::<Result<_, _>>()?;
        Ok(KeyRing { keys })
    }
}

/// A JWKS document of Ed25519 public keys: (kid, public key).
pub fn jwks<'a>(keys: impl Iterator<Item = (&'a str, &'a [u8])>) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = keys
        .map(|(kid, public_key)| {
            serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(public_key),
            })
        })
        .collect();
    serde_json::json!({ "keys": keys })
}

/// Public keys as a broker publishes them (`/.well-known/jwks.json`), to
/// check signatures with no master key: an auditor's copy of the trail is
/// anchored by what the broker published, not by key rows in the copy.
pub struct PublishedKeys {
    keys: Vec<(String, DecodingKey)>,
}

impl PublishedKeys {
    /// The Ed25519 keys of a JWKS document; anything else is refused.
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<PublishedKeys, KeyError> {
        let entries = jwks["keys"].as_array().ok_or(KeyError::Invalid {
            kid: "(no `keys` list: not a JWKS document)".into(),
        })?;
        let mut keys = Vec::new();
        for k in entries {
            let kid = k["kid"].as_str().unwrap_or("(no kid)").to_owned();
            let x = match (k["kty"].as_str(), k["crv"].as_str(), k["x"].as_str()) {
                (Some("OKP"), Some("Ed25519"), Some(x)) if URL_SAFE_NO_PAD.decode(x).is_ok_and(|b| b.len() == 32) => x,
                _ => return Err(KeyError::Invalid { kid }),
            };
            let key = DecodingKey::from_ed_components(x).map_err(|_| KeyError::Invalid { kid: kid.clone() })?;
            keys.push((kid, key));
        }
        Ok(PublishedKeys { keys })
    }

    /// Whether `signature` over `message` verifies with the key `kid`.
    pub fn verifies(&self, kid: &str, message: &[u8], signature: &str) -> bool {
        self.keys.iter().any(|(k, key)| {
            k == kid
                && jsonwebtoken::crypto::verify(signature, message, key, jsonwebtoken::Algorithm::EdDSA)
                    .unwrap_or(false)
        })
    }
}

/// The record id a signing key is sealed under.
pub fn record_id(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// A new Ed25519 key, sealed under the master key, ready to store.
pub fn new_signing_key(master: &MasterKey, now: i64) -> Result<SigningKeyRecord, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generate)?;
    let public_key = pair.public_key().as_ref().to_vec();
    let digest = ring::digest::digest(&ring::digest::SHA256, &public_key);
    let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
    let sealed = master.seal(&record_id(&kid), pkcs8.as_ref())?;
    Ok(SigningKeyRecord {
        kid,
        public_key,
        sealed,
        created_at: now,
        retired_at: None,
    })
}

fn open(record: &SigningKeyRecord, master: &MasterKey) -> Result<SigningKey, KeyError> {
    let pkcs8 = master.open(&record_id(&record.kid), &record.sealed)?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::Invalid {
        kid: record.kid.clone(),
    })?;
    if pair.public_key().as_ref() != record.public_key.as_slice() {
        return Err(KeyError::Invalid {
            kid: record.kid.clone(),
        });
    }
    Ok(SigningKey {
        kid: record.kid.clone(),
        public_key: record.public_key.clone(),
        retired_at: record.retired_at,
        encoding: EncodingKey::from_ed_der(&pkcs8),
        decoding: DecodingKey::from_ed_der(&record.public_key),
    })
}

/// Loads the ring: the active key, and each retired key that may still have
/// signed a live credential — one whose lease has not expired at `now`, or
/// one minted while it was being retired (no credential outlives `max_ttl`).
pub async fn load_ring(store: &dyn Store, master: &MasterKey, now: i64, max_ttl: i64) -> Result<KeyRing, KeyError> {
    let mut live = Vec::new();
    for record in store.signing_keys().await? {
        if let Some(retired_at) = record.retired_at
            && retired_at + max_ttl <= now
        {
            let last = store.last_expiry_signed_by(&record.kid).await?;
            if last.is_none_or(|exp| exp <= now) {
                continue;
            }
        }
        live.push(record);
    }
    KeyRing::open(&live, master)
}
