//! Provider kinds and their rule packs.
//!
//! A rule pack (`config/providers/<kind>.toml`) is data compiled into the
//! binary: the scopes a kind knows and the tier of each. Ops extend a pack from
//! their own configuration and may raise a scope's tier, never lower it. The
//! packs are parsed once, on first use; a pack that does not parse is a bug in
//! this build, caught by the tests.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::policy::Tier;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Railway's GraphQL API.
    Railway,
    /// GitHub's REST API.
    Github,
    /// Any HTTP API, with scopes named by ops.
    Http,
    /// PostgreSQL dynamic roles (not proxied).
    Postgres,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Railway,
        ProviderKind::Github,
        ProviderKind::Http,
        ProviderKind::Postgres,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Railway => "railway",
            ProviderKind::Github => "github",
            ProviderKind::Http => "http",
            ProviderKind::Postgres => "postgres",
        }
    }

    /// The upstream a provider of this kind talks to when ops name none.
    pub fn default_upstream(self) -> Option<&'static str> {
        match self {
            ProviderKind::Railway => Some("https://backboard.railway.com"),
            ProviderKind::Github => Some("https://api.github.com"),
            ProviderKind::Http | ProviderKind::Postgres => None,
        }
    }

    /// The built-in rule pack of this kind.
    pub fn pack(self) -> &'static RulePack {
        &PACKS[self as usize]
    }

    fn source(self) -> &'static str {
        match self {
            ProviderKind::Railway => include_str!("../../config/providers/railway.toml"),
            ProviderKind::Github => include_str!("../../config/providers/github.toml"),
            ProviderKind::Http => include_str!("../../config/providers/http.toml"),
            ProviderKind::Postgres => include_str!("../../config/providers/postgres.toml"),
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePack {
    pub kind: ProviderKind,
    pub scopes: BTreeMap<String, ScopeRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    pub tier: Tier,
    pub description: String,
}

impl RulePack {
    pub fn parse(text: &str) -> Result<RulePack, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn tier(&self, scope: &str) -> Option<Tier> {
        self.scopes.get(scope).map(|s| s.tier)
    }
}

static PACKS: LazyLock<Vec<RulePack>> = LazyLock::new(|| {
    ProviderKind::ALL
        .iter()
        .map(|kind| {
            let pack = RulePack::parse(kind.source())
                .unwrap_or_else(|e| panic!("built-in rule pack `{kind}` does not parse: {e}"));
            assert_eq!(pack.kind, *kind, "rule pack file of `{kind}` names another kind");
            pack
        })
        .collect()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_pack_parses_and_names_its_kind() {
        for kind in ProviderKind::ALL {
            let pack = kind.pack();
            assert_eq!(pack.kind, kind);
            assert!(pack.scopes.contains_key("read"), "{kind} has no read scope");
        }
    }

    #[test]
    fn the_incident_scopes_can_never_be_held() {
        let railway = ProviderKind::Railway.pack();
        for scope in ["volume:delete", "backup:delete", "environment:delete", "project:delete"] {
            let tier = railway.tier(scope).unwrap_or_else(|| panic!("{scope} missing"));
            assert!(!tier.agent_may_hold(), "{scope} is {tier}");
        }
    }
}
