//! Reading a provider's real token from where the configuration says it is.

use std::path::PathBuf;

use super::{MasterKey, SecretString, SecretsError, secret_record_id};
use crate::config::TokenSource;
use crate::store::{Store, StoreError};

/// Looks up one of the broker's environment variables.
pub type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("cannot read token file {}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("stored secret `{0}` does not exist; set it with `valetkey secret set {0}`")]
    NotStored(String),
    #[error("the token is empty")]
    Empty,
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the token a source names. `env` looks up the broker's environment
/// variables (passed in, so tests need not change the process environment).
pub async fn resolve(
    source: &TokenSource,
    store: &dyn Store,
    master: &MasterKey,
    env: &EnvLookup,
) -> Result<SecretString, ResolveError> {
    let token = match source {
        TokenSource::Env(var) => SecretString::from(env(var).ok_or_else(|| ResolveError::EnvUnset(var.clone()))?),
        TokenSource::File(path) => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| ResolveError::File {
                path: path.clone(),
                source,
            })?);
            SecretString::from(text.trim())
        }
        TokenSource::Stored(name) => {
            let record = store
                .secret(name)
                .await?
                .ok_or_else(|| ResolveError::NotStored(name.clone()))?;
            master.open_string(&secret_record_id(name), &record.sealed)?
        }
    };
    use secrecy::ExposeSecret;
    if token.expose_secret().trim().is_empty() {
        return Err(ResolveError::Empty);
    }
    Ok(token)
}
