//! Held requests and the humans who may release them, as plain data.
//!
//! A request the policy refuses only for its danger (a tier no credential
//! holds, a change to a resource several environments share) is held: bound
//! to a digest of exactly what would be forwarded, it waits for approvers,
//! then may be sent once. This module decides; `flow` does the I/O (the
//! store, whose single conditional updates make each step atomic, events
//! and alerts). Nothing here reads the clock: the time comes in.

pub mod flow;
pub mod totp;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::config::ApproverConfig;
use crate::policy::Tier;

/// The header an agent names the approval of a resent request with.
pub const APPROVAL_HEADER: &str = "valetkey-approval";

/// Where a held request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for approvers.
    Pending,
    /// Approved by enough approvers; the agent may send it once.
    Approved,
    Denied,
    /// Not decided, or not sent, in time.
    Expired,
    /// Sent.
    Used,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Used => "used",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Approved,
            Status::Denied,
            Status::Expired,
            Status::Used,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A held request, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub id: String,
    /// [`digest`] of the request.
    pub digest: String,
    pub agent: String,
    pub session_id: String,
    pub lease_id: String,
    pub provider: String,
    /// The credential's environment.
    pub env: String,
    pub method: String,
    /// The canonical path. A query string is in the digest, never kept
    /// (it may carry anything): only its length is.
    pub path: String,
    pub query_bytes: Option<usize>,
    /// Distinct approvers it takes.
    pub approvers_needed: u8,
    pub tier: Tier,
    /// Every environment the request reaches.
    pub environments: Vec<String>,
    /// The operations with their resources' owners (the blast radius), as
    /// the refusal recorded them.
    pub operations: Vec<HeldOperation>,
    /// The refusal's event.
    pub event_id: String,
    /// As stored: a pending or approved one past its clock is expired
    /// whatever this says ([`status`]).
    pub state: Status,
    pub created_at_ms: i64,
    pub decide_by_ms: i64,
    /// Set when approved.
    pub execute_by_ms: Option<i64>,
    pub decided_at_ms: Option<i64>,
    pub used_at_ms: Option<i64>,
    /// Who approved, in order.
    pub approved_by: Vec<String>,
    pub denied_by: Option<String>,
    pub reason: Option<String>,
}

/// One operation of a held request: what it needs and what it touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldOperation {
    pub name: String,
    #[serde(default)]
    pub scope: Option<String>,
    pub tier: Tier,
    #[serde(default)]
    pub resources: Vec<HeldResource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldResource {
    pub kind: String,
    pub id: String,
    /// `None` when the resource map does not know it.
    #[serde(default)]
    pub owners: Option<Vec<String>>,
}

impl HeldResource {
    /// Its owners in words.
    pub fn owned_by(&self) -> String {
        match self.owners.as_deref() {
            None | Some([]) => "no known environment".into(),
            Some(owners) => owners.join(" and "),
        }
    }

    pub fn shared(&self) -> bool {
        self.owners.as_ref().is_some_and(|o| o.len() > 1)
    }
}

impl From<&crate::policy::BoundOperation> for HeldOperation {
    fn from(op: &crate::policy::BoundOperation) -> HeldOperation {
        HeldOperation {
            name: op.name.clone(),
            scope: op.scope.clone(),
            tier: op.tier,
            resources: op
                .resources
                .iter()
                .map(|r| HeldResource {
                    kind: r.kind.clone(),
                    id: r.id.clone(),
                    owners: r.owners.clone(),
                })
                .collect(),
        }
    }
}

/// Where `approval` stands at `now_ms`.
pub fn status(approval: &Approval, now_ms: i64) -> Status {
    match approval.state {
        Status::Pending if now_ms > approval.decide_by_ms => Status::Expired,
        Status::Approved if approval.execute_by_ms.is_none_or(|by| now_ms > by) => Status::Expired,
        state => state,
    }
}

/// What a digest covers: exactly what the broker would forward, and who
/// sends it.
pub struct Request<'a> {
    pub provider: &'a str,
    pub env: &'a str,
    pub agent: &'a str,
    pub session_id: &'a str,
    pub method: &'a str,
    /// The canonical path, as forwarded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The headers that reach the upstream (`proxy::forward::agent_headers`).
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// SHA-256 over every part of `request`, each length-prefixed so no two
/// different requests hash the same bytes. Headers are taken by name in
/// order, each name's values in the order sent; `Content-Length` is left
/// out (the body says it).
pub fn digest(request: &Request<'_>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    for part in [
        request.provider,
        request.env,
        request.agent,
        request.session_id,
        request.method,
        request.path,
    ] {
        field(part.as_bytes());
    }
    match request.query {
        Some(q) => field(format!("?{q}").as_bytes()),
        None => field(b"-"),
    }
    let mut names: Vec<&str> = request
        .headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|n| *n != http::header::CONTENT_LENGTH.as_str())
        .collect();
    names.sort_unstable();
    field(&(names.len() as u64).to_be_bytes());
    for name in names {
        field(name.as_bytes());
        let values: Vec<&http::HeaderValue> = request.headers.get_all(name).iter().collect();
        field(&(values.len() as u64).to_be_bytes());
        for value in values {
            field(value.as_bytes());
        }
    }
    field(request.body);
    hex::encode(ctx.finish())
}

/// Why an approver may not decide on an approval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAllowed {
    #[error("`{approver}` is not an approver in the broker's configuration")]
    NotAnApprover { approver: String },
    #[error("approver `{approver}` may not approve requests to provider `{provider}`")]
    Provider { approver: String, provider: String },
    #[error("approver `{approver}` may not approve requests that reach environment `{env}`")]
    Environment { approver: String, env: String },
    #[error("approver `{approver}` may not approve {tier} operations")]
    Tier { approver: String, tier: Tier },
    #[error("approver `{approver}` has approved this request already; it needs another approver")]
    AlreadyApproved { approver: String },
}

/// Whether `approver` (configured as `config`) may decide on `approval`:
/// its provider, every environment it reaches, its tier, and not twice.
pub fn may_decide(approver: &str, config: Option<&ApproverConfig>, approval: &Approval) -> Result<(), NotAllowed> {
    let Some(config) = config else {
        return Err(NotAllowed::NotAnApprover {
            approver: approver.to_owned(),
        });
    };
    let listed = |list: &[String], item: &str| list.iter().any(|l| l == "*" || l == item);
    if !listed(&config.providers, &approval.provider) {
        return Err(NotAllowed::Provider {
            approver: approver.to_owned(),
            provider: approval.provider.clone(),
        });
    }
    if let Some(env) = approval.environments.iter().find(|e| !listed(&config.environments, e)) {
        return Err(NotAllowed::Environment {
            approver: approver.to_owned(),
            env: env.clone(),
        });
    }
    if !config.tiers.contains(&approval.tier) {
        return Err(NotAllowed::Tier {
            approver: approver.to_owned(),
            tier: approval.tier,
        });
    }
    if approval.approved_by.iter().any(|a| a == approver) {
        return Err(NotAllowed::AlreadyApproved {
            approver: approver.to_owned(),
        });
    }
    Ok(())
}

/// Why a resent request may not use an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// No approval by that id (or not this agent's).
    Unknown,
    /// Another session asked for it.
    OtherSession,
    /// The request differs from the one approved.
    Differs,
    /// Not (yet, or any longer) approved.
    NotApproved(Status),
    /// Given for less than the request needs now (more approvers, another
    /// environment, a higher tier: the configuration changed since).
    Outgrown,
}

/// Whether `approval` was given for at least what the request needs now.
pub fn covers(approval: &Approval, need: &crate::policy::ApprovalNeed) -> bool {
    approval.approvers_needed >= need.approvers
        && approval.tier >= need.tier
        && need.environments.iter().all(|e| approval.environments.contains(e))
}

/// Whether the request with `digest`, from `session_id`, may be sent under
/// `approval` at `now_ms`.
pub fn usable(approval: Option<&Approval>, session_id: &str, digest: &str, now_ms: i64) -> Result<(), Unusable> {
    let Some(approval) = approval else {
        return Err(Unusable::Unknown);
    };
    if approval.session_id != session_id {
        return Err(Unusable::OtherSession);
    }
    if approval.digest != digest {
        return Err(Unusable::Differs);
    }
    match status(approval, now_ms) {
        Status::Approved => Ok(()),
        other => Err(Unusable::NotApproved(other)),
    }
}

/// The blast radius in words, for approvers: each operation with its tier
/// and each resource with the environments that own it.
pub fn summary(approval: &Approval) -> String {
    let operations: Vec<String> = approval
        .operations
        .iter()
        .map(|op| {
            let resources: Vec<String> = op
                .resources
                .iter()
                .map(|r| format!("{} `{}` (owned by {})", r.kind, r.id, r.owned_by()))
                .collect();
            format!("{} [{}] on {}", op.name, op.tier.as_str(), resources.join(", "))
        })
        .collect();
    let query = approval
        .query_bytes
        .map(|n| format!(" (with a query string of {n} bytes, not shown)"))
        .unwrap_or_default();
    format!(
        "agent `{}` (credential for `{}`) asks to send {} {}{query} to `{}`: {}. It reaches {}, and needs {} approver(s).",
        approval.agent,
        approval.env,
        approval.method,
        approval.path,
        approval.provider,
        operations.join("; "),
        approval.environments.join(" and "),
        approval.approvers_needed
    )
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    pub(crate) fn approval() -> Approval {
        Approval {
            id: "a1".into(),
            digest: "d".into(),
            agent: "claude".into(),
            session_id: "s1".into(),
            lease_id: "l1".into(),
            provider: "railway".into(),
            env: "staging".into(),
            method: "POST".into(),
            path: "/graphql/v2".into(),
            query_bytes: None,
            approvers_needed: 2,
            tier: Tier::Destructive,
            environments: vec!["production".into(), "staging".into()],
            operations: vec![HeldOperation {
                name: "mutation volumeDelete".into(),
                scope: Some("volume:delete".into()),
                tier: Tier::Destructive,
                resources: vec![HeldResource {
                    kind: "volume".into(),
                    id: "vol_db".into(),
                    owners: Some(vec!["staging".into(), "production".into()]),
                }],
            }],
            event_id: "e1".into(),
            state: Status::Pending,
            created_at_ms: 1_000,
            decide_by_ms: 2_000,
            execute_by_ms: None,
            decided_at_ms: None,
            used_at_ms: None,
            approved_by: vec![],
            denied_by: None,
            reason: None,
        }
    }

    fn approver(providers: &[&str], environments: &[&str], tiers: &[Tier]) -> ApproverConfig {
        ApproverConfig {
            description: None,
            providers: providers.iter().map(|s| s.to_string()).collect(),
            environments: environments.iter().map(|s| s.to_string()).collect(),
            tiers: tiers.to_vec(),
        }
    }

    #[test]
    fn an_approval_expires_on_either_clock() {
        let mut a = approval();
        assert_eq!(status(&a, 2_000), Status::Pending);
        assert_eq!(status(&a, 2_001), Status::Expired);
        a.state = Status::Approved;
        a.execute_by_ms = Some(3_000);
        assert_eq!(status(&a, 2_500), Status::Approved);
        assert_eq!(status(&a, 3_001), Status::Expired);
        a.state = Status::Used;
        assert_eq!(status(&a, 9_000), Status::Used);
    }

    #[test]
    fn every_part_of_the_request_is_in_its_digest() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let body = br#"{"query":"mutation { volumeDelete(volumeId: \"vol_db\") }"}"#;
        let base = Request {
            provider: "railway",
            env: "staging",
            agent: "claude",
            session_id: "s1",
            method: "POST",
            path: "/graphql/v2",
            query: None,
            headers: &headers,
            body,
        };
        let d = digest(&base);
        assert_eq!(d, digest(&base), "the same request, the same digest");
        let mut lengthy = headers.clone();
        lengthy.insert("content-length", HeaderValue::from_static("60"));
        assert_eq!(
            d,
            digest(&Request {
                headers: &lengthy,
                ..base
            })
        );

        let other_body = br#"{"query":"mutation { volumeDelete(volumeId: \"vol_xx\") }"}"#;
        let mut swapped = HeaderMap::new();
        swapped.insert("content-type", HeaderValue::from_static("application/json"));
        swapped.append("x-a", HeaderValue::from_static("2"));
        swapped.append("x-a", HeaderValue::from_static("1"));
        let mut extra = headers.clone();
        extra.insert("x-b", HeaderValue::from_static(""));
        let variants = [
            Request {
                provider: "github",
                ..base
            },
            Request {
                env: "production",
                ..base
            },
            Request { agent: "other", ..base },
            Request {
                session_id: "s2",
                ..base
            },
            Request { method: "PUT", ..base },
            Request {
                path: "/graphql/v3",
                ..base
            },
            Request {
                query: Some(""),
                ..base
            },
            Request {
                headers: &swapped,
                ..base
            },
            Request {
                headers: &extra,
                ..base
            },
            Request {
                body: other_body,
                ..base
            },
        ];
        let mut seen = std::collections::BTreeSet::from([d]);
        for v in &variants {
            assert!(seen.insert(digest(v)), "a variant hashed like another");
        }
    }

    #[test]
    fn an_approver_decides_only_within_their_providers_environments_and_tiers() {
        let a = approval();
        let everything = approver(&["*"], &["*"], &Tier::ALL);
        assert_eq!(may_decide("alice", Some(&everything), &a), Ok(()));
        assert!(matches!(
            may_decide("mallory", None, &a),
            Err(NotAllowed::NotAnApprover { .. })
        ));
        assert!(matches!(
            may_decide("bob", Some(&approver(&["github"], &["*"], &Tier::ALL)), &a),
            Err(NotAllowed::Provider { .. })
        ));
        // The volume is production's too: a staging approver may not.
        assert_eq!(
            may_decide("bob", Some(&approver(&["railway"], &["staging"], &Tier::ALL)), &a),
            Err(NotAllowed::Environment {
                approver: "bob".into(),
                env: "production".into()
            })
        );
        assert!(matches!(
            may_decide("bob", Some(&approver(&["*"], &["*"], &[Tier::Catastrophic])), &a),
            Err(NotAllowed::Tier { .. })
        ));
        let mut once = a.clone();
        once.approved_by = vec!["alice".into()];
        assert!(matches!(
            may_decide("alice", Some(&everything), &once),
            Err(NotAllowed::AlreadyApproved { .. })
        ));
    }

    #[test]
    fn only_the_same_request_of_the_same_session_uses_an_approval_while_it_lasts() {
        let mut a = approval();
        assert_eq!(usable(None, "s1", "d", 0), Err(Unusable::Unknown));
        assert_eq!(
            usable(Some(&a), "s1", "d", 1_500),
            Err(Unusable::NotApproved(Status::Pending))
        );
        a.state = Status::Approved;
        a.execute_by_ms = Some(3_000);
        assert_eq!(usable(Some(&a), "s1", "d", 1_500), Ok(()));
        assert_eq!(usable(Some(&a), "s2", "d", 1_500), Err(Unusable::OtherSession));
        assert_eq!(usable(Some(&a), "s1", "e", 1_500), Err(Unusable::Differs));
        assert_eq!(
            usable(Some(&a), "s1", "d", 3_001),
            Err(Unusable::NotApproved(Status::Expired))
        );
        a.state = Status::Used;
        assert_eq!(
            usable(Some(&a), "s1", "d", 1_500),
            Err(Unusable::NotApproved(Status::Used))
        );
    }

    #[test]
    fn an_approval_covers_a_request_only_for_as_much_as_it_was_given() {
        let a = approval();
        let need = |approvers, tier, envs: &[&str]| crate::policy::ApprovalNeed {
            approvers,
            tier,
            environments: envs.iter().map(|e| e.to_string()).collect(),
        };
        assert!(covers(&a, &need(2, Tier::Destructive, &["production", "staging"])));
        assert!(covers(&a, &need(1, Tier::Destructive, &["staging"])));
        assert!(!covers(&a, &need(3, Tier::Destructive, &["staging"])));
        assert!(!covers(&a, &need(2, Tier::Catastrophic, &["staging"])));
        assert!(!covers(&a, &need(2, Tier::Destructive, &["staging", "qa"])));
    }

    #[test]
    fn the_summary_names_each_resource_with_its_owners() {
        let text = summary(&approval());
        assert!(
            text.contains("volume `vol_db` (owned by staging and production)"),
            "{text}"
        );
        assert!(text.contains("needs 2 approver(s)"), "{text}");
    }
}
