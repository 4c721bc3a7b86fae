//! Finding valetkey credentials in text the broker did not expect them in:
//! header values, query parameters, an inspected body. A credential is
//! recognised by its whole format (`vk1.`, then a JWT whose header begins
//! `eyJ`, three base64url parts), so prose that mentions `vk1.` is not one.

use super::PREFIX;

/// The shortest parts a credential can have: a JSON header of a few fields,
/// a payload, and an Ed25519 signature (86 characters).
const MIN_HEADER: usize = 16;
const MIN_PAYLOAD: usize = 16;
const MIN_SIGNATURE: usize = 80;

/// Every credential in `text`, in order.
pub fn credentials_in(text: &[u8]) -> impl Iterator<Item = &str> {
    // Built once: every string the broker records or tells is searched.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(PREFIX.as_bytes()));
    let prefix = PREFIX.as_bytes();
    FINDER.find_iter(text).filter_map(move |start| {
        let rest = &text[start + prefix.len()..];
        let header = token_run(rest);
        // `eyJ` in any case: a header name carries a credential lowercased.
        if header < MIN_HEADER
            || !rest[..3.min(rest.len())].eq_ignore_ascii_case(b"eyJ")
            || rest.get(header) != Some(&b'.')
        {
            return None;
        }
        let rest2 = &rest[header + 1..];
        let payload = token_run(rest2);
        if payload < MIN_PAYLOAD || rest2.get(payload) != Some(&b'.') {
            return None;
        }
        let signature = token_run(&rest2[payload + 1..]);
        if signature < MIN_SIGNATURE {
            return None;
        }
        let end = start + prefix.len() + header + 1 + payload + 1 + signature;
        std::str::from_utf8(&text[start..end]).ok()
    })
}

/// The length of the base64url run at the start of `bytes`.
fn token_run(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn fake() -> String {
        format!("vk1.eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjbGF1ZGUifQ.{}", "s".repeat(86))
    }

    #[test]
    fn a_credential_is_found_by_its_whole_format_anywhere_in_text() {
        let credential = fake();
        let text = format!("token={credential}&x=1 and again \"{credential}\"");
        let found: Vec<&str> = credentials_in(text.as_bytes()).collect();
        assert_eq!(found, [credential.as_str(), credential.as_str()]);
    }

    #[test]
    fn documentation_that_mentions_the_prefix_is_not_a_credential() {
        for text in [
            "send `Authorization: Bearer vk1.…`",
            "credentials start with vk1. and are JWTs",
            "vk1.eyJhbGciOiJFZERTQSJ9",
            "vk1.eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjbGF1ZGUifQ.short",
            "vk1.abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
        ] {
            assert_eq!(credentials_in(text.as_bytes()).count(), 0, "{text}");
        }
    }
}
