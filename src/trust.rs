//! Who else could change or read the files `serve` trusts. The
//! configuration decides what agents may do, and the data dir, the master
//! key file and token files hold secrets: none may be changeable by anyone
//! but the broker's user (or root), nor any directory above it (whoever can
//! write one can rename what is below it away and put their own in its
//! place), and the secret ones may be readable by no one else. Links are
//! followed to what they name, which is what is read. `judge` is the
//! decision, over facts `inspect` gathers from the file system.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a file is to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read, not secret: the configuration.
    Config,
    /// A file holding a secret: the master key, a token, the database.
    SecretFile,
    /// The data dir: the database and the bootstrap admin key live in it.
    SecretDir,
}

/// Ownership and mode of one file and of the directory holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub path: PathBuf,
    pub kind: Kind,
    pub uid: u32,
    pub mode: u32,
    /// Every directory above it, to the root: (path, owner, mode).
    pub ancestors: Vec<(PathBuf, u32, u32)>,
}

/// One reason not to trust a file, and the command that removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted {
    pub path: PathBuf,
    pub why: String,
    pub fix: String,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}; fix: {}", self.path.display(), self.why, self.fix)
    }
}

const GROUP_OTHER_WRITE: u32 = 0o022;
const GROUP_OTHER_ANY: u32 = 0o077;
const STICKY: u32 = 0o1000;

/// Every reason the broker, running as user `me` (named `me_name`), should
/// not trust `facts`.
pub fn judge(facts: &Facts, me: u32, me_name: &str) -> Vec<Untrusted> {
    let mut found = Vec::new();
    let path = &facts.path;
    let shown = path.display();
    let trusted_owner = |uid: u32| uid == me || uid == 0;
    if !trusted_owner(facts.uid) {
        found.push(Untrusted {
            path: path.clone(),
            why: format!("is owned by uid {}, who could change it", facts.uid),
            fix: format!("chown {me_name} {shown}"),
        });
    }
    let (readable_by_others, private_mode) = match facts.kind {
        Kind::Config => (false, ""),
        Kind::SecretFile => (facts.mode & 0o044 != 0, "600"),
        Kind::SecretDir => (facts.mode & GROUP_OTHER_ANY != 0, "700"),
    };
    if readable_by_others {
        found.push(Untrusted {
            path: path.clone(),
            why: "holds secrets and can be read or entered by other users".into(),
            fix: format!("chmod {private_mode} {shown}"),
        });
    } else if facts.mode & GROUP_OTHER_WRITE != 0 {
        found.push(Untrusted {
            path: path.clone(),
            why: "can be written by other users".into(),
            fix: format!("chmod go-w {shown}"),
        });
    }
    for (dir, uid, mode) in &facts.ancestors {
        let shown = dir.display();
        if !trusted_owner(*uid) {
            found.push(Untrusted {
                path: dir.clone(),
                why: format!(
                    "is above {} and is owned by uid {uid}, who could replace it",
                    path.display()
                ),
                fix: format!("chown {me_name} {shown}"),
            });
        } else if mode & GROUP_OTHER_WRITE != 0 && mode & STICKY == 0 {
            found.push(Untrusted {
                path: dir.clone(),
                why: format!(
                    "is above {} and can be written by other users, who could replace it",
                    path.display()
                ),
                fix: format!("chmod go-w {shown}"),
            });
        }
    }
    found
}

/// Reads the facts of `path`, links followed to what they name; `None`
/// when there is no such file (a master key given in the environment, a
/// database not yet created).
pub fn inspect(path: &Path, kind: Kind) -> std::io::Result<Option<Facts>> {
    let real = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = std::fs::metadata(&real)?;
    let mut ancestors = Vec::new();
    for dir in real.ancestors().skip(1) {
        let m = std::fs::metadata(dir)?;
        ancestors.push((dir.to_owned(), m.uid(), m.mode()));
    }
    Ok(Some(Facts {
        path: path.to_owned(),
        kind,
        uid: meta.uid(),
        mode: meta.mode(),
        ancestors,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    fn facts(kind: Kind, uid: u32, mode: u32, dir: (u32, u32)) -> Facts {
        Facts {
            path: PathBuf::from("/srv/vk/file"),
            kind,
            uid,
            mode,
            ancestors: vec![
                (PathBuf::from("/srv/vk"), dir.0, dir.1),
                (PathBuf::from("/"), 0, 0o40755),
            ],
        }
    }

    fn judge_(f: &Facts, me: u32) -> Vec<Untrusted> {
        judge(f, me, "vk")
    }

    fn reasons(f: &Facts) -> Vec<String> {
        judge_(f, ME)
            .iter()
            .map(|u| format!("{}: {}", u.path.display(), u.fix))
            .collect()
    }

    #[test]
    fn private_files_of_the_broker_or_root_are_trusted() {
        for owner in [ME, 0] {
            assert!(judge_(&facts(Kind::Config, owner, 0o100644, (ME, 0o40755)), ME).is_empty());
            assert!(judge_(&facts(Kind::SecretFile, owner, 0o100600, (0, 0o40700)), ME).is_empty());
            assert!(judge_(&facts(Kind::SecretDir, owner, 0o40700, (ME, 0o41777)), ME).is_empty());
        }
        // A sticky directory (/tmp) lets no one replace another's file.
        assert!(judge_(&facts(Kind::Config, ME, 0o100640, (0, 0o41777)), ME).is_empty());
    }

    #[test]
    fn what_others_can_change_is_refused_with_the_command_that_fixes_it() {
        assert_eq!(
            reasons(&facts(Kind::Config, ME, 0o100664, (ME, 0o40755))),
            ["/srv/vk/file: chmod go-w /srv/vk/file"]
        );
        assert_eq!(
            reasons(&facts(Kind::Config, ME, 0o100646, (ME, 0o40755))),
            ["/srv/vk/file: chmod go-w /srv/vk/file"]
        );
        assert_eq!(
            reasons(&facts(Kind::Config, 1001, 0o100644, (ME, 0o40755))),
            ["/srv/vk/file: chown vk /srv/vk/file"]
        );
        assert_eq!(
            reasons(&facts(Kind::Config, ME, 0o100644, (ME, 0o40777))),
            ["/srv/vk: chmod go-w /srv/vk"]
        );
        assert_eq!(
            reasons(&facts(Kind::Config, ME, 0o100644, (1001, 0o40755))),
            ["/srv/vk: chown vk /srv/vk"]
        );
        // Any directory above, not only the nearest.
        let mut deep = facts(Kind::Config, ME, 0o100644, (ME, 0o40755));
        deep.ancestors.push((PathBuf::from("/srv"), 0, 0o40777));
        assert_eq!(reasons(&deep), ["/srv: chmod go-w /srv"]);
    }

    #[test]
    fn secrets_readable_by_others_are_refused() {
        assert_eq!(
            reasons(&facts(Kind::SecretFile, ME, 0o100640, (ME, 0o40700))),
            ["/srv/vk/file: chmod 600 /srv/vk/file"]
        );
        assert_eq!(
            reasons(&facts(Kind::SecretFile, ME, 0o100604, (ME, 0o40700))),
            ["/srv/vk/file: chmod 600 /srv/vk/file"]
        );
        assert_eq!(
            reasons(&facts(Kind::SecretDir, ME, 0o40711, (ME, 0o40755))),
            ["/srv/vk/file: chmod 700 /srv/vk/file"]
        );
        // A config file may be read by others: it holds no secret.
        assert!(judge_(&facts(Kind::Config, ME, 0o100644, (ME, 0o40755)), ME).is_empty());
    }
}
