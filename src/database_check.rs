//! The broker's hourly question to each PostgreSQL server: what does it let
//! agents' roles do past their grants (`providers::postgres_findings` judges
//! it)? Each answer is logged, recorded as a `database_finding` event and
//! alerted with its fix; the broker keeps the last answers for `/readyz`.

use std::time::SystemTime;

use serde::Serialize;

use crate::audit::{Event, EventKind};
use crate::broker::Broker;
use crate::store::StoreError;

/// A way a PostgreSQL server lets agents' roles past their grants.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseFinding {
    pub provider: String,
    pub env: String,
    pub what: String,
    pub fix: String,
}

/// Asks every server, records and alerts each finding; a server that
/// cannot be asked is a finding too, logged only.
pub async fn check(broker: &Broker, now: SystemTime) -> Result<Vec<DatabaseFinding>, StoreError> {
    let mut all = Vec::new();
    for ((provider, env), found) in broker.databases().findings().await {
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%provider, %env, error = %e, "cannot check what the database server lets agents do");
                all.push(DatabaseFinding {
                    provider,
                    env,
                    what: format!("cannot check the server: {e}"),
                    fix: "see `valetkey status`".into(),
                });
                continue;
            }
        };
        for f in found {
            let event = Event {
                kind: EventKind::DatabaseFinding,
                actor: crate::admin::Actor::broker().0,
                agent: None,
                session_id: None,
                env: Some(env.clone()),
                detail: serde_json::json!({ "provider": provider, "what": f.what, "fix": f.fix }),
            };
            let text = format!(
                "The `{provider}` database server for `{env}`: {}. Fix: {}",
                f.what, f.fix
            );
            let key = format!("database_finding:{provider}:{env}:{}", f.what);
            broker
                .record_and_alert(event, "database_finding", text, key, now)
                .await?;
            all.push(DatabaseFinding {
                provider: provider.clone(),
                env: env.clone(),
                what: f.what,
                fix: f.fix,
            });
        }
    }
    Ok(all)
}
