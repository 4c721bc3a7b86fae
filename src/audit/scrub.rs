//! Secrets out of the text the broker records and tells. A refused request
//! is recorded with what it aimed at (its path, the parser's reason), and
//! an agent can put anything there: its own `vk1.` credential, a provider's
//! token it found. Every event's detail passes through `json` on its way
//! into the hash chain (`Record::new`), and so do every refusal told
//! (`Problem::body`), every explanation and check answer (`api::agent`) and
//! every alert (`Alerter::raise`); the request log's path through `text`.
//! Neither the trail, the log nor an answer (nor an MCP client's log of it)
//! ever holds one.
//!
//! Replaced, each by a mark naming its kind: a valetkey credential
//! (`credentials::credentials_in`, by its whole format); a token whose
//! shape alone says it is one (`credentials::foreign`: a known prefix, in
//! any case, anywhere in a run of token characters; AWS and Google keys; a
//! database URL with a password) and a JWT; each as it is or
//! percent-encoded, up to three times. When only the decoded text shows a
//! secret, the decoded text is kept, scrubbed. A UUID stays: in a path it
//! is a resource's id (Railway's), not the account token of that shape.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::Value;

use crate::credentials::{credentials_in, foreign};

/// How many layers of percent-encoding are looked through.
const DECODINGS: usize = 3;

/// `value` with every string in it (keys too) scrubbed.
pub fn json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(text(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(json).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (text(k).into_owned(), json(v))).collect()),
        other => other.clone(),
    }
}

/// `text` with every secret replaced by a mark naming its kind; borrowed
/// when there is none.
pub fn text(text: &str) -> Cow<'_, str> {
    let scrubbed = replace(text);
    if !scrubbed.contains('%') {
        return scrubbed;
    }
    let mut decoded = scrubbed.clone().into_owned();
    for _ in 0..DECODINGS {
        let next = percent_encoding::percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    match replace(&decoded) {
        Cow::Borrowed(_) => scrubbed,
        Cow::Owned(revealed) => Cow::Owned(revealed),
    }
}

/// One layer: the secrets as the text spells them.
fn replace(text: &str) -> Cow<'_, str> {
    let mut found: Vec<(Range<usize>, &str)> = credentials_in(text.as_bytes())
        .map(|c| {
            let start = c.as_ptr() as usize - text.as_ptr() as usize;
            (start..start + c.len(), "a valetkey credential")
        })
        .collect();
    found.extend(tokens(text));
    found.extend(database_urls(text));
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    found.sort_by_key(|(span, _)| (span.start, std::cmp::Reverse(span.end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (span, kind) in found {
        if span.start < at {
            continue;
        }
        out.push_str(&text[at..span.start]);
        out.push_str(&format!("[redacted: {kind}]"));
        at = span.end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Runs of the characters tokens are made of (`.` joins a JWT's parts).
fn runs(text: &str, also: u8) -> impl Iterator<Item = Range<usize>> + '_ {
    let is_token = move |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == also;
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && !is_token(bytes[i]) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && is_token(bytes[i]) {
            i += 1;
        }
        (i > start).then_some(start..i)
    })
}

/// Prefixed tokens, AWS and Google keys, and JWTs.
fn tokens(text: &str) -> Vec<(Range<usize>, &'static str)> {
    let mut found = Vec::new();
    for run in runs(text, b'.') {
        let parts: Vec<Range<usize>> = runs(&text[run.clone()], 0)
            .map(|p| run.start + p.start..run.start + p.end)
            .collect();
        for part in &parts {
            if let Some((start, kind)) = token_in(&text[part.clone()]) {
                found.push((part.start + start..part.end, kind));
            }
        }
        // A JWT: three consecutive parts, joined by single dots.
        for three in parts.windows(3) {
            let span = three[0].start..three[2].end;
            if three[1].start == three[0].end + 1
                && three[2].start == three[1].end + 1
                && let Some((kind, _)) = foreign::shape(&text[span.clone()])
            {
                found.push((span, kind));
            }
        }
    }
    found
}

/// Where a token may begin: the known prefixes and the fixed ones (AWS's
/// and Google's), in any case.
const FIXED: [&str; 3] = ["AKIA", "ASIA", "AIza"];

/// The prefixes in one automaton, built once: every string the broker
/// records or tells passes here, run by run, so a search per prefix and run
/// would be most of a request's CPU.
static PREFIXES: std::sync::LazyLock<(aho_corasick::AhoCorasick, Vec<&'static str>)> = std::sync::LazyLock::new(|| {
    let prefixes: Vec<&str> = foreign::PREFIXED.iter().map(|(p, _, _)| *p).chain(FIXED).collect();
    let automaton = aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(&prefixes)
        .expect("fixed ASCII prefixes");
    (automaton, prefixes)
});

/// The first token of a known shape that runs to the end of `part` (no
/// dots in it), and where it starts.
fn token_in(part: &str) -> Option<(usize, &'static str)> {
    let (automaton, prefixes) = &*PREFIXES;
    let mut starts: Vec<(usize, &str)> = automaton
        .find_overlapping_iter(part)
        .map(|m| (m.start(), prefixes[m.pattern().as_usize()]))
        .collect();
    starts.sort();
    starts.into_iter().find_map(|(i, prefix)| {
        let candidate = &part[i..];
        // Spelled in another case (a header name is lowercased), the token
        // is still the token: its prefix is put back as issued.
        let as_issued = if FIXED.contains(&prefix) && prefix != "AIza" {
            candidate.to_ascii_uppercase()
        } else {
            format!("{prefix}{}", &candidate[prefix.len()..])
        };
        match foreign::shape(&as_issued) {
            Some((kind, true)) => Some((i, kind)),
            _ => None,
        }
    })
}

/// `scheme://user:password@host…` a database driver takes.
fn database_urls(text: &str) -> Vec<(Range<usize>, &'static str)> {
    static SCHEME: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("://"));
    let mut found = Vec::new();
    for at in SCHEME.find_iter(text.as_bytes()) {
        let start = text[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+'))
            .map_or(0, |i| i + 1);
        let end = text[at..]
            .find(|c: char| c.is_whitespace() || "\"'`<>".contains(c))
            .map_or(text.len(), |i| at + i);
        if let Some(("a database URL with a password", _)) = foreign::shape(&text[start..end]) {
            found.push((start..end, "a database URL with a password"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> String {
        format!("vk1.eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjbGF1ZGUifQ.{}", "s".repeat(86))
    }

    const GHP: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";

    #[test]
    fn credentials_and_known_tokens_are_replaced_wherever_they_are_spelled() {
        let c = credential();
        let pct = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
        for (spelled, secret) in [
            (format!("/repos/acme/api/contents/{c}"), c.clone()),
            (
                format!("the header `{}`", c.to_ascii_lowercase()),
                c.to_ascii_lowercase(),
            ),
            (format!("/a?x=1&t={c}"), c.clone()),
            (format!("/a/{}", pct(&c)), c.clone()),
            (format!("/a/vk1%252E{}", &c[4..]), c.clone()),
            (format!("/contents/{GHP}"), GHP.into()),
            (format!("/a?{GHP}"), GHP.into()),
            (format!("/a&x{GHP}.json"), GHP.into()),
            (format!("token_{GHP}"), GHP.into()),
            (GHP.to_ascii_lowercase(), GHP.to_ascii_lowercase()),
            (format!("/a/{}", pct(GHP)), GHP.into()),
            (format!("x-{}", GHP.to_ascii_uppercase()), GHP.to_ascii_uppercase()),
            ("/keys/akiaiosfodnn7example".into(), "akiaiosfodnn7example".into()),
            (format!("/a/{jwt}/b"), jwt.into()),
            (
                "/x/postgres://app:s3cret@db.internal:5432/app y".into(),
                "s3cret".into(),
            ),
        ] {
            let scrubbed = text(&spelled);
            assert!(!scrubbed.contains(&secret), "{spelled} -> {scrubbed}");
            assert!(scrubbed.contains("[redacted: "), "{spelled} -> {scrubbed}");
            let decoded = percent_encoding::percent_decode_str(&scrubbed).decode_utf8_lossy();
            assert!(!decoded.to_lowercase().contains(&secret.to_lowercase()), "{decoded}");
        }
    }

    #[test]
    fn text_without_secrets_is_kept_as_it_is() {
        for kept in [
            "/repos/acme/api/contents/README.md",
            "/graphql/v2",
            "/projects/0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c/services",
            "/a%2Fb?q=caf%C3%A9",
            "send `Authorization: Bearer vk1.…`",
            "ghp_short",
            "https://api.github.com/repos/a/b",
        ] {
            assert!(matches!(text(kept), Cow::Borrowed(_)), "{kept}");
        }
    }

    #[test]
    fn every_string_of_a_detail_is_scrubbed_keys_too() {
        let c = credential();
        let detail = serde_json::json!({ "path": format!("/a/{c}"), c.clone(): [GHP, 1] });
        let scrubbed = json(&detail).to_string();
        assert!(!scrubbed.contains(&c) && !scrubbed.contains(GHP), "{scrubbed}");
    }
}
