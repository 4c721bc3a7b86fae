//! What the launcher is told about a credential that is less than it asked
//! for: each scope stripped and why, a lifetime cut short and by which
//! limit. A pure reading of the mint answer, so each sentence is tested.

use std::time::Duration;

use serde_json::Value;

/// The lines to print on standard error, in words, for the mint `answer`;
/// `asked` is the `--ttl` the launcher gave.
pub fn notes(answer: &Value, asked: Option<Duration>) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let mut lines: Vec<String> = answer["stripped"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let scope = match s["provider"].as_str() {
                Some(provider) => format!("{provider} scope `{}`", text(&s["scope"])),
                None => format!("scope `{}`", text(&s["scope"])),
            };
            format!("not granted: {scope}: {}", text(&s["why"]))
        })
        .collect();
    let limit = &answer["ttl_limited_by"];
    if limit.is_object() {
        // A session (`run`) lasts while its heartbeat does, up to its
        // longest length; a fixed expiry (`env`) is its TTL.
        let session = answer["heartbeat"].is_object();
        let by = match (limit["by"].as_str(), limit["provider"].as_str()) {
            (Some("grant_max"), Some(provider)) => {
                format!("the max_ttl of this agent's grant for `{provider}` in the broker's configuration")
            }
            (Some("session_max"), _) => "the broker's [credentials] max_session".to_owned(),
            _ => "the broker's [credentials] max_ttl".to_owned(),
        };
        let lives = answer["expires_in"]
            .as_u64()
            .map_or("?".to_owned(), |s| human(Duration::from_secs(s)));
        let wanted = match (asked, session) {
            (Some(asked), _) => format!("the {} asked for", human(asked)),
            (None, true) => "the broker's max_session".to_owned(),
            (None, false) => "the default ttl".to_owned(),
        };
        lines.push(if session {
            format!("the session lasts at most {lives}, not {wanted}: no session outlives {by} (ops can raise it)")
        } else {
            format!("the credential lives {lives}, not {wanted}: no credential outlives {by} (ops can raise it)")
        });
    }
    lines
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_stripped_scope_is_named_with_why() {
        let answer = json!({
            "stripped": [
                { "provider": "railway", "scope": "volume:delete", "reason": "destructive", "why": "destructive scopes are never placed in an agent credential" },
                { "provider": null, "scope": "teleport", "reason": "unknown_scope", "why": "none of the credential's providers has a scope of this name" },
            ],
            "ttl_limited_by": null,
        });
        assert_eq!(
            notes(&answer, None),
            [
                "not granted: railway scope `volume:delete`: destructive scopes are never placed in an agent credential",
                "not granted: scope `teleport`: none of the credential's providers has a scope of this name",
            ]
        );
    }

    #[test]
    fn a_session_cut_short_says_so_as_a_session() {
        let answer = json!({
            "stripped": [], "expires_in": 1800, "heartbeat": { "interval_seconds": 5 },
            "ttl_limited_by": { "by": "grant_max", "provider": "railway" },
        });
        assert_eq!(
            notes(&answer, None),
            [
                "the session lasts at most 30m, not the broker's max_session: no session outlives the max_ttl of this agent's grant for `railway` in the broker's configuration (ops can raise it)"
            ]
        );
        let answer = json!({
            "stripped": [], "expires_in": 28800, "heartbeat": { "interval_seconds": 5 },
            "ttl_limited_by": { "by": "session_max" },
        });
        assert_eq!(
            notes(&answer, Some(Duration::from_secs(36000))),
            [
                "the session lasts at most 8h, not the 10h asked for: no session outlives the broker's [credentials] max_session (ops can raise it)"
            ]
        );
    }

    #[test]
    fn a_clamped_ttl_says_what_was_asked_and_which_limit() {
        let by_server = json!({ "stripped": [], "expires_in": 3600, "ttl_limited_by": { "by": "server_max" } });
        assert_eq!(
            notes(&by_server, Some(Duration::from_secs(7200))),
            [
                "the credential lives 1h, not the 2h asked for: no credential outlives the broker's [credentials] max_ttl (ops can raise it)"
            ]
        );
        let by_grant = json!({ "expires_in": 300, "ttl_limited_by": { "by": "grant_max", "provider": "github" } });
        let line = &notes(&by_grant, None)[0];
        assert!(
            line.contains("5m, not the default ttl") && line.contains("grant for `github`"),
            "{line}"
        );
    }

    #[test]
    fn a_full_grant_says_nothing() {
        assert!(
            notes(
                &json!({ "stripped": [], "expires_in": 900, "ttl_limited_by": null }),
                None
            )
            .is_empty()
        );
    }
}
