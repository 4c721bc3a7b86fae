//! Whether a proxied request may reach the provider: the operations a
//! provider adapter found in it, bound to the environments that own the
//! resources they touch, against what the credential holds.
//!
//! Binding comes before scopes: a staging credential aimed at a production
//! volume is named a mismatch even when the operation would also need an
//! approval, because the mismatch is what a human must hear about.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::{Rules, Tier};

/// The resource kind whose id names an environment; an operation that acts
/// `within_environment` is confined to the environment this id names.
pub const ENVIRONMENT_KIND: &str = "environment";

/// One thing a request does, as the provider's rule pack names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// `mutation volumeDelete`, `DELETE /repos/{owner}/{repo}`, …
    pub name: String,
    /// `None` when no rule names the operation: it is refused.
    pub scope: Option<String>,
    /// The scope's tier; `catastrophic` when no rule names the operation.
    pub tier: Tier,
    pub resources: Vec<ResourceRef>,
    /// How many of `resources`, from the first, the operation's own
    /// arguments name; the rest are named by fields nested under it, which
    /// read within what it reads and cannot narrow it to one environment.
    pub named_by_arguments: usize,
    /// The operation acts only inside the environment named by its
    /// environment-kind resource (a Railway service instance, not the whole
    /// service), so resources shared with other environments are not at risk.
    pub within_environment: bool,
    /// The rule pack says the operation touches no environment's resources
    /// (the caller's identity, rate limits, public metadata). Any other
    /// read must name what it reads.
    pub resource_free: bool,
    /// Why the rule pack refuses the operation outright, when it names it
    /// only to refuse it (an alternative address of a resource).
    pub refused_by_pack: Option<String>,
    /// The operation reads objects under what it names (a GraphQL field
    /// with nested selections, or one that returns one environment's
    /// objects), which may belong to other environments than the resource
    /// it is bound to.
    pub nested_objects: bool,
    /// Where a nested selection goes beyond what the operation names, when
    /// it does.
    pub beyond: Option<Beyond>,
}

/// How a nested selection goes beyond what its operation names, in words
/// for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Beyond {
    /// It follows a reference to a resource that spans environments.
    Across(String),
    /// It selects a field the provider's schema, as the broker knows it,
    /// does not have: what it reads cannot be told.
    UnknownField(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ResourceRef {
    pub kind: String,
    pub id: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`", self.kind, self.id)
    }
}

/// Which environments own the ids a provider knows, by kind: an id binds
/// only as the kind of resource the map lists it as.
#[derive(Debug, Clone, Default)]
pub struct ProviderResources {
    /// (kind, id) → owning environments. Ids of the kinds in
    /// `case_insensitive` are lowercased.
    pub owners: BTreeMap<(String, String), Vec<String>>,
    /// Reads of ids not in the map are allowed (ops' choice per provider).
    pub unknown_reads: bool,
    /// The kinds whose ids the provider treats without regard to case
    /// (GitHub `owner/repo`).
    pub case_insensitive: BTreeSet<String>,
}

impl ProviderResources {
    pub fn owners(&self, kind: &str, id: &str) -> Option<&[String]> {
        self.owners
            .get(&(kind.to_owned(), self.key(kind, id)))
            .map(Vec::as_slice)
    }

    /// An id as the map keys it.
    pub fn key(&self, kind: &str, id: &str) -> String {
        if self.case_insensitive.contains(kind) {
            id.to_ascii_lowercase()
        } else {
            id.to_owned()
        }
    }
}

/// What the credential presents on this request.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub env: &'a str,
    pub provider: &'a str,
    /// The scopes the credential holds on this provider; `None` when it holds
    /// none there.
    pub scopes: Option<&'a [String]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `None` when the request may go upstream.
    pub refusal: Option<Refusal>,
    pub operations: Vec<BoundOperation>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.refusal.is_none()
    }
}

/// An operation with the owners of each resource it touches, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundOperation {
    pub name: String,
    pub scope: Option<String>,
    pub tier: Tier,
    pub resources: Vec<BoundResource>,
    /// The refusal this operation alone would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundResource {
    pub kind: String,
    pub id: String,
    /// `None` when the id is not in the resource map.
    pub owners: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    #[error("this credential is for `{env}` and holds no scope on provider `{provider}`")]
    ProviderNotGranted { provider: String, env: String },
    #[error("the request carries no operation the broker can name")]
    NoOperation,
    #[error("{operation} touches {resource}, which belongs to {}, but this credential is for `{env}`", owners.join(" and "))]
    CredentialMismatch {
        operation: String,
        resource: ResourceRef,
        owners: Vec<String>,
        env: String,
    },
    #[error("{operation} touches {resource}, which is shared by {}: anything beyond reading it could reach another environment", owners.join(" and "))]
    SharedResource {
        operation: String,
        resource: ResourceRef,
        owners: Vec<String>,
    },
    #[error(
        "{operation} reads objects under {resource}, which is shared by {}: they may belong to another environment. Name your environment (an environment id of yours), or select only the resource's own fields", owners.join(" and ")
    )]
    SharedRead {
        operation: String,
        resource: ResourceRef,
        owners: Vec<String>,
    },
    #[error("{operation} reads beyond the resources it names: {why}")]
    ReadAcross { operation: String, why: String },
    #[error("{operation} is refused: {why}")]
    UnknownField { operation: String, why: String },
    #[error("{operation} touches {resource}, which is not in the broker's resource map, so its environment is unknown")]
    UnknownResource { operation: String, resource: ResourceRef },
    #[error("{operation} ({tier}) names no resource id, so the broker cannot tell which environment it would change")]
    UnboundOperation { operation: String, tier: Tier },
    #[error("{operation} is not in the rule pack of provider `{provider}`; operations no rule names are refused")]
    UnknownOperation { operation: String, provider: String },
    #[error("{operation} is refused by the rule pack of provider `{provider}`: {why}")]
    RefusedOperation {
        operation: String,
        provider: String,
        why: String,
    },
    #[error(
        "{operation} names no resource, so the broker cannot tell which environment's data it would read; read through a route that names the resource"
    )]
    UnboundRead { operation: String },
    #[error(
        "{operation} needs scope `{scope}`, which is {tier}: no agent credential ever holds it; a human must approve it"
    )]
    ApprovalRequired {
        operation: String,
        scope: String,
        tier: Tier,
    },
    #[error("{operation} needs scope `{scope}` ({tier}), which this credential does not hold")]
    ScopeNotGranted {
        operation: String,
        scope: String,
        tier: Tier,
        held: Vec<String>,
    },
}

impl Refusal {
    /// The stable name problem types and audit events use.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::ProviderNotGranted { .. } | Refusal::CredentialMismatch { .. } => "credential_mismatch",
            Refusal::SharedResource { .. } | Refusal::SharedRead { .. } | Refusal::ReadAcross { .. } => {
                "shared_resource"
            }
            Refusal::UnknownResource { .. } | Refusal::UnboundOperation { .. } => "unknown_resource",
            Refusal::NoOperation
            | Refusal::UnknownOperation { .. }
            | Refusal::RefusedOperation { .. }
            | Refusal::UnknownField { .. }
            | Refusal::UnboundRead { .. } => "unknown_operation",
            Refusal::ApprovalRequired { .. } => "approval_required",
            Refusal::ScopeNotGranted { .. } => "scope_not_granted",
        }
    }

    /// Which refusal a request with several gets: the one a human most needs
    /// to hear (another environment's resource before a missing scope).
    fn rank(&self) -> u8 {
        match self {
            Refusal::ProviderNotGranted { .. } => 0,
            Refusal::CredentialMismatch { .. } => 1,
            Refusal::SharedResource { .. } | Refusal::SharedRead { .. } | Refusal::ReadAcross { .. } => 2,
            Refusal::UnknownResource { .. } | Refusal::UnboundOperation { .. } => 3,
            Refusal::NoOperation
            | Refusal::UnknownOperation { .. }
            | Refusal::RefusedOperation { .. }
            | Refusal::UnknownField { .. }
            | Refusal::UnboundRead { .. } => 4,
            Refusal::ApprovalRequired { .. } => 5,
            Refusal::ScopeNotGranted { .. } => 6,
        }
    }
}

/// Decides a request: every operation must be named by a rule, touch only
/// resources of the credential's environment (shared ones only to read), and
/// need a scope the credential holds.
pub fn decide(rules: &Rules, access: &Access<'_>, operations: &[Operation]) -> Decision {
    let empty = ProviderResources::default();
    let resources = resources_of(rules, access, &empty);
    let mut bound = Vec::with_capacity(operations.len());
    let mut refusal: Option<Refusal> = None;
    for op in operations {
        let resources_bound: Vec<BoundResource> = op
            .resources
            .iter()
            .map(|r| BoundResource {
                kind: r.kind.clone(),
                id: r.id.clone(),
                owners: resources.owners(&r.kind, &r.id).map(<[String]>::to_vec),
            })
            .collect();
        let this = judge(access, resources, op, &resources_bound, false);
        bound.push(BoundOperation {
            name: op.name.clone(),
            scope: op.scope.clone(),
            tier: op.tier,
            resources: resources_bound,
            refused: this.as_ref().map(Refusal::kind),
        });
        if let Some(r) = this
            && refusal.as_ref().is_none_or(|current| r.rank() < current.rank())
        {
            refusal = Some(r);
        }
    }
    if access.scopes.is_none() {
        refusal = Some(Refusal::ProviderNotGranted {
            provider: access.provider.to_owned(),
            env: access.env.to_owned(),
        });
    } else if operations.is_empty() {
        refusal = Some(Refusal::NoOperation);
    }
    Decision {
        refusal,
        operations: bound,
    }
}

/// What a human's approval would take for a refused request: set when the
/// request is refused only for a tier no credential holds or for changing a
/// resource several environments share, and would pass with both allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalNeed {
    /// Distinct approvers: two for a catastrophic operation or a change to a
    /// shared resource, one otherwise.
    pub approvers: u8,
    /// The highest tier among the operations.
    pub tier: Tier,
    /// Every environment the request reaches: the credential's and each
    /// owner of a resource it touches. An approver must cover them all.
    pub environments: Vec<String>,
}

/// Whether `decision`'s refusal is one a human may lift, and what lifting it
/// takes. Anything else (another environment's resource, an unknown one, a
/// read across environments, a scope the credential was not granted) no
/// approval lifts: it is a wrong request, not a dangerous one.
pub fn approval_need(
    rules: &Rules,
    access: &Access<'_>,
    operations: &[Operation],
    decision: &Decision,
) -> Option<ApprovalNeed> {
    if !matches!(
        decision.refusal,
        Some(Refusal::ApprovalRequired { .. } | Refusal::SharedResource { .. })
    ) {
        return None;
    }
    let empty = ProviderResources::default();
    let map = resources_of(rules, access, &empty);
    let mut need = ApprovalNeed {
        approvers: 1,
        tier: Tier::Read,
        environments: vec![access.env.to_owned()],
    };
    for (op, bound) in operations.iter().zip(&decision.operations) {
        if judge(access, map, op, &bound.resources, true).is_some() {
            return None;
        }
        need.tier = need.tier.max(op.tier);
        for owners in bound.resources.iter().filter_map(|r| r.owners.as_ref()) {
            if op.tier > Tier::Read && owners.len() > 1 {
                need.approvers = 2;
            }
            need.environments.extend(owners.iter().cloned());
        }
    }
    if need.tier == Tier::Catastrophic {
        need.approvers = 2;
    }
    need.environments.sort();
    need.environments.dedup();
    Some(need)
}

fn resources_of<'a>(rules: &'a Rules, access: &Access<'_>, empty: &'a ProviderResources) -> &'a ProviderResources {
    rules.resources.get(access.provider).unwrap_or(empty)
}

/// The refusal one operation earns on its own, if any. `approving`: as if a
/// human had approved it, so that changing a shared resource and a tier no
/// credential holds are not refused.
fn judge(
    access: &Access<'_>,
    map: &ProviderResources,
    op: &Operation,
    bound: &[BoundResource],
    approving: bool,
) -> Option<Refusal> {
    if let Some(why) = &op.refused_by_pack {
        return Some(Refusal::RefusedOperation {
            operation: op.name.clone(),
            provider: access.provider.to_owned(),
            why: why.clone(),
        });
    }
    let Some(scope) = &op.scope else {
        return Some(Refusal::UnknownOperation {
            operation: op.name.clone(),
            provider: access.provider.to_owned(),
        });
    };
    let changes = op.tier > Tier::Read;
    // An operation confined to one environment only reaches the instances of
    // shared resources in that environment; it must still be ours.
    let pinned = op.within_environment && bound.iter().any(|r| r.kind == ENVIRONMENT_KIND && r.owners.is_some());
    for r in bound {
        let resource = || ResourceRef {
            kind: r.kind.clone(),
            id: r.id.clone(),
        };
        match &r.owners {
            None if !changes && map.unknown_reads => {}
            None => {
                return Some(Refusal::UnknownResource {
                    operation: op.name.clone(),
                    resource: resource(),
                });
            }
            Some(owners) if !owners.iter().any(|e| e == access.env) => {
                return Some(Refusal::CredentialMismatch {
                    operation: op.name.clone(),
                    resource: resource(),
                    owners: owners.clone(),
                    env: access.env.to_owned(),
                });
            }
            Some(owners) if changes && owners.len() > 1 && !(pinned && r.kind != ENVIRONMENT_KIND) && !approving => {
                return Some(Refusal::SharedResource {
                    operation: op.name.clone(),
                    resource: resource(),
                    owners: owners.clone(),
                });
            }
            Some(_) => {}
        }
    }
    // Reading what lies under a shared resource (a query's, or a
    // mutation's answer) reaches the other environments' share of it, unless
    // the operation's own arguments name an environment of ours that
    // narrows it (a nested field naming one narrows only itself).
    let ours_named = bound[..op.named_by_arguments.min(bound.len())]
        .iter()
        .any(|r| r.kind == ENVIRONMENT_KIND && r.owners.as_deref() == Some(&[access.env.to_owned()][..]));
    if op.nested_objects
        && !ours_named
        && let Some(r) = bound.iter().find(|r| r.owners.as_ref().is_some_and(|o| o.len() > 1))
    {
        return Some(Refusal::SharedRead {
            operation: op.name.clone(),
            resource: ResourceRef {
                kind: r.kind.clone(),
                id: r.id.clone(),
            },
            owners: r.owners.clone().unwrap_or_default(),
        });
    }
    if changes && bound.is_empty() {
        return Some(Refusal::UnboundOperation {
            operation: op.name.clone(),
            tier: op.tier,
        });
    }
    if bound.is_empty() && !op.resource_free {
        return Some(Refusal::UnboundRead {
            operation: op.name.clone(),
        });
    }
    match &op.beyond {
        Some(Beyond::Across(why)) => {
            return Some(Refusal::ReadAcross {
                operation: op.name.clone(),
                why: why.clone(),
            });
        }
        Some(Beyond::UnknownField(why)) => {
            return Some(Refusal::UnknownField {
                operation: op.name.clone(),
                why: why.clone(),
            });
        }
        None => {}
    }
    if !op.tier.agent_may_hold() {
        return (!approving).then(|| Refusal::ApprovalRequired {
            operation: op.name.clone(),
            scope: scope.clone(),
            tier: op.tier,
        });
    }
    let held = access.scopes.unwrap_or_default();
    if !held.iter().any(|s| s == scope) {
        return Some(Refusal::ScopeNotGranted {
            operation: op.name.clone(),
            scope: scope.clone(),
            tier: op.tier,
            held: held.to_vec(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        let owners: BTreeMap<(String, String), Vec<String>> = [
            ("volume", "vol_stg", vec!["staging"]),
            ("volume", "vol_prod", vec!["production"]),
            ("volume", "vol_shared", vec!["staging", "production"]),
            ("service", "svc_shared", vec!["staging", "production"]),
            ("environment", "env_stg", vec!["staging"]),
            ("environment", "env_prod", vec!["production"]),
            ("deployment", "dep_stg", vec!["staging"]),
            ("repository", "acme/api", vec!["staging"]),
        ]
        .into_iter()
        .map(|(kind, id, envs)| {
            (
                (kind.to_owned(), id.to_owned()),
                envs.into_iter().map(str::to_owned).collect(),
            )
        })
        .collect();
        let mut rules = Rules::default();
        rules.resources.insert(
            "railway".into(),
            ProviderResources {
                owners: owners.clone(),
                unknown_reads: false,
                case_insensitive: BTreeSet::new(),
            },
        );
        rules.resources.insert(
            "github".into(),
            ProviderResources {
                owners,
                unknown_reads: true,
                case_insensitive: ["repository".to_owned()].into(),
            },
        );
        rules
    }

    fn op(name: &str, scope: &str, tier: Tier, ids: &[(&str, &str)]) -> Operation {
        Operation {
            name: name.into(),
            scope: Some(scope.into()),
            tier,
            named_by_arguments: ids.len(),
            beyond: None,
            resources: ids
                .iter()
                .map(|(kind, id)| ResourceRef {
                    kind: (*kind).into(),
                    id: (*id).into(),
                })
                .collect(),
            within_environment: false,
            resource_free: false,
            refused_by_pack: None,
            nested_objects: false,
        }
    }

    fn staging(held: &[String]) -> Access<'_> {
        Access {
            env: "staging",
            provider: "railway",
            scopes: Some(held),
        }
    }

    fn every_grantable() -> Vec<String> {
        ["read", "variable:write", "deployment:deploy", "service:write"]
            .map(String::from)
            .to_vec()
    }

    fn kind(d: &Decision) -> Option<&'static str> {
        d.refusal.as_ref().map(Refusal::kind)
    }

    #[test]
    fn the_incident_is_refused_as_a_shared_resource() {
        let held = every_grantable();
        let delete = op(
            "mutation volumeDelete",
            "volume:delete",
            Tier::Destructive,
            &[("volume", "vol_shared")],
        );
        let d = decide(&rules(), &staging(&held), &[delete]);
        assert_eq!(kind(&d), Some("shared_resource"));
        assert_eq!(
            d.operations[0].resources[0].owners,
            Some(vec!["staging".into(), "production".into()])
        );
    }

    #[test]
    fn another_environments_resource_is_a_mismatch_even_to_read() {
        let held = every_grantable();
        let read = op("query volume", "read", Tier::Read, &[("volume", "vol_prod")]);
        let d = decide(&rules(), &staging(&held), &[read]);
        assert_eq!(kind(&d), Some("credential_mismatch"));
        assert!(d.refusal.unwrap().to_string().contains("belongs to production"));
    }

    #[test]
    fn a_mismatch_outranks_a_missing_approval_in_the_same_request() {
        let held = every_grantable();
        let ops = [
            op(
                "mutation volumeDelete",
                "volume:delete",
                Tier::Destructive,
                &[("volume", "vol_stg")],
            ),
            op("query volume", "read", Tier::Read, &[("volume", "vol_prod")]),
        ];
        let d = decide(&rules(), &staging(&held), &ops);
        assert_eq!(kind(&d), Some("credential_mismatch"));
        assert_eq!(d.operations[0].refused, Some("approval_required"));
        assert_eq!(d.operations[1].refused, Some("credential_mismatch"));
    }

    #[test]
    fn destructive_operations_on_own_resources_need_approval() {
        let held = every_grantable();
        let d = decide(
            &rules(),
            &staging(&held),
            &[op(
                "mutation volumeDelete",
                "volume:delete",
                Tier::Destructive,
                &[("volume", "vol_stg")],
            )],
        );
        assert_eq!(kind(&d), Some("approval_required"));
    }

    #[test]
    fn shared_resources_may_be_read_but_not_changed() {
        let held = every_grantable();
        let read = op("query volume", "read", Tier::Read, &[("volume", "vol_shared")]);
        assert!(decide(&rules(), &staging(&held), &[read]).allowed());
        let write = op(
            "mutation serviceUpdate",
            "service:write",
            Tier::Write,
            &[("service", "svc_shared")],
        );
        assert_eq!(
            kind(&decide(&rules(), &staging(&held), &[write])),
            Some("shared_resource")
        );
    }

    #[test]
    fn an_operation_within_our_environment_may_change_a_shared_service_instance() {
        let held = every_grantable();
        let mut redeploy = op(
            "mutation serviceInstanceRedeploy",
            "deployment:deploy",
            Tier::Deploy,
            &[("service", "svc_shared"), ("environment", "env_stg")],
        );
        redeploy.within_environment = true;
        assert!(decide(&rules(), &staging(&held), std::slice::from_ref(&redeploy)).allowed());

        // Pinned to production's environment: a mismatch, not an allowance.
        redeploy.resources[1].id = "env_prod".into();
        assert_eq!(
            kind(&decide(&rules(), &staging(&held), std::slice::from_ref(&redeploy))),
            Some("credential_mismatch")
        );

        // Without an environment id it is not pinned, and the shared service is refused.
        redeploy.resources.pop();
        assert_eq!(
            kind(&decide(&rules(), &staging(&held), &[redeploy])),
            Some("shared_resource")
        );
    }

    #[test]
    fn unknown_ids_are_refused_unless_the_provider_allows_reading_them() {
        let held = every_grantable();
        let read = op("query volume", "read", Tier::Read, &[("volume", "vol_new")]);
        assert_eq!(
            kind(&decide(&rules(), &staging(&held), std::slice::from_ref(&read))),
            Some("unknown_resource")
        );
        let github = Access {
            provider: "github",
            ..staging(&held)
        };
        assert!(decide(&rules(), &github, &[read]).allowed());
        let write = op(
            "PUT /repos/{owner}/{repo}/contents/**",
            "read",
            Tier::Write,
            &[("repository", "acme/new")],
        );
        assert_eq!(kind(&decide(&rules(), &github, &[write])), Some("unknown_resource"));
    }

    #[test]
    fn github_ids_bind_without_regard_to_case() {
        let held = vec!["contents:write".to_owned()];
        let github = Access {
            env: "staging",
            provider: "github",
            scopes: Some(&held),
        };
        let write = op(
            "PUT contents",
            "contents:write",
            Tier::Write,
            &[("repository", "Acme/API")],
        );
        assert!(decide(&rules(), &github, &[write]).allowed());
    }

    #[test]
    fn an_id_binds_only_as_the_kind_the_map_lists_it_as() {
        let held = every_grantable();
        // A staging environment's id passed where a workspace id goes binds nothing.
        let read = op("query projects", "read", Tier::Read, &[("workspace", "env_stg")]);
        assert_eq!(
            kind(&decide(&rules(), &staging(&held), &[read])),
            Some("unknown_resource")
        );
    }

    #[test]
    fn a_change_that_names_no_resource_is_refused() {
        let held = every_grantable();
        let d = decide(
            &rules(),
            &staging(&held),
            &[op("mutation variableUpsert", "variable:write", Tier::Write, &[])],
        );
        assert_eq!(kind(&d), Some("unknown_resource"));
        assert!(matches!(d.refusal, Some(Refusal::UnboundOperation { .. })));
    }

    #[test]
    fn a_read_that_names_no_resource_is_refused_unless_the_pack_calls_it_resource_free() {
        let held = every_grantable();
        let unbound = op("GET /search/code", "read", Tier::Read, &[]);
        let d = decide(&rules(), &staging(&held), std::slice::from_ref(&unbound));
        assert_eq!(kind(&d), Some("unknown_operation"));
        assert!(matches!(d.refusal, Some(Refusal::UnboundRead { .. })));
        let me = Operation {
            resource_free: true,
            ..op("query me", "read", Tier::Read, &[])
        };
        assert!(decide(&rules(), &staging(&held), &[me]).allowed());
    }

    #[test]
    fn objects_under_a_shared_resource_are_read_only_through_an_environment_of_ours() {
        let held = every_grantable();
        let nested = |ids: &[(&str, &str)]| Operation {
            nested_objects: true,
            ..op("query environments", "read", Tier::Read, ids)
        };
        let d = decide(&rules(), &staging(&held), &[nested(&[("volume", "vol_shared")])]);
        assert_eq!(kind(&d), Some("shared_resource"));
        assert!(matches!(d.refusal, Some(Refusal::SharedRead { .. })));
        let pinned = nested(&[("volume", "vol_shared"), ("environment", "env_stg")]);
        assert!(decide(&rules(), &staging(&held), &[pinned]).allowed());
        let own_fields = op("query volume", "read", Tier::Read, &[("volume", "vol_shared")]);
        assert!(decide(&rules(), &staging(&held), &[own_fields]).allowed());
        let ours_alone = nested(&[("volume", "vol_stg")]);
        assert!(decide(&rules(), &staging(&held), &[ours_alone]).allowed());
    }

    #[test]
    fn an_environment_named_only_by_a_nested_field_does_not_pin_a_shared_read() {
        let held = every_grantable();
        // `project(id: shared) { services … x: deployments(environmentId: ours) }`
        let nested_pin = Operation {
            nested_objects: true,
            named_by_arguments: 1,
            ..op(
                "query volume",
                "read",
                Tier::Read,
                &[("volume", "vol_shared"), ("environment", "env_stg")],
            )
        };
        let d = decide(&rules(), &staging(&held), &[nested_pin]);
        assert!(matches!(d.refusal, Some(Refusal::SharedRead { .. })), "{:?}", d.refusal);
        // A change confined to our environment (an ops rule) that answers
        // with the shared service itself, and reads what lies under it: its
        // environment id does not narrow the service.
        let answer = Operation {
            within_environment: true,
            nested_objects: true,
            named_by_arguments: 0,
            ..op(
                "mutation serviceSomethingInEnvironment",
                "service:write",
                Tier::Write,
                &[("service", "svc_shared"), ("environment", "env_stg")],
            )
        };
        let d = decide(&rules(), &staging(&held), std::slice::from_ref(&answer));
        assert!(matches!(d.refusal, Some(Refusal::SharedRead { .. })), "{:?}", d.refusal);
        let narrowed = Operation {
            named_by_arguments: 2,
            ..answer
        };
        assert!(decide(&rules(), &staging(&held), &[narrowed]).allowed());
    }

    #[test]
    fn a_read_beyond_what_it_names_is_refused_as_shared_even_on_our_own_resource() {
        let held = every_grantable();
        let across = Operation {
            nested_objects: true,
            beyond: Some(Beyond::Across(
                "it selects `deployments` under `deployment.service`".into(),
            )),
            ..op("query deployment", "read", Tier::Read, &[("deployment", "dep_stg")])
        };
        let d = decide(&rules(), &staging(&held), &[across]);
        assert_eq!(kind(&d), Some("shared_resource"));
        let message = d.refusal.unwrap().to_string();
        assert!(message.contains("deployment.service"), "{message}");
        // Another environment's resource is still named first.
        let theirs = Operation {
            beyond: Some(Beyond::Across("…".into())),
            ..op("query deployment", "read", Tier::Read, &[("volume", "vol_prod")])
        };
        let d = decide(&rules(), &staging(&held), &[theirs]);
        assert_eq!(kind(&d), Some("credential_mismatch"));
        // A field the schema lacks cannot be judged: unknown, even on a
        // resource-free root.
        let unknown = Operation {
            resource_free: true,
            beyond: Some(Beyond::UnknownField("it selects `secrets` under `me`".into())),
            ..op("query me", "read", Tier::Read, &[])
        };
        let d = decide(&rules(), &staging(&held), &[unknown]);
        assert_eq!(kind(&d), Some("unknown_operation"));
        assert!(matches!(d.refusal, Some(Refusal::UnknownField { .. })));
    }

    #[test]
    fn an_operation_the_pack_refuses_is_refused_with_its_reason() {
        let held = every_grantable();
        let by_number = Operation {
            scope: None,
            tier: Tier::Catastrophic,
            refused_by_pack: Some("it addresses a repository by number".into()),
            ..op("GET /repositories/{id}", "read", Tier::Read, &[])
        };
        let d = decide(&rules(), &staging(&held), &[by_number]);
        assert_eq!(kind(&d), Some("unknown_operation"));
        assert!(d.refusal.unwrap().to_string().contains("by number"));
    }

    #[test]
    fn scopes_not_held_and_unknown_operations_are_refused() {
        let held = vec!["read".to_owned()];
        let deploy = op(
            "mutation deploymentRedeploy",
            "deployment:deploy",
            Tier::Deploy,
            &[("deployment", "dep_stg")],
        );
        let d = decide(&rules(), &staging(&held), &[deploy]);
        assert_eq!(kind(&d), Some("scope_not_granted"));

        let unknown = Operation {
            scope: None,
            tier: Tier::Catastrophic,
            ..op("mutation somethingNew", "x", Tier::Read, &[])
        };
        assert_eq!(
            kind(&decide(&rules(), &staging(&held), &[unknown])),
            Some("unknown_operation")
        );
        assert_eq!(kind(&decide(&rules(), &staging(&held), &[])), Some("unknown_operation"));
    }

    #[test]
    fn a_credential_without_the_provider_is_a_mismatch_of_the_route() {
        let access = Access {
            env: "staging",
            provider: "railway",
            scopes: None,
        };
        let read = op("query volume", "read", Tier::Read, &[("volume", "vol_stg")]);
        let d = decide(&rules(), &access, &[read]);
        assert_eq!(kind(&d), Some("credential_mismatch"));
        assert!(matches!(d.refusal, Some(Refusal::ProviderNotGranted { .. })));
    }

    #[test]
    fn only_a_dangerous_request_that_is_otherwise_right_may_be_approved() {
        let held = every_grantable();
        let need = |ops: &[Operation]| {
            let d = decide(&rules(), &staging(&held), ops);
            approval_need(&rules(), &staging(&held), ops, &d)
        };
        let delete = |id: &str| {
            op(
                "mutation volumeDelete",
                "volume:delete",
                Tier::Destructive,
                &[("volume", id)],
            )
        };
        // The incident: a destructive change to a shared volume takes two.
        let incident = need(&[delete("vol_shared")]).expect("approvable");
        assert_eq!(incident.approvers, 2);
        assert_eq!(incident.tier, Tier::Destructive);
        assert_eq!(incident.environments, ["production", "staging"]);
        // Staging's own volume takes one; a catastrophic operation two.
        assert_eq!(need(&[delete("vol_stg")]).map(|n| n.approvers), Some(1));
        let backups = op(
            "mutation backupDelete",
            "backup:delete",
            Tier::Catastrophic,
            &[("volume", "vol_stg")],
        );
        assert_eq!(need(&[backups]).map(|n| n.approvers), Some(2));
        // A change of a write tier to a shared service: two, and only with
        // the scope held.
        let upsert = op(
            "mutation variableUpsert",
            "variable:write",
            Tier::Write,
            &[("service", "svc_shared")],
        );
        assert_eq!(need(std::slice::from_ref(&upsert)).map(|n| n.approvers), Some(2));
        let d = decide(&rules(), &staging(&[]), std::slice::from_ref(&upsert));
        assert_eq!(approval_need(&rules(), &staging(&[]), &[upsert], &d), None);
        // Another environment's volume, an unknown one, or a destructive
        // operation beside one of those: no approval lifts it.
        assert_eq!(need(&[delete("vol_prod")]), None);
        assert_eq!(need(&[delete("vol_unknown")]), None);
        assert_eq!(need(&[delete("vol_stg"), delete("vol_prod")]), None);
        let shared_then_prod = op(
            "mutation volumeDelete",
            "volume:delete",
            Tier::Destructive,
            &[("volume", "vol_shared"), ("volume", "vol_prod")],
        );
        assert_eq!(need(&[shared_then_prod]), None);
        // Allowed already: nothing to approve.
        let read = op("query volume", "read", Tier::Read, &[("volume", "vol_stg")]);
        assert_eq!(need(&[read]), None);
    }
}
