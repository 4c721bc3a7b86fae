//! What git, run later by the launcher outside the confinement, would take
//! from the agent's working directory as the launcher's own settings:
//! files that name programs or lead git to others, and repositories the
//! agent makes (a shell prompt that shows git's status runs git in each
//! directory the launcher enters). The main repository's config and hooks
//! stay read-only while the agent runs (`gather` protects them); a file that
//! does not exist yet cannot be, so what the agent made is compared before
//! and after the run. [`changes`] decides, over two [`Snapshot`]s; `run`
//! moves the redirections aside and names the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files in a git directory that lead git to another's config and hooks.
const REDIRECTS: [&str; 2] = ["commondir", "config.worktree"];
/// Files of a submodule's or a worktree's git directory that git reads as
/// settings.
const SETTINGS: [&str; 3] = ["config", "config.worktree", "commondir"];
/// How many entries of the working directory are looked at for new
/// repositories: a bound on the time a run's end may take.
const MOST_ENTRIES: usize = 200_000;

/// The watched files of the working directory's repository, with their
/// contents, and the repositories found in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Relative to the working directory.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// The `.git` entries, relative to the working directory.
    pub repositories: BTreeSet<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Made or changed in the main repository's git directory, where it
    /// would lead git to settings of the agent's: moved aside.
    Redirect(PathBuf),
    /// Settings of a submodule's or a worktree's git directory, made or
    /// changed: they may name programs git runs.
    Settings(PathBuf),
    /// A repository the agent made, whose config may name programs.
    Repository(PathBuf),
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
    out.extend(
        after
            .repositories
            .difference(&before.repositories)
            .map(|r| Change::Repository(r.clone())),
    );
    out
}

/// Reads what [`changes`] compares, in `cwd`.
pub fn snapshot(cwd: &Path) -> Snapshot {
    let git = cwd.join(".git");
    let mut files = BTreeMap::new();
    if git.is_dir() {
        let mut keep = |path: PathBuf| {
            if let (Ok(content), Ok(relative)) = (std::fs::read(&path), path.strip_prefix(cwd)) {
                files.insert(relative.to_owned(), content);
            }
        };
        for name in REDIRECTS {
            keep(git.join(name));
        }
        for entry in walkdir::WalkDir::new(git.join("modules"))
            .max_depth(12)
            .into_iter()
            .chain(walkdir::WalkDir::new(git.join("worktrees")).max_depth(2))
            .flatten()
            .take(MOST_ENTRIES)
            .filter(|e| e.file_type().is_file())
        {
            let name = entry.file_name().to_string_lossy();
            let in_hooks = entry.path().parent().is_some_and(|p| p.ends_with("hooks"));
            if SETTINGS.contains(&name.as_ref()) || in_hooks {
                keep(entry.into_path());
            }
        }
    }
    let repositories = walkdir::WalkDir::new(cwd)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.path() != git)
        .flatten()
        .take(MOST_ENTRIES)
        .filter(|e| e.file_name() == ".git")
        .filter_map(|e| e.path().strip_prefix(cwd).ok().map(Path::to_owned))
        .collect();
    Snapshot { files, repositories }
}

/// Moves each redirection in `changes` into
/// `.git/valetkey-quarantine/STAMP/`; returns where each went.
pub fn quarantine(cwd: &Path, changes: &[Change], stamp: u64) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
    let aside = Path::new(".git/valetkey-quarantine").join(stamp.to_string());
    let mut moved = Vec::new();
    for change in changes {
        let Change::Redirect(path) = change else {
            continue;
        };
        let Some(name) = path.file_name() else {
            continue;
        };
        std::fs::create_dir_all(cwd.join(&aside))?;
        let to = aside.join(name);
        std::fs::rename(cwd.join(path), cwd.join(&to))?;
        moved.push((path.clone(), to));
    }
    Ok(moved)
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
            repositories: BTreeSet::from([p("vendor/lib/.git")]),
        };
        let mut after = before.clone();
        assert!(changes(&before, &after).is_empty(), "nothing made, nothing found");
        after.files.insert(p(".git/commondir"), b"../elsewhere\n".to_vec());
        after
            .files
            .insert(p(".git/modules/lib/config"), b"[core]\n\tfsmonitor = x\n".to_vec());
        after.repositories.insert(p("tools/.git"));
        assert_eq!(
            changes(&before, &after),
            vec![
                Change::Redirect(p(".git/commondir")),
                Change::Settings(p(".git/modules/lib/config")),
                Change::Repository(p("tools/.git")),
            ]
        );
    }

    #[test]
    fn a_redirect_is_found_and_moved_aside_and_a_new_repository_named() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        std::fs::create_dir_all(cwd.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(cwd.join("src")).unwrap();
        let before = snapshot(cwd);
        std::fs::write(cwd.join(".git/commondir"), "../.evil\n").unwrap();
        std::fs::create_dir_all(cwd.join("src/inner/.git")).unwrap();
        let after = snapshot(cwd);
        let found = changes(&before, &after);
        assert_eq!(
            found,
            vec![
                Change::Redirect(p(".git/commondir")),
                Change::Repository(p("src/inner/.git")),
            ]
        );
        let moved = quarantine(cwd, &found, 7).unwrap();
        assert_eq!(
            moved,
            vec![(p(".git/commondir"), p(".git/valetkey-quarantine/7/commondir"))]
        );
        assert!(!cwd.join(".git/commondir").exists());
        assert!(cwd.join(".git/valetkey-quarantine/7/commondir").is_file());
    }
}
