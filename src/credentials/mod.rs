//! Credentials: what agents and admins hold, and how the broker checks them.
//!
//! - `keys`: the Ed25519 signing key ring (kid, rotation, JWKS).
//! - `token`: `vk1.` JWTs, EdDSA only; verification takes `now` as an argument.
//! - `opaque`: launcher and admin keys — random, stored only as hashes.
//! - `cache`: the verified-token cache and the revocation set.
//! - `foreign`: what a token that is not ours looks like.

mod cache;
mod foreign;
mod keys;
mod opaque;
mod token;

pub use cache::{RevocationSet, VerifiedCache};
pub use foreign::{is_known_provider_token, looks_like as foreign_token_kind};
pub use keys::{KeyError, KeyRing, SigningKey, load_ring, new_signing_key};
pub use opaque::{
    IssuedKey, OpaqueKind, issue as issue_opaque_key, parse as parse_opaque_key, verify as verify_opaque_key,
};
pub use token::{Claims, Expected, PREFIX, TokenError, VerifyError, sign, verify};
