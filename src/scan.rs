//! `valetkey scan`: real tokens lying in files, where an agent could read
//! them (a `.env`, a provider CLI's config, a credentials file). `scan_text`
//! is the decision, over a file's name and text: a token whose shape alone
//! says so (`credentials::foreign::PREFIXED`, AWS and Google keys, database
//! URLs with a password) anywhere; a UUID or a JWT where a line names it a
//! secret (`RAILWAY_TOKEN=…`, `"token": …`); in env files, any long value
//! assigned to a `…_TOKEN`, `…_SECRET`, `…_PASSWORD` or `…_KEY`. `scan_paths`
//! walks directories within bounds. A finding names the file, the line and
//! the kind, and a fingerprint: never the value.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::credentials::foreign;

/// One token in one line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// 1-based.
    pub line: usize,
    /// Where the token lies in its line, in bytes.
    pub span: Range<usize>,
    pub kind: String,
}

/// A token found in a file, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// As shown: a name that is not UTF-8 is shown lossily.
    pub path: String,
    pub line: usize,
    pub kind: String,
    pub fingerprint: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {} (fingerprint {})",
            self.path, self.line, self.kind, self.fingerprint
        )
    }
}

/// The key fingerprints are made with. A fingerprint travels (a terminal,
/// a CI log, the broker's audit trail), and a password found in an env file
/// may be guessable: unkeyed, its fingerprint would confirm a guess. Keyed
/// with a key of the user's own (`~/.config/valetkey/scan.key`, made at
/// first use, hidden from agents), fingerprints stay comparable across
/// that user's scans and confirm nothing to anyone else.
pub struct FingerprintKey {
    key: ring::hmac::Key,
    /// False when no key file could be read or made: this scan's
    /// fingerprints compare only with each other.
    pub lasting: bool,
}

impl FingerprintKey {
    /// The user's key, made at first use; a key for this process alone
    /// when the file cannot be read or written.
    pub fn for_this_user() -> FingerprintKey {
        let file = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/valetkey/scan.key"));
        match file.as_deref().and_then(|f| read_or_make_key(f).ok()) {
            Some(bytes) => FingerprintKey::from_bytes(&bytes, true),
            None => FingerprintKey::from_bytes(&random_key().unwrap_or_default(), false),
        }
    }

    pub fn from_bytes(bytes: &[u8], lasting: bool) -> FingerprintKey {
        FingerprintKey {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes),
            lasting,
        }
    }

    /// A short, stable name for a token that does not reveal it: the first
    /// 12 hex digits of an HMAC-SHA256 over a fixed label and the token.
    pub fn fingerprint(&self, token: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(b"valetkey scan v2\0");
        ctx.update(token.as_bytes());
        hex::encode(&ctx.sign().as_ref()[..6])
    }
}

fn random_key() -> Option<[u8; 32]> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes)
}

fn read_or_make_key(file: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    match std::fs::read(file) {
        Ok(bytes) if bytes.len() == 32 => return Ok(bytes),
        Ok(_) => return Err(std::io::Error::other("not a scan key")),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let bytes = random_key().ok_or_else(|| std::io::Error::other("no randomness"))?;
    // Made whole or not at all: a key another scan is making meanwhile wins.
    let next = file.with_extension(format!("new.{}", std::process::id()));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&next)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    let linked = std::fs::hard_link(&next, file);
    let _ = std::fs::remove_file(&next);
    match linked {
        Ok(()) => Ok(bytes.to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_or_make_key(file),
        Err(e) => Err(e),
    }
}

/// Env files: `.env`, `.env.local`, `prod.env`, `.envrc`.
fn is_env_file(name: &str) -> bool {
    name == ".env" || name == ".envrc" || name.starts_with(".env.") || name.ends_with(".env")
}

/// Whether a variable or key name says its value is a secret.
fn names_a_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "KEY"
        || upper.ends_with("_KEY")
        || [
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "API_KEY",
            "APIKEY",
            "ACCESS_KEY",
            "PRIVATE_KEY",
        ]
        .iter()
        .any(|w| upper.contains(w))
}

/// `NAME=value`, `export NAME="value"`, `"name": "value",`, `name: value`:
/// the name and the value's span in the line.
fn assignment(line: &str) -> Option<(&str, Range<usize>)> {
    let trimmed = line.trim_start();
    let mut at = line.len() - trimmed.len();
    let rest = trimmed.strip_prefix("export ").map_or(trimmed, str::trim_start);
    at += trimmed.len() - rest.len();
    let quote = rest.starts_with(['"', '\'']);
    let name_start = at + usize::from(quote);
    let name_len = line[name_start..]
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        .count();
    if name_len == 0 {
        return None;
    }
    let name = &line[name_start..name_start + name_len];
    let mut i = name_start + name_len;
    if quote {
        if !line[i..].starts_with(['"', '\'']) {
            return None;
        }
        i += 1;
    }
    i += line[i..].len() - line[i..].trim_start().len();
    if !line[i..].starts_with(['=', ':']) {
        return None;
    }
    i += 1;
    i += line[i..].len() - line[i..].trim_start().len();
    let mut value = i..line.trim_end().len().max(i);
    let text = &line[value.clone()];
    let text_trimmed = text.trim_end_matches(',');
    value.end -= text.len() - text_trimmed.len();
    let v = &line[value.clone()];
    if v.len() >= 2 && (v.starts_with('"') && v.ends_with('"') || v.starts_with('\'') && v.ends_with('\'')) {
        value = value.start + 1..value.end - 1;
    } else if let Some(comment) = v.find(" #") {
        // `TOKEN=value # note`: a shell comment after an unquoted value.
        value.end = value.start + v[..comment].trim_end().len();
    }
    Some((name, value))
}

/// What the broker would take for a master key.
fn is_master_key(text: &str) -> bool {
    crate::secrets::MasterKey::from_base64(text, crate::secrets::MasterKeyOrigin::Env).is_ok()
}

/// What a value assigned in an env file must look like to be taken for a
/// secret: long, one word, not a reference or a placeholder.
fn looks_like_a_secret_value(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    value.len() >= 16
        && !value.contains(char::is_whitespace)
        && !value.contains(['$', '<', '>', '{', '}'])
        // An address; one with a password in it is found by its shape.
        && !value.contains("://")
        // Where `secret import` moved a token: a name, not the token.
        && !value.starts_with("valetkey-secret:")
        && value.bytes().any(|b| b != value.as_bytes()[0])
        && !["changeme", "example", "your_", "your-", "xxxx", "placeholder", "dummy"]
            .iter()
            .any(|p| lower.contains(p))
}

/// The words of a line, split where a token cannot continue (a URL's
/// query, `?a=b&c=d`, stays in its URL).
fn words(line: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let is_delimiter =
        |c: char, in_url: bool| c.is_whitespace() || "\"'`,;()[]{}<>|\\".contains(c) || (c == '=' && !in_url);
    let mut start: Option<usize> = None;
    let mut out = Vec::new();
    for (i, c) in line.char_indices().chain(std::iter::once((line.len(), ' '))) {
        let in_url = start.is_some_and(|s| line[s..i].contains("://"));
        match (start, is_delimiter(c, in_url)) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                let word = &line[s..i];
                // A token at the end of a sentence or a YAML key's colon.
                let end = s + word.trim_end_matches(['.', ':']).len();
                if end > s {
                    out.push(s..end);
                }
                start = None;
            }
            _ => {}
        }
    }
    out.into_iter()
}

/// Every token in a file's text; `file_name` is its last path component.
pub fn scan_text(file_name: &str, text: &str) -> Vec<Hit> {
    let env_file = is_env_file(file_name);
    let mut hits = Vec::new();
    if file_name == "master.key" && is_master_key(text.trim()) {
        let line = text.lines().position(|l| !l.trim().is_empty()).unwrap_or(0);
        let content = text.lines().nth(line).unwrap_or_default();
        let start = content.len() - content.trim_start().len();
        hits.push(Hit {
            line: line + 1,
            span: start..start + content.trim().len(),
            kind: "a valetkey master key (it opens every secret of its store)".into(),
        });
        return hits;
    }
    for (n, line) in text.lines().enumerate() {
        let secret_value = assignment(line).filter(|(name, _)| names_a_secret(name));
        let before = hits.len();
        for span in words(line) {
            let word = &line[span.clone()];
            let Some((kind, by_shape)) = foreign::shape(word) else {
                // A token inside a URL or a `user:token` pair
                // (`https://x-access-token:ghs_…@github.com/…`).
                let mut at = span.start;
                for part in word.split([':', '@', '/']) {
                    if let Some((kind, true)) = foreign::shape(part) {
                        hits.push(Hit {
                            line: n + 1,
                            span: at..at + part.len(),
                            kind: kind.to_owned(),
                        });
                    }
                    at += part.len() + 1;
                }
                continue;
            };
            let named = secret_value
                .as_ref()
                .is_some_and(|(_, value)| value.start <= span.start && span.end <= value.end);
            if by_shape || named {
                hits.push(Hit {
                    line: n + 1,
                    span,
                    kind: kind.to_owned(),
                });
            }
        }
        if hits.len() > before {
            continue;
        }
        let Some((name, value)) = secret_value else {
            continue;
        };
        let text = &line[value.clone()];
        if name.eq_ignore_ascii_case("aws_secret_access_key") && text.len() == 40 {
            hits.push(Hit {
                line: n + 1,
                span: value,
                kind: "an AWS secret access key".into(),
            });
        } else if env_file && looks_like_a_secret_value(text) {
            hits.push(Hit {
                line: n + 1,
                span: value,
                kind: format!("a value assigned to {name} in an env file"),
            });
        }
    }
    hits
}

/// How far a scan goes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Files read at most; past it the scan stops and says so.
    pub max_files: usize,
    /// Larger files are not read (and are listed as skipped).
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_files: 50_000,
            max_file_bytes: 1 << 20,
        }
    }
}

/// Directories never read: version control and build output, which hold
/// copies of what the sources hold, and dependencies.
const SKIPPED_DIRS: [&str; 5] = [".git", "target", "node_modules", ".venv", "__pycache__"];

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub files_read: usize,
    /// Files not read, and why (too large, unreadable).
    pub skipped: Vec<(PathBuf, String)>,
    /// The scan stopped at `Limits::max_files`.
    pub incomplete: bool,
}

/// Scans files and directories (recursively, not following links).
pub fn scan_paths(paths: &[PathBuf], limits: Limits, key: &FingerprintKey) -> Report {
    let mut report = Report::default();
    for root in paths {
        let walk = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let name = e.file_name().to_string_lossy();
                e.depth() == 0 || !(e.file_type().is_dir() && SKIPPED_DIRS.contains(&name.as_ref()))
            });
        for entry in walk {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let path = e.path().map_or_else(|| root.clone(), Path::to_owned);
                    report.skipped.push((path, e.to_string()));
                    continue;
                }
            };
            if entry.file_type().is_dir() {
                // `.git` is skipped, but for its config, where remotes keep
                // tokens in their URLs.
                let config = entry.path().join(".git").join("config");
                if config.is_file() {
                    scan_file(&config, limits, key, &mut report);
                }
                continue;
            }
            // A link to a file is read as what it names: that is what a
            // reader of the link gets.
            let is_file = entry.file_type().is_file()
                || (entry.path_is_symlink() && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()));
            if !is_file {
                continue;
            }
            if report.files_read == limits.max_files {
                report.incomplete = true;
                return report;
            }
            scan_file(entry.path(), limits, key, &mut report);
        }
    }
    report
}

fn scan_file(path: &Path, limits: Limits, key: &FingerprintKey, report: &mut Report) {
    let too_large = std::fs::metadata(path).map(|m| m.len() > limits.max_file_bytes);
    match too_large {
        Ok(false) => {}
        Ok(true) => {
            report
                .skipped
                .push((path.to_owned(), format!("larger than {} bytes", limits.max_file_bytes)));
            return;
        }
        Err(e) => {
            report.skipped.push((path.to_owned(), e.to_string()));
            return;
        }
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            report.skipped.push((path.to_owned(), e.to_string()));
            return;
        }
    };
    report.files_read += 1;
    // Binary files hold no token a person or an agent reads as text.
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return;
    }
    let text = String::from_utf8_lossy(&bytes);
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for hit in scan_text(&name, &text) {
        let token = &lines[hit.line - 1][hit.span.clone()];
        report.findings.push(Finding {
            path: path.display().to_string(),
            line: hit.line,
            kind: hit.kind,
            fingerprint: key.fingerprint(token),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GHP: &str = "ghp_R3alLookingT0kenValue0123456789abcd";
    const UUID: &str = "0b7c6f4e-2a8d-4c1e-9f3a-5d6e7f8a9b0c";

    fn kinds(name: &str, text: &str) -> Vec<(usize, String, String)> {
        scan_text(name, text)
            .into_iter()
            .map(|h| {
                let line = text.lines().nth(h.line - 1).unwrap();
                (h.line, h.kind, line[h.span].to_owned())
            })
            .collect()
    }

    #[test]
    fn tokens_known_by_their_shape_are_found_anywhere() {
        let text = format!(
            "# notes\nGH_TOKEN={GHP}\nclient = Client(\"{GHP}\")\n  token: {GHP}.\n\
             url = \"postgres://app:s3cret@db.internal:5432/app\"\nkey AKIAIOSFODNN7EXAMPLE here\n"
        );
        let found = kinds("main.py", &text);
        assert_eq!(
            found.iter().map(|(l, _, v)| (*l, v.as_str())).collect::<Vec<_>>(),
            [
                (2, GHP),
                (3, GHP),
                (4, GHP),
                (5, "postgres://app:s3cret@db.internal:5432/app"),
                (6, "AKIAIOSFODNN7EXAMPLE"),
            ]
        );
        assert!(found[0].1.contains("GitHub personal access token"));
        assert!(found[3].1.contains("database URL"));
        assert!(found[4].1.contains("AWS access key id"));
    }

    #[test]
    fn uuids_and_jwts_count_only_where_a_line_names_a_secret() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
        let text = format!(
            "RAILWAY_TOKEN={UUID}\nexport RAILWAY_API_TOKEN=\"{UUID}\"\n  \"token\": \"{UUID}\",\n\
             SERVICE_ID={UUID}\nid = \"{UUID}\"\nsample: {jwt}\nAUTH_TOKEN: {jwt}\n"
        );
        let lines: Vec<usize> = kinds("config.json", &text).iter().map(|(l, _, _)| *l).collect();
        assert_eq!(lines, [1, 2, 3, 7]);
    }

    #[test]
    fn env_files_give_away_any_long_secret_value() {
        let text = "API_TOKEN=q8Jx2LmN4pRt6VwY9zBc\nDB_PASSWORD='hunter2hunter2hunter2'\n\
                    SESSION_SECRET=changeme-changeme-changeme\nPORT=8080\nGH_TOKEN=${GH_TOKEN}\n\
                    SHORT_TOKEN=abc\nNAME=q8Jx2LmN4pRt6VwY9zBc\nEMPTY_TOKEN=\n";
        let found = kinds(".env", text);
        assert_eq!(
            found.iter().map(|(l, _, v)| (*l, v.as_str())).collect::<Vec<_>>(),
            [(1, "q8Jx2LmN4pRt6VwY9zBc"), (2, "hunter2hunter2hunter2")]
        );
        assert!(found[0].1.contains("API_TOKEN"));
        // The same lines outside an env file are code, not configuration.
        assert!(kinds("settings.py", text).is_empty());
        for name in [".env.local", "prod.env", ".envrc"] {
            assert_eq!(kinds(name, text).len(), 2, "{name}");
        }
    }

    #[test]
    fn aws_credentials_files_give_away_their_secret_key() {
        let text = "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n\
                    aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
        let found = kinds("credentials", text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].2, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert!(found[1].1.contains("AWS secret access key"));
    }

    #[test]
    fn tokens_inside_urls_and_after_comments_are_found_whole() {
        let ghs = "ghs_xyz12345678abcdefghijklmnopqrstu";
        let text = format!(
            "\turl = https://x-access-token:{ghs}@github.com/acme/api.git\n\
             DATABASE_URL=postgres://app:pw@db:5432/app?sslmode=require&x=1\n\
             MONGO=mongodb+srv://u:p4ss@cluster0.example.net/db\n\
             API_TOKEN=q8Jx2LmN4pRt6VwY9zBc # staging\n\
             VALETKEY_MASTER_KEY=l2c0SJkXzWkqTtVq0nZNzKx6mOa4Fm0R1bX1mOvc9bA=\n"
        );
        let found = kinds(".env", &text);
        assert_eq!(
            found.iter().map(|(l, _, v)| (*l, v.as_str())).collect::<Vec<_>>(),
            [
                (1, ghs),
                (2, "postgres://app:pw@db:5432/app?sslmode=require&x=1"),
                (3, "mongodb+srv://u:p4ss@cluster0.example.net/db"),
                (4, "q8Jx2LmN4pRt6VwY9zBc"),
                (5, "l2c0SJkXzWkqTtVq0nZNzKx6mOa4Fm0R1bX1mOvc9bA="),
            ]
        );
        let key = kinds("master.key", "l2c0SJkXzWkqTtVq0nZNzKx6mOa4Fm0R1bX1mOvc9bA=\n");
        assert_eq!(key.len(), 1);
        assert!(key[0].1.contains("valetkey master key"));
    }

    #[test]
    fn prose_and_ids_are_not_tokens() {
        let text = "Set GH_TOKEN to a ghp_ token.\nThe ghp_short prefix.\nrequest id {UUID}\n\
                    postgres://db.internal/app\nTOKEN_URL=https://example.com/oauth/token\n";
        assert!(kinds("README.md", &text.replace("{UUID}", UUID)).is_empty());
        assert!(kinds(".env", "TOKEN_URL=https://auth.internal/oauth/token\n").is_empty());
    }

    #[test]
    fn a_fingerprint_names_a_token_without_giving_it_away() {
        let key = FingerprintKey::from_bytes(&[7; 32], true);
        let fp = key.fingerprint(GHP);
        assert_eq!(fp.len(), 12);
        assert_eq!(fp, key.fingerprint(GHP));
        assert_ne!(fp, key.fingerprint(UUID));
        assert!(!GHP.contains(&fp));
        assert_ne!(
            fp,
            FingerprintKey::from_bytes(&[8; 32], true).fingerprint(GHP),
            "without the user's key, a guess cannot be checked against a fingerprint"
        );
    }

    #[test]
    fn the_users_key_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".config/valetkey/scan.key");
        let made = read_or_make_key(&file).unwrap();
        assert_eq!(made.len(), 32);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            read_or_make_key(&file).unwrap(),
            made,
            "the next scan uses the same key"
        );
        std::fs::write(&file, "short").unwrap();
        assert!(read_or_make_key(&file).is_err(), "a file that is not a key is not used");
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        /// Any text, in any kind of file: every hit lies within its line,
        /// never a panic.
        #[test]
        fn fuzz_scan_text_never_panics(
            name in prop::sample::select(vec![".env", "config.json", "main.rs", "credentials"]),
            text in "(( ?(export )?[\"']?[A-Za-z_]{0,12}[\"']? ?[=:] ?)?[\"'ghp_AKIA0-9a-f.:/@é\u{0}-]{0,60}\n){0,6}",
        ) {
            for hit in scan_text(name, &text) {
                let line = text.lines().nth(hit.line - 1).unwrap();
                prop_assert!(line.get(hit.span.clone()).is_some());
            }
        }
    }
}
