//! What a `git-receive-pack` request asks (Documentation/gitprotocol-pack.txt,
//! "Reference Update Request and Packfile Transfer"): `shallow` lines, the
//! ref-update commands (the first with its capabilities after a NUL), a
//! flush, the push options when the `push-options` capability is on, a
//! flush, then the packfile. A signed push (`push-cert`), an object format
//! other than SHA-1 or SHA-256, a ref updated twice and a pack after
//! deletions alone are refused: the broker reads a push one way only.

use std::collections::BTreeSet;

use super::GitError;
use super::object::{ObjectFormat, Oid};
use super::pktline::{Pkt, Reader, chomp};

/// One command: move `name` from `old` to `new` (all-zero ids: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: Oid,
    pub new: Oid,
    pub name: String,
}

impl RefUpdate {
    pub fn is_create(&self) -> bool {
        self.old.is_null()
    }

    pub fn is_delete(&self) -> bool {
        self.new.is_null()
    }

    /// The branch it updates, if it updates one.
    pub fn branch(&self) -> Option<&str> {
        self.name.strip_prefix("refs/heads/")
    }
}

/// A push as the broker reads it; `pack` is the packfile's bytes, if any.
#[derive(Debug, Clone)]
pub struct PushRequest<'a> {
    pub format: ObjectFormat,
    pub updates: Vec<RefUpdate>,
    pub push_options: Vec<String>,
    pub pack: Option<&'a [u8]>,
}

pub fn parse(body: &[u8]) -> Result<PushRequest<'_>, GitError> {
    let mut lines = Reader::new(body);
    let mut commands: Vec<&[u8]> = Vec::new();
    let mut capabilities: Vec<&[u8]> = Vec::new();
    loop {
        match lines.next_pkt()? {
            Pkt::Flush => break,
            Pkt::Data(line) => {
                let line = chomp(line);
                if commands.is_empty() && line.starts_with(b"shallow ") {
                    continue;
                }
                if line.starts_with(b"push-cert") {
                    return Err(GitError::Unsupported("signed pushes (`push-cert`)".into()));
                }
                let command = match memchr::memchr(0, line) {
                    Some(nul) if commands.is_empty() => {
                        capabilities = line[nul + 1..].split(|b| *b == b' ').collect();
                        &line[..nul]
                    }
                    Some(_) => return Err(GitError::Malformed("capabilities after the first command".into())),
                    None if commands.is_empty() => {
                        return Err(GitError::Malformed("the first command has no capabilities".into()));
                    }
                    None => line,
                };
                commands.push(command);
            }
            Pkt::Delim | Pkt::ResponseEnd => {
                return Err(GitError::Malformed("a push's commands hold a special packet".into()));
            }
        }
    }
    let mut format = ObjectFormat::Sha1;
    let mut with_options = false;
    for capability in &capabilities {
        if let Some(name) = capability.strip_prefix(b"object-format=") {
            let name = std::str::from_utf8(name).unwrap_or_default();
            format = ObjectFormat::named(name)
                .ok_or_else(|| GitError::Unsupported(format!("the object format `{name}`")))?;
        }
        with_options |= *capability == b"push-options";
    }
    let mut updates = Vec::with_capacity(commands.len());
    let mut names = BTreeSet::new();
    for command in commands {
        let update = command_of(format, command)?;
        if !names.insert(update.name.clone()) {
            return Err(GitError::Malformed(format!("`{}` is updated twice", update.name)));
        }
        updates.push(update);
    }
    let mut push_options = Vec::new();
    if with_options && !updates.is_empty() {
        loop {
            match lines.next_pkt()? {
                Pkt::Flush => break,
                Pkt::Data(line) => push_options.push(String::from_utf8_lossy(chomp(line)).into_owned()),
                Pkt::Delim | Pkt::ResponseEnd => {
                    return Err(GitError::Malformed("a push's options hold a special packet".into()));
                }
            }
        }
    }
    let rest = lines.rest();
    let pack = match (rest.is_empty(), updates.iter().all(RefUpdate::is_delete)) {
        (true, _) => None,
        (false, false) => Some(rest),
        (false, true) => return Err(GitError::Malformed("a push of deletions alone carries a pack".into())),
    };
    Ok(PushRequest {
        format,
        updates,
        push_options,
        pack,
    })
}

/// `<old> <new> <ref>`.
fn command_of(format: ObjectFormat, command: &[u8]) -> Result<RefUpdate, GitError> {
    let mut parts = command.splitn(3, |b| *b == b' ');
    let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(GitError::Malformed("a ref update is not `<old> <new> <ref>`".into()));
    };
    let (old, new) = (format.parse_hex(old)?, format.parse_hex(new)?);
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| n.starts_with("refs/") && n.len() > 5)
        .filter(|n| !n.chars().any(|c| c.is_control() || c == ' '))
        .ok_or_else(|| {
            GitError::Malformed(format!(
                "`{}` is not a ref name the broker reads",
                String::from_utf8_lossy(name)
            ))
        })?;
    if old.is_null() && new.is_null() {
        return Err(GitError::Malformed(format!("`{name}` is neither created nor kept")));
    }
    Ok(RefUpdate {
        old,
        new,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::pktline::encode;
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn body(lines: &[&str], tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            match *line {
                "" => out.extend_from_slice(b"0000"),
                l => out.extend(encode(l.as_bytes())),
            }
        }
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn commands_capabilities_options_and_the_pack_are_read() {
        let first = format!("{A} {B} refs/heads/main\0report-status push-options side-band-64k agent=git/2.47");
        let second = format!("{B} {Z} refs/heads/old\n");
        let shallow = format!("shallow {A}");
        let b = body(&[&shallow, &first, &second, "", "ci.skip", ""], b"PACKDATA");
        let push = parse(&b).unwrap();
        assert_eq!(push.format, ObjectFormat::Sha1);
        assert_eq!(push.updates.len(), 2);
        assert_eq!(push.updates[0].branch(), Some("main"));
        assert!(push.updates[1].is_delete());
        assert_eq!(push.push_options, ["ci.skip"]);
        assert_eq!(push.pack, Some(&b"PACKDATA"[..]));

        // git's probe before a large push: a flush alone.
        let probe = parse(b"0000").unwrap();
        assert!(probe.updates.is_empty() && probe.pack.is_none());

        let long = "3".repeat(64);
        let sha256 = format!("{} {long} refs/tags/v1\0object-format=sha256", "0".repeat(64));
        let b = body(&[&sha256, ""], b"PACK");
        let push = parse(&b).unwrap();
        assert_eq!(push.format, ObjectFormat::Sha256);
        assert!(push.updates[0].is_create());
    }

    #[test]
    fn what_cannot_be_read_one_way_is_refused() {
        let first = |rest: &str| format!("{A} {B} refs/heads/main\0report-status{rest}");
        let cases: Vec<Vec<u8>> = vec![
            body(&[&format!("{A} {B} refs/heads/main"), ""], b""),
            body(&[&first(""), &format!("{A} {B} refs/heads/main"), ""], b"PACK"),
            body(&[&first(" object-format=sha512"), ""], b"PACK"),
            body(&[&first(" object-format=sha256"), ""], b"PACK"),
            body(&[&format!("{A} {B} HEAD\0report-status"), ""], b"PACK"),
            body(&[&format!("{A} {B} refs/heads/a b\0x"), ""], b"PACK"),
            body(&[&format!("{Z} {Z} refs/heads/a\0x"), ""], b""),
            body(&[&format!("{A} {Z} refs/heads/a\0x"), ""], b"PACK"),
            body(&["push-cert\0report-status", ""], b""),
            body(&[&first(""), &format!("{A} {B} refs/heads/x\0more"), ""], b"PACK"),
            body(&[&first("")], b""),
            b"00".to_vec(),
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(parse(case).is_err(), "case {i} was read");
        }
    }
}
