//! Sessions that last as long as the work: a credential `valetkey run`
//! mints is one string for the whole session, valid while its `run` keeps
//! telling the broker it is alive, up to `[credentials] max_session`.
//!
//! Tools read their tokens once at start, so the credential cannot be
//! renewed by replacing it; instead its lease carries a deadline that each
//! heartbeat moves forward (`heartbeat_timeout` past it, never past the
//! session's end). The heartbeat is authenticated by the launcher key,
//! which `run` holds and the agent never sees, so a stolen credential dies
//! within `heartbeat_timeout` (and the next second's sweep) of its `run`
//! ending, however it ended. A session that missed its deadline stays
//! ended: no later heartbeat revives it.
//!
//! The deadline lives in the store (so a restarted broker, or another
//! replica, learns it: `Broker::sync` reads it every second) and in memory
//! (`Deadlines`), which `authenticate` reads on every request. A database
//! role made for the session has its `VALID UNTIL` moved with the deadline
//! (so a copied `DATABASE_URL` logs in no longer than the credential works,
//! even with the broker down), and is ended by the reaper once the lease's
//! deadline passes.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::SystemTime;

use crate::broker::Broker;
use crate::store::{AgentRecord, Lease, StoreError};
use crate::time::unix_secs;

/// The deadline a heartbeat at `now` sets.
pub fn deadline(now: i64, timeout: i64, session_ends_at: i64) -> i64 {
    (now + timeout).min(session_ends_at)
}

/// Why a session takes no more heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Revoked {
        at: i64,
    },
    /// Its deadline passed before a heartbeat came.
    Lapsed {
        at: i64,
    },
    /// It reached `max_session` (or the length its launcher asked for).
    ReachedEnd {
        at: i64,
    },
    /// It was minted with a fixed expiry (`valetkey env`, the API).
    FixedExpiry {
        at: i64,
    },
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |t: &i64| crate::time::rfc3339(*t);
        match self {
            Ended::Revoked { at: t } => write!(f, "it was revoked at {}", at(t)),
            Ended::Lapsed { at: t } => write!(
                f,
                "no heartbeat reached the broker before its deadline, {}, so its credential stopped working",
                at(t)
            ),
            Ended::ReachedEnd { at: t } => write!(
                f,
                "it reached its longest length ([credentials] max_session) at {}",
                at(t)
            ),
            Ended::FixedExpiry { at: t } => write!(
                f,
                "its credential has a fixed expiry ({}) and takes no heartbeats",
                at(t)
            ),
        }
    }
}

/// Why a session ended, from its leases (pure).
pub fn why_ended(leases: &[Lease], now: i64) -> Ended {
    if let Some(at) = leases.iter().filter_map(|l| l.revoked_at).min() {
        return Ended::Revoked { at };
    }
    let latest = |times: &mut dyn Iterator<Item = i64>| times.max().unwrap_or(now);
    let kept = || leases.iter().filter(|l| l.session_ends_at.is_some());
    if kept().next().is_none() {
        return Ended::FixedExpiry {
            at: latest(&mut leases.iter().map(|l| l.expires_at)),
        };
    }
    let end = latest(&mut kept().filter_map(|l| l.session_ends_at));
    if end <= now {
        Ended::ReachedEnd { at: end }
    } else {
        Ended::Lapsed {
            at: latest(&mut kept().map(|l| l.expires_at)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("agent `{agent}` has no session `{session}`")]
    NotFound { agent: String, session: String },
    #[error("session `{session}` has ended: {why}")]
    Ended { session: String, why: Ended },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a heartbeat bought.
#[derive(Debug, Clone)]
pub struct Beat {
    /// Unix seconds: the credential works until then without another.
    pub deadline: i64,
    pub session_ends_at: i64,
}

/// Each live session lease's deadline (unix seconds), as this process
/// knows it. Deadlines only move forward; a lease missing here lives only
/// to the deadline its mint set.
#[derive(Debug, Default)]
pub struct Deadlines(RwLock<HashMap<String, i64>>);

impl Deadlines {
    /// Whether the lease is alive at `now`. `first` is the deadline its
    /// mint set (known from the credential alone), so a replica that has
    /// not yet learnt of a fresh session does not refuse it.
    pub fn alive(&self, lease: &str, now: i64, first: i64) -> bool {
        let map = self.0.read().expect("deadlines lock");
        now < map.get(lease).copied().unwrap_or(first).max(first)
    }

    pub fn set(&self, lease: &str, until: i64) {
        let mut map = self.0.write().expect("deadlines lock");
        let entry = map.entry(lease.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Merges what the store knows (every replica's heartbeats) and forgets
    /// the deadlines that passed.
    pub fn learn(&self, known: &[(String, i64)], now: i64) {
        let mut map = self.0.write().expect("deadlines lock");
        for (lease, until) in known {
            let entry = map.entry(lease.clone()).or_insert(*until);
            *entry = (*entry).max(*until);
        }
        map.retain(|_, until| *until > now);
    }
}

impl Broker {
    /// A heartbeat from the launcher of `agent` for `session`: moves the
    /// deadline of its live leases, and their database roles' `VALID UNTIL`.
    pub async fn heartbeat(&self, agent: &AgentRecord, session: &str, now: SystemTime) -> Result<Beat, HeartbeatError> {
        let secs = unix_secs(now);
        let leases = self.store().session_leases(session).await?;
        if leases.is_empty() || leases.iter().any(|l| l.agent != agent.name) {
            return Err(HeartbeatError::NotFound {
                agent: agent.name.clone(),
                session: session.to_owned(),
            });
        }
        let timeout = self.config().credentials.get_ref().heartbeat_timeout.as_secs() as i64;
        let moved = self.store().keep_session_alive(session, secs + timeout, secs).await?;
        if moved.is_empty() {
            return Err(HeartbeatError::Ended {
                session: session.to_owned(),
                why: why_ended(&leases, secs),
            });
        }
        for (lease, until) in &moved {
            self.deadlines().set(lease, *until);
        }
        let ends = |id: &str| {
            leases
                .iter()
                .find(|l| l.id == id)
                .and_then(|l| l.session_ends_at)
                .unwrap_or(secs)
        };
        for (lease, until) in &moved {
            self.keep_roles(lease, *until).await;
        }
        Ok(Beat {
            deadline: moved.iter().map(|(_, until)| *until).max().unwrap_or(secs),
            session_ends_at: moved.iter().map(|(id, _)| ends(id)).max().unwrap_or(secs),
        })
    }

    /// Moves the `VALID UNTIL` of the lease's roles to its deadline. A
    /// failure is logged and tried again at the next heartbeat: the role's
    /// recorded expiry passing first ends it (failing closed).
    async fn keep_roles(&self, lease: &str, deadline: i64) {
        let roles = match self.store().lease_database_roles(lease).await {
            Ok(roles) => roles,
            Err(e) => {
                tracing::warn!(lease, error = %e, "cannot read a session's database roles to keep them alive");
                return;
            }
        };
        for role in roles.into_iter().filter(|r| r.expires_at < deadline) {
            let comment = crate::providers::postgres::role_comment(&role.agent, &role.env, &role.lease_id);
            let extended = self
                .databases()
                .extend(&role.provider, &role.env, &role.role, &comment, deadline)
                .await;
            match extended {
                Ok(true) => {
                    if let Err(e) = self.store().database_role_extended(&role.role, deadline).await {
                        tracing::warn!(role = %role.role, error = %e, "cannot record a database role's new VALID UNTIL");
                    }
                }
                Ok(false) => tracing::warn!(role = %role.role, "a session's database role is gone or not the broker's"),
                Err(e) => {
                    tracing::warn!(role = %role.role, error = %e, "cannot move a session's database role's VALID UNTIL")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(expires_at: i64, session_ends_at: Option<i64>, revoked_at: Option<i64>) -> Lease {
        Lease {
            id: "l".into(),
            session_id: "s".into(),
            agent: "a".into(),
            env: "staging".into(),
            grants: Default::default(),
            kid: "k".into(),
            issued_at: 0,
            expires_at,
            revoked_at,
            session_ends_at,
        }
    }

    #[test]
    fn a_heartbeat_never_moves_the_deadline_past_the_session_end() {
        assert_eq!(deadline(100, 15, 1000), 115);
        assert_eq!(deadline(990, 15, 1000), 1000);
    }

    #[test]
    fn why_a_session_ended_names_the_first_cause() {
        let now = 500;
        assert_eq!(
            why_ended(&[lease(510, Some(900), Some(400))], now),
            Ended::Revoked { at: 400 }
        );
        assert_eq!(
            why_ended(&[lease(480, Some(900), None)], now),
            Ended::Lapsed { at: 480 }
        );
        assert_eq!(
            why_ended(&[lease(500, Some(500), None)], now),
            Ended::ReachedEnd { at: 500 }
        );
        assert_eq!(
            why_ended(&[lease(900, None, None)], now),
            Ended::FixedExpiry { at: 900 }
        );
    }

    #[test]
    fn deadlines_only_move_forward_and_passed_ones_are_forgotten() {
        let d = Deadlines::default();
        d.set("a", 120);
        d.set("a", 110);
        assert!(d.alive("a", 119, 100));
        assert!(!d.alive("a", 120, 100));
        // A lease this process never heard of lives to its mint's deadline.
        assert!(d.alive("b", 99, 100));
        assert!(!d.alive("b", 100, 100));
        d.learn(&[("a".into(), 130), ("b".into(), 105)], 110);
        assert!(d.alive("a", 129, 100));
        assert!(!d.alive("b", 110, 100), "forgotten once passed");
    }
}
