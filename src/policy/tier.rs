//! The tier of a scope: how much damage it can do.

use serde::{Deserialize, Serialize};

/// Ordered from harmless to irreversible; comparisons use this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Read,
    Write,
    Deploy,
    /// Destroys data or configuration that can be recreated only by hand.
    Destructive,
    /// Destroys backups, whole projects, environments or repositories.
    Catastrophic,
}

impl Tier {
    pub const ALL: [Tier; 5] = [
        Tier::Read,
        Tier::Write,
        Tier::Deploy,
        Tier::Destructive,
        Tier::Catastrophic,
    ];

    /// Whether a scope of this tier may ever be placed in an agent credential.
    /// Destructive work goes through a human approval instead.
    pub fn agent_may_hold(self) -> bool {
        self < Tier::Destructive
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Read => "read",
            Tier::Write => "write",
            Tier::Deploy => "deploy",
            Tier::Destructive => "destructive",
            Tier::Catastrophic => "catastrophic",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tiers_below_destructive_are_holdable() {
        let holdable: Vec<Tier> = Tier::ALL.into_iter().filter(|t| t.agent_may_hold()).collect();
        assert_eq!(holdable, vec![Tier::Read, Tier::Write, Tier::Deploy]);
    }
}
