//! In-memory state on the verification path: verified credentials (so a
//! signature is checked once per credential, not once per request) and
//! revoked leases. Both expire entries with the credential they describe.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::sync::Cache;

use super::Claims;
use crate::time::unix_secs;

fn until(exp: i64) -> Option<Duration> {
    let left = exp - unix_secs(SystemTime::now());
    Some(Duration::from_secs(left.max(0) as u64))
}

struct UntilExpiry;

impl Expiry<[u8; 32], Arc<Claims>> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], claims: &Arc<Claims>, _: Instant) -> Option<Duration> {
        until(claims.exp as i64)
    }
}

impl Expiry<String, i64> for UntilExpiry {
    fn expire_after_create(&self, _: &String, exp: &i64, _: Instant) -> Option<Duration> {
        until(*exp)
    }
}

/// Verified credentials, keyed by the SHA-256 of the credential text (the
/// text itself is never kept). An entry never outlives its credential.
pub struct VerifiedCache {
    cache: Cache<[u8; 32], Arc<Claims>>,
}

impl VerifiedCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    pub fn key(token: &str) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Claims>> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: [u8; 32], claims: Arc<Claims>) {
        self.cache.insert(key, claims);
    }
}

/// Revoked lease ids until their credentials expire. Unbounded on purpose:
/// evicting an entry would bring a revoked credential back to life.
pub struct RevocationSet {
    revoked: Cache<String, i64>,
}

impl Default for RevocationSet {
    fn default() -> Self {
        Self {
            revoked: Cache::builder().expire_after(UntilExpiry).build(),
        }
    }
}

impl RevocationSet {
    pub fn insert(&self, lease_id: String, expires_at: i64) {
        self.revoked.insert(lease_id, expires_at);
    }

    pub fn contains(&self, lease_id: &str) -> bool {
        self.revoked.contains_key(lease_id)
    }
}
