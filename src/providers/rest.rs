//! Paths as the broker matches and forwards them: one canonical form, so an
//! encoded or dotted path cannot match one rule here and mean another thing
//! upstream. The broker forwards the canonical path it matched, never the
//! agent's spelling of it.
//!
//! Also the path patterns of REST rules (`/repos/{owner}/{repo}/git/refs/**`)
//! and the templates that turn captured parameters into resource ids.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Bytes escaped when a segment is written back: everything that could end
/// or reshape a segment, so what was one segment here is one segment upstream.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b';');

/// Splits a raw request path into decoded segments: repeated and trailing
/// slashes collapse, each segment is percent-decoded once, `.` segments go
/// and `..` segments remove their parent (spelled encoded or not).
pub fn normalize(raw: &str) -> Result<Vec<String>, String> {
    if !raw.starts_with('/') && !raw.is_empty() {
        return Err(format!("the path `{raw}` does not start with `/`"));
    }
    let mut segments: Vec<String> = Vec::new();
    for piece in raw.split('/').filter(|p| !p.is_empty()) {
        let decoded = percent_decode_str(piece)
            .decode_utf8()
            .map_err(|_| format!("the path segment `{piece}` does not decode to UTF-8"))?;
        if decoded.chars().any(|c| c.is_control() || c == '\\') {
            return Err(format!(
                "the path segment `{piece}` decodes to a control character or a backslash"
            ));
        }
        match decoded.as_ref() {
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(format!("the path `{raw}` climbs above the root with `..`"));
                }
            }
            _ => segments.push(decoded.into_owned()),
        }
    }
    Ok(segments)
}

/// Writes decoded segments back as a path, each segment escaped on its own.
pub fn encode(segments: &[String]) -> String {
    if segments.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.extend(utf8_percent_encode(s, SEGMENT));
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// Compared without regard to ASCII case.
    Literal(String),
    Param(String),
    /// `*`: any one segment.
    Any,
    /// `**`: the rest of the path, possibly nothing. Last only.
    Rest,
}

/// A REST rule's path: literal segments, `{name}` (one segment, captured),
/// `*` (one segment) and a final `**` (the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segs: Vec<Seg>,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        if !text.starts_with('/') {
            return Err(format!("path `{text}` must start with `/`"));
        }
        let pieces: Vec<&str> = text.split('/').filter(|p| !p.is_empty()).collect();
        let mut segs = Vec::with_capacity(pieces.len());
        let mut names = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let seg = match *piece {
                "**" if i + 1 == pieces.len() => Seg::Rest,
                "**" => return Err(format!("path `{text}`: `**` may only end a path")),
                "*" => Seg::Any,
                p if p.starts_with('{') && p.ends_with('}') => {
                    let name = &p[1..p.len() - 1];
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!("path `{text}`: `{p}` is not a parameter name"));
                    }
                    if names.contains(&name) {
                        return Err(format!("path `{text}` names `{{{name}}}` twice"));
                    }
                    names.push(name);
                    Seg::Param(name.to_owned())
                }
                p if p.contains(['{', '}', '*', '%']) => {
                    return Err(format!(
                        "path `{text}`: segment `{p}` mixes text with `{{`, `}}`, `*` or `%`"
                    ));
                }
                p => Seg::Literal(p.to_owned()),
            };
            segs.push(seg);
        }
        Ok(PathPattern {
            text: text.to_owned(),
            segs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            Seg::Param(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The captured parameters when `segments` match.
    pub fn matches(&self, segments: &[String]) -> Option<BTreeMap<String, String>> {
        let mut captures = BTreeMap::new();
        let mut i = 0;
        for seg in &self.segs {
            match seg {
                Seg::Rest => return Some(captures),
                _ if i >= segments.len() => return None,
                Seg::Literal(lit) if !lit.eq_ignore_ascii_case(&segments[i]) => return None,
                Seg::Literal(_) | Seg::Any => {}
                Seg::Param(name) => {
                    captures.insert(name.clone(), segments[i].clone());
                }
            }
            i += 1;
        }
        (i == segments.len()).then_some(captures)
    }
}

/// A resource id built from captured path parameters: `{owner}/{repo}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Param(String),
}

impl IdTemplate {
    /// Parses a template whose parameters must all be captured by `pattern`.
    pub fn parse(text: &str, pattern: &PathPattern) -> Result<IdTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| format!("resource id `{text}` has an unclosed `{{`"))?;
            let name = &rest[open + 1..close];
            if !pattern.params().any(|p| p == name) {
                return Err(format!(
                    "resource id `{text}` uses `{{{name}}}`, which path `{}` does not capture",
                    pattern.as_str()
                ));
            }
            parts.push(Part::Param(name.to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Param(_))) {
            return Err(format!("resource id `{text}` uses no path parameter"));
        }
        Ok(IdTemplate { parts })
    }

    pub fn render(&self, captures: &BTreeMap<String, String>) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Param(name) => captures.get(name).map_or("", String::as_str),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(raw: &str) -> Vec<String> {
        normalize(raw).unwrap()
    }

    #[test]
    fn every_spelling_of_a_path_normalizes_to_one() {
        let canonical = segs("/repos/acme/api");
        for spelling in [
            "/repos/acme/api",
            "//repos///acme/api/",
            "/repos/./acme/api",
            "/repos/x/../acme/api",
            "/repos/%61cme/api",
            "/repos/acme/x/%2e%2E/api",
            "/repos/acme/x/.%2e/api",
        ] {
            assert_eq!(segs(spelling), canonical, "{spelling}");
        }
        assert_eq!(encode(&canonical), "/repos/acme/api");
    }

    #[test]
    fn an_encoded_slash_stays_inside_its_segment() {
        let s = segs("/repos/acme/api/branches/feature%2Fx/protection");
        assert_eq!(s[4], "feature/x");
        assert_eq!(encode(&s), "/repos/acme/api/branches/feature%2Fx/protection");
        // Decoded once only: a double encoding stays a literal segment.
        let s = segs("/repos/acme/%252e%252e");
        assert_eq!(s[2], "%2e%2e");
        assert_eq!(encode(&s), "/repos/acme/%252e%252e");
    }

    #[test]
    fn paths_that_cannot_be_read_one_way_are_refused() {
        for bad in ["/..", "/a/../..", "/a/%00", "/a/%5Cb", "/a/%ff", "/a\\..\\b"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_segments_and_capture_parameters() {
        let p = PathPattern::parse("/repos/{owner}/{repo}/git/refs/**").unwrap();
        let m = p.matches(&segs("/REPOS/acme/api/Git/refs/heads/feature/x")).unwrap();
        assert_eq!(m["owner"], "acme");
        assert_eq!(m["repo"], "api");
        assert!(p.matches(&segs("/repos/acme/api/git")).is_none());
        assert!(p.matches(&segs("/repos/acme/api/git/refs")).is_some());

        let exact = PathPattern::parse("/repos/{owner}/{repo}").unwrap();
        assert!(exact.matches(&segs("/repos/acme/api")).is_some());
        assert!(exact.matches(&segs("/repos/acme/api/pulls")).is_none());
        assert!(exact.matches(&segs("/repos/acme")).is_none());

        let any = PathPattern::parse("/v1/*/items").unwrap();
        assert!(any.matches(&segs("/v1/x/items")).is_some());
    }

    #[test]
    fn bad_patterns_and_templates_are_named() {
        for bad in ["repos", "/a/**/b", "/a/{}", "/a/{x}/{x}", "/a/x{y}", "/a/%2F"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        let p = PathPattern::parse("/repos/{owner}/{repo}").unwrap();
        assert!(IdTemplate::parse("{owner}/{name}", &p).unwrap_err().contains("{name}"));
        assert!(IdTemplate::parse("fixed", &p).is_err());
        let t = IdTemplate::parse("{owner}/{repo}", &p).unwrap();
        let m = p.matches(&segs("/repos/acme/api")).unwrap();
        assert_eq!(t.render(&m), "acme/api");
    }
}
