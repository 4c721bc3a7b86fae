//! Tokens that are not valetkey credentials. Anything an agent presents
//! where a credential belongs that lacks the `vk1.` prefix is treated as a
//! provider's own token that leaked to it: refused, never forwarded, and
//! named by its shape only so that ops know what to rotate.

/// What a foreign token looks like, from its well-known prefix or form.
pub fn looks_like(token: &str) -> &'static str {
    const PREFIXES: [(&str, &str); 7] = [
        ("github_pat_", "a GitHub fine-grained personal access token"),
        ("ghp_", "a GitHub personal access token"),
        ("gho_", "a GitHub OAuth token"),
        ("ghs_", "a GitHub App installation token"),
        ("ghu_", "a GitHub App user token"),
        ("ghr_", "a GitHub refresh token"),
        (
            "vkl_",
            "a valetkey launcher key (it belongs to whoever launches the agent)",
        ),
    ];
    if let Some((_, name)) = PREFIXES.iter().find(|(p, _)| token.starts_with(p)) {
        return name;
    }
    if token.starts_with("vka_") {
        return "a valetkey admin key";
    }
    if uuid::Uuid::try_parse(token).is_ok() {
        return "a UUID, the form of Railway account, workspace and project tokens";
    }
    if token.starts_with("eyJ") && token.matches('.').count() == 2 {
        return "a JWT that is not a valetkey credential";
    }
    "a secret that is not a valetkey credential"
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
        assert!(looks_like("ghp_abcdefghijklmnopqrstuvwxyz0123456789").contains("GitHub personal"));
        assert!(looks_like("github_pat_11ABCDEFG0abcdefghijkl").contains("fine-grained"));
        assert!(looks_like("ghs_xyz").contains("installation"));
        assert!(looks_like("0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c").contains("Railway"));
        assert!(looks_like("eyJhbGciOiJIUzI1NiJ9.e30.sig").contains("JWT"));
        assert!(looks_like("vkl_0123_abc").contains("launcher key"));
        assert_eq!(looks_like("hunter2"), "a secret that is not a valetkey credential");
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
