//! What the broker reads of a request's body and its framing headers: the
//! media type (one `Content-Type`, each parameter once, UTF-8 only), the
//! encoding (none), and the field names of form and multipart bodies.
//! Anything a server could read another way is an error.

use std::collections::BTreeSet;

use http::{HeaderMap, header};

use super::ClassifyError;

/// A request's media type, as far as the broker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lowercase.
    pub essence: String,
    /// A multipart body's boundary.
    pub boundary: Option<String>,
}

impl MediaType {
    pub fn is(&self, essence: &str) -> bool {
        self.essence == essence
    }

    /// JSON by any of its names (`application/json`, `text/json`,
    /// `application/…+json`): frameworks parse them all as JSON.
    pub fn is_json(&self) -> bool {
        self.essence.ends_with("/json") || self.essence.ends_with("+json")
    }
}

/// The request's media type; `None` without a `Content-Type`.
pub fn media_type(headers: &HeaderMap) -> Result<Option<MediaType>, ClassifyError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed("the request has more than one `Content-Type` header"));
    }
    let text = value
        .to_str()
        .map_err(|_| malformed("the `Content-Type` header is not text"))?;
    let mime: mime::Mime = text
        .parse()
        .map_err(|_| malformed(format!("the `Content-Type` `{text}` does not parse")))?;
    let mut names = BTreeSet::new();
    let mut boundary = None;
    for (name, value) in mime.params() {
        let name = name.as_str().to_ascii_lowercase();
        if !names.insert(name.clone()) {
            return Err(malformed(format!(
                "the `Content-Type` names parameter `{name}` twice; servers disagree on which one counts"
            )));
        }
        match name.as_str() {
            "charset" if !value.as_str().eq_ignore_ascii_case("utf-8") => {
                return Err(ClassifyError::UnsupportedMediaType(format!(
                    "the body is in charset `{}`; the broker reads bodies as UTF-8 only, so send UTF-8",
                    value.as_str()
                )));
            }
            "boundary" => boundary = Some(value.as_str().to_owned()),
            _ => {}
        }
    }
    Ok(Some(MediaType {
        essence: mime.essence_str().to_ascii_lowercase(),
        boundary,
    }))
}

/// A body the broker reads must come as it is: an encoded one would be read
/// by the broker as bytes and by the server as what they decode to.
pub fn unencoded(headers: &HeaderMap) -> Result<(), ClassifyError> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(malformed("the request has more than one `Content-Encoding` header"));
    }
    match first {
        Some(encoding) if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") => {
            Err(ClassifyError::UnsupportedMediaType(format!(
                "the body is encoded (`{}`); the broker reads bodies it must inspect only unencoded",
                String::from_utf8_lossy(encoding.as_bytes())
            )))
        }
        _ => Ok(()),
    }
}

/// The field names of a form or multipart body, or the top-level keys of a
/// JSON object body: where frameworks look for a method override.
pub fn field_names(media: &MediaType, body: &[u8]) -> Result<Vec<String>, ClassifyError> {
    match media.essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(url::form_urlencoded::parse(body)
            .map(|(name, _)| name.into_owned())
            .collect()),
        "multipart/form-data" => {
            let boundary = media
                .boundary
                .as_deref()
                .ok_or_else(|| malformed("the multipart body's `Content-Type` names no boundary"))?;
            multipart_names(body, boundary)
        }
        _ if media.is_json() => match super::json::strict(body) {
            Ok(serde_json::Value::Object(object)) => Ok(object.keys().cloned().collect()),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(malformed(format!("the body is not JSON: {e}"))),
        },
        _ => Ok(Vec::new()),
    }
}

/// The `name` of every part of a multipart body.
fn multipart_names(body: &[u8], boundary: &str) -> Result<Vec<String>, ClassifyError> {
    let unreadable = || malformed("the multipart body does not parse");
    let delimiter = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    let mut parts = text.split(delimiter.as_str());
    parts.next().ok_or_else(unreadable)?;
    let mut names = Vec::new();
    let mut closed = false;
    for part in parts {
        if part.starts_with("--") {
            closed = true;
            break;
        }
        let part = part.strip_prefix("\r\n").ok_or_else(unreadable)?;
        let (head, _) = part.split_once("\r\n\r\n").ok_or_else(unreadable)?;
        for line in head.split("\r\n") {
            let Some((name, value)) = line.split_once(':') else {
                return Err(unreadable());
            };
            if name.trim().eq_ignore_ascii_case("content-disposition") {
                names.extend(disposition_name(value));
            }
        }
    }
    if !closed {
        return Err(unreadable());
    }
    Ok(names)
}

/// The names a `Content-Disposition` value gives its part: `name`, quoted
/// (backslash escapes undone) or not, and `name*` (RFC 5987, percent-encoded
/// after its charset).
fn disposition_name(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find(';') {
        rest = rest[i + 1..].trim_start();
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((at, c)) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = at + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end..])
            }
            None => {
                let (v, t) = after.split_at(after.find(';').unwrap_or(after.len()));
                (v.trim().to_owned(), t)
            }
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => names.push(value),
            "name*" => {
                let encoded = value.rsplit_once('\'').map_or(value.as_str(), |(_, v)| v);
                names.push(
                    percent_encoding::percent_decode_str(encoded)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            }
            _ => {}
        }
        rest = tail;
    }
    names
}

fn malformed(message: impl Into<String>) -> ClassifyError {
    ClassifyError::Malformed(message.into())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn typed(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_media_type_is_read_one_way_only() {
        let json = media_type(&typed("Application/JSON; charset=\"UTF-8\""))
            .unwrap()
            .unwrap();
        assert!(json.is("application/json"));
        for (value, kind) in [
            ("application/json; charset=utf-8; charset=utf-16", "malformed_request"),
            ("application/json; Charset=utf-8; charset=utf-8", "malformed_request"),
            ("application/json; charset=utf-16", "unsupported_media_type"),
            ("application/json; charset=latin1", "unsupported_media_type"),
            ("application json", "malformed_request"),
        ] {
            assert_eq!(media_type(&typed(value)).unwrap_err().kind(), kind, "{value}");
        }
        let mut two = typed("application/json");
        two.append(header::CONTENT_TYPE, HeaderValue::from_static("application/graphql"));
        assert_eq!(media_type(&two).unwrap_err().kind(), "malformed_request");
        assert_eq!(media_type(&HeaderMap::new()).unwrap(), None);
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        /// Any Content-Type and any body: read or refused, never a panic.
        #[test]
        fn fuzz_body_readers_never_panic(
            content_type in prop::sample::select(vec![
                "application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=B",
                "multipart/form-data", "text/plain", "application/json; charset=utf-8; x=1",
            ]),
            extra in "[ -~]{0,30}",
            body in prop::collection::vec(any::<u8>(), 0..512),
            framed in "(--B\r\n(Content-Disposition: form-data; name=\"?[_a-z]{0,8}\"?)?\r\n\r\n[ -~]{0,10}\r\n){0,3}(--B--)?",
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&format!("{content_type}{extra}")) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Ok(Some(media)) = media_type(&h) {
                let _ = field_names(&media, &body);
                let _ = field_names(&media, framed.as_bytes());
            }
            let _ = unencoded(&h);
        }
    }

    #[test]
    fn form_multipart_and_json_bodies_name_their_fields() {
        let form = media_type(&typed("application/x-www-form-urlencoded"))
            .unwrap()
            .unwrap();
        assert_eq!(field_names(&form, b"a=1&%5Fmethod=DELETE").unwrap(), ["a", "_method"]);
        let multi = media_type(&typed("multipart/form-data; boundary=XyZ"))
            .unwrap()
            .unwrap();
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n--XyZ\r\ncontent-disposition: form-data; name=_method\r\n\r\nDELETE\r\n--XyZ--\r\n";
        assert_eq!(field_names(&multi, body).unwrap(), ["file", "_method"]);
        assert_eq!(
            field_names(&multi, b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx")
                .unwrap_err()
                .kind(),
            "malformed_request"
        );
        let json = media_type(&typed("application/json")).unwrap().unwrap();
        assert_eq!(
            field_names(&json, br#"{"_method": "DELETE", "x": 1}"#).unwrap(),
            ["_method", "x"]
        );
    }
}
