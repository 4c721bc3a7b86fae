//! Alerts for the humans who run the broker: a leaked provider token, a real
//! token the upstream rejects, an upstream token that reaches beyond its
//! environment, an agent aiming at another environment's resources.
//!
//! `Alerter::raise` never blocks and never fails: it writes a structured log
//! line, collapses an alert identical to one raised within the window, and
//! queues the rest (bounded; a full queue drops and logs) for one task that
//! posts them to the webhook with retries and backoff. An alert never holds a
//! secret: callers put names, ids, fingerprints and statuses in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AlertsConfig;

/// Per-attempt limit on a webhook delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Stable name: `raw_provider_token`, `upstream_credential_mismatch`, …
    pub kind: &'static str,
    /// One line a person reads in a chat channel.
    pub text: String,
    /// Names, ids, statuses and fingerprints: what ops need to act.
    pub detail: serde_json::Value,
    /// The audit event that records what raised the alert.
    pub event_id: Option<String>,
    /// Alerts with equal keys within the window are one alert.
    #[serde(skip)]
    pub key: String,
}

/// What the webhook receives: `text` first, so chat webhooks show it.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    text: &'a str,
    kind: &'a str,
    event_id: Option<&'a str>,
    detail: &'a serde_json::Value,
}

pub struct Alerter {
    queue: Option<mpsc::Sender<Alert>>,
    /// Key → how many identical alerts were collapsed into the first.
    recent: moka::sync::Cache<String, Arc<AtomicU64>>,
    dropped: AtomicU64,
}

impl Alerter {
    /// An alerter that logs only (no webhook configured).
    pub fn log_only(window: Duration) -> Alerter {
        Alerter {
            queue: None,
            recent: recent_cache(window),
            dropped: AtomicU64::new(0),
        }
    }

    /// Starts the delivery task when a webhook is configured; must be called
    /// inside a tokio runtime.
    pub fn start(config: &AlertsConfig, client: reqwest::Client) -> Alerter {
        let Some(url) = config.webhook.clone() else {
            return Alerter::log_only(config.dedupe_window);
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        tokio::spawn(deliver(rx, client, url, config.max_attempts.max(1), config.backoff));
        Alerter {
            queue: Some(tx),
            recent: recent_cache(config.dedupe_window),
            dropped: AtomicU64::new(0),
        }
    }

    /// Raises an alert: logged always, delivered unless an identical one
    /// was within the window. Returns whether it was queued for delivery.
    pub fn raise(&self, alert: Alert) -> bool {
        // Logged and delivered beyond the audit trail: scrubbed as it is.
        let alert = Alert {
            text: crate::audit::scrub::text(&alert.text).into_owned(),
            detail: crate::audit::scrub::json(&alert.detail),
            ..alert
        };
        let mut first = false;
        let counter = self.recent.get_with(alert.key.clone(), || {
            first = true;
            Arc::new(AtomicU64::new(0))
        });
        if !first {
            let collapsed = counter.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                target: "valetkey::alert",
                kind = alert.kind,
                event_id = alert.event_id.as_deref().unwrap_or(""),
                collapsed,
                detail = %alert.detail,
                "{} (repeat, collapsed into the first within the window)",
                alert.text
            );
            return false;
        }
        tracing::warn!(
            target: "valetkey::alert",
            kind = alert.kind,
            event_id = alert.event_id.as_deref().unwrap_or(""),
            detail = %alert.detail,
            "{}",
            alert.text
        );
        let Some(queue) = &self.queue else {
            return false;
        };
        if queue.try_send(alert).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(
                target: "valetkey::alert",
                dropped,
                "the alert queue is full or closed: this alert is in the log only"
            );
            return false;
        }
        true
    }

    /// How many alerts could not be queued since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn recent_cache(window: Duration) -> moka::sync::Cache<String, Arc<AtomicU64>> {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(window.max(Duration::from_millis(1)))
        .build()
}

async fn deliver(
    mut rx: mpsc::Receiver<Alert>,
    client: reqwest::Client,
    url: String,
    max_attempts: u32,
    backoff: Duration,
) {
    while let Some(alert) = rx.recv().await {
        let payload = Payload {
            text: &alert.text,
            kind: alert.kind,
            event_id: alert.event_id.as_deref(),
            detail: &alert.detail,
        };
        let mut wait = backoff;
        for attempt in 1..=max_attempts {
            let outcome = client.post(&url).timeout(DELIVERY_TIMEOUT).json(&payload).send().await;
            // The URL is not logged: chat webhooks carry their secret in it.
            let retry = match outcome {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    let status = r.status();
                    let retry = status.is_server_error() || status.as_u16() == 429;
                    tracing::warn!(target: "valetkey::alert", kind = alert.kind, attempt, %status, "the alert webhook refused the alert");
                    retry
                }
                Err(e) => {
                    tracing::warn!(target: "valetkey::alert", kind = alert.kind, attempt, error = %crate::proxy::error_chain(e), "cannot reach the alert webhook");
                    true
                }
            };
            if !retry || attempt == max_attempts {
                tracing::error!(target: "valetkey::alert", kind = alert.kind, attempts = attempt, "giving up delivering an alert; it is in the log");
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(key: &str) -> Alert {
        Alert {
            kind: "test",
            text: format!("alert {key}"),
            detail: serde_json::json!({}),
            event_id: None,
            key: key.to_owned(),
        }
    }

    #[tokio::test]
    async fn identical_alerts_collapse_and_a_full_queue_drops_without_blocking() {
        let config = AlertsConfig {
            // Nothing listens there: deliveries fail and back off for a minute.
            webhook: Some("http://127.0.0.1:9/hook".into()),
            queue_capacity: 1,
            max_attempts: 2,
            backoff: Duration::from_secs(60),
            ..AlertsConfig::default()
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let alerter = Alerter::start(&config, reqwest::Client::new());
        assert!(alerter.raise(alert("a")));
        assert!(
            !alerter.raise(alert("a")),
            "an identical alert within the window was queued again"
        );
        alerter.raise(alert("b"));
        alerter.raise(alert("c"));
        assert!(alerter.dropped() >= 1, "a full queue must drop, not wait");

        let quiet = Alerter::log_only(Duration::from_secs(600));
        assert!(!quiet.raise(alert("a")), "without a webhook nothing is queued");
        assert_eq!(quiet.dropped(), 0);
    }
}
