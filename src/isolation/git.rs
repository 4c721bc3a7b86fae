//! What git, run later by the launcher outside the confinement, would take
//! from the agent's working directory as the launcher's own settings:
//! files that name programs or lead git to others, and repositories the
//! agent makes or changes (a shell prompt that shows git's status runs git
//! in each directory the launcher enters). The main repository's config and
//! hooks stay read-only while the agent runs (`gather` protects them); a
//! file that does not exist yet cannot be, so what the agent made is
//! compared before and after the run. [`changes`] decides, over two
//! [`Snapshot`]s; `run` moves the redirections aside and names the rest.
//!
//! Everything here reads and renames what the agent could write, as the
//! launcher (root, maybe): no link is followed, no file is read past a
//! bound or waited on, and a file is moved aside only within its own
//! directory, under a name no one could have guessed.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// Files in the main git directory that lead git to another's config and
/// hooks.
const REDIRECTS: [&str; 2] = ["commondir", "config.worktree"];
/// Files of a submodule's or a worktree's git directory that git reads as
/// settings (`gather` protects them at launch, with their hooks).
pub(super) const SETTINGS: [&str; 3] = ["config", "config.worktree", "commondir"];
/// How many entries of the working directory are looked at: a bound on the
/// time a run's end may take.
const MOST_ENTRIES: usize = 200_000;
/// Past this, a file is recorded as too large (a git setting never is).
const MOST_BYTES: usize = 64 * 1024;
/// What stands for a file that is not a regular one, or too large.
const NOT_A_SETTING: &[u8] = b"\0not a regular file of at most 64 KiB";

/// The watched files of the working directory's repository and every
/// repository in it, with their contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Relative to the working directory.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Where git would find a repository, relative to the working directory
    /// (`.` for the working directory itself), with what it would read
    /// there first: a `.git` file's pointer, or a git directory's config.
    pub repositories: BTreeMap<PathBuf, Vec<u8>>,
    /// Whether the main `.git` was a git directory git would use.
    pub main_repository: bool,
    /// False when the walk stopped at its bound.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A file the agent made or changed that leads git, in the main
    /// repository, to settings of the agent's: moved aside.
    Redirect(PathBuf),
    /// Settings of a submodule's or a worktree's git directory, made or
    /// changed: they may name programs git runs.
    Settings(PathBuf),
    /// A repository the agent made or changed, whose config may name
    /// programs.
    Repository(PathBuf),
    /// The main `.git` is no longer one git uses: git looks further, into
    /// what the agent wrote.
    Broken,
    /// The walk stopped at its bound: what lies past it was not compared.
    Incomplete,
}

/// What the agent made or changed between `before` and `after`.
pub fn changes(before: &Snapshot, after: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    for (path, content) in &after.files {
        if before.files.get(path) == Some(content) {
            continue;
        }
        let in_main = path.parent() == Some(Path::new(".git"));
        out.push(if in_main {
            Change::Redirect(path.clone())
        } else {
            Change::Settings(path.clone())
        });
    }
    if before.main_repository && !after.main_repository {
        out.push(Change::Broken);
    }
    for (path, content) in &after.repositories {
        if before.repositories.get(path) == Some(content) {
            continue;
        }
        // The working directory itself made a repository: its config would
        // be read as this repository's.
        out.push(if path == Path::new(".") {
            Change::Redirect(PathBuf::from("config"))
        } else {
            Change::Repository(path.clone())
        });
    }
    if !after.complete {
        out.push(Change::Incomplete);
    }
    out
}

/// Reads what [`changes`] compares, in `cwd`.
pub fn snapshot(cwd: &Path) -> Snapshot {
    let git = cwd.join(".git");
    let mut files = BTreeMap::new();
    let main_repository = is_git_dir(&git);
    if std::fs::symlink_metadata(&git).is_ok_and(|m| m.is_dir()) {
        let mut keep = |path: &Path| {
            if let (Some(content), Ok(relative)) = (read_setting(path), path.strip_prefix(cwd)) {
                files.insert(relative.to_owned(), content);
            }
        };
        for name in REDIRECTS {
            keep(&git.join(name));
        }
        for entry in walkdir::WalkDir::new(git.join("modules"))
            .into_iter()
            .chain(walkdir::WalkDir::new(git.join("worktrees")).max_depth(2))
            .flatten()
            .take(MOST_ENTRIES)
            .filter(|e| !e.file_type().is_dir())
        {
            let name = entry.file_name().to_string_lossy();
            let in_hooks = entry.path().parent().is_some_and(|p| p.ends_with("hooks"));
            if SETTINGS.contains(&name.as_ref()) || in_hooks {
                keep(entry.path());
            }
        }
    }
    let mut repositories = BTreeMap::new();
    let mut seen = 0;
    let mut walk = walkdir::WalkDir::new(cwd).into_iter().filter_entry(|e| e.path() != git);
    while let Some(entry) = walk.next() {
        let Ok(entry) = entry else { continue };
        seen += 1;
        if seen > MOST_ENTRIES {
            break;
        }
        let path = entry.path();
        let relative = path.strip_prefix(cwd).unwrap_or(path);
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        if entry.file_name() == ".git" {
            // A pointer (`gitdir: …`) or a git directory: what git reads.
            let content = if entry.file_type().is_dir() {
                read_setting(&path.join("config"))
            } else {
                read_setting(path)
            };
            repositories.insert(relative.to_owned(), content.unwrap_or_default());
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
        } else if entry.file_type().is_dir() && is_git_dir(path) {
            // A bare repository: git takes the directory itself as one.
            repositories.insert(
                relative.to_owned(),
                read_setting(&path.join("config")).unwrap_or_default(),
            );
        }
    }
    Snapshot {
        files,
        repositories,
        main_repository,
        complete: seen <= MOST_ENTRIES,
    }
}

/// Whether git would take `dir` as a git directory: a HEAD that names a
/// branch or a commit, and objects and refs directories (links not
/// followed).
fn is_git_dir(dir: &Path) -> bool {
    let real_dir = |name: &str| std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| m.is_dir());
    let head = read_setting(&dir.join("HEAD")).unwrap_or_default();
    let head = String::from_utf8_lossy(&head);
    let head = head.trim();
    let names_one = head.starts_with("ref: refs/")
        || ((head.len() == 40 || head.len() == 64) && head.bytes().all(|b| b.is_ascii_hexdigit()));
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) && names_one && real_dir("objects") && real_dir("refs")
}

/// A file's contents, when it is a regular one of at most [`MOST_BYTES`]
/// (a link, a pipe or a device stands for itself: never followed, read
/// or waited on); `None` when there is nothing there.
fn read_setting(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let fd = match nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => return None,
        Err(_) => return Some(NOT_A_SETTING.to_vec()),
    };
    let file = std::fs::File::from(fd);
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Some(NOT_A_SETTING.to_vec());
    }
    let mut content = Vec::new();
    match file.take(MOST_BYTES as u64 + 1).read_to_end(&mut content) {
        Ok(n) if n <= MOST_BYTES => Some(content),
        _ => Some(NOT_A_SETTING.to_vec()),
    }
}

/// Moves each redirection in `changes` aside, within its own directory,
/// to `NAME.valetkey-quarantined-RANDOM`; returns where each went. The
/// directories are opened without following links, and the new name
/// replaces nothing.
pub fn quarantine(cwd: &Path, changes: &[Change]) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut moved = Vec::new();
    for change in changes {
        let Change::Redirect(path) = change else {
            continue;
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        let mut at: OwnedFd = nix::fcntl::open(
            cwd,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        for part in dir.components() {
            at = openat(
                &at,
                part.as_os_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
        }
        let mut name_aside = name.to_owned();
        name_aside.push(format!(".valetkey-quarantined-{}", random_suffix()?));
        nix::fcntl::renameat2(
            &at,
            name,
            &at,
            name_aside.as_os_str(),
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )?;
        moved.push((path.clone(), dir.join(name_aside)));
    }
    Ok(moved)
}

fn random_suffix() -> std::io::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("no randomness"))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn what_leads_git_elsewhere_is_a_redirect_and_the_rest_is_named() {
        let before = Snapshot {
            files: BTreeMap::from([
                (p(".git/modules/lib/config"), b"[core]\n".to_vec()),
                (p(".git/modules/lib/hooks/post-checkout"), b"#!/bin/sh\n".to_vec()),
            ]),
            repositories: BTreeMap::from([(p("vendor/lib/.git"), b"[core]\n".to_vec())]),
            main_repository: true,
            complete: true,
        };
        let mut after = before.clone();
        assert!(changes(&before, &after).is_empty(), "nothing made, nothing found");
        after.files.insert(p(".git/commondir"), b"../elsewhere\n".to_vec());
        after
            .files
            .insert(p(".git/modules/lib/config"), b"[core]\n\tfsmonitor = x\n".to_vec());
        after.repositories.insert(p("tools/.git"), Vec::new());
        after
            .repositories
            .insert(p("vendor/lib/.git"), b"[core]\n\tfsmonitor = x\n".to_vec());
        after.repositories.insert(p("."), b"[core]\n\tfsmonitor = x\n".to_vec());
        after.main_repository = false;
        after.complete = false;
        assert_eq!(
            changes(&before, &after),
            vec![
                Change::Redirect(p(".git/commondir")),
                Change::Settings(p(".git/modules/lib/config")),
                Change::Broken,
                Change::Redirect(p("config")),
                Change::Repository(p("tools/.git")),
                Change::Repository(p("vendor/lib/.git")),
                Change::Incomplete,
            ]
        );
    }

    fn init(dir: &Path) {
        std::fs::create_dir_all(dir.join("objects")).unwrap();
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::create_dir_all(dir.join("hooks")).unwrap();
        std::fs::write(dir.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    }

    #[test]
    fn redirects_are_found_and_moved_aside_and_repositories_named() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        init(&cwd.join(".git"));
        std::fs::create_dir_all(cwd.join("src/gitfile")).unwrap();
        std::fs::write(cwd.join("src/gitfile/.git"), "gitdir: ../../.git/modules/x\n").unwrap();
        let before = snapshot(cwd);
        assert!(before.main_repository && before.complete);
        std::fs::write(cwd.join(".git/commondir"), "../.evil\n").unwrap();
        std::fs::create_dir_all(cwd.join("src/inner/.git")).unwrap();
        std::fs::write(cwd.join("src/gitfile/.git"), "gitdir: ../../.evil\n").unwrap();
        init(&cwd.join("docs"));
        // The main repository broken, the working directory a bare one.
        std::fs::write(cwd.join(".git/HEAD"), "garbage").unwrap();
        std::fs::create_dir_all(cwd.join("objects")).unwrap();
        std::fs::create_dir_all(cwd.join("refs")).unwrap();
        std::fs::write(cwd.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(cwd.join("config"), "[core]\n\tfsmonitor = x\n").unwrap();
        let found = changes(&before, &snapshot(cwd));
        assert_eq!(
            found,
            vec![
                Change::Redirect(p(".git/commondir")),
                Change::Broken,
                Change::Redirect(p("config")),
                Change::Repository(p("docs")),
                Change::Repository(p("src/gitfile/.git")),
                Change::Repository(p("src/inner/.git")),
            ]
        );
        let moved = quarantine(cwd, &found).unwrap();
        assert_eq!(moved.len(), 2);
        assert!(!cwd.join(".git/commondir").exists() && !cwd.join("config").exists());
        for (from, to) in &moved {
            assert_eq!(to.parent(), from.parent(), "moved aside in its own directory");
            assert!(to.to_string_lossy().contains(".valetkey-quarantined-"));
            assert!(cwd.join(to).is_file());
        }
    }

    #[test]
    fn links_pipes_and_large_files_are_never_followed_read_or_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        init(&cwd.join(".git"));
        let before = snapshot(cwd);
        std::os::unix::fs::symlink("/dev/zero", cwd.join(".git/commondir")).unwrap();
        nix::unistd::mkfifo(&cwd.join(".git/config.worktree"), Mode::from_bits_truncate(0o600)).unwrap();
        let after = snapshot(cwd);
        assert_eq!(after.files[&p(".git/commondir")], NOT_A_SETTING);
        assert_eq!(after.files[&p(".git/config.worktree")], NOT_A_SETTING);
        let found = changes(&before, &after);
        // A link where the quarantine would go is replaced by nothing and
        // followed nowhere: the move stays in .git.
        std::os::unix::fs::symlink("/", cwd.join(".git/valetkey-quarantine")).unwrap();
        let moved = quarantine(cwd, &found).unwrap();
        assert_eq!(moved.len(), 2);
        for (_, to) in moved {
            assert!(std::fs::symlink_metadata(cwd.join(to)).is_ok());
        }
        std::fs::write(cwd.join("big"), vec![b'x'; MOST_BYTES + 1]).unwrap();
        assert_eq!(read_setting(&cwd.join("big")).unwrap(), NOT_A_SETTING);
    }
}
