//! Tokens that are not valetkey credentials. A value presented where a
//! credential belongs is a provider's own token that leaked to the agent
//! only when it has a known token format (or is one of the broker's own real
//! tokens, which the broker checks by keyed hash): that is refused, never
//! forwarded, recorded and alerted, named by its shape so that ops know what
//! to rotate. Anything else is junk, refused as a malformed credential and
//! only counted, so that noise cannot fill the audit trail or the pager.

use base64::Engine;

/// What a leaked token looks like, when it has a known format.
pub fn known_format(token: &str) -> Option<&'static str> {
    const PREFIXES: [(&str, &str); 16] = [
        ("github_pat_", "a GitHub fine-grained personal access token"),
        ("ghp_", "a GitHub personal access token"),
        ("gho_", "a GitHub OAuth token"),
        ("ghs_", "a GitHub App installation token"),
        ("ghu_", "a GitHub App user token"),
        ("ghr_", "a GitHub refresh token"),
        ("glpat-", "a GitLab personal access token"),
        ("xoxb-", "a Slack bot token"),
        ("xoxp-", "a Slack user token"),
        ("sk_live_", "a Stripe secret key"),
        ("rk_live_", "a Stripe restricted key"),
        ("sk-ant-", "an Anthropic API key"),
        ("sk-proj-", "an OpenAI project key"),
        ("npm_", "an npm access token"),
        (
            "vkl_",
            "a valetkey launcher key (it belongs to whoever launches the agent)",
        ),
        ("vka_", "a valetkey admin key"),
    ];
    let body_ok = |rest: &str| {
        rest.len() >= 8
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if let Some((_, name)) = PREFIXES
        .iter()
        .find(|(p, _)| token.strip_prefix(p).is_some_and(body_ok))
    {
        return Some(name);
    }
    if uuid::Uuid::try_parse(token).is_ok() {
        return Some("a UUID, the form of Railway account, workspace and project tokens");
    }
    if token.len() == 20
        && (token.starts_with("AKIA") || token.starts_with("ASIA"))
        && token.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Some("an AWS access key id");
    }
    if token.len() == 39 && token.starts_with("AIza") {
        return Some("a Google API key");
    }
    if let Ok(url) = url::Url::parse(token)
        && matches!(url.scheme(), "postgres" | "postgresql" | "mysql" | "redis" | "mongodb")
        && url.password().is_some()
    {
        return Some("a database URL with a password");
    }
    if is_jwt(token) {
        return Some("a JWT that is not a valetkey credential");
    }
    None
}

/// Three base64url parts whose first two decode to JSON objects, the first
/// naming an `alg`.
fn is_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
    };
    matches!((decode(head), decode(body)), (Some(h), Some(serde_json::Value::Object(_))) if h.get("alg").is_some())
}

/// Whether a value carries a provider token's well-known prefix (GitHub's),
/// so it can be recognised outside the credential's place too.
pub fn is_known_provider_token(value: &str) -> bool {
    const GITHUB: [&str; 6] = ["ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"];
    value.len() >= 20
        && GITHUB.iter().any(|p| value.starts_with(p))
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_tokens_are_named_by_their_shape() {
        let named = |t: &str| known_format(t).unwrap_or_else(|| panic!("{t}"));
        assert!(named("ghp_abcdefghijklmnopqrstuvwxyz0123456789").contains("GitHub personal"));
        assert!(named("github_pat_11ABCDEFG0abcdefghijkl").contains("fine-grained"));
        assert!(named("ghs_xyz12345678").contains("installation"));
        assert!(named("0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c").contains("Railway"));
        assert!(named("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig").contains("JWT"));
        assert!(named("vkl_0123_abcdefghijk").contains("launcher key"));
        assert!(named("AKIAIOSFODNN7EXAMPLE").contains("AWS"));
        assert!(named("postgres://app:s3cret@db.internal:5432/app").contains("database URL"));
        assert!(named("xoxb-1234567890-abcdefghij").contains("Slack"));
    }

    #[test]
    fn junk_has_no_known_format() {
        for junk in [
            "hunter2",
            "Bearer",
            "x",
            "ghp_",
            "ghp_short",
            "eyJ.not.json",
            "aaaa.bbbb.cccc",
            "postgres://db.internal/app",
            "AKIA-not-a-key",
            "random-junk-value-42",
        ] {
            assert_eq!(known_format(junk), None, "{junk}");
        }
    }

    #[test]
    fn known_provider_tokens_are_recognised_anywhere_but_words_are_not() {
        assert!(is_known_provider_token("ghp_abcdefghijklmnopqrstuvwxyz0123456789"));
        assert!(is_known_provider_token("github_pat_11ABCDEFG0abcdefghijkl"));
        assert!(!is_known_provider_token("ghp_short"));
        assert!(!is_known_provider_token("ghost_protocol_for_the_docs_page"));
        assert!(!is_known_provider_token("ghp_with spaces in it and more"));
    }
}
