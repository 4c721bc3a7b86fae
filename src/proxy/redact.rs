//! The real token never reaches the agent, not even echoed back: an upstream
//! that reflects request headers (a debug endpoint, an error page, an
//! httpbin-style API) would hand it over. Every response header and the
//! streamed body are scanned for each real token the broker holds: as it is,
//! percent-encoded (any byte, in either case), with JSON's `\/`, and inside
//! base64 at any alignment (`user:token` in a `Basic` value); a hit is
//! overwritten with a marker of the same length, so `Content-Length` stays
//! true. Hex, UTF-16 and HTML entities are not looked for. The body is scanned chunk by chunk; only a
//! chunk's tail that could begin a token is held back for the next one, so a
//! token split across chunks is found and every other byte is passed on at
//! once (a stream's first bytes are not delayed).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aho_corasick::AhoCorasick;
use axum::body::Bytes;
use base64::Engine;
use futures_util::Stream;
use http::{HeaderMap, HeaderValue};

/// Written over a hit, repeated and cut to the hit's length.
const MARKER: &[u8] = b"REDACTED";

/// The shortest pattern worth matching: shorter base64 fragments of a token
/// would match unrelated text.
const MIN_PATTERN: usize = 12;

/// Finds the broker's real tokens in bytes.
pub struct Redactor {
    /// Fixed spellings: the token, JSON-escaped, its base64 cores.
    automaton: AhoCorasick,
    patterns: Vec<Vec<u8>>,
    /// Which bytes begin some fixed spelling.
    starts: [bool; 256],
    /// Which token each fixed spelling comes from.
    owner: Vec<usize>,
    /// Every percent-encoded spelling, one group per token; searched only
    /// where a `%` is. `None` without tokens.
    percent: Option<regex::bytes::Regex>,
    tokens: Vec<Vec<u8>>,
    /// The keyed fingerprint of each token, for the record of a hit.
    fingerprints: Vec<String>,
    /// The longest any spelling can be.
    longest: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("tokens", &self.fingerprints.len())
            .finish()
    }
}

/// The hits of one response, by token fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits(pub Vec<String>);

impl Redactor {
    /// `tokens` pairs each real token with its keyed fingerprint.
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, String)>) -> Redactor {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut owner = Vec::new();
        let mut fingerprints = Vec::new();
        let mut raw = Vec::new();
        for (i, (token, fingerprint)) in tokens.into_iter().enumerate() {
            fingerprints.push(fingerprint);
            raw.push(token.as_bytes().to_vec());
            for pattern in spellings(token.as_bytes()) {
                if pattern.len() >= MIN_PATTERN.min(token.len()) && !patterns.contains(&pattern) {
                    patterns.push(pattern);
                    owner.push(i);
                }
            }
        }
        let longest = patterns
            .iter()
            .map(Vec::len)
            .chain(raw.iter().map(|t| 3 * t.len()))
            .max()
            .unwrap_or(0);
        let mut starts = [false; 256];
        for p in &patterns {
            starts[usize::from(p[0])] = true;
        }
        let percent = raw
            .iter()
            .map(|t| format!("({})", percent_pattern(t)))
            .collect::<Vec<_>>()
            .join("|");
        Redactor {
            // Leftmost-longest, not overlapping: two spellings of a token never
            // share bytes at one place, and this search keeps the fast
            // prefilters.
            automaton: AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("token patterns build an automaton"),
            patterns,
            starts,
            owner,
            percent: (!raw.is_empty())
                .then(|| regex::bytes::Regex::new(&percent).expect("a percent pattern of literal bytes compiles")),
            tokens: raw,
            fingerprints,
            longest,
        }
    }

    /// Every spelling of a token in `bytes`: (start, end, which token).
    fn hits(&self, bytes: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut hits: Vec<(usize, usize, usize)> = self
            .automaton
            .find_iter(bytes)
            .map(|m| (m.start(), m.end(), self.owner[m.pattern().as_usize()]))
            .collect();
        if let Some(percent) = &self.percent
            && memchr::memchr(b'%', bytes).is_some()
        {
            for caps in percent.captures_iter(bytes) {
                let whole = caps.get(0).expect("a match has a whole");
                let token = (1..caps.len()).find(|i| caps.get(*i).is_some()).map_or(0, |i| i - 1);
                hits.push((whole.start(), whole.end(), token));
            }
        }
        hits
    }

    /// Whether `bytes` hold any spelling of a token.
    fn any(&self, bytes: &[u8]) -> bool {
        self.automaton.is_match(bytes)
            || self
                .percent
                .as_ref()
                .is_some_and(|p| memchr::memchr(b'%', bytes).is_some() && p.is_match(bytes))
    }

    /// Overwrites every token in `bytes`; the fingerprints of those found.
    pub fn redact(&self, bytes: &mut [u8]) -> Vec<&str> {
        let mut found = Vec::new();
        for (start, end, token) in self.hits(bytes) {
            for (i, b) in bytes[start..end].iter_mut().enumerate() {
                *b = MARKER[i % MARKER.len()];
            }
            let fingerprint = self.fingerprints[token].as_str();
            if !found.contains(&fingerprint) {
                found.push(fingerprint);
            }
        }
        found
    }

    /// How much of the end of `bytes` could be the beginning of a token,
    /// and must wait for the next chunk.
    fn unfinished(&self, bytes: &[u8]) -> usize {
        let from = bytes.len() - self.longest.saturating_sub(1).min(bytes.len());
        (from..bytes.len())
            .find(|&start| {
                let tail = &bytes[start..];
                (self.starts[usize::from(tail[0])]
                    && self
                        .patterns
                        .iter()
                        .any(|p| p.len() > tail.len() && p.starts_with(tail)))
                    || self.tokens.iter().any(|t| begins_percent_spelling(tail, t))
            })
            .map_or(0, |start| bytes.len() - start)
    }

    /// Overwrites every token in the header values.
    pub fn headers(&self, headers: &mut HeaderMap, hits: &mut Hits) {
        for value in headers.values_mut() {
            if !self.any(value.as_bytes()) {
                continue;
            }
            let mut bytes = value.as_bytes().to_vec();
            let found = self.redact(&mut bytes);
            if found.is_empty() {
                continue;
            }
            hits.add(&found);
            *value = HeaderValue::from_bytes(&bytes).expect("the marker is a valid header value");
        }
    }

    /// The body, scanned as it streams; `on_hit` runs once, at the first hit,
    /// with the fingerprints found so far.
    pub fn stream<S>(self: Arc<Self>, inner: S, on_hit: Box<dyn FnOnce(Hits) + Send>) -> Redacted<S> {
        Redacted {
            inner,
            redactor: self,
            carry: Vec::new(),
            done: false,
            on_hit: Some(on_hit),
        }
    }
}

impl Hits {
    fn add(&mut self, found: &[&str]) {
        for f in found {
            if !self.0.iter().any(|h| h == f) {
                self.0.push((*f).to_owned());
            }
        }
    }
}

/// The fixed spellings of a token a response could carry it in: as it is,
/// with JSON's escaped slash, and its base64 cores.
fn spellings(token: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![token.to_vec()];
    if token.contains(&b'/') {
        out.push(String::from_utf8_lossy(token).replace('/', "\\/").into_bytes());
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3 {
            out.push(base64_core(engine, token, shift));
        }
    }
    out
}

/// A regular expression for every percent-encoding of a token: each byte
/// as it is or as `%XX`, the hex in either case.
fn percent_pattern(token: &[u8]) -> String {
    token
        .iter()
        .map(|b| {
            let hex = |nibble: u8| {
                let c = char::from_digit(u32::from(nibble), 16).expect("a nibble");
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c, c.to_ascii_uppercase())
                } else {
                    c.to_string()
                }
            };
            format!("(?:\\x{b:02x}|%{}{})", hex(b >> 4), hex(b & 0xf))
        })
        .collect()
}

/// Whether `tail` could be the beginning of a percent-encoded spelling of
/// `token` (each byte as it is or as `%XX`), cut short by the chunk's end.
fn begins_percent_spelling(tail: &[u8], token: &[u8]) -> bool {
    let mut at = 0;
    for &want in token {
        match tail.get(at) {
            None => return true,
            Some(b'%') => {
                let digits = &tail[at + 1..tail.len().min(at + 3)];
                let hex = format!("{want:02x}");
                if !digits
                    .iter()
                    .zip(hex.as_bytes())
                    .all(|(d, h)| d.eq_ignore_ascii_case(h))
                {
                    return false;
                }
                if digits.len() < 2 {
                    return true;
                }
                at += 3;
            }
            Some(&b) if b == want => at += 1,
            Some(_) => return false,
        }
    }
    // The whole token fits: it was found and overwritten already.
    false
}

/// The base64 characters that depend on the token alone when it starts
/// `shift` bytes into what is encoded, whatever comes before or after it.
fn base64_core(engine: &base64::engine::GeneralPurpose, token: &[u8], shift: usize) -> Vec<u8> {
    let mut input = vec![0u8; shift];
    input.extend_from_slice(token);
    let encoded = engine.encode(&input).into_bytes();
    let first = (8 * shift).div_ceil(6);
    let last = (8 * (shift + token.len())) / 6;
    encoded.get(first..last).map(<[u8]>::to_vec).unwrap_or_default()
}

/// A response body with every real token overwritten.
pub struct Redacted<S> {
    inner: S,
    redactor: Arc<Redactor>,
    /// The tail of what was scanned, held back in case a token continues in
    /// the next chunk.
    carry: Vec<u8>,
    done: bool,
    on_hit: Option<Box<dyn FnOnce(Hits) + Send>>,
}

impl<S> Redacted<S> {
    fn report(&mut self, found: &[&str]) {
        if found.is_empty() {
            return;
        }
        if let Some(on_hit) = self.on_hit.take() {
            let mut hits = Hits::default();
            hits.add(found);
            on_hit(hits);
        }
    }
}

impl<S, E> Stream for Redacted<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(chunk))) => {
                    let redactor = this.redactor.clone();
                    // The usual case, a clean chunk and nothing held back,
                    // passes on without a copy.
                    if this.carry.is_empty() && !redactor.any(&chunk[..]) {
                        let keep = redactor.unfinished(&chunk);
                        this.carry = chunk[chunk.len() - keep..].to_vec();
                        let clean = chunk.slice(..chunk.len() - keep);
                        if !clean.is_empty() {
                            return Poll::Ready(Some(Ok(clean)));
                        }
                        continue;
                    }
                    let mut buffer = std::mem::take(&mut this.carry);
                    buffer.extend_from_slice(&chunk);
                    let found = redactor.redact(&mut buffer);
                    this.report(&found);
                    // A token that starts in what is sent now and ends past
                    // the buffer would leave an unfinished tail: keep it.
                    let keep = redactor.unfinished(&buffer);
                    this.carry = buffer.split_off(buffer.len() - keep);
                    if !buffer.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(buffer))));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = std::mem::take(&mut this.carry);
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(rest))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    const TOKEN: &str = "ghs_realTokenValue0123456789abcdef";

    fn redactor() -> Arc<Redactor> {
        Arc::new(Redactor::new([(TOKEN, "hmac-sha256:f1".to_owned())]))
    }

    #[test]
    fn every_spelling_of_the_token_is_overwritten_at_its_length() {
        let r = redactor();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for text in [
            format!("Authorization: Bearer {TOKEN}"),
            format!("Basic {}", b64(&format!("x-access-token:{TOKEN}"))),
            format!("Basic {}", b64(&format!("{TOKEN}:x-oauth-basic"))),
            format!("Basic {}", b64(&format!("ab:{TOKEN}"))),
            format!(
                "u={}",
                percent_encoding::utf8_percent_encode(TOKEN, percent_encoding::NON_ALPHANUMERIC)
            ),
        ] {
            let mut bytes = text.clone().into_bytes();
            let found = r.redact(&mut bytes);
            assert_eq!(found, ["hmac-sha256:f1"], "{text}");
            assert_eq!(bytes.len(), text.len());
            let out = String::from_utf8(bytes).unwrap();
            assert!(!out.contains(TOKEN) && out.contains("REDACTED"), "{out}");
        }
        let mut clean = b"nothing to see".to_vec();
        assert!(r.redact(&mut clean).is_empty());
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        /// Any body with the token in any spelling at any place, cut into
        /// any chunks: the same length comes out, and no spelling of the
        /// token.
        #[test]
        fn fuzz_no_chunking_lets_the_token_through(
            filler in prop::collection::vec(any::<u8>(), 0..400),
            at in any::<prop::sample::Index>(),
            spelling in 0..3usize,
            cuts in prop::collection::vec(1..64usize, 1..40),
        ) {
            static REDACTOR: std::sync::LazyLock<Arc<Redactor>> = std::sync::LazyLock::new(redactor);
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("u:{TOKEN}"));
            let secret = match spelling {
                0 => TOKEN.to_owned(),
                1 => b64.clone(),
                _ => percent_encoding::utf8_percent_encode(TOKEN, percent_encoding::NON_ALPHANUMERIC).to_string(),
            };
            let i = at.index(filler.len() + 1);
            let mut body = filler[..i].to_vec();
            body.extend_from_slice(secret.as_bytes());
            body.extend_from_slice(&filler[i..]);
            let mut chunks = Vec::new();
            let mut rest = body.as_slice();
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (head, tail) = rest.split_at((*cut).min(rest.len()));
                chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(head)));
                rest = tail;
            }
            static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> =
                std::sync::LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().unwrap());
            let out: Vec<u8> = RUNTIME.block_on(
                REDACTOR
                    .clone()
                    .stream(futures_util::stream::iter(chunks), Box::new(|_| {}))
                    .map(|c| c.unwrap())
                    .collect::<Vec<_>>(),
            )
            .concat();
            prop_assert_eq!(out.len(), body.len());
            let text = String::from_utf8_lossy(&out);
            prop_assert!(!text.contains(TOKEN));
            prop_assert!(!text.contains(&b64[4..b64.len() - 4]));
        }
    }

    #[test]
    fn only_a_tail_that_could_begin_a_token_is_held_back() {
        let r = redactor();
        assert_eq!(r.unfinished(b"first;"), 0);
        assert_eq!(r.unfinished(b"first; ghs_real"), "ghs_real".len());
        assert_eq!(r.unfinished(b"first; %67%68s_re"), "%67%68s_re".len());
        assert_eq!(r.unfinished(b"first; %6"), "%6".len());
        assert_eq!(r.unfinished(b"first; %7"), 0);
        assert_eq!(r.unfinished(format!("x {TOKEN}").as_bytes()), 0);
    }

    #[test]
    fn a_broker_without_tokens_finds_nothing() {
        let r = Redactor::new(std::iter::empty());
        let mut text = "é %41 REDACTED".to_owned().into_bytes();
        assert!(r.redact(&mut text).is_empty());
        assert_eq!(r.unfinished(b"%4"), 0);
    }

    #[test]
    fn a_token_with_reserved_characters_is_found_in_every_encoding() {
        let token = "sk/Abc+def-GHI/jkl~mno.pqr";
        let r = Redactor::new([(token, "hmac-sha256:f2".to_owned())]);
        for text in [
            token.to_owned(),
            token.replace('/', "\\/"),
            token.replace('/', "%2F").replace('+', "%2B"),
            token.replace('/', "%2f"),
            token.bytes().map(|b| format!("%{b:02x}")).collect(),
        ] {
            let mut bytes = format!("<{text}>").into_bytes();
            assert_eq!(r.redact(&mut bytes), ["hmac-sha256:f2"], "{text}");
            assert!(!String::from_utf8(bytes).unwrap().contains("Abc"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_token_split_across_chunks_is_found_and_nothing_is_lost() {
        let body = format!("{}{TOKEN}{}", "a".repeat(1000), "b".repeat(1000));
        for split in [1, 7, 1001, 1010, TOKEN.len() + 999] {
            let chunks: Vec<Result<Bytes, std::io::Error>> = body
                .as_bytes()
                .chunks(split)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let hit = Arc::new(std::sync::Mutex::new(None));
            let seen = hit.clone();
            let out: Vec<u8> = redactor()
                .stream(
                    futures_util::stream::iter(chunks),
                    Box::new(move |h| *seen.lock().unwrap() = Some(h)),
                )
                .map(|c| c.unwrap())
                .collect::<Vec<_>>()
                .await
                .concat();
            assert_eq!(out.len(), body.len(), "split {split}");
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains(TOKEN), "split {split}");
            assert!(text.starts_with(&"a".repeat(1000)) && text.ends_with(&"b".repeat(1000)));
            assert_eq!(hit.lock().unwrap().take().unwrap().0, ["hmac-sha256:f1"]);
        }
    }
}
