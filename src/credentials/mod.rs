//! Credentials: what agents and admins hold, and how the broker checks them.
//!
//! - `keys`: the Ed25519 signing key ring (kid, rotation, JWKS).
//! - `token`: `vk1.` JWTs, EdDSA only; verification takes `now` as an argument.
//! - `opaque`: launcher and admin keys — random, stored only as hashes.
//! - `cache`: the verified-token cache and the revocation set.
//! - `foreign`: what a token that is not ours looks like.
//! - `scan`: finding our credentials in text where they do not belong.

mod cache;
pub(crate) mod foreign;
mod keys;
mod opaque;
mod scan;
mod token;

pub use cache::{RevocationSet, VerifiedCache};
pub use foreign::{is_known_provider_token, known_format as foreign_token_format};
pub use keys::{
    KeyError, KeyRing, PublishedKeys, SigningKey, jwks, load_ring, new_signing_key, record_id as signing_key_record_id,
};
pub use opaque::{
    IssuedKey, OpaqueKind, hash as hash_opaque_key, issue as issue_opaque_key, parse as parse_opaque_key,
    verify as verify_opaque_key,
};
pub use scan::credentials_in;
pub use token::{Claims, Expected, PREFIX, TokenError, VerifyError, sign, verify};
