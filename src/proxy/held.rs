//! The proxy's side of approvals. A request refused only for its danger is
//! bound to the digest of exactly what would be forwarded (its body read,
//! bounded, when it was streaming); an approval approved for that digest in
//! the same session is spent, once, and the request goes on. Otherwise the
//! request is held and the refusal says where to wait.

use std::time::SystemTime;

use axum::body::{Body, Bytes};
use http::request::Parts;

use super::{ProxyError, Recorder, forward, read_bounded};
use crate::approvals::{self, APPROVAL_HEADER, Approval, Status, Unusable};
use crate::broker::Broker;
use crate::credentials::Claims;
use crate::policy::ApprovalNeed;
use crate::store::StoreError;

/// Where a human's approval stands for a refused request.
#[derive(Debug)]
pub enum Held {
    /// Held: approvers decide, the agent waits and resends.
    Waiting {
        id: String,
        url: String,
        status: Status,
        approvers_needed: u8,
        approved_by: usize,
        decide_by_ms: i64,
    },
    /// `/v1/check`: sent through the proxy, the request would be held.
    Possible(ApprovalNeed),
    /// It cannot be approved, for this reason.
    Unavailable(String),
}

impl Held {
    pub fn waiting(approval: &Approval, broker: &Broker) -> Held {
        Held::Waiting {
            id: approval.id.clone(),
            url: format!("{}/v1/approvals/{}", broker.broker_url(), approval.id),
            status: approval.state,
            approvers_needed: approval.approvers_needed,
            approved_by: approval.approved_by.len(),
            decide_by_ms: approval.decide_by_ms,
        }
    }

    /// A sentence for the refusal's detail.
    pub fn sentence(&self) -> String {
        match self {
            Held::Waiting {
                id, approvers_needed, ..
            } => format!(
                "It is held for approval `{id}`: {approvers_needed} approver(s) must approve exactly this request before it can be sent once."
            ),
            Held::Possible(need) => format!(
                "Sent through the proxy, it would be held for {} approver(s) to approve.",
                need.approvers
            ),
            Held::Unavailable(why) => format!("It cannot be approved: {why}."),
        }
    }
}

/// What became of a request a human may approve.
pub(super) enum Settled {
    /// An approval for it was spent: it goes on, under that approval.
    Spent(Box<Approval>),
    /// None to spend: hold it under this digest.
    Unspent { digest: String },
    /// It cannot be approved: its body is past what the broker reads, so
    /// it cannot be bound, or the broker holds no token to send it with.
    Unavailable(String),
}

pub(super) fn unusable_detail(why: Unusable, id: &str) -> String {
    match why {
        Unusable::Unknown => format!("there is no approval `{id}` for this agent"),
        Unusable::OtherSession => format!("approval `{id}` was asked for by another session than this credential's"),
        Unusable::Differs => format!(
            "this request differs from the one approved under `{id}` (another resource, variable, header or body): an approval covers exactly one request"
        ),
        Unusable::NotApproved(status) => format!(
            "approval `{id}` is {}, so nothing may be sent under it",
            status.as_str()
        ),
        Unusable::Outgrown => format!(
            "approval `{id}` was given for less than this request needs now (the broker's configuration changed since): it takes a new approval"
        ),
    }
}

/// The stable problem type of a request an approval may not release.
pub fn unusable_kind(why: Unusable) -> &'static str {
    match why {
        Unusable::Unknown | Unusable::OtherSession => "approval_unknown",
        Unusable::Differs => "approval_mismatch",
        Unusable::NotApproved(Status::Pending) => "approval_pending",
        Unusable::NotApproved(Status::Denied) => "approval_denied",
        Unusable::NotApproved(Status::Used) => "approval_used",
        Unusable::NotApproved(Status::Approved | Status::Expired) => "approval_expired",
        Unusable::Outgrown => "approval_outgrown",
    }
}

/// Why nothing could be sent under an approval: the broker holds no token
/// for the provider in the credential's environment.
pub(super) fn no_token(broker: &Broker, provider: &str, env: &str) -> Option<String> {
    (!broker.has_upstream_token(provider, env))
        .then(|| format!("the broker holds no token for provider `{provider}` in `{env}` to send it with"))
}

pub(super) fn too_large(limit: usize) -> String {
    format!(
        "its body is over {limit} bytes, the most the broker reads, so an approval could not be bound to exactly it"
    )
}

/// The digest an approval of this request is bound to: exactly what would
/// be forwarded, the headers as they would reach the upstream.
pub(super) fn bind(
    claims: &Claims,
    provider: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    incoming: &http::HeaderMap,
    body: &[u8],
) -> String {
    let headers = forward::agent_headers(incoming);
    approvals::digest(&approvals::Request {
        provider,
        env: &claims.env,
        agent: &claims.sub,
        session_id: &claims.sid,
        method,
        path,
        query,
        headers: &headers,
        body,
    })
}

/// Holds a refused request whose refusal is recorded (`hold.event_id`), or
/// says why it cannot be approved.
pub(super) async fn hold(
    broker: &Broker,
    hold: approvals::flow::Hold<'_>,
    now: SystemTime,
) -> Result<Held, StoreError> {
    if let Some(why) = approvals::flow::unavailable(broker, hold.provider, hold.need) {
        return Ok(Held::Unavailable(why));
    }
    Ok(match broker.hold(hold, now).await? {
        Some(approval) => Held::waiting(&approval, broker),
        None => Held::Unavailable(format!(
            "this session holds {} requests for approval already; wait for their decisions",
            approvals::flow::MOST_OPEN_PER_SESSION
        )),
    })
}

/// Binds the request to its digest and spends an approval for it when there
/// is one. A request naming an approval it may not use is refused here,
/// and recorded.
#[allow(clippy::too_many_arguments)]
pub(super) async fn settle(
    broker: &Broker,
    claims: &Claims,
    provider: &str,
    parts: &Parts,
    path: &str,
    need: &crate::policy::ApprovalNeed,
    inspected: &mut Option<Bytes>,
    body: &mut Option<Body>,
    record: &Recorder<'_>,
    now: SystemTime,
) -> Result<Settled, ProxyError> {
    // Approved, it could not be sent: nothing to hold, nothing to spend.
    if let Some(why) = no_token(broker, provider, &claims.env) {
        return Ok(Settled::Unavailable(why));
    }
    let bound = super::Bound::of(broker, false);
    let bytes = match (inspected.take(), body.take()) {
        (Some(bytes), _) => bytes,
        (None, Some(streaming)) => match read_bounded(streaming, &parts.headers, bound).await {
            Ok(bytes) => bytes,
            Err(ProxyError::BodyTooLarge { limit, .. }) => return Ok(Settled::Unavailable(too_large(limit))),
            Err(e) => return Err(e),
        },
        (None, None) => Bytes::new(),
    };
    let digest = bind(
        claims,
        provider,
        parts.method.as_str(),
        path,
        parts.uri.query(),
        &parts.headers,
        &bytes,
    );
    *inspected = Some(bytes);
    let mut named = parts.headers.get_all(APPROVAL_HEADER).iter();
    let named = match (named.next(), named.next()) {
        (None, _) => None,
        // Two, or one that is not text, names no approval.
        (Some(one), None) => Some(one.to_str().unwrap_or("")),
        (Some(_), Some(_)) => Some(""),
    };
    match broker.spend_approval(claims, &digest, need, named, now).await? {
        Ok(Some(approval)) => Ok(Settled::Spent(Box::new(approval))),
        Ok(None) => Ok(Settled::Unspent { digest }),
        Err((why, found)) => {
            let id = found.map_or_else(|| named.unwrap_or_default().to_owned(), |a| a.id);
            let reason = unusable_detail(why, &id);
            let event_id = record.refused(path, unusable_kind(why), &reason, &[]).await?;
            Err(ProxyError::ApprovalUnusable {
                why,
                approval_id: id,
                event_id,
            })
        }
    }
}
