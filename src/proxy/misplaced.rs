//! The agent's credential where the broker does not read it. The broker
//! strips the credential headers before forwarding; a credential anywhere
//! else (another header, a cookie, the query string, an inspected body)
//! would reach the provider, so such a request is refused and sent nowhere.
//!
//! Covered: every header name and value but the credential headers' values
//! (also inside a `Basic` value), the path, the query string and the body
//! when the broker reads it (GraphQL requests, form, multipart and JSON
//! bodies it checks for method overrides, git trees), each as it is and
//! percent-decoded (any case, any mix). Not covered: a body the broker
//! streams without reading, and a credential encoded beyond these (JSON `\u`
//! escapes, base64 outside a `Basic` value, compression).

use base64::Engine;
use http::HeaderMap;

use super::CREDENTIAL_HEADERS;
use crate::credentials::credentials_in;

/// Where a misplaced credential was found: words for the agent and the
/// audit trail, never the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misplaced {
    pub place: String,
    /// The credential found, to tell who sent the request.
    pub credential: String,
}

/// The first credential in a place the broker does not read it from.
pub fn find(headers: &HeaderMap, path: &str, query: Option<&str>, body: Option<&[u8]>) -> Option<Misplaced> {
    for (name, value) in headers {
        let place = format!("the header `{name}`");
        if let Some(m) = scan(&place, name.as_str().as_bytes()) {
            return Some(m);
        }
        if CREDENTIAL_HEADERS.contains(name) || name == http::header::PROXY_AUTHORIZATION {
            continue;
        }
        if let Some(m) =
            scan(&place, value.as_bytes()).or_else(|| basic(value.as_bytes()).and_then(|d| scan(&place, &d)))
        {
            return Some(m);
        }
    }
    scan("the path", path.as_bytes())
        .or_else(|| query.and_then(|q| scan("the query string", q.as_bytes())))
        .or_else(|| body.and_then(|b| scan("the body", b)))
}

/// A credential in `text`, as it is or percent-decoded.
fn scan(place: &str, text: &[u8]) -> Option<Misplaced> {
    let found = |text: &[u8]| {
        credentials_in(text).next().map(|c| Misplaced {
            place: place.to_owned(),
            credential: c.to_owned(),
        })
    };
    found(text).or_else(|| {
        memchr::memchr(b'%', text)?;
        found(&percent_encoding::percent_decode(text).collect::<Vec<u8>>())
    })
}

/// The decoded credentials of a `Basic` header value.
fn basic(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn credential() -> String {
        format!("vk1.eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjbGF1ZGUifQ.{}", "s".repeat(86))
    }

    #[test]
    fn a_credential_outside_the_credential_headers_is_found() {
        let c = credential();
        let encoded_basic = base64::engine::general_purpose::STANDARD.encode(format!("x:{c}"));
        for (name, value) in [
            ("x-api-key", c.clone()),
            ("cookie", format!("session=abc; vk={c}")),
            ("x-forwarded-authorization", format!("Bearer {c}")),
            ("x-upstream-auth", format!("Basic {encoded_basic}")),
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
            let m = find(&h, "/", None, None).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(m.place, format!("the header `{name}`"));
            assert_eq!(m.credential, c);
        }
        let none = HeaderMap::new();
        let encoded: String = c.bytes().map(|b| format!("%{b:02x}")).collect();
        for q in [
            format!("access_token={c}"),
            format!("t=vk1%2E{}", &c[4..]),
            format!("vk1%2e{}=1", &c[4..]),
            format!("x={encoded}"),
        ] {
            assert_eq!(
                find(&none, "/a", Some(&q), None).unwrap().place,
                "the query string",
                "{q}"
            );
        }
        assert_eq!(
            find(&none, &format!("/repos/a/b/contents/{c}"), None, None)
                .unwrap()
                .place,
            "the path"
        );
        assert_eq!(
            find(&none, &format!("/a/{encoded}"), None, None).unwrap().place,
            "the path"
        );
        let body = format!("{{\"query\": \"mutation {{ variableUpsert(input: {{ value: \\\"{c}\\\" }}) }}\"}}");
        assert_eq!(find(&none, "/", None, Some(body.as_bytes())).unwrap().place, "the body");
        let form = format!("vk1%2E{}=1", &c[4..]);
        assert_eq!(find(&none, "/", None, Some(form.as_bytes())).unwrap().place, "the body");
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("vk=vk1%2E{}", &c[4..])).unwrap(),
        );
        assert_eq!(find(&h, "/", None, None).unwrap().place, "the header `cookie`");
        // As a header name, lowercased.
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(c.as_bytes()).unwrap(),
            HeaderValue::from_static("1"),
        );
        assert!(find(&h, "/", None, None).is_some());
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        /// A credential anywhere in a header value, the query string or the
        /// body, whatever surrounds it, is found; nothing panics.
        #[test]
        fn fuzz_a_credential_is_found_wherever_it_is_put(
            before in "[ -~]{0,40}",
            after in "[ -~]{0,40}",
            place in 0..3usize,
            noise in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let c = credential();
            let text = format!("{before}{c}{after}");
            let mut h = HeaderMap::new();
            let (query, body) = match place {
                0 => {
                    if let Ok(v) = HeaderValue::from_str(&text) {
                        h.insert("x-carrier", v);
                    } else {
                        return Ok(());
                    }
                    (None, None)
                }
                1 => (Some(text.as_str()), None),
                _ => (None, Some(text.as_bytes())),
            };
            // A base64url run right before or after the credential makes it
            // another (longer) token: found all the same.
            prop_assert!(find(&h, "/", query, body).is_some(), "{text:?}");
            let _ = find(&HeaderMap::new(), "/", None, Some(&noise));
        }
    }

    #[test]
    fn the_credential_headers_and_mere_mentions_are_not_misplaced() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", credential())).unwrap(),
        );
        h.insert("project-access-token", HeaderValue::from_str(&credential()).unwrap());
        h.insert("x-doc", HeaderValue::from_static("send vk1.eyJ... as a bearer token"));
        assert_eq!(
            find(
                &h,
                "/vk1.eyJ",
                Some("q=vk1.eyJ"),
                Some(b"credentials look like vk1.eyJ...")
            ),
            None
        );
    }
}
