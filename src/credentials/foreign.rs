//! Tokens that are not valetkey credentials. A value presented where a
//! credential belongs is a provider's own token that leaked to the agent
//! only when it has a known token format (or is one of the broker's own real
//! tokens, which the broker checks by keyed hash): that is refused, never
//! forwarded, recorded and alerted, named by its shape so that ops know what
//! to rotate. Anything else is junk, refused as a malformed credential and
//! only counted, so that noise cannot fill the audit trail or the pager.

use base64::Engine;

/// Token formats with a fixed prefix: (prefix, shortest body after it, what
/// it is). Bodies are letters, digits, `_` and `-`, as long as the issuer
/// makes them. The one table of token shapes: the proxy names leaked tokens
/// with it, `valetkey scan` finds them in files with it.
pub(crate) const PREFIXED: [(&str, usize, &str); 17] = [
    ("github_pat_", 60, "a GitHub fine-grained personal access token"),
    ("ghp_", 30, "a GitHub personal access token"),
    ("gho_", 30, "a GitHub OAuth token"),
    ("ghs_", 30, "a GitHub App installation token"),
    ("ghu_", 30, "a GitHub App user token"),
    ("ghr_", 30, "a GitHub refresh token"),
    ("glpat-", 20, "a GitLab personal access token"),
    ("xoxb-", 20, "a Slack bot token"),
    ("xoxp-", 20, "a Slack user token"),
    ("sk_live_", 24, "a Stripe secret key"),
    ("rk_live_", 24, "a Stripe restricted key"),
    ("sk-ant-", 32, "an Anthropic API key"),
    ("sk-proj-", 32, "an OpenAI project key"),
    ("npm_", 36, "an npm access token"),
    (
        "vkl_",
        20,
        "a valetkey launcher key (it belongs to whoever launches the agent)",
    ),
    ("vka_", 20, "a valetkey admin key"),
    ("vke_", 20, "a valetkey approver enrollment code"),
];

/// What a leaked token looks like, when it has a known format.
pub fn known_format(token: &str) -> Option<&'static str> {
    shape(token).map(|(name, _)| name)
}

/// A token's known format, and whether its shape alone says it is a secret.
/// A UUID or a JWT is also an id or a sample in many files: it counts as a
/// token there only where something names it one (a `…_TOKEN=` line, a
/// provider's config), which the caller judges.
pub(crate) fn shape(token: &str) -> Option<(&'static str, bool)> {
    let body_ok = |rest: &str, shortest: usize| {
        (shortest..=255).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if let Some((_, _, name)) = PREFIXED
        .iter()
        .find(|(p, shortest, _)| token.strip_prefix(p).is_some_and(|rest| body_ok(rest, *shortest)))
    {
        return Some((name, true));
    }
    if token.len() == 20
        && (token.starts_with("AKIA") || token.starts_with("ASIA"))
        && token.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Some(("an AWS access key id", true));
    }
    if token.len() == 39 && token.starts_with("AIza") {
        return Some(("a Google API key", true));
    }
    // `postgresql+psycopg2`, `mongodb+srv`: the driver after `+` changes nothing.
    if let Ok(url) = url::Url::parse(token)
        && matches!(
            url.scheme().split('+').next(),
            Some("postgres" | "postgresql" | "mysql" | "mariadb" | "redis" | "rediss" | "mongodb" | "amqp" | "amqps")
        )
        && url.password().is_some()
    {
        return Some(("a database URL with a password", true));
    }
    if is_hyphenated_uuid(token) {
        return Some((
            "a UUID, the form of Railway account, workspace and project tokens",
            false,
        ));
    }
    if is_jwt(token) {
        return Some(("a JWT that is not a valetkey credential", false));
    }
    None
}

/// A UUID as Railway writes its tokens: 36 characters, hyphens at 8, 13, 18
/// and 23, hex digits elsewhere (not the braced, URN or bare-hex forms a
/// parser also takes).
fn is_hyphenated_uuid(token: &str) -> bool {
    token.len() == 36
        && token.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Three base64url parts whose first two decode to JSON objects, the first
/// naming an `alg` other than `none`, and a signature.
fn is_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if sig.len() < 16 {
        return false;
    }
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
    };
    matches!(
        (decode(head), decode(body)),
        (Some(h), Some(serde_json::Value::Object(_)))
            if h.get("alg").and_then(serde_json::Value::as_str).is_some_and(|alg| !alg.eq_ignore_ascii_case("none"))
    )
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
        assert!(named(&format!("github_pat_11ABCDEFG0{}", "a".repeat(72))).contains("fine-grained"));
        assert!(named("ghs_xyz12345678abcdefghijklmnopqrstu").contains("installation"));
        assert!(named("0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c").contains("Railway"));
        assert!(named("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU").contains("JWT"));
        assert!(named("vkl_0123_abcdefghijklmnop").contains("launcher key"));
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
            // A UUID parser takes these; Railway does not write them.
            "d41d8cd98f00b204e9800998ecf8427e",
            "{0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c}",
            "urn:uuid:0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c",
            // Too short for the issuer, or no signature.
            "ghp_0123456789abcdefg",
            "eyJhbGciOiJub25lIn0.e30.",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU",
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
