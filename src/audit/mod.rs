//! The audit trail: every mint, refusal, revocation and admin change as an
//! event in a SHA-256 hash chain.
//!
//! This module owns the event's shape and the chain's arithmetic (pure); the
//! store appends and reads. An event never holds a secret or a credential:
//! callers put names, ids, scopes and decisions in it, nothing else.

use serde::Serialize;

/// The hash before the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event as a caller describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// Who did it: `agent:NAME`, `admin:KEY_ID`, `cli:USER`, `broker`.
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
    AdminKeyCreated,
    SigningKeyCreated,
    SigningKeyRotated,
    SecretSet,
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
            EventKind::SigningKeyCreated => "signing_key_created",
            EventKind::SigningKeyRotated => "signing_key_rotated",
            EventKind::SecretSet => "secret_set",
            EventKind::ProxyAllowed => "proxy_allowed",
            EventKind::ProxyRefused => "proxy_refused",
            EventKind::CredentialRefused => "credential_refused",
            EventKind::UpstreamCredentialMismatch => "upstream_credential_mismatch",
            EventKind::TokenReachFinding => "token_reach_finding",
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
            detail: event.detail.to_string(),
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

/// The first position where the chain does not hold, if any.
pub fn first_broken_link(records: &[Record]) -> Option<i64> {
    let mut prev = GENESIS.to_owned();
    let first = records.first().map_or(1, |r| r.seq);
    for (expected_seq, r) in (first..).zip(records) {
        if r.seq != expected_seq || r.prev_hash != prev || r.compute_hash() != r.hash {
            return Some(r.seq);
        }
        prev = r.hash.clone();
    }
    None
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

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(first_broken_link(&chain(5)), None);
    }

    #[test]
    fn edits_deletions_and_reorders_are_found_where_they_are() {
        let mut edited = chain(5);
        edited[2].detail = r#"{"n":99}"#.into();
        assert_eq!(first_broken_link(&edited), Some(3));

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(first_broken_link(&deleted), Some(3));

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(first_broken_link(&reordered), Some(3));

        let mut moved = chain(5);
        moved[3].agent = None;
        assert_eq!(first_broken_link(&moved), Some(4));
    }
}
