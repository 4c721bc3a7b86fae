//! Stored secrets changed while the broker runs (`secret set`, `secret rm`,
//! `secret list`): the store is written under the sealing lock, then every
//! stored secret is read again and the new set of real tokens swapped in
//! whole (`loaded`), so a new token is sent, redacted and recognised from
//! the next request.

use std::time::SystemTime;

use super::SecretString;
use super::loaded::Unreadable;
use crate::admin::{self, Actor, AdminError};
use crate::broker::Broker;
use crate::store::StoreError;

/// A provider's environment whose real token is a stored secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUser {
    pub provider: String,
    pub env: String,
    /// A postgres provider's admin URL: its pools were made at start, so a
    /// new value is used from the next start.
    pub database: bool,
}

impl std::fmt::Display for SecretUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}", self.provider, self.env)
    }
}

impl Broker {
    /// Stores a real token sealed under the master key and uses it at once:
    /// from the next request the proxy sends it, and the redactor and the
    /// leak check know it. Returns who uses it.
    pub async fn set_secret(
        &self,
        name: &str,
        value: &SecretString,
        actor: &Actor,
        now: SystemTime,
    ) -> Result<(Vec<SecretUser>, Vec<Unreadable>), AdminError> {
        // Held through the re-read too, so that of two sets the later one's
        // value is the one in use.
        let (_sealing, master) = self.sealing().await;
        admin::set_secret(self.store(), &master, name, value, actor, now).await?;
        let unreadable = self.reread_stored().await;
        Ok((self.secret_users(name), unreadable))
    }

    /// Removes a stored secret, refused while a provider's token is it:
    /// that provider would be left without one in the middle of its
    /// agents' work, which an operator replacing a token (`secret set`)
    /// does not expect.
    pub async fn remove_secret(&self, name: &str, actor: &Actor, now: SystemTime) -> Result<(), AdminError> {
        let users = self.secret_users(name);
        if !users.is_empty() {
            return Err(AdminError::SecretInUse {
                name: name.to_owned(),
                users: users.iter().map(SecretUser::to_string).collect(),
            });
        }
        let (_sealing, _) = self.sealing().await;
        admin::remove_secret(self.store(), name, actor, now).await?;
        let _ = self.reread_stored().await;
        Ok(())
    }

    /// Every stored secret: its name, when it was last set (unix seconds)
    /// and who uses it; never its value.
    pub async fn list_secrets(&self) -> Result<Vec<(String, i64, Vec<SecretUser>)>, StoreError> {
        let ages = self.store().secret_ages().await?;
        Ok(ages
            .into_iter()
            .map(|(name, set_at)| {
                let users = self.secret_users(&name);
                (name, set_at, users)
            })
            .collect())
    }

    fn secret_users(&self, name: &str) -> Vec<SecretUser> {
        self.real_tokens()
            .users_of(name)
            .into_iter()
            .map(|(provider, env, database)| SecretUser {
                provider,
                env,
                database,
            })
            .collect()
    }

    /// Reads the stored secrets again and swaps in the tokens they make;
    /// names those that could not be read (their previous token stays).
    async fn reread_stored(&self) -> Vec<Unreadable> {
        let (next, unreadable) = self
            .real_tokens()
            .reread_stored(self.store(), &self.master(), self.fingerprinter())
            .await;
        for u in &unreadable {
            tracing::warn!(provider = %u.provider, env = %u.env, error = %u.why, "a stored secret could not be read again; its previous token stays in use");
        }
        self.swap_real_tokens(next);
        unreadable
    }
}
