//! The real tokens the broker holds now: each provider's token per
//! environment, whether each could be read, their keyed fingerprints and
//! the redactor that overwrites them in upstream answers. Read at start and
//! again whenever a stored secret changes (`secret set`, `secret rm`), then
//! swapped whole, so a request sees one consistent set and a new token is
//! redacted and recognised from the moment it is used.
//!
//! Tokens from variables and files are read at start only (the broker's
//! environment does not change; a file is replaced by an operator who
//! restarts). The admin URLs of postgres providers are read at start only:
//! their connection pools are made from them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::{EnvLookup, ExposeSecret, MasterKey, SecretString, resolve};
use crate::config::{Config, TokenSource};
use crate::providers::ProviderKind;
use crate::proxy::redact::Redactor;
use crate::store::Store;

/// Whether each real token could be read, per provider and environment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenStatus {
    pub provider: String,
    pub env: String,
    pub source: String,
    /// `None` when loaded; otherwise why not.
    pub problem: Option<String>,
}

/// A stored secret a re-read could not read: its previous token stays in
/// use.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub provider: String,
    pub env: String,
    pub why: String,
}

struct Entry {
    provider: String,
    env: String,
    source: TokenSource,
    /// A postgres provider's admin URL, not a proxied token.
    database: bool,
    token: Result<SecretString, String>,
    /// Why a token that was read cannot be used (a database URL that does
    /// not parse).
    unusable: Option<String>,
}

pub struct RealTokens {
    entries: Vec<Entry>,
    /// Tokens replaced since start: still redacted in answers and
    /// recognised as leaked until the broker restarts, since a replaced
    /// token (often replaced because it leaked) may still work at its
    /// provider.
    retired: Vec<SecretString>,
    proxied: BTreeMap<(String, String), SecretString>,
    fingerprints: HashSet<String>,
    redactor: Arc<Redactor>,
}

impl RealTokens {
    /// Reads every token the configuration names. `fingerprinter` keys the
    /// fingerprints a leaked token is recognised by.
    pub async fn read(
        config: &Config,
        store: &dyn Store,
        master: &MasterKey,
        env: &EnvLookup,
        fingerprinter: &MasterKey,
    ) -> RealTokens {
        let mut entries = Vec::new();
        for (provider, p) in &config.providers {
            let p = p.get_ref();
            for (env_name, source) in &p.tokens {
                let token = resolve(source.get_ref(), store, master, env)
                    .await
                    .map_err(|e| e.to_string());
                entries.push(Entry {
                    provider: provider.clone(),
                    env: env_name.get_ref().clone(),
                    source: source.get_ref().clone(),
                    database: p.kind == ProviderKind::Postgres,
                    token,
                    unusable: None,
                });
            }
        }
        RealTokens::from_entries(entries, Vec::new(), fingerprinter)
    }

    /// The same tokens with each proxied provider's stored secret read
    /// again; everything else as it was read at start. A secret that cannot
    /// be read now keeps the token read before (a passing store error must
    /// not take a working token away); each is named in the answer.
    pub async fn reread_stored(
        &self,
        store: &dyn Store,
        master: &MasterKey,
        fingerprinter: &MasterKey,
    ) -> (RealTokens, Vec<Unreadable>) {
        let no_variables = |_: &str| None;
        let mut entries = Vec::new();
        let mut retired: Vec<SecretString> = self.retired.clone();
        let mut unreadable = Vec::new();
        let before = |e: &Entry| match &e.token {
            Ok(token) => Ok(SecretString::from(token.expose_secret())),
            Err(why) => Err(why.clone()),
        };
        for e in &self.entries {
            let token = match (&e.source, e.database) {
                (TokenSource::Stored(_), false) => match resolve(&e.source, store, master, &no_variables).await {
                    Ok(token) => {
                        if let Ok(old) = &e.token
                            && old.expose_secret() != token.expose_secret()
                            && !retired.iter().any(|r| r.expose_secret() == old.expose_secret())
                        {
                            retired.push(SecretString::from(old.expose_secret()));
                        }
                        Ok(token)
                    }
                    Err(why) if e.token.is_ok() => {
                        unreadable.push(Unreadable {
                            provider: e.provider.clone(),
                            env: e.env.clone(),
                            why: why.to_string(),
                        });
                        before(e)
                    }
                    Err(why) => Err(why.to_string()),
                },
                _ => before(e),
            };
            entries.push(Entry {
                provider: e.provider.clone(),
                env: e.env.clone(),
                source: e.source.clone(),
                database: e.database,
                token,
                unusable: e.unusable.clone(),
            });
        }
        (RealTokens::from_entries(entries, retired, fingerprinter), unreadable)
    }

    fn from_entries(entries: Vec<Entry>, retired: Vec<SecretString>, fingerprinter: &MasterKey) -> RealTokens {
        let mut proxied = BTreeMap::new();
        let mut fingerprints = HashSet::new();
        let mut known = Vec::new();
        for token in &retired {
            let fingerprint = fingerprinter.fingerprint(token.expose_secret());
            fingerprints.insert(fingerprint.clone());
            known.push((token.expose_secret(), fingerprint));
        }
        for e in &entries {
            let Ok(token) = &e.token else { continue };
            let fingerprint = fingerprinter.fingerprint(token.expose_secret());
            fingerprints.insert(fingerprint.clone());
            known.push((token.expose_secret(), fingerprint));
            if !e.database {
                proxied.insert(
                    (e.provider.clone(), e.env.clone()),
                    SecretString::from(token.expose_secret()),
                );
            }
        }
        let redactor = Arc::new(Redactor::new(known));
        RealTokens {
            entries,
            retired,
            proxied,
            fingerprints,
            redactor,
        }
    }

    /// The real token the proxy sends upstream for (provider, env).
    pub fn token(&self, provider: &str, env: &str) -> Option<&SecretString> {
        self.proxied.get(&(provider.to_owned(), env.to_owned()))
    }

    /// Every proxied token, by (provider, environment).
    pub fn proxied(&self) -> impl Iterator<Item = (&(String, String), &SecretString)> {
        self.proxied.iter()
    }

    /// The admin URL of each postgres provider's environment that was read.
    pub fn database_urls(&self) -> BTreeMap<(String, String), SecretString> {
        self.entries
            .iter()
            .filter(|e| e.database)
            .filter_map(|e| {
                let token = e.token.as_ref().ok()?;
                Some((
                    (e.provider.clone(), e.env.clone()),
                    SecretString::from(token.expose_secret()),
                ))
            })
            .collect()
    }

    /// Records why tokens that were read cannot be used.
    pub fn mark_unusable(&mut self, unusable: &BTreeMap<(String, String), String>) {
        for e in &mut self.entries {
            if let Some(why) = unusable.get(&(e.provider.clone(), e.env.clone())) {
                e.unusable = Some(why.clone());
            }
        }
    }

    pub fn status(&self) -> Vec<TokenStatus> {
        self.entries
            .iter()
            .map(|e| TokenStatus {
                provider: e.provider.clone(),
                env: e.env.clone(),
                source: e.source.to_string(),
                problem: e.token.as_ref().err().cloned().or_else(|| e.unusable.clone()),
            })
            .collect()
    }

    /// Whether a keyed fingerprint is one of these tokens'.
    pub fn is_real(&self, fingerprint: &str) -> bool {
        self.fingerprints.contains(fingerprint)
    }

    pub fn redactor(&self) -> Arc<Redactor> {
        self.redactor.clone()
    }

    /// The (provider, environment) pairs whose token is the stored secret
    /// `name`, and whether each is a postgres provider's.
    pub fn users_of(&self, name: &str) -> Vec<(String, String, bool)> {
        self.entries
            .iter()
            .filter(|e| matches!(&e.source, TokenSource::Stored(n) if n == name))
            .map(|e| (e.provider.clone(), e.env.clone(), e.database))
            .collect()
    }
}
