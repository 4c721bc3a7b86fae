//! What a credential may hold: requested ∩ granted, minus everything an agent
//! must never hold, for no longer than every limit allows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::Tier;

/// The word in a grant's `environments` that means "every environment that is
/// not protected". It never matches a protected environment.
pub const ANY_UNPROTECTED: &str = "*";

/// The configuration facts mint and proxy decisions need, compiled once at load.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Environment name → protected.
    pub environments: BTreeMap<String, bool>,
    /// Provider name → scope → tier.
    pub scopes: BTreeMap<String, BTreeMap<String, Tier>>,
    /// Agent name → its grants.
    pub agents: BTreeMap<String, Vec<Grant>>,
    pub limits: CredentialLimits,
    /// Provider name → which environments own its resources.
    pub resources: BTreeMap<String, super::ProviderResources>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub provider: String,
    pub environments: Vec<String>,
    pub scopes: Vec<String>,
    pub max_ttl: Option<Duration>,
}

impl Grant {
    fn covers(&self, env: &str, protected: bool) -> bool {
        self.environments
            .iter()
            .any(|e| e == env || (e == ANY_UNPROTECTED && !protected))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialLimits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// The longest a session kept alive by heartbeats may last.
    pub max_session: Duration,
}

impl Default for CredentialLimits {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(60 * 60),
            max_session: Duration::from_secs(8 * 60 * 60),
        }
    }
}

/// What an agent asks for. `None` means "everything my grants allow".
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    pub env: String,
    pub providers: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    /// For a session, its longest length; otherwise the credential's TTL.
    pub ttl: Option<Duration>,
    /// A session kept alive by its launcher's heartbeat (`valetkey run`):
    /// it lives while the heartbeat lasts, up to `max_session`, instead of
    /// a fixed TTL.
    pub session: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintPlan {
    pub env: String,
    /// Provider → scopes the credential carries. Never empty, never holds a
    /// scope whose tier an agent may not hold.
    pub grants: BTreeMap<String, BTreeSet<String>>,
    pub stripped: Vec<Stripped>,
    /// How long the credential lives: for a session, its longest length.
    pub ttl: Duration,
    /// Set when the TTL is shorter than asked for (or than the default).
    pub ttl_limited_by: Option<TtlLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Stripped {
    /// `None` when no provider of the credential knows the scope.
    pub provider: Option<String>,
    pub scope: String,
    pub reason: StripReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StripReason {
    /// Destructive scopes are never placed in an agent credential.
    Destructive,
    /// Catastrophic scopes are never placed in an agent credential.
    Catastrophic,
    /// Requested, but no grant of this agent in this environment gives it.
    NotGranted,
    /// Requested, but none of the credential's providers has such a scope.
    UnknownScope,
}

impl StripReason {
    pub fn explain(self) -> &'static str {
        match self {
            StripReason::Destructive => {
                "destructive scopes are never placed in an agent credential; a destructive operation needs a human's approval"
            }
            StripReason::Catastrophic => {
                "catastrophic scopes are never placed in an agent credential; such an operation needs two humans' approval"
            }
            StripReason::NotGranted => "no grant of this agent gives this scope in this environment",
            StripReason::UnknownScope => "none of the credential's providers has a scope of this name",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum TtlLimit {
    /// `[credentials] max_ttl`.
    ServerMax,
    /// `[credentials] max_session`, for a session.
    SessionMax,
    /// A grant's `max_ttl` for this provider.
    GrantMax { provider: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintRefusal {
    #[error("environment `{env}` is not defined; defined environments: {}", known.join(", "))]
    UnknownEnvironment { env: String, known: Vec<String> },
    #[error("agent `{agent}` has no [agents.{agent}] section in the configuration")]
    AgentNotConfigured { agent: String },
    #[error("environment `{env}` is protected and no grant of agent `{agent}` names it")]
    ProtectedEnvironment { agent: String, env: String },
    #[error("agent `{agent}` has no grant in environment `{env}`; it has grants in: {}", granted.join(", "))]
    NoGrant {
        agent: String,
        env: String,
        granted: Vec<String>,
    },
    #[error("provider `{provider}` is not defined")]
    UnknownProvider { provider: String },
    #[error("agent `{agent}` has no grant for provider `{provider}` in environment `{env}`")]
    ProviderNotGranted {
        agent: String,
        provider: String,
        env: String,
    },
    #[error(
        "nothing is left to grant of {}: {}",
        if asked.is_empty() { "the scopes granted".to_owned() } else { format!("the scopes asked for ({})", asked.join(", ")) },
        stripped_text(stripped)
    )]
    NothingGrantable {
        /// The scopes the mint named; empty when it took every granted one.
        asked: Vec<String>,
        stripped: Vec<Stripped>,
    },
    #[error("a ttl must be at least one second")]
    TtlTooShort,
}

/// Each scope stripped, named with why: what a refusal of the whole mint
/// tells whoever asked.
fn stripped_text(stripped: &[Stripped]) -> String {
    if stripped.is_empty() {
        return "the grants give no scope in this environment".to_owned();
    }
    stripped
        .iter()
        .map(|s| match &s.provider {
            Some(provider) => format!("{provider} scope `{}` ({})", s.scope, s.reason.explain()),
            None => format!("scope `{}` ({})", s.scope, s.reason.explain()),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a lifetime asked for is written: whole seconds (`900`) or a
/// duration (`15m`, `1h30m`), as `--ttl` and the mint API's `ttl` say.
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("`{text}` is too many seconds"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a lifetime ({e}): write seconds (900) or a duration (15m, 1h30m)"))
}

/// Decides what one credential for `agent` may hold.
pub fn plan_mint(rules: &Rules, agent: &str, req: &MintRequest) -> Result<MintPlan, MintRefusal> {
    let env = req.env.as_str();
    let Some(&protected) = rules.environments.get(env) else {
        return Err(MintRefusal::UnknownEnvironment {
            env: env.to_owned(),
            known: rules.environments.keys().cloned().collect(),
        });
    };
    let Some(grants) = rules.agents.get(agent) else {
        return Err(MintRefusal::AgentNotConfigured {
            agent: agent.to_owned(),
        });
    };
    if req.ttl.is_some_and(|t| t < Duration::from_secs(1)) {
        return Err(MintRefusal::TtlTooShort);
    }

    let applicable: Vec<&Grant> = grants.iter().filter(|g| g.covers(env, protected)).collect();
    if applicable.is_empty() {
        let wildcard = grants
            .iter()
            .any(|g| g.environments.iter().any(|e| e == ANY_UNPROTECTED));
        return Err(if protected && wildcard {
            MintRefusal::ProtectedEnvironment {
                agent: agent.to_owned(),
                env: env.to_owned(),
            }
        } else {
            MintRefusal::NoGrant {
                agent: agent.to_owned(),
                env: env.to_owned(),
                granted: granted_environments(rules, grants),
            }
        });
    }

    let granted_providers: BTreeSet<&str> = applicable.iter().map(|g| g.provider.as_str()).collect();
    let selected: BTreeSet<&str> = match &req.providers {
        None => granted_providers.clone(),
        Some(asked) => {
            for p in asked {
                if !rules.scopes.contains_key(p) {
                    return Err(MintRefusal::UnknownProvider { provider: p.clone() });
                }
                if !granted_providers.contains(p.as_str()) {
                    return Err(MintRefusal::ProviderNotGranted {
                        agent: agent.to_owned(),
                        provider: p.clone(),
                        env: env.to_owned(),
                    });
                }
            }
            asked.iter().map(String::as_str).collect()
        }
    };

    let empty = BTreeMap::new();
    let mut stripped = BTreeSet::new();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // A session's length is capped by `max_session` where a fixed TTL is
    // by `max_ttl`; a grant's own cap holds for both.
    let mut ttl_caps: Vec<(Duration, TtlLimit)> = vec![if req.session {
        (rules.limits.max_session, TtlLimit::SessionMax)
    } else {
        (rules.limits.max_ttl, TtlLimit::ServerMax)
    }];

    for &provider in &selected {
        let catalog = rules.scopes.get(provider).unwrap_or(&empty);
        let provider_grants: Vec<&&Grant> = applicable.iter().filter(|g| g.provider == provider).collect();
        let granted: BTreeSet<&str> = provider_grants
            .iter()
            .flat_map(|g| g.scopes.iter().map(String::as_str))
            .collect();
        let mut held = BTreeSet::new();
        for &scope in &granted {
            let wanted = req.scopes.as_ref().is_none_or(|s| s.iter().any(|w| w == scope));
            if !wanted {
                continue;
            }
            // A scope the catalog does not know has no tier we could trust:
            // treat it as the worst, so it is never held.
            let tier = catalog.get(scope).copied().unwrap_or(Tier::Catastrophic);
            if tier.agent_may_hold() {
                held.insert(scope.to_owned());
            } else {
                stripped.insert(Stripped {
                    provider: Some(provider.to_owned()),
                    scope: scope.to_owned(),
                    reason: tier_reason(tier),
                });
            }
        }
        if !held.is_empty() {
            if let Some(cap) = provider_grants.iter().filter_map(|g| g.max_ttl).min() {
                ttl_caps.push((
                    cap,
                    TtlLimit::GrantMax {
                        provider: provider.to_owned(),
                    },
                ));
            }
            out.insert(provider.to_owned(), held);
        }
    }

    for scope in req.scopes.iter().flatten() {
        let mut known = false;
        for &provider in &selected {
            let Some(&tier) = rules.scopes.get(provider).and_then(|c| c.get(scope)) else {
                continue;
            };
            known = true;
            let reason = if !tier.agent_may_hold() {
                tier_reason(tier)
            } else if out.get(provider).is_some_and(|h| h.contains(scope)) {
                continue;
            } else {
                StripReason::NotGranted
            };
            stripped.insert(Stripped {
                provider: Some(provider.to_owned()),
                scope: scope.clone(),
                reason,
            });
        }
        if !known {
            stripped.insert(Stripped {
                provider: None,
                scope: scope.clone(),
                reason: StripReason::UnknownScope,
            });
        }
    }

    let stripped: Vec<Stripped> = stripped.into_iter().collect();
    if out.is_empty() {
        return Err(MintRefusal::NothingGrantable {
            asked: req.scopes.clone().unwrap_or_default(),
            stripped,
        });
    }

    let wanted_ttl = req.ttl.unwrap_or(if req.session {
        rules.limits.max_session
    } else {
        rules.limits.default_ttl
    });
    let (cap, limit) = ttl_caps
        .into_iter()
        .min_by_key(|(d, _)| *d)
        .expect("the server maximum is always a cap");
    let (ttl, ttl_limited_by) = if cap < wanted_ttl {
        (cap, Some(limit))
    } else {
        (wanted_ttl, None)
    };

    Ok(MintPlan {
        env: env.to_owned(),
        grants: out,
        stripped,
        ttl: Duration::from_secs(ttl.as_secs().max(1)),
        ttl_limited_by,
    })
}

fn tier_reason(tier: Tier) -> StripReason {
    if tier >= Tier::Catastrophic {
        StripReason::Catastrophic
    } else {
        StripReason::Destructive
    }
}

fn granted_environments(rules: &Rules, grants: &[Grant]) -> Vec<String> {
    rules
        .environments
        .iter()
        .filter(|(name, protected)| grants.iter().any(|g| g.covers(name, **protected)))
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mins(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    fn rules() -> Rules {
        let railway: BTreeMap<String, Tier> = [
            ("read", Tier::Read),
            ("variable:write", Tier::Write),
            ("deployment:deploy", Tier::Deploy),
            ("volume:delete", Tier::Destructive),
            ("backup:delete", Tier::Catastrophic),
        ]
        .into_iter()
        .map(|(s, t)| (s.to_owned(), t))
        .collect();
        let github: BTreeMap<String, Tier> = [("read", Tier::Read), ("repo:delete", Tier::Catastrophic)]
            .into_iter()
            .map(|(s, t)| (s.to_owned(), t))
            .collect();
        let grant = |provider: &str, envs: &[&str], scopes: &[&str], max: Option<u64>| Grant {
            provider: provider.into(),
            environments: envs.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            max_ttl: max.map(mins),
        };
        Rules {
            environments: [("staging", false), ("dev", false), ("production", true)]
                .into_iter()
                .map(|(n, p)| (n.to_owned(), p))
                .collect(),
            scopes: [("railway".to_owned(), railway), ("github".to_owned(), github)].into(),
            agents: [
                (
                    "coder".to_owned(),
                    vec![
                        grant(
                            "railway",
                            &["*"],
                            &["read", "variable:write", "deployment:deploy"],
                            Some(30),
                        ),
                        grant("github", &["staging"], &["read"], None),
                    ],
                ),
                (
                    "oncall".to_owned(),
                    vec![grant("railway", &["production"], &["read"], Some(10))],
                ),
                // A grant that config check would reject; the plan must still strip it.
                (
                    "careless".to_owned(),
                    vec![grant("railway", &["staging"], &["read", "volume:delete"], None)],
                ),
            ]
            .into(),
            limits: CredentialLimits {
                default_ttl: mins(15),
                max_ttl: mins(60),
                max_session: mins(240),
            },
            resources: BTreeMap::new(),
        }
    }

    fn req(env: &str) -> MintRequest {
        MintRequest {
            env: env.into(),
            ..Default::default()
        }
    }

    fn scopes(plan: &MintPlan, provider: &str) -> Vec<String> {
        plan.grants[provider].iter().cloned().collect()
    }

    #[test]
    fn everything_granted_when_nothing_is_asked() {
        let plan = plan_mint(&rules(), "coder", &req("staging")).unwrap();
        assert_eq!(
            scopes(&plan, "railway"),
            ["deployment:deploy", "read", "variable:write"]
        );
        assert_eq!(scopes(&plan, "github"), ["read"]);
        assert!(plan.stripped.is_empty());
        assert_eq!(plan.ttl, mins(15));
        assert_eq!(plan.ttl_limited_by, None);
    }

    #[test]
    fn a_lifetime_is_seconds_or_a_duration() {
        assert_eq!(parse_lifetime("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_lifetime("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_lifetime("1h30m"), Ok(Duration::from_secs(5400)));
        let refused = parse_lifetime("soon").unwrap_err();
        assert!(
            refused.contains("seconds (900)") && refused.contains("15m"),
            "{refused}"
        );
    }

    #[test]
    fn wildcard_reaches_unprotected_environments_only() {
        let plan = plan_mint(&rules(), "coder", &req("dev")).unwrap();
        assert_eq!(plan.grants.keys().collect::<Vec<_>>(), ["railway"]);
        assert_eq!(
            plan_mint(&rules(), "coder", &req("production")),
            Err(MintRefusal::ProtectedEnvironment {
                agent: "coder".into(),
                env: "production".into()
            })
        );
    }

    #[test]
    fn protected_environment_needs_a_grant_that_names_it() {
        let plan = plan_mint(&rules(), "oncall", &req("production")).unwrap();
        assert_eq!(scopes(&plan, "railway"), ["read"]);
        assert_eq!(
            plan_mint(&rules(), "oncall", &req("staging")),
            Err(MintRefusal::NoGrant {
                agent: "oncall".into(),
                env: "staging".into(),
                granted: vec!["production".into()]
            })
        );
    }

    #[test]
    fn requested_scopes_are_intersected_and_the_rest_explained() {
        let r = MintRequest {
            scopes: Some(vec![
                "read".into(),
                "volume:delete".into(),
                "backup:delete".into(),
                "nonsense".into(),
            ]),
            ..req("staging")
        };
        let plan = plan_mint(&rules(), "coder", &r).unwrap();
        assert_eq!(scopes(&plan, "railway"), ["read"]);
        assert_eq!(scopes(&plan, "github"), ["read"]);
        let got: Vec<(Option<&str>, &str, StripReason)> = plan
            .stripped
            .iter()
            .map(|s| (s.provider.as_deref(), s.scope.as_str(), s.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, "nonsense", StripReason::UnknownScope),
                (Some("railway"), "backup:delete", StripReason::Catastrophic),
                (Some("railway"), "volume:delete", StripReason::Destructive),
            ]
        );
    }

    #[test]
    fn requested_but_not_granted_is_named() {
        let r = MintRequest {
            providers: Some(vec!["github".into()]),
            scopes: Some(vec!["read".into(), "repo:delete".into()]),
            ..req("staging")
        };
        let plan = plan_mint(&rules(), "coder", &r).unwrap();
        assert_eq!(plan.grants.keys().collect::<Vec<_>>(), ["github"]);
        assert_eq!(plan.stripped.len(), 1);
        assert_eq!(plan.stripped[0].reason, StripReason::Catastrophic);

        let r = MintRequest {
            providers: Some(vec!["railway".into()]),
            scopes: Some(vec!["read".into(), "variable:write".into()]),
            ..req("dev")
        };
        let plan = plan_mint(&rules(), "coder", &r).unwrap();
        assert_eq!(scopes(&plan, "railway"), ["read", "variable:write"]);
    }

    #[test]
    fn destructive_scopes_in_a_grant_are_stripped_anyway() {
        let plan = plan_mint(&rules(), "careless", &req("staging")).unwrap();
        assert_eq!(scopes(&plan, "railway"), ["read"]);
        assert_eq!(plan.stripped[0].scope, "volume:delete");
        assert_eq!(plan.stripped[0].reason, StripReason::Destructive);
    }

    #[test]
    fn nothing_left_is_a_refusal_not_an_empty_credential() {
        let r = MintRequest {
            scopes: Some(vec!["volume:delete".into()]),
            ..req("staging")
        };
        match plan_mint(&rules(), "careless", &r) {
            Err(refusal @ MintRefusal::NothingGrantable { .. }) => {
                let MintRefusal::NothingGrantable { stripped, .. } = &refusal else {
                    unreachable!()
                };
                assert_eq!(stripped.len(), 1);
                // Whoever asked reads what they asked and why each was stripped.
                let said = refusal.to_string();
                assert!(said.contains("asked for (volume:delete)"), "{said}");
                assert!(
                    said.contains("railway scope `volume:delete` (destructive scopes are never placed"),
                    "{said}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn ttl_is_the_least_of_asked_grant_and_server() {
        let cases = [
            // (agent, env, asked minutes, expected minutes, limited by)
            ("coder", "staging", None, 15, None),
            ("coder", "staging", Some(20), 20, None),
            (
                "coder",
                "staging",
                Some(45),
                30,
                Some(TtlLimit::GrantMax {
                    provider: "railway".into(),
                }),
            ),
            ("careless", "staging", Some(600), 60, Some(TtlLimit::ServerMax)),
            (
                "oncall",
                "production",
                None,
                10,
                Some(TtlLimit::GrantMax {
                    provider: "railway".into(),
                }),
            ),
        ];
        for (agent, env, asked, want, limit) in cases {
            let r = MintRequest {
                ttl: asked.map(mins),
                ..req(env)
            };
            let plan = plan_mint(&rules(), agent, &r).unwrap();
            assert_eq!(plan.ttl, mins(want), "{agent} {env} {asked:?}");
            assert_eq!(plan.ttl_limited_by, limit, "{agent} {env} {asked:?}");
        }
    }

    #[test]
    fn a_session_lasts_to_max_session_not_max_ttl_and_grants_still_cap_it() {
        // (agent, env, asked, want minutes, limited by)
        let cases = [
            ("careless", "staging", None, 240, None),
            ("careless", "staging", Some(90), 90, None),
            ("careless", "staging", Some(600), 240, Some(TtlLimit::SessionMax)),
            (
                "coder",
                "staging",
                None,
                30,
                Some(TtlLimit::GrantMax {
                    provider: "railway".into(),
                }),
            ),
        ];
        for (agent, env, asked, want, limit) in cases {
            let r = MintRequest {
                ttl: asked.map(mins),
                session: true,
                ..req(env)
            };
            let plan = plan_mint(&rules(), agent, &r).unwrap();
            assert_eq!(plan.ttl, mins(want), "{agent} {env} {asked:?}");
            assert_eq!(plan.ttl_limited_by, limit, "{agent} {env} {asked:?}");
        }
    }

    #[test]
    fn bad_requests_are_refused_by_name() {
        let rules = rules();
        assert!(matches!(
            plan_mint(&rules, "coder", &req("prod")),
            Err(MintRefusal::UnknownEnvironment { .. })
        ));
        assert!(matches!(
            plan_mint(&rules, "ghost", &req("staging")),
            Err(MintRefusal::AgentNotConfigured { .. })
        ));
        let r = MintRequest {
            providers: Some(vec!["aws".into()]),
            ..req("staging")
        };
        assert!(matches!(
            plan_mint(&rules, "coder", &r),
            Err(MintRefusal::UnknownProvider { .. })
        ));
        let r = MintRequest {
            providers: Some(vec!["github".into()]),
            ..req("dev")
        };
        assert!(matches!(
            plan_mint(&rules, "coder", &r),
            Err(MintRefusal::ProviderNotGranted { .. })
        ));
        let r = MintRequest {
            ttl: Some(Duration::from_millis(200)),
            ..req("staging")
        };
        assert_eq!(plan_mint(&rules, "coder", &r), Err(MintRefusal::TtlTooShort));
    }
}
