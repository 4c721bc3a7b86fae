//! The audit trail: every mint, refusal, revocation and admin change as an
//! event in a SHA-256 hash chain, with signed checkpoints of its head.
//!
//! This module owns the event's shape, the chain's arithmetic and its
//! verification (pure: signatures are checked by a function passed in); the
//! store appends and reads. `sink` is the one piece with I/O: the JSON-lines
//! file that follows the store for SIEMs. An event never holds a secret or a
//! credential: callers put names, ids, scopes and decisions in it, nothing
//! else, and `scrub` takes out of its detail any secret an agent put in
//! what it asked for.

pub mod report;
pub mod scrub;
pub mod sink;

use serde::Serialize;

/// The hash before the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event as a caller describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// Who did it: `agent:NAME`, `admin:NAME`, `broker`.
    pub actor: String,
    pub agent: Option<String>,
    pub session_id: Option<String>,
    pub env: Option<String>,
    /// Names, ids, scopes and reasons. Never a secret.
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Mint,
    MintRefused,
    Revoke,
    AgentAdded,
    AgentRemoved,
    /// The bootstrap admin key, written to a file at start.
    AdminKeyCreated,
    /// A named admin's key was issued; the event's actor issued it.
    AdminAdded,
    AdminRemoved,
    SigningKeyCreated,
    SigningKeyRotated,
    /// Every sealed record moved under a new master key.
    MasterKeyRotated,
    SecretSet,
    SecretRemoved,
    /// A proxied request the policy allowed, before it is forwarded.
    ProxyAllowed,
    /// A proxied request refused; nothing was forwarded.
    ProxyRefused,
    /// A credential refused for what it says about the agent's situation:
    /// expired or revoked yet still in use, or a provider's own token.
    CredentialRefused,
    /// The upstream rejected the broker's own real token.
    UpstreamCredentialMismatch,
    /// An upstream token reaches beyond the environment it is configured for.
    TokenReachFinding,
    /// A PostgreSQL server lets agents' roles past their grants (PUBLIC's
    /// privileges, pg_hba.conf).
    DatabaseFinding,
    /// A PostgreSQL role made for a lease (postgres providers).
    DatabaseRoleCreated,
    /// A lease's PostgreSQL role ended: sessions closed, role dropped.
    DatabaseRoleDropped,
    /// An upstream echoed a real token in its answer; it was overwritten
    /// before the agent saw it.
    TokenEchoed,
    /// An agent was launched (`run --allow-tokens`) with real tokens lying
    /// in its working directory.
    TokensInReach,
    /// A request held for approval (once per held request).
    ApprovalRequested,
    /// An approver approved a held request (each approver's vote).
    ApprovalGranted,
    ApprovalDenied,
    /// A held request was not decided, or not sent, in time.
    ApprovalExpired,
    /// An approved request was sent, once.
    ApprovalUsed,
    /// An attempt to decide on, or to send under, an approval was refused.
    ApprovalRefused,
    /// An admin issued an approver's enrollment code.
    ApproverInvited,
    /// An approver registered (or replaced) their factor.
    ApproverEnrolled,
    /// An enrolled approver vouched for another's factor, which is in use
    /// from then on.
    ApproverVouched,
    /// The forward proxy tunnelled a connection to a passthrough host,
    /// uninspected.
    TunnelOpened,
    /// A passthrough tunnel ended: how many bytes went each way, how long it
    /// lived, and why it ended (either side closed it, or its credential
    /// stopped authenticating).
    TunnelClosed,
    /// An admin replaced the forward proxy's CA.
    CaRotated,
    /// The forward proxy refused an authenticated agent's request: a host
    /// it does not go to, a request for another host, an upgrade.
    ForwardRefused,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Mint => "mint",
            EventKind::MintRefused => "mint_refused",
            EventKind::Revoke => "revoke",
            EventKind::AgentAdded => "agent_added",
            EventKind::AgentRemoved => "agent_removed",
            EventKind::AdminKeyCreated => "admin_key_created",
            EventKind::AdminAdded => "admin_added",
            EventKind::AdminRemoved => "admin_removed",
            EventKind::SigningKeyCreated => "signing_key_created",
            EventKind::SigningKeyRotated => "signing_key_rotated",
            EventKind::MasterKeyRotated => "master_key_rotated",
            EventKind::SecretSet => "secret_set",
            EventKind::SecretRemoved => "secret_removed",
            EventKind::ProxyAllowed => "proxy_allowed",
            EventKind::ProxyRefused => "proxy_refused",
            EventKind::CredentialRefused => "credential_refused",
            EventKind::UpstreamCredentialMismatch => "upstream_credential_mismatch",
            EventKind::TokenReachFinding => "token_reach_finding",
            EventKind::DatabaseFinding => "database_finding",
            EventKind::DatabaseRoleCreated => "database_role_created",
            EventKind::DatabaseRoleDropped => "database_role_dropped",
            EventKind::TokenEchoed => "token_echoed",
            EventKind::TokensInReach => "tokens_in_reach",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::ApprovalGranted => "approval_granted",
            EventKind::ApprovalDenied => "approval_denied",
            EventKind::ApprovalExpired => "approval_expired",
            EventKind::ApprovalUsed => "approval_used",
            EventKind::ApprovalRefused => "approval_refused",
            EventKind::ApproverInvited => "approver_invited",
            EventKind::ApproverEnrolled => "approver_enrolled",
            EventKind::ApproverVouched => "approver_vouched",
            EventKind::TunnelOpened => "tunnel_opened",
            EventKind::TunnelClosed => "tunnel_closed",
            EventKind::CaRotated => "ca_rotated",
            EventKind::ForwardRefused => "forward_refused",
        }
    }
}

/// An event as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub seq: i64,
    pub id: String,
    pub at_ms: i64,
    pub kind: String,
    pub actor: String,
    pub agent: Option<String>,
    pub session_id: Option<String>,
    pub env: Option<String>,
    /// The detail as the JSON text that was hashed.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl Record {
    /// Builds the record that follows `prev_hash` at position `seq`.
    pub fn new(seq: i64, id: String, at_ms: i64, event: &Event, prev_hash: &str) -> Record {
        let mut record = Record {
            seq,
            id,
            at_ms,
            kind: event.kind.as_str().to_owned(),
            actor: event.actor.clone(),
            agent: event.agent.clone(),
            session_id: event.session_id.clone(),
            env: event.env.clone(),
            // What a caller could not know held a secret (a refused path,
            // a parser's message) is scrubbed here, once for every event.
            detail: scrub::json(&event.detail).to_string(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }

    /// SHA-256 over the previous hash and every field, each length-prefixed
    /// so that no two different records hash the same bytes.
    pub fn compute_hash(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        field(self.prev_hash.as_bytes());
        field(&self.seq.to_be_bytes());
        field(self.id.as_bytes());
        field(&self.at_ms.to_be_bytes());
        field(self.kind.as_bytes());
        field(self.actor.as_bytes());
        for opt in [&self.agent, &self.session_id, &self.env] {
            match opt {
                Some(v) => field(format!("+{v}").as_bytes()),
                None => field(b"-"),
            }
        }
        field(self.detail.as_bytes());
        hex::encode(ctx.finish())
    }
}

impl Record {
    /// The record as tools read it: the detail as JSON, the time as RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seq": self.seq,
            "id": self.id,
            "at": crate::time::rfc3339_ms(self.at_ms),
            "kind": self.kind,
            "actor": self.actor,
            "agent": self.agent,
            "session_id": self.session_id,
            "env": self.env,
            "detail": serde_json::from_str::<serde_json::Value>(&self.detail).unwrap_or(serde_json::Value::Null),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        })
    }
}

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub agent: Option<String>,
    pub env: Option<String>,
    /// The event kind (`proxy_refused`, `mint`, …).
    pub kind: Option<String>,
    /// Events at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Events after this position.
    pub after_seq: Option<i64>,
    /// At most this many: the oldest that match, or the newest when `newest`.
    pub limit: i64,
    pub newest: bool,
}

/// `30d`, `12h`, `90m` (that long before `now_ms`) or an RFC 3339 time.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        // Further back than the clock goes is from the start: 0.
        return Ok(i64::try_from(ago.as_millis()).map_or(0, |ago| now_ms.saturating_sub(ago).max(0)));
    }
    humantime::parse_rfc3339_weak(text)
        .map(crate::time::unix_ms)
        .map_err(|_| format!("`{text}` is neither a duration (30d, 12h) nor a time (2026-11-01T00:00:00Z)"))
}

/// A signed statement that event `seq` had hash `head_hash`: once made,
/// dropping or rewriting events up to `seq` no longer verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub head_hash: String,
    pub at_ms: i64,
    /// The signing key's id.
    pub kid: String,
    /// Ed25519 over `checkpoint_message`, base64url.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes a checkpoint's signature covers.
    pub fn message(seq: i64, head_hash: &str, at_ms: i64) -> String {
        format!("valetkey audit checkpoint v1\n{seq}\n{head_hash}\n{at_ms}")
    }
}

/// What is wrong with a chain, at which event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Broken {
    #[error("event {seq}: its contents do not match its hash (it was edited, inserted or renumbered)")]
    Edited { seq: i64 },
    #[error("event {seq}: it does not follow the event before it (an event was deleted, inserted or moved before it)")]
    Unlinked { seq: i64 },
    #[error("event {seq} is missing: the chain jumps from {before} to {found} (events were deleted or reordered)")]
    Gap { seq: i64, before: i64, found: i64 },
    #[error("checkpoint at event {seq}: its signature does not verify (forged, or signed by an unknown key `{kid}`)")]
    BadSignature { seq: i64, kid: String },
    #[error("checkpoint at event {seq}: event {seq} now has another hash (events up to it were rewritten)")]
    Rewritten { seq: i64 },
    #[error("the chain ends at event {last}, but a checkpoint signed event {seq}: events after {last} were removed")]
    Truncated { seq: i64, last: i64 },
}

impl Broken {
    /// The first event the problem concerns.
    pub fn seq(&self) -> i64 {
        match self {
            Broken::Edited { seq }
            | Broken::Unlinked { seq }
            | Broken::Gap { seq, .. }
            | Broken::BadSignature { seq, .. }
            | Broken::Rewritten { seq } => *seq,
            Broken::Truncated { last, .. } => last + 1,
        }
    }
}

/// The outcome of verifying a chain and its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub events: usize,
    pub checkpoints: usize,
    /// The newest checkpoint that verified, if any.
    pub last_checkpoint: Option<i64>,
    /// When the broker signed it (the signature covers the time).
    pub last_checkpoint_at_ms: Option<i64>,
    /// The first problem, by position.
    pub broken: Option<Broken>,
}

impl Verification {
    /// One line for people: intact with what was checked, or the first
    /// broken link by position.
    pub fn summary(&self) -> String {
        match &self.broken {
            None => format!(
                "intact: {} events, {} checkpoints{}",
                self.events,
                self.checkpoints,
                match (self.last_checkpoint, self.last_checkpoint_at_ms) {
                    (Some(seq), Some(at)) => {
                        let after = i64::try_from(self.events).unwrap_or(i64::MAX).saturating_sub(seq);
                        format!(
                            "; the newest verified checkpoint signs event {seq}, at {}{}",
                            crate::time::rfc3339_ms(at),
                            if after > 0 {
                                format!("; the {after} event(s) after it are vouched by no signature yet")
                            } else {
                                String::new()
                            }
                        )
                    }
                    _ => "; no checkpoint yet, so a cut-off tail would not show".into(),
                }
            ),
            Some(broken) => format!("BROKEN at event {}: {broken}", broken.seq()),
        }
    }
}

/// Walks the chain from its start, then checks every checkpoint against it.
/// `signed` says whether a checkpoint's signature verifies.
pub fn verify(records: &[Record], checkpoints: &[Checkpoint], signed: impl Fn(&Checkpoint) -> bool) -> Verification {
    let mut problems: Vec<Broken> = Vec::new();
    let mut prev = GENESIS.to_owned();
    for (expected, r) in (1..).zip(records) {
        if r.seq != expected {
            problems.push(Broken::Gap {
                seq: expected,
                before: expected - 1,
                found: r.seq,
            });
            break;
        }
        if r.compute_hash() != r.hash {
            problems.push(Broken::Edited { seq: r.seq });
            break;
        }
        if r.prev_hash != prev {
            problems.push(Broken::Unlinked { seq: r.seq });
            break;
        }
        prev = r.hash.clone();
    }
    let last = records.last().map_or(0, |r| r.seq);
    let mut last_checkpoint: Option<&Checkpoint> = None;
    for c in checkpoints {
        if !signed(c) {
            problems.push(Broken::BadSignature {
                seq: c.seq,
                kid: c.kid.clone(),
            });
            continue;
        }
        match records.iter().find(|r| r.seq == c.seq) {
            _ if c.seq > last => problems.push(Broken::Truncated { seq: c.seq, last }),
            Some(r) if r.hash == c.head_hash => {
                if last_checkpoint.is_none_or(|l| c.seq >= l.seq) {
                    last_checkpoint = Some(c);
                }
            }
            _ => problems.push(Broken::Rewritten { seq: c.seq }),
        }
    }
    problems.sort_by_key(Broken::seq);
    Verification {
        events: records.len(),
        checkpoints: checkpoints.len(),
        last_checkpoint: last_checkpoint.map(|c| c.seq),
        last_checkpoint_at_ms: last_checkpoint.map(|c| c.at_ms),
        broken: problems.into_iter().next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let event = Event {
                    kind: EventKind::Mint,
                    actor: "agent:a".into(),
                    agent: Some("a".into()),
                    session_id: None,
                    env: Some("staging".into()),
                    detail: serde_json::json!({ "n": seq }),
                };
                let r = Record::new(seq, format!("ev{seq}"), seq * 1000, &event, &prev);
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn checkpoint(records: &[Record], seq: i64) -> Checkpoint {
        let r = &records[(seq - 1) as usize];
        Checkpoint {
            seq,
            head_hash: r.hash.clone(),
            at_ms: r.at_ms,
            kid: "k".into(),
            signature: "good".into(),
        }
    }

    fn check(records: &[Record], checkpoints: &[Checkpoint]) -> Option<Broken> {
        verify(records, checkpoints, |c| c.signature == "good").broken
    }

    #[test]
    fn an_intact_chain_verifies() {
        let records = chain(5);
        let v = verify(&records, &[checkpoint(&records, 3)], |_| true);
        assert_eq!((v.events, v.last_checkpoint, &v.broken), (5, Some(3), &None));
        assert!(
            v.summary()
                .contains("the 2 event(s) after it are vouched by no signature yet"),
            "{}",
            v.summary()
        );
        let both = verify(&records, &[checkpoint(&records, 5), checkpoint(&records, 3)], |_| true);
        assert_eq!(both.last_checkpoint, Some(5), "the newest, whatever the order");
    }

    #[test]
    fn edits_deletions_insertions_and_reorders_are_found_where_they_are() {
        let mut edited = chain(5);
        edited[2].detail = r#"{"n":99}"#.into();
        assert_eq!(check(&edited, &[]), Some(Broken::Edited { seq: 3 }));

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(
            check(&deleted, &[]),
            Some(Broken::Gap {
                seq: 2,
                before: 1,
                found: 3
            })
        );

        // An inserted event, renumbered to fit: it does not follow its predecessor's hash.
        let mut inserted = chain(5);
        let mut fake = inserted[1].clone();
        fake.detail = r#"{"n":"forged"}"#.into();
        fake.hash = fake.compute_hash();
        inserted.insert(2, fake);
        for (i, r) in inserted.iter_mut().enumerate() {
            r.seq = i as i64 + 1;
        }
        assert_eq!(check(&inserted, &[]), Some(Broken::Edited { seq: 3 }));

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(
            check(&reordered, &[]),
            Some(Broken::Gap {
                seq: 2,
                before: 1,
                found: 3
            })
        );

        let mut moved = chain(5);
        moved[3].agent = None;
        assert_eq!(check(&moved, &[]), Some(Broken::Edited { seq: 4 }));
    }

    #[test]
    fn checkpoints_catch_truncation_rewrites_and_forgeries() {
        let records = chain(5);
        let cp = checkpoint(&records, 5);
        assert_eq!(
            check(&records[..3], std::slice::from_ref(&cp)),
            Some(Broken::Truncated { seq: 5, last: 3 })
        );

        // A chain rebuilt from event 2 on, hashes and all, is consistent in
        // itself but not with what was signed.
        let mut rebuilt = chain(5);
        rebuilt[1].detail = r#"{"n":"rewritten"}"#.into();
        let mut prev = rebuilt[0].hash.clone();
        for r in rebuilt.iter_mut().skip(1) {
            r.prev_hash = prev.clone();
            r.hash = r.compute_hash();
            prev = r.hash.clone();
        }
        assert_eq!(check(&rebuilt, &[]), None);
        assert_eq!(
            check(&rebuilt, std::slice::from_ref(&cp)),
            Some(Broken::Rewritten { seq: 5 })
        );

        let forged = Checkpoint {
            signature: "forged".into(),
            ..cp
        };
        assert!(matches!(
            check(&records, &[forged]),
            Some(Broken::BadSignature { seq: 5, .. })
        ));
    }
}
