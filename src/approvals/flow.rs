//! The I/O of approvals: holding a request, approvers' decisions with their
//! factor, spending an approval, expiring what ran out of time, and
//! enrollment. Each writes its audit event; the rules are `approvals`'
//! pure functions, the atomic steps the store's.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::totp::{self, CodeRefusal};
use super::{Approval, NotAllowed, Status, Unusable, covers, may_decide, status, summary, usable};
use crate::admin::Actor;
use crate::audit::{Event, EventKind};
use crate::broker::Broker;
use crate::credentials::Claims;
use crate::credentials::{OpaqueKind, hash_opaque_key, issue_opaque_key};
use crate::policy::{ApprovalNeed, BoundOperation};
use crate::secrets::{ExposeSecret, SecretString, SecretsError};
use crate::store::{EnrollmentRecord, EnrollmentTaken, StoreError, Vote};
use crate::time::{rfc3339, unix_ms, unix_secs};

/// The record id an approver's confirmed factor is sealed for.
pub fn factor_record_id(approver: &str) -> String {
    format!("approver-factor:{approver}")
}

/// The record id a factor waiting for its first code is sealed for.
pub fn pending_factor_record_id(approver: &str) -> String {
    format!("approver-factor-pending:{approver}")
}

/// The record id a passkey is sealed for: `NAME:CREDENTIAL_ID` (a name
/// holds no `:`).
pub fn passkey_record_id(approver_and_credential: &str) -> String {
    format!("approver-passkey:{approver_and_credential}")
}

/// Requests one session may hold for approval at once.
pub const MOST_OPEN_PER_SESSION: i64 = 10;

/// The one factor approvers use from the CLI.
const TOTP: &str = "totp";

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("there is no approval `{id}`")]
    Unknown { id: String },
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
    #[error("approval `{id}` is {}, so it can no longer be decided", status.as_str())]
    Closed { id: String, status: Status },
    #[error(
        "approver `{approver}` has no factor yet: an admin issues an enrollment code (`valetkey approver invite {approver}`), which {approver} redeems (`valetkey approver enroll {approver} --code …`)"
    )]
    NoFactor { approver: String },
    #[error(
        "approver `{approver}`'s code is locked until {until} after repeated wrong codes (an admin was alerted); wait, or approve in the console with a passkey"
    )]
    Locked { approver: String, until: String },
    #[error("{0}")]
    Code(CodeRefusal),
    #[error("`{approver}` is not an approver in the broker's configuration; ops name approvers in `[approvers.NAME]`")]
    UnknownApprover { approver: String },
    #[error(
        "this enrollment code is not one the broker issued for approver `{approver}`, or it was used or expired; ask an admin for a new one"
    )]
    Enrollment { approver: String },
    #[error("approver `{approver}` has no factor waiting to be confirmed; redeem an enrollment code first")]
    NothingToConfirm { approver: String },
    #[error("a denial needs a reason the agent can read")]
    NoReason,
    #[error("nothing of approver `{approver}`'s awaits a vouch: they register a factor first")]
    NothingToVouch { approver: String },
    #[error(
        "a factor approver `{approver}` registered at {since} awaits a vouch: no other can be registered until an enrolled approver vouches for it, or it expires after `[approvals] enrollment_ttl`. If {approver} did not register it, tell the other approvers not to vouch for it"
    )]
    AlreadyWaiting { approver: String, since: String },
    #[error("too many refused attempts from this address; this one was not processed")]
    RateLimited,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("the system's random source failed")]
    Random,
}

/// How an approver proved who they are.
pub enum Proof<'a> {
    /// A code of their TOTP factor, checked here.
    Code(&'a str),
    /// A passkey assertion the console verified for this decision.
    Passkey(crate::console::PasskeyVerified),
}

impl Proof<'_> {
    fn factor(&self) -> &'static str {
        match self {
            Proof::Code(_) => TOTP,
            Proof::Passkey(_) => "passkey",
        }
    }
}

/// What an approver says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny { reason: String },
}

/// What the proxy knows of a request it refused, to hold it.
pub struct Hold<'a> {
    pub claims: &'a Claims,
    pub provider: &'a str,
    pub method: &'a str,
    /// The canonical path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub need: &'a ApprovalNeed,
    pub operations: &'a [BoundOperation],
    pub digest: String,
    /// The refusal's event.
    pub event_id: &'a str,
}

/// Why a held request could never be approved as configured.
pub fn unavailable(broker: &Broker, provider: &str, need: &ApprovalNeed) -> Option<String> {
    let probe = Approval {
        provider: provider.to_owned(),
        tier: need.tier,
        environments: need.environments.clone(),
        approved_by: Vec::new(),
        ..blank()
    };
    let able = broker
        .config()
        .approvers
        .iter()
        .filter(|(name, config)| may_decide(name, Some(config.get_ref()), &probe).is_ok())
        .count();
    (able < usize::from(need.approvers)).then(|| {
        format!(
            "it needs {} distinct approver(s) who may approve {} operations on `{provider}` reaching {}, and the broker's configuration names {able}",
            need.approvers,
            need.tier.as_str(),
            need.environments.join(" and "),
        )
    })
}

fn blank() -> Approval {
    Approval {
        id: String::new(),
        digest: String::new(),
        agent: String::new(),
        session_id: String::new(),
        lease_id: String::new(),
        provider: String::new(),
        env: String::new(),
        method: String::new(),
        path: String::new(),
        query_bytes: None,
        approvers_needed: 1,
        tier: crate::policy::Tier::Read,
        environments: Vec::new(),
        operations: Vec::new(),
        event_id: String::new(),
        state: Status::Pending,
        created_at_ms: 0,
        decide_by_ms: 0,
        execute_by_ms: None,
        decided_at_ms: None,
        used_at_ms: None,
        approved_by: Vec::new(),
        denied_by: None,
        reason: None,
    }
}

/// How long before a held request's deciding clock runs out approvers are
/// reminded: a quarter of it, at most five minutes.
pub fn reminder_lead(decide_within: Duration) -> Duration {
    (decide_within / 4).min(Duration::from_secs(5 * 60))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Broker {
    /// Holds a refused request for approval, or finds the same request of
    /// the same session already held; a new one is recorded and announced.
    /// `None` when the session holds [`MOST_OPEN_PER_SESSION`] requests
    /// already: approvers are not flooded.
    pub async fn hold(&self, h: Hold<'_>, now: SystemTime) -> Result<Option<Approval>, StoreError> {
        let now_ms = unix_ms(now);
        let approval = Approval {
            id: uuid::Uuid::new_v4().to_string(),
            digest: h.digest,
            agent: h.claims.sub.clone(),
            session_id: h.claims.sid.clone(),
            lease_id: h.claims.jti.clone(),
            provider: h.provider.to_owned(),
            env: h.claims.env.clone(),
            method: h.method.to_owned(),
            // Shown to approvers and kept: scrubbed as the trail is (the
            // digest binds the request as sent).
            path: crate::audit::scrub::text(h.path).into_owned(),
            query_bytes: h.query.map(str::len),
            approvers_needed: h.need.approvers,
            tier: h.need.tier,
            environments: h.need.environments.clone(),
            operations: h.operations.iter().map(Into::into).collect(),
            event_id: h.event_id.to_owned(),
            created_at_ms: now_ms,
            decide_by_ms: now_ms.saturating_add(ms(self.config().approvals.decide_within)),
            ..blank()
        };
        let Some((held, created)) = self
            .store()
            .hold_request(&approval, MOST_OPEN_PER_SESSION, now_ms)
            .await?
        else {
            return Ok(None);
        };
        if created {
            // What each operation does, in the rule pack's words.
            let does: Vec<String> = h
                .operations
                .iter()
                .filter_map(|op| {
                    let scope = op.scope.as_deref()?;
                    let words = self.scope_description(h.provider, scope)?;
                    Some(format!("{}: {words}", op.name))
                })
                .collect();
            let console = self
                .config()
                .console
                .enabled
                .then(|| self.config().console_origin())
                .flatten()
                .map(|origin| format!(" Review it at {origin}console/approvals/{}", held.id))
                .unwrap_or_default();
            let text = format!(
                "Approval needed ({}): {} ({}.) Decide by {}: `valetkey approve {} --as NAME --code CODE` or `valetkey deny {} --as NAME --code CODE --reason …`.{console}",
                held.id,
                summary(&held),
                does.join("; "),
                rfc3339(held.decide_by_ms / 1000),
                held.id,
                held.id,
            );
            let event = self.approval_event(
                EventKind::ApprovalRequested,
                &Actor::agent(&held.agent),
                &held,
                json!({}),
            );
            self.record_and_alert(event, "approval_requested", text, format!("approval:{}", held.id), now)
                .await?;
        }
        Ok(Some(held))
    }

    /// The approval the session of `claims` asks about; another session's,
    /// even of the same agent, is unknown to it (as its events are).
    pub async fn approval_of(&self, claims: &Claims, id: &str) -> Result<Option<Approval>, StoreError> {
        Ok(self
            .store()
            .approval(id)
            .await?
            .filter(|a| a.agent == claims.sub && a.session_id == claims.sid))
    }

    /// Spends the approval of the request with `digest`: the one named by
    /// `named` (the `Valetkey-Approval` header), or else one approved for
    /// the same request of the same session. `Ok(None)` when there is none
    /// to spend; an `Err` names why a named one may not be used.
    pub async fn spend_approval(
        &self,
        claims: &Claims,
        digest: &str,
        need: &ApprovalNeed,
        named: Option<&str>,
        now: SystemTime,
    ) -> Result<Result<Option<Approval>, (Unusable, Option<Approval>)>, StoreError> {
        let now_ms = unix_ms(now);
        let found = match named {
            Some(id) => {
                let found = self.approval_of(claims, id).await?;
                if let Err(why) = usable(found.as_ref(), &claims.sid, digest, now_ms) {
                    return Ok(Err((why, found)));
                }
                found
            }
            None => self.store().approved_for(&claims.sid, digest, now_ms).await?,
        };
        let Some(approval) = found else {
            return Ok(Ok(None));
        };
        if !covers(&approval, need) {
            return Ok(Err((Unusable::Outgrown, Some(approval))));
        }
        if self
            .store()
            .spend_approval(&approval.id, &claims.sid, digest, now_ms)
            .await?
        {
            return Ok(Ok(Some(approval)));
        }
        // Another request spent it between the read and the update.
        match named {
            Some(_) => Ok(Err((Unusable::NotApproved(Status::Used), Some(approval)))),
            None => Ok(Ok(None)),
        }
    }

    /// An approver approves or denies, proving who they are with a code of
    /// their factor. Every refusal is recorded.
    pub async fn decide_approval(
        &self,
        id: &str,
        approver: &str,
        proof: Proof<'_>,
        verdict: Verdict,
        client: std::net::IpAddr,
        now: SystemTime,
    ) -> Result<Approval, ApprovalError> {
        let now_ms = unix_ms(now);
        let result = self.try_decide(id, approver, proof, &verdict, now, now_ms).await;
        if let Err(e) = &result
            && !matches!(e, ApprovalError::Store(_))
        {
            let detail = json!({
                "approval_id": id,
                "approver": approver,
                "verdict": match verdict { Verdict::Approve => "approve", Verdict::Deny { .. } => "deny" },
                "why": e.to_string(),
            });
            self.record_refused_attempt(approver, detail, client, now).await?;
        }
        result
    }

    /// Records a refused attempt to decide or to enroll in `approver`'s
    /// name. Nothing authenticated the caller, so what it may have written
    /// is bounded by the per-address rate of such refusals.
    pub async fn record_refused_attempt(
        &self,
        approver: &str,
        detail: serde_json::Value,
        client: std::net::IpAddr,
        now: SystemTime,
    ) -> Result<String, ApprovalError> {
        if !self.may_record_unauthenticated(client, now) {
            return Err(ApprovalError::RateLimited);
        }
        let event = Event {
            kind: EventKind::ApprovalRefused,
            actor: Actor::approver(approver).0,
            agent: None,
            session_id: None,
            env: None,
            detail,
        };
        Ok(self.store().append_audit(&event, unix_ms(now)).await?.id)
    }

    async fn try_decide(
        &self,
        id: &str,
        approver: &str,
        proof: Proof<'_>,
        verdict: &Verdict,
        now: SystemTime,
        now_ms: i64,
    ) -> Result<Approval, ApprovalError> {
        if let Verdict::Deny { reason } = verdict
            && reason.trim().is_empty()
        {
            return Err(ApprovalError::NoReason);
        }
        let approval = self
            .store()
            .approval(id)
            .await?
            .ok_or_else(|| ApprovalError::Unknown { id: id.to_owned() })?;
        let config = self.config().approvers.get(approver).map(|c| c.get_ref());
        if config.is_none() {
            return Err(ApprovalError::UnknownApprover {
                approver: approver.to_owned(),
            });
        }
        match status(&approval, now_ms) {
            Status::Pending => {}
            closed => {
                return Err(ApprovalError::Closed {
                    id: id.to_owned(),
                    status: closed,
                });
            }
        }
        may_decide(approver, config, &approval)?;
        let factor = proof.factor();
        if let Proof::Code(code) = proof {
            self.check_code(approver, code, now).await?;
        }
        let actor = Actor::approver(approver);
        match verdict {
            Verdict::Approve => {
                let execute_by = now_ms.saturating_add(ms(self.config().approvals.execute_within));
                let after = match self
                    .store()
                    .vote_approval(id, approver, factor, now_ms, execute_by)
                    .await?
                {
                    Vote::Counted(after) => *after,
                    Vote::Repeated => {
                        return Err(NotAllowed::AlreadyApproved {
                            approver: approver.to_owned(),
                        }
                        .into());
                    }
                    Vote::NotPending => return Err(self.closed(id, now_ms).await?),
                };
                let complete = after.state == Status::Approved;
                let event = self.approval_event(
                    EventKind::ApprovalGranted,
                    &actor,
                    &after,
                    json!({ "approver": approver, "factor": factor, "approvals": after.approved_by.len(), "complete": complete }),
                );
                let text = if complete {
                    format!(
                        "Approved ({}) by {}: agent `{}` may now send it once, until {}.",
                        after.id,
                        after.approved_by.join(" and "),
                        after.agent,
                        rfc3339(after.execute_by_ms.unwrap_or(0) / 1000)
                    )
                } else {
                    format!(
                        "{approver} approved {} ({} of {} approvers): {}",
                        after.id,
                        after.approved_by.len(),
                        after.approvers_needed,
                        summary(&after)
                    )
                };
                self.record_and_alert(
                    event,
                    "approval_granted",
                    text,
                    format!("approval_granted:{}:{approver}", after.id),
                    now,
                )
                .await?;
                Ok(after)
            }
            Verdict::Deny { reason } => {
                if !self.store().deny_approval(id, approver, reason, now_ms).await? {
                    return Err(self.closed(id, now_ms).await?);
                }
                let after = self
                    .store()
                    .approval(id)
                    .await?
                    .ok_or_else(|| ApprovalError::Unknown { id: id.to_owned() })?;
                let event = self.approval_event(
                    EventKind::ApprovalDenied,
                    &actor,
                    &after,
                    json!({ "approver": approver, "factor": factor, "reason": reason }),
                );
                self.store().append_audit(&event, now_ms).await?;
                Ok(after)
            }
        }
    }

    /// Why a decision found the approval no longer pending: where it
    /// stands now (another approver, or its clock, got there first).
    async fn closed(&self, id: &str, now_ms: i64) -> Result<ApprovalError, StoreError> {
        let now_status = match self.store().approval(id).await? {
            Some(a) => status(&a, now_ms),
            None => Status::Expired,
        };
        Ok(ApprovalError::Closed {
            id: id.to_owned(),
            status: now_status,
        })
    }

    /// Takes a code of the approver's factor: right, within a step of now,
    /// never used before. Wrong codes count towards a lock.
    async fn check_code(&self, approver: &str, code: &str, now: SystemTime) -> Result<(), ApprovalError> {
        let now_secs = unix_secs(now);
        // What could never be a code is refused without counting against
        // the approver.
        totp::well_formed(code).map_err(ApprovalError::Code)?;
        let factor = self
            .store()
            .factor(approver)
            .await?
            .ok_or_else(|| ApprovalError::NoFactor {
                approver: approver.to_owned(),
            })?;
        let settings = &self.config().approvals;
        let lock_after = i64::from(settings.lock_after_failures);
        let until = now_secs.saturating_add(settings.lock_for.as_secs() as i64);
        // Counted before it is checked: attempts sent at once cannot each
        // get a look before the lock.
        let Some(attempt) = self
            .store()
            .reserve_attempt(approver, lock_after, now_secs, until)
            .await?
        else {
            let locked = self.store().factor(approver).await?.map_or(until, |f| f.locked_until);
            return Err(ApprovalError::Locked {
                approver: approver.to_owned(),
                until: rfc3339(locked),
            });
        };
        let secret = self.master().open(&factor_record_id(approver), &factor.sealed)?;
        match totp::verify(&secret, code, u64::try_from(now_secs).unwrap_or(0), factor.last_step) {
            Ok(step)
                if self
                    .store()
                    .take_factor_step(approver, step, attempt, lock_after)
                    .await? =>
            {
                Ok(())
            }
            Ok(_) => Err(ApprovalError::Code(CodeRefusal::Replayed)),
            Err(refusal) => {
                if attempt == lock_after {
                    let event = Event {
                        kind: EventKind::ApprovalRefused,
                        actor: Actor::broker().0,
                        agent: None,
                        session_id: None,
                        env: None,
                        detail: json!({ "approver": approver, "locked_until": rfc3339(until), "failures": attempt }),
                    };
                    let text = format!(
                        "Approver `{approver}`'s code factor is locked until {} after {attempt} wrong codes in a row. If {approver} did not type them, someone is guessing; the console's passkeys still work.",
                        rfc3339(until)
                    );
                    self.record_and_alert(
                        event,
                        "approver_locked",
                        text,
                        format!("approver_locked:{approver}:{until}"),
                        now,
                    )
                    .await?;
                }
                Err(ApprovalError::Code(refusal))
            }
        }
    }

    /// Marks what ran out of time expired and records each.
    pub async fn expire_approvals(&self, now: SystemTime) -> Result<usize, StoreError> {
        let now_ms = unix_ms(now);
        let expired = self.store().expire_approvals(now_ms).await?;
        for approval in &expired {
            // Which clock ran out: the approvers', the agent's, or its
            // credential's (revoked, or expired first).
            let clock = match approval.execute_by_ms {
                Some(by) if by < now_ms => "execute",
                None if approval.decide_by_ms < now_ms => "decide",
                _ => "credential",
            };
            let event = self.approval_event(
                EventKind::ApprovalExpired,
                &Actor::broker(),
                approval,
                json!({ "clock": clock }),
            );
            self.store().append_audit(&event, now_ms).await?;
        }
        Ok(expired.len())
    }

    /// Reminds approvers of held requests whose deciding clock runs out
    /// within `reminder_lead`: one alert each, collapsed like every alert.
    pub async fn remind_approvers(&self, now: SystemTime) -> Result<usize, StoreError> {
        let now_ms = unix_ms(now);
        let lead = ms(reminder_lead(self.config().approvals.decide_within));
        let mut reminded = 0;
        for a in self.store().open_approvals().await? {
            if status(&a, now_ms) != Status::Pending || a.decide_by_ms - now_ms > lead {
                continue;
            }
            let text = format!(
                "Reminder: approval {} expires at {} unless decided: {}",
                a.id,
                rfc3339(a.decide_by_ms / 1000),
                summary(&a)
            );
            self.alerts().raise(crate::alerts::Alert {
                kind: "approval_reminder",
                text,
                detail: json!({ "approval_id": a.id, "decide_by": rfc3339(a.decide_by_ms / 1000), "approved_by": a.approved_by }),
                event_id: Some(a.event_id.clone()),
                key: format!("approval_reminder:{}", a.id),
            });
            reminded += 1;
        }
        Ok(reminded)
    }

    /// Records that an approved request was sent.
    pub async fn approval_used(&self, approval: &Approval, now: SystemTime) -> Result<String, StoreError> {
        let event = self.approval_event(
            EventKind::ApprovalUsed,
            &Actor::agent(&approval.agent),
            approval,
            json!({}),
        );
        Ok(self.store().append_audit(&event, unix_ms(now)).await?.id)
    }

    fn approval_event(&self, kind: EventKind, actor: &Actor, a: &Approval, extra: serde_json::Value) -> Event {
        let mut detail = json!({
            "approval_id": a.id,
            "digest": a.digest,
            "provider": a.provider,
            "method": a.method,
            "path": a.path,
            "tier": a.tier,
            "environments": a.environments,
            "approvers_needed": a.approvers_needed,
            "operations": a.operations.iter().map(|op| op.name.as_str()).collect::<Vec<_>>(),
            "lease_id": a.lease_id,
            "refusal_event_id": a.event_id,
        });
        if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        Event {
            kind,
            actor: actor.0.clone(),
            agent: Some(a.agent.clone()),
            session_id: Some(a.session_id.clone()),
            env: Some(a.env.clone()),
            detail,
        }
    }

    /// An admin issues a one-time enrollment code for a configured
    /// approver. The admin never sees nor sets the factor itself.
    pub async fn invite_approver(
        &self,
        approver: &str,
        actor: &Actor,
        now: SystemTime,
    ) -> Result<(SecretString, i64), ApprovalError> {
        if !self.config().approvers.contains_key(approver) {
            return Err(ApprovalError::UnknownApprover {
                approver: approver.to_owned(),
            });
        }
        let issued = issue_opaque_key(OpaqueKind::Enrollment).map_err(|_| ApprovalError::Random)?;
        let now_secs = unix_secs(now);
        let expires_at = now_secs.saturating_add(self.config().approvals.enrollment_ttl.as_secs() as i64);
        self.store()
            .insert_enrollment(&EnrollmentRecord {
                code_hash: issued.hash,
                approver: approver.to_owned(),
                issued_by: actor.0.clone(),
                created_at: now_secs,
                expires_at,
            })
            .await?;
        crate::admin::audit_event(
            self.store(),
            actor,
            EventKind::ApproverInvited,
            None,
            json!({ "approver": approver, "expires_at": rfc3339(expires_at) }),
            now,
        )
        .await?;
        Ok((issued.key, expires_at))
    }

    /// The approver redeems their enrollment code: a fresh secret is kept,
    /// sealed, until they confirm it with a first code. Returns the
    /// `otpauth://` URI and the secret in base32, shown to them once.
    pub async fn redeem_enrollment(
        &self,
        approver: &str,
        code: &SecretString,
        client: std::net::IpAddr,
        now: SystemTime,
    ) -> Result<(SecretString, SecretString), ApprovalError> {
        if !self.config().approvers.contains_key(approver) {
            return Err(ApprovalError::UnknownApprover {
                approver: approver.to_owned(),
            });
        }
        let secret = totp::generate().map_err(|_| ApprovalError::Random)?;
        let taken = {
            let (_sealing, master) = self.sealing().await;
            let sealed = master.seal(&pending_factor_record_id(approver), &secret)?;
            self.store()
                .redeem_enrollment(
                    &hash_opaque_key(code.expose_secret()),
                    approver,
                    &sealed,
                    self.enrollment_cutoff(now),
                    unix_secs(now),
                )
                .await?
        };
        self.enrollment_taken(approver, taken, client, now).await?;
        let (uri, base32) = totp::provisioning(&secret, approver);
        Ok((SecretString::from(uri.as_str()), SecretString::from(base32.as_str())))
    }

    /// Factors that waited for a vouch since before this are dropped.
    pub fn enrollment_cutoff(&self, now: SystemTime) -> i64 {
        unix_secs(now).saturating_sub(self.config().approvals.enrollment_ttl.as_secs() as i64)
    }

    /// What an enrollment code that was not taken says: recorded when it was
    /// not valid.
    pub async fn enrollment_taken(
        &self,
        approver: &str,
        taken: EnrollmentTaken,
        client: std::net::IpAddr,
        now: SystemTime,
    ) -> Result<(), ApprovalError> {
        match taken {
            EnrollmentTaken::Taken => Ok(()),
            EnrollmentTaken::Waiting(since) => Err(ApprovalError::AlreadyWaiting {
                approver: approver.to_owned(),
                since: rfc3339(since),
            }),
            EnrollmentTaken::NotValid => {
                let detail = json!({ "approver": approver, "why": "an enrollment code that is not valid" });
                self.record_refused_attempt(approver, detail, client, now).await?;
                Err(ApprovalError::Enrollment {
                    approver: approver.to_owned(),
                })
            }
        }
    }

    /// The approver confirms the redeemed factor with the code their app
    /// shows. The first approver's is in use at once; any later one (a new
    /// approver's, or a replacement) awaits a vouch. Recorded and alerted.
    /// True when it is in use.
    pub async fn confirm_enrollment(&self, approver: &str, code: &str, now: SystemTime) -> Result<bool, ApprovalError> {
        let Some((sealed, _)) = self.store().pending_factor(approver).await? else {
            return Err(ApprovalError::NothingToConfirm {
                approver: approver.to_owned(),
            });
        };
        let now_secs = unix_secs(now);
        let in_use = {
            let (_sealing, master) = self.sealing().await;
            let secret = master.open(&pending_factor_record_id(approver), &sealed)?;
            let step =
                totp::verify(&secret, code, u64::try_from(now_secs).unwrap_or(0), 0).map_err(ApprovalError::Code)?;
            let confirmed = master.seal(&factor_record_id(approver), &secret)?;
            let configured = serde_json::to_string(&self.config().approvers.keys().collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into());
            self.store()
                .confirm_factor(approver, &confirmed, step, &configured, now_secs)
                .await?
        };
        self.record_enrollment(approver, TOTP, in_use, now).await?;
        Ok(in_use)
    }

    /// An enrolled approver (`voucher`, proving it with a code) vouches for
    /// the factors other approvers registered, which are put in use: an
    /// admin issues enrollment codes, but one stolen admin key cannot make
    /// an approver. Vouching for oneself replaces one's own factor with the
    /// old one's proof. Every refusal is recorded.
    pub async fn vouch(
        &self,
        voucher: &str,
        proof: Proof<'_>,
        approvers: &[String],
        client: std::net::IpAddr,
        now: SystemTime,
    ) -> Result<Vec<(String, Vec<String>)>, ApprovalError> {
        let result = self.try_vouch(voucher, proof, approvers, now).await;
        if let Err(e) = &result
            && !matches!(e, ApprovalError::Store(_))
        {
            let detail = json!({ "approver": voucher, "vouching_for": approvers, "why": e.to_string() });
            self.record_refused_attempt(voucher, detail, client, now).await?;
        }
        result
    }

    async fn try_vouch(
        &self,
        voucher: &str,
        proof: Proof<'_>,
        approvers: &[String],
        now: SystemTime,
    ) -> Result<Vec<(String, Vec<String>)>, ApprovalError> {
        for name in std::iter::once(voucher).chain(approvers.iter().map(String::as_str)) {
            if !self.config().approvers.contains_key(name) {
                return Err(ApprovalError::UnknownApprover {
                    approver: name.to_owned(),
                });
            }
        }
        if let Proof::Code(code) = proof {
            self.check_code(voucher, code, now).await?;
        }
        let now_secs = unix_secs(now);
        let cutoff = self.enrollment_cutoff(now);
        let mut approvers: Vec<&String> = approvers.iter().collect();
        approvers.sort();
        approvers.dedup();
        // Every one named must have a factor waiting, or none is vouched for.
        let waiting = self.store().awaiting_vouch().await?;
        if let Some(missing) = approvers
            .iter()
            .find(|a| !waiting.iter().any(|(w, _, since)| w == **a && *since >= cutoff))
        {
            return Err(ApprovalError::NothingToVouch {
                approver: (*missing).clone(),
            });
        }
        let mut vouched = Vec::new();
        for approver in approvers {
            let totp = match self.store().pending_factor(approver).await? {
                Some((sealed, Some(step))) => {
                    let (_sealing, master) = self.sealing().await;
                    let secret = master.open(&pending_factor_record_id(approver), &sealed)?;
                    Some((master.seal(&factor_record_id(approver), &secret)?, step, sealed.nonce))
                }
                _ => None,
            };
            let put = self
                .store()
                .vouch_factors(
                    approver,
                    totp.as_ref().map(|(s, step, nonce)| (s, *step, nonce.as_slice())),
                    voucher,
                    cutoff,
                    now_secs,
                )
                .await?;
            if put.is_empty() {
                return Err(ApprovalError::NothingToVouch {
                    approver: approver.clone(),
                });
            }
            let event = Event {
                kind: EventKind::ApproverVouched,
                actor: Actor::approver(voucher).0,
                agent: None,
                session_id: None,
                env: None,
                detail: json!({ "approver": approver, "voucher": voucher, "factors": put }),
            };
            let text = format!(
                "{voucher} vouched for approver `{approver}`'s {}: it is in use from now on.",
                put.join(" and ")
            );
            self.record_and_alert(
                event,
                "approver_vouched",
                text,
                format!("approver_vouched:{approver}:{now_secs}"),
                now,
            )
            .await?;
            vouched.push((approver.clone(), put));
        }
        Ok(vouched)
    }

    /// Records and alerts that `approver` registered a factor (`totp`,
    /// `passkey`), so that one registered by someone else is noticed.
    pub async fn record_enrollment(
        &self,
        approver: &str,
        factor: &str,
        in_use: bool,
        now: SystemTime,
    ) -> Result<String, StoreError> {
        let event = Event {
            kind: EventKind::ApproverEnrolled,
            actor: Actor::approver(approver).0,
            agent: None,
            session_id: None,
            env: None,
            detail: json!({ "approver": approver, "factor": factor, "in_use": in_use }),
        };
        let state = if in_use {
            "in use at once, as the first approver's".to_owned()
        } else {
            format!("it awaits a vouch from an enrolled approver (`valetkey approver vouch {approver} --as NAME`)")
        };
        let text = format!(
            "Approver `{approver}` registered a {factor} factor; {state}. If {approver} did not just do this, remove the approver from the configuration and find out who redeemed their enrollment code."
        );
        self.record_and_alert(
            event,
            "approver_enrolled",
            text,
            format!("approver_enrolled:{approver}:{factor}:{}", unix_ms(now)),
            now,
        )
        .await
    }
}
