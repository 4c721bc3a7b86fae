//! Ends agents' database sessions that outlast their time limits. The limits
//! are set on each role at creation, but a role can `SET` its own timeouts
//! back to 0, so every second the broker asks each server with live roles
//! for the sessions past them (`providers::postgres::OVERDUE_SESSIONS`) and
//! ends those. It reads the store, never writes it; ending is logged.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::databases::Databases;
use crate::store::Store;

/// Added to each limit, so that the server's own timeout, which ends only
/// the statement or the transaction, acts first where the role left it on.
const GRACE: Duration = Duration::from_secs(1);

/// One pass over the servers that have live roles.
pub async fn end_overdue(store: &dyn Store, databases: &Databases) {
    let live: BTreeSet<(String, String)> = match store.live_database_roles().await {
        Ok(roles) => roles.into_iter().map(|r| (r.provider, r.env)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which database roles are live");
            return;
        }
    };
    for ((provider, env), ended) in databases.end_overdue_sessions(GRACE, &live).await {
        match ended {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(%provider, %env, sessions = n, "ended agents' database sessions that outlasted their limits")
            }
            Err(e) => {
                tracing::warn!(%provider, %env, error = %e, "cannot look for agents' database sessions past their limits")
            }
        }
    }
}
