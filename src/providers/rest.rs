//! Paths as the broker matches and forwards them: one canonical form, so an
//! encoded or dotted path cannot match one rule here and mean another thing
//! upstream. The broker forwards the canonical path it matched, never the
//! agent's spelling of it.
//!
//! What a server might read two ways is refused, not resolved: a segment
//! that decodes to a separator (`%2F`, `%5C`), a dot segment (`..`, `%2e%2e`,
//! `..%2F`), a control character (`%00`), a `%` (a second decoding
//! upstream), a matrix parameter (`;x=1`), invalid UTF-8 (overlong forms
//! included), a character that folds to ASCII under NFKC (`．．`, `ａｃｍｅ`)
//! or an empty segment (`//`). A trailing slash is the one
//! spelling that is normalised: it is dropped, and the path forwarded has none.
//!
//! Also the path patterns of REST rules (`/repos/{owner}/{repo}/contents/{*path}`)
//! and the templates that turn captured parameters into resource ids.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use unicode_normalization::UnicodeNormalization;

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

/// Splits a raw request path into decoded segments, each percent-decoded
/// once, refusing every segment a server could read another way.
pub fn normalize(raw: &str) -> Result<Vec<String>, String> {
    if raw.is_empty() || raw == "/" {
        return Ok(Vec::new());
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(format!("the path `{raw}` does not start with `/`"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').map(|piece| segment(raw, piece)).collect()
}

fn segment(raw: &str, piece: &str) -> Result<String, String> {
    if piece.is_empty() {
        return Err(format!(
            "the path `{raw}` has an empty segment (`//`); servers disagree on what it means"
        ));
    }
    if piece.contains(';') {
        return Err(format!(
            "the path segment `{piece}` carries a matrix parameter (`;`), which some servers strip and others keep"
        ));
    }
    if let Some(c) = piece.chars().find(|c| !is_path_char(*c)) {
        return Err(format!(
            "the path segment `{piece}` has `{}`, which a URI path carries only percent-encoded",
            c.escape_default()
        ));
    }
    let bytes = piece.as_bytes();
    for (i, _) in piece.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "the path segment `{piece}` has a `%` that is not followed by two hex digits"
            ));
        }
    }
    let decoded = percent_decode_str(piece)
        .decode_utf8()
        .map_err(|_| format!("the path segment `{piece}` does not decode to valid UTF-8"))?;
    if let Some(c) = decoded
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '\\' | '%' | ';'))
    {
        let what = match c {
            '/' | '\\' => "a path separator",
            '%' => "a `%` (a second decoding would read it differently)",
            ';' => "a `;` (a matrix parameter)",
            _ => "a control character",
        };
        return Err(format!("the path segment `{piece}` decodes to {what}"));
    }
    // A server that folds compatibility characters (NFKC) reads `．．` as
    // `..` and `ａｃｍｅ` as `acme`: a character that folds to ASCII is
    // refused rather than guessed.
    if let Some(c) = decoded
        .chars()
        .find(|c| !c.is_ascii() && c.nfkc().any(|folded| folded.is_ascii()))
    {
        return Err(format!(
            "the path segment `{piece}` has `{}`, which some servers read as `{}`; write it in ASCII",
            c.escape_unicode(),
            c.nfkc().collect::<String>()
        ));
    }
    if decoded == "." || decoded == ".." {
        return Err(format!(
            "the path segment `{piece}` is a dot segment; send the path without `.` and `..`"
        ));
    }
    Ok(decoded.into_owned())
}

/// The characters RFC 3986 allows in a path segment as they are (`%` begins
/// an escape; `;` is refused before this is asked).
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@%".contains(c)
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
    /// `{name}`: one segment, captured.
    Param(String),
    /// `{*name}`: one or more segments, captured joined by `/` (a file path,
    /// a branch name). At most one per pattern.
    Span(String),
    /// `*`: any one segment.
    Any,
    /// `**`: the rest of the path, possibly nothing. Last only.
    Rest,
}

/// A REST rule's path: literal segments, `{name}` (one segment, captured),
/// `{*name}` (one or more segments, captured), `*` (any one segment) and a
/// final `**` (the rest). `*` and `**` match operations nobody named, so
/// they are wildcards; `{*name}` names a value inside a route.
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
                    let inner = &p[1..p.len() - 1];
                    let (name, span) = match inner.strip_prefix('*') {
                        Some(name) => (name, true),
                        None => (inner, false),
                    };
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                        return Err(format!("path `{text}`: `{p}` is not a parameter name"));
                    }
                    if names.contains(&name) {
                        return Err(format!("path `{text}` names `{{{name}}}` twice"));
                    }
                    names.push(name);
                    if span {
                        Seg::Span(name.to_owned())
                    } else {
                        Seg::Param(name.to_owned())
                    }
                }
                p if p.contains(['{', '}', '*', '%', ';']) => {
                    return Err(format!(
                        "path `{text}`: segment `{p}` mixes text with `{{`, `}}`, `*`, `%` or `;`"
                    ));
                }
                "." | ".." => return Err(format!("path `{text}` has a dot segment")),
                p => Seg::Literal(p.to_owned()),
            };
            segs.push(seg);
        }
        let spans = segs.iter().filter(|s| matches!(s, Seg::Span(_))).count();
        if spans > 1 || (spans == 1 && segs.contains(&Seg::Rest)) {
            return Err(format!(
                "path `{text}`: a path holds at most one `{{*name}}` and then no `**`"
            ));
        }
        Ok(PathPattern {
            text: text.to_owned(),
            segs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The wildcard the pattern holds (`*` or `**`), if any: it matches
    /// routes nobody named.
    pub fn wildcard(&self) -> Option<&'static str> {
        if self.segs.contains(&Seg::Rest) {
            Some("**")
        } else if self.segs.contains(&Seg::Any) {
            Some("*")
        } else {
            None
        }
    }

    /// Whether the pattern begins with a fixed segment, or is the root (a
    /// route nobody could take for another).
    pub fn starts_fixed(&self) -> bool {
        matches!(self.segs.first(), None | Some(Seg::Literal(_)))
    }

    /// The spanning parameter, with the parameters before it.
    pub fn span(&self) -> Option<(&str, Vec<&str>)> {
        let k = self.segs.iter().position(|s| matches!(s, Seg::Span(_)))?;
        let Seg::Span(name) = &self.segs[k] else { return None };
        let before = self.segs[..k]
            .iter()
            .filter_map(|s| match s {
                Seg::Param(p) => Some(p.as_str()),
                _ => None,
            })
            .collect();
        Some((name.as_str(), before))
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            Seg::Param(name) | Seg::Span(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// How specific the pattern is, segment by segment, to order rules so
    /// that the first match is the most specific: a fixed segment before a
    /// parameter, before a spanning one, before `*`; the end of a pattern
    /// before `**`.
    pub fn specificity(&self) -> Vec<u8> {
        let mut ranks: Vec<u8> = self
            .segs
            .iter()
            .map(|s| match s {
                Seg::Literal(_) => 5,
                Seg::Param(_) => 4,
                Seg::Span(_) => 3,
                Seg::Any => 2,
                Seg::Rest => 0,
            })
            .collect();
        if self.segs.last() != Some(&Seg::Rest) {
            ranks.push(1);
        }
        ranks
    }

    /// The captured parameters when `segments` match.
    pub fn matches(&self, segments: &[String]) -> Option<BTreeMap<String, String>> {
        // Most patterns tried do not match: decide that before allocating.
        let (prefix, span, suffix) = self.split(segments)?;
        let mut captures = BTreeMap::new();
        let pairs = self
            .segs
            .iter()
            .take(prefix.len())
            .zip(prefix)
            .chain(self.segs[self.segs.len() - suffix.len()..].iter().zip(suffix));
        for (seg, value) in pairs {
            if let Seg::Param(name) = seg {
                captures.insert(name.clone(), value.clone());
            }
        }
        if let Some((name, spanned)) = span {
            captures.insert(name.to_owned(), spanned.join("/"));
        }
        Some(captures)
    }

    /// Where `segments` fit the pattern, if they do: the segments before a
    /// `{*name}` (or all of them), the spanned ones with the name, and the
    /// segments after it. A `**` fits the rest.
    #[allow(clippy::type_complexity)]
    fn split<'s>(&self, segments: &'s [String]) -> Option<(&'s [String], Option<(&str, &'s [String])>, &'s [String])> {
        let fits = |seg: &Seg, value: &String| match seg {
            Seg::Literal(lit) => lit.eq_ignore_ascii_case(value),
            _ => true,
        };
        match self.segs.iter().position(|s| matches!(s, Seg::Span(_))) {
            Some(k) => {
                let after = self.segs.len() - k - 1;
                if segments.len() < k + 1 + after {
                    return None;
                }
                let end = segments.len() - after;
                let (prefix, suffix) = (&segments[..k], &segments[end..]);
                let ok = self.segs[..k].iter().zip(prefix).all(|(s, v)| fits(s, v))
                    && self.segs[k + 1..].iter().zip(suffix).all(|(s, v)| fits(s, v));
                let Seg::Span(name) = &self.segs[k] else { return None };
                if !ok {
                    return None;
                }
                Some((prefix, Some((name.as_str(), &segments[k..end])), suffix))
            }
            None => {
                let rest = self.segs.last() == Some(&Seg::Rest);
                let fixed = self.segs.len() - usize::from(rest);
                let length_ok = if rest {
                    segments.len() >= fixed
                } else {
                    segments.len() == fixed
                };
                if !length_ok || !self.segs[..fixed].iter().zip(segments).all(|(s, v)| fits(s, v)) {
                    return None;
                }
                Some((&segments[..fixed], None, &segments[segments.len()..]))
            }
        }
    }
}

/// Patterns indexed segment by segment, to find the most specific one a path
/// matches without trying the others. A node's children are visited in the
/// order of `PathPattern::specificity` (a fixed segment, a parameter, a
/// spanning parameter, `*`, the end of the pattern, `**`), so the first
/// pattern visited that matches is the most specific; ids inserted in that
/// order keep equally specific patterns in order too.
#[derive(Debug, Clone, Default)]
pub struct PatternTrie {
    root: TrieNode,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Fixed segments, lowercase.
    literals: std::collections::HashMap<String, TrieNode>,
    param: Option<Box<TrieNode>>,
    any: Option<Box<TrieNode>>,
    /// Patterns with a `{*name}` here: what follows is checked by `matches`.
    spans: Vec<usize>,
    /// Patterns that end here.
    ends: Vec<usize>,
    /// Patterns with a `**` here.
    rests: Vec<usize>,
}

impl PatternTrie {
    /// Adds a pattern under `id`; add them most specific first.
    pub fn insert(&mut self, pattern: &PathPattern, id: usize) {
        let mut node = &mut self.root;
        for seg in &pattern.segs {
            node = match seg {
                Seg::Literal(lit) => node.literals.entry(lit.to_ascii_lowercase()).or_default(),
                Seg::Param(_) => node.param.get_or_insert_with(Default::default),
                Seg::Any => node.any.get_or_insert_with(Default::default),
                Seg::Span(_) => return node.spans.push(id),
                Seg::Rest => return node.rests.push(id),
            };
        }
        node.ends.push(id);
    }

    /// Offers `found` the ids of the patterns that may match `segments`,
    /// most specific first, until it accepts one (a spanning pattern is
    /// only a candidate: `found` checks it with `matches`).
    pub fn visit(&self, segments: &[String], found: &mut impl FnMut(usize) -> bool) -> bool {
        self.root.visit(segments, found)
    }
}

impl TrieNode {
    fn visit(&self, rest: &[String], found: &mut impl FnMut(usize) -> bool) -> bool {
        if let Some((first, after)) = rest.split_first() {
            let literal = if first.bytes().any(|b| b.is_ascii_uppercase()) {
                self.literals.get(&first.to_ascii_lowercase())
            } else {
                self.literals.get(first.as_str())
            };
            if let Some(child) = literal
                && child.visit(after, found)
            {
                return true;
            }
            if let Some(child) = &self.param
                && child.visit(after, found)
            {
                return true;
            }
            if self.spans.iter().any(|&id| found(id)) {
                return true;
            }
            if let Some(child) = &self.any
                && child.visit(after, found)
            {
                return true;
            }
        } else if self.ends.iter().any(|&id| found(id)) {
            return true;
        }
        self.rests.iter().any(|&id| found(id))
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
        let known = |name: &str| pattern.params().any(|p| p == name);
        let unknown = format!("which path `{}` does not capture", pattern.as_str());
        IdTemplate::parse_over(text, "path parameter", &known, &unknown)
    }

    /// Parses a template over a GraphQL field's arguments, by name.
    pub fn parse_arguments(text: &str) -> Result<IdTemplate, String> {
        let is_name = |name: &str| {
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        IdTemplate::parse_over(text, "argument", &is_name, "which is not an argument name")
    }

    /// A template of at least one parameter, each of which `known` accepts
    /// (`unknown` says why one is not).
    fn parse_over(text: &str, param: &str, known: &dyn Fn(&str) -> bool, unknown: &str) -> Result<IdTemplate, String> {
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
            if !known(name) {
                return Err(format!("resource id `{text}` uses `{{{name}}}`, {unknown}"));
            }
            parts.push(Part::Param(name.to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Param(_))) {
            return Err(format!("resource id `{text}` uses no {param}"));
        }
        Ok(IdTemplate { parts })
    }

    /// The path parameters the id is made of.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Param(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The id a GraphQL field's arguments make: each parameter a non-empty
    /// string holding none of the template's fixed text, so that one id is
    /// made one way only (`{owner}/{name}` from `a/b` and `c` would read as
    /// `a` and `b/c` too). Otherwise, the argument that does not fit.
    pub fn render_arguments(&self, arguments: &[(String, serde_json::Value)]) -> Result<String, String> {
        let fixed: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                Part::Param(_) => None,
            })
            .collect();
        let mut captures = BTreeMap::new();
        for name in self.params() {
            match arguments.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
                Some(serde_json::Value::String(value))
                    if !value.is_empty() && !fixed.iter().any(|t| value.contains(t)) =>
                {
                    captures.insert(name.to_owned(), value.clone());
                }
                _ => return Err(name.to_owned()),
            }
        }
        Ok(self.render(&captures))
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
    fn case_encoding_and_a_trailing_slash_are_the_only_other_spellings() {
        let canonical = segs("/repos/acme/api");
        for spelling in [
            "/repos/acme/api",
            "/repos/acme/api/",
            "/repos/%61cme/api",
            "/repos/acme/%61%70%69",
        ] {
            assert_eq!(segs(spelling), canonical, "{spelling}");
        }
        assert_eq!(encode(&canonical), "/repos/acme/api");
        // Non-ASCII that no server folds to ASCII is a name like any other,
        // composed or decomposed.
        assert_eq!(
            segs("/a/caf%C3%A9/cafe%CC%81/%E6%97%A5"),
            ["a", "café", "cafe\u{301}", "日"]
        );
        assert_eq!(segs("/"), Vec::<String>::new());
        assert_eq!(segs(""), Vec::<String>::new());
    }

    #[test]
    fn segments_a_server_could_read_another_way_are_refused() {
        for bad in [
            // Separators, encoded or not.
            "/repos/acme/api/branches/feature%2Fx/protection",
            "/repos/acme/api%2f..%2finfra",
            "/repos/acme/api%5C..%5Cinfra",
            "/a\\..\\b",
            // Dot segments, plain or encoded, anywhere.
            "/repos/acme/x/../api",
            "/repos/./acme/api",
            "/repos/acme/x/%2e%2e/api",
            "/repos/acme/x/.%2E/api",
            "/repos/acme/x/%2e/api",
            "/..",
            "/repos/acme/api/..%2F..%2Finfra",
            // Empty segments.
            "//repos/acme/api",
            "/repos//acme/api",
            "/repos/acme/api//",
            // Control characters and NUL.
            "/a/%00",
            "/a/%0d%0a",
            "/a/%7f",
            // Invalid and overlong UTF-8.
            "/a/%ff",
            "/a/%c0%af",
            "/a/%e0%80%af",
            "/a/%ed%a0%80",
            // Malformed or double percent-encoding.
            "/a/%zz",
            "/a/%4",
            "/repos/acme/%252e%252e",
            "/repos/acme/api%2500",
            // Matrix parameters.
            "/repos/acme/api;x=1",
            "/repos/acme;/api",
            "/repos/acme/api%3Bx=1",
            // Characters that fold to ASCII under NFKC: fullwidth dots,
            // solidus and letters, a ligature, the Kelvin sign.
            "/repos/acme/x/%EF%BC%8E%EF%BC%8E/api",
            "/repos/acme/api%EF%BC%8F..",
            "/repos/%EF%BD%81cme/api",
            "/repos/acme/%EF%AC%81le",
            "/repos/acme/%E2%84%AAit",
            // Characters a URI path carries only percent-encoded.
            "/repos/acme/api ",
            "/repos/ac me/api",
            "/repos/acme/{repo}",
            "/repos/acme/api\"",
            "/repos/acmé/api",
            // Not a path.
            "repos/acme/api",
        ] {
            let error = normalize(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad}");
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
        assert_eq!(p.wildcard(), Some("**"));

        let exact = PathPattern::parse("/repos/{owner}/{repo}").unwrap();
        assert!(exact.matches(&segs("/repos/acme/api")).is_some());
        assert!(exact.matches(&segs("/repos/acme/api/pulls")).is_none());
        assert!(exact.matches(&segs("/repos/acme")).is_none());
        assert_eq!(exact.wildcard(), None);

        let any = PathPattern::parse("/v1/*/items").unwrap();
        assert!(any.matches(&segs("/v1/x/items")).is_some());
        assert_eq!(any.wildcard(), Some("*"));
    }

    #[test]
    fn a_spanning_parameter_captures_one_or_more_segments_between_fixed_ones() {
        let file = PathPattern::parse("/repos/{owner}/{repo}/contents/{*path}").unwrap();
        assert_eq!(file.wildcard(), None);
        let m = file.matches(&segs("/repos/acme/api/contents/src/lib/main.rs")).unwrap();
        assert_eq!((m["owner"].as_str(), m["path"].as_str()), ("acme", "src/lib/main.rs"));
        assert!(file.matches(&segs("/repos/acme/api/contents")).is_none());

        let protection = PathPattern::parse("/repos/{owner}/{repo}/branches/{*branch}/protection").unwrap();
        let m = protection
            .matches(&segs("/repos/acme/api/branches/feature/x/protection"))
            .unwrap();
        assert_eq!(m["branch"], "feature/x");
        assert!(
            protection
                .matches(&segs("/repos/acme/api/branches/protection"))
                .is_none()
        );
        assert!(protection.matches(&segs("/repos/acme/api/branches/x/y")).is_none());

        let workflows = PathPattern::parse("/repos/{owner}/{repo}/contents/.github/workflows/{*file}").unwrap();
        assert!(
            workflows
                .matches(&segs("/repos/a/b/contents/.github/workflows/ci.yml"))
                .is_some()
        );
        assert!(
            workflows
                .matches(&segs("/repos/a/b/contents/.GitHub/Workflows/x/ci.yml"))
                .is_some()
        );
        assert!(
            workflows
                .matches(&segs("/repos/a/b/contents/docs/.github/workflows/ci.yml"))
                .is_none()
        );
    }

    use proptest::prelude::*;

    /// Paths built from the pieces that make paths ambiguous: separators,
    /// dots, percent signs, hex digits, semicolons, backslashes, controls and
    /// non-ASCII.
    fn hostile_path() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/", "/", "/", ".", "..", "%", "%2", "%2e", "%2E", "%2f", "%2F", "%5c", "%00", "%25", "%c0%ae", "%ff", ";",
            "\\", "a", "b", "Z", "9", "-", "_", "~", "é", "%e9", "%c3%a9", " ", "%20", "+", "\u{7f}",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        /// Whatever comes in, normalising never panics; what it accepts is
        /// canonical (every segment plain, encoding it again gives it back)
        /// and means the same segments to the WHATWG URL parser.
        #[test]
        fn fuzz_normalize_accepts_only_what_reads_one_way(raw in hostile_path()) {
            let Ok(segments) = normalize(&raw) else { return Ok(()) };
            for s in &segments {
                prop_assert!(!s.is_empty() && s != "." && s != "..", "{raw:?} → {segments:?}");
                prop_assert!(!s.contains(['/', '\\', '%', ';']) && !s.chars().any(char::is_control), "{raw:?} → {s:?}");
            }
            prop_assert_eq!(&normalize(&encode(&segments)).unwrap(), &segments);
            let url = url::Url::parse(&format!("http://h{raw}")).unwrap();
            let theirs: Vec<String> = url
                .path()
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
                .collect();
            prop_assert_eq!(theirs, segments, "{}", raw);
        }

        #[test]
        fn fuzz_patterns_never_panic(text in "[/{}*a-z0-9._%;-]{0,40}", raw in hostile_path()) {
            if let (Ok(pattern), Ok(segments)) = (PathPattern::parse(&text), normalize(&raw)) {
                let _ = pattern.matches(&segments);
                let _ = pattern.specificity();
            }
        }
    }

    #[test]
    fn the_trie_offers_patterns_most_specific_first() {
        let patterns: Vec<PathPattern> = [
            "/user/emails",
            "/user/{id}",
            "/repos/{o}/{r}/contents/.github/{*p}",
            "/repos/{o}/{r}/contents/{*p}",
            "/repos/{o}/{r}/contents",
            "/repos/{o}/{r}/**",
            "/*/x",
            "/**",
        ]
        .iter()
        .map(|p| PathPattern::parse(p).unwrap())
        .collect();
        let mut order: Vec<usize> = (0..patterns.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(patterns[i].specificity()));
        let mut trie = PatternTrie::default();
        for &i in &order {
            trie.insert(&patterns[i], i);
        }
        let first = |path: &str| {
            let segments = segs(path);
            let mut hit = None;
            trie.visit(&segments, &mut |id| {
                let ok = patterns[id].matches(&segments).is_some();
                if ok {
                    hit = Some(patterns[id].as_str().to_owned());
                }
                ok
            });
            hit
        };
        assert_eq!(first("/user/emails").as_deref(), Some("/user/emails"));
        assert_eq!(first("/user/7").as_deref(), Some("/user/{id}"));
        assert_eq!(
            first("/repos/a/b/contents/.github/w/ci.yml").as_deref(),
            Some("/repos/{o}/{r}/contents/.github/{*p}")
        );
        assert_eq!(
            first("/repos/a/b/contents/src/x.rs").as_deref(),
            Some("/repos/{o}/{r}/contents/{*p}")
        );
        assert_eq!(first("/repos/a/b/contents").as_deref(), Some("/repos/{o}/{r}/contents"));
        assert_eq!(first("/repos/a/b/pulls").as_deref(), Some("/repos/{o}/{r}/**"));
        assert_eq!(first("/q/x").as_deref(), Some("/*/x"));
        assert_eq!(first("/").as_deref(), Some("/**"));
        // Whatever a path, the trie's choice is the first of the sorted list.
        for path in [
            "/user/emails",
            "/user/7",
            "/repos/a/b/contents/x",
            "/repos/a/b",
            "/q/x",
            "/q/y/z",
        ] {
            let segments = segs(path);
            let linear = order
                .iter()
                .find(|&&i| patterns[i].matches(&segments).is_some())
                .map(|&i| patterns[i].as_str().to_owned());
            assert_eq!(first(path), linear, "{path}");
        }
    }

    #[test]
    fn a_more_specific_pattern_ranks_higher() {
        let rank = |p: &str| PathPattern::parse(p).unwrap().specificity();
        assert!(rank("/user/emails") > rank("/user/{id}"));
        assert!(rank("/a/{x}") > rank("/a/{x}/**"));
        assert!(rank("/a/{*x}/b") > rank("/a/{*x}"));
        assert!(rank("/r/{o}/contents/.github/{*p}") > rank("/r/{o}/contents/{*p}"));
        assert!(rank("/a/{x}") > rank("/a/*"));
        assert!(rank("/a/*") > rank("/**"));
    }

    #[test]
    fn bad_patterns_and_templates_are_named() {
        for bad in [
            "repos",
            "/a/**/b",
            "/a/{}",
            "/a/{*}",
            "/a/{x}/{x}",
            "/a/x{y}",
            "/a/%2F",
            "/a/{*x}/{*y}",
            "/a/{*x}/**",
            "/a/../b",
            "/a/x;y",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        let p = PathPattern::parse("/repos/{owner}/{repo}").unwrap();
        assert!(IdTemplate::parse("{owner}/{name}", &p).unwrap_err().contains("{name}"));
        assert!(IdTemplate::parse("fixed", &p).is_err());
        let t = IdTemplate::parse("{owner}/{repo}", &p).unwrap();
        let m = p.matches(&segs("/repos/acme/api")).unwrap();
        assert_eq!(t.render(&m), "acme/api");
    }

    #[test]
    fn an_id_of_several_arguments_is_made_one_way_only() {
        use serde_json::json;
        let t = IdTemplate::parse_arguments("{owner}/{name}").unwrap();
        let args = |owner: serde_json::Value, name: serde_json::Value| {
            vec![("name".to_owned(), name), ("owner".to_owned(), owner)]
        };
        assert_eq!(
            t.render_arguments(&args(json!("acme"), json!("api"))).unwrap(),
            "acme/api"
        );
        for (owner, name, wrong) in [
            (json!("acme/api"), json!("x"), "owner"),
            (json!("acme"), json!("api/x"), "name"),
            (json!(""), json!("api"), "owner"),
            (json!(1), json!("api"), "owner"),
            (json!("acme"), json!(null), "name"),
        ] {
            assert_eq!(t.render_arguments(&args(owner, name)).unwrap_err(), wrong);
        }
        assert_eq!(
            t.render_arguments(&[("owner".to_owned(), json!("acme"))]).unwrap_err(),
            "name"
        );
        assert!(
            IdTemplate::parse_arguments("{own-er}/{name}")
                .unwrap_err()
                .contains("{own-er}")
        );
        assert!(
            IdTemplate::parse_arguments("fixed")
                .unwrap_err()
                .contains("no argument")
        );
    }
}
