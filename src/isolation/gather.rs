//! The launcher's side of a plan: which of the paths named exist, where
//! their links lead, what PATH holds. Read once, before the agent starts.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{AGENT_IDS, CREDENTIAL_STORES, Ids, Inputs, SYSTEM_SECRETS, Secret, Settings, TOOLCHAINS};

/// What `run` knows of the person launching the agent.
#[derive(Debug, Clone, Default)]
pub struct Launcher {
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
    pub path_var: Option<OsString>,
    /// Key files the launcher named (`--key-file`, VALETKEY_ADMIN_KEY_FILE).
    pub key_files: Vec<PathBuf>,
    pub broker_port: Option<u16>,
}

/// Resolves every path (`~/` to the launcher's home, relative ones to the
/// working directory, links followed) and keeps those that exist.
pub fn gather(settings: &Settings, launcher: &Launcher) -> Inputs {
    let expand = |p: &Path| -> Option<PathBuf> {
        match p.strip_prefix("~") {
            Ok(rest) => launcher.home.as_ref().map(|h| h.join(rest)),
            Err(_) => Some(launcher.cwd.join(p)),
        }
    };
    let existing = |paths: &mut dyn Iterator<Item = PathBuf>| -> Vec<PathBuf> {
        paths.filter_map(|p| std::fs::canonicalize(p).ok()).collect()
    };
    let in_home = |names: &[&str]| -> Vec<PathBuf> {
        launcher
            .home
            .iter()
            .flat_map(|h| names.iter().map(move |n| h.join(n)))
            .collect()
    };
    let path_dirs = launcher
        .path_var
        .as_ref()
        .map(|v| std::env::split_paths(v).filter(|p| p.is_absolute()).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut connect = settings.connect.clone();
    connect.extend(launcher.broker_port);
    let ids = Ids {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    };
    // Drawn (a walk of /proc) only for a root launcher: no one else's agent
    // changes ids.
    let unprivileged = if ids.uid == 0 { agent_ids() } else { ids };
    let bound = bound_unix_sockets();
    let mut inputs = Inputs {
        cwd: std::fs::canonicalize(&launcher.cwd).unwrap_or_else(|_| launcher.cwd.clone()),
        home: launcher.home.as_ref().and_then(|h| std::fs::canonicalize(h).ok()),
        secrets: existing(
            &mut settings
                .hide
                .iter()
                .filter_map(|p| expand(p))
                .chain(launcher.key_files.iter().map(|p| launcher.cwd.join(p)))
                .chain(in_home(&CREDENTIAL_STORES))
                .chain(SYSTEM_SECRETS.iter().map(PathBuf::from)),
        )
        .into_iter()
        .map(|path| Secret {
            is_dir: path.is_dir(),
            path,
        })
        .collect(),
        read: existing(&mut settings.read.iter().filter_map(|p| expand(p))),
        write: existing(&mut settings.write.iter().filter_map(|p| expand(p))),
        tools: existing(
            &mut in_home(&TOOLCHAINS)
                .into_iter()
                .chain(path_dirs.iter().cloned())
                .chain(link_targets(&path_dirs)),
        ),
        protect: git_settings(&launcher.cwd.join(".git"))
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect(),
        tool_links: path_dirs
            .iter()
            .filter(|d| std::fs::canonicalize(d).is_ok_and(|c| &c != *d))
            .cloned()
            .collect(),
        connect,
        launcher: ids,
        may_id_map: machines_root(),
        unprivileged,
        closed: Vec::new(),
        unreadable: Vec::new(),
        sockets: existing(&mut bound.iter().filter(|n| n.starts_with('/')).map(PathBuf::from)),
        unlocated_sockets: unlocated(&bound),
        listings: BTreeMap::new(),
        links: BTreeSet::new(),
        resolved: super::SYSTEM
            .iter()
            .filter_map(|s| {
                let real = std::fs::canonicalize(s).ok()?;
                (real != Path::new(s)).then(|| (PathBuf::from(s), real))
            })
            .collect(),
    };
    (inputs.listings, inputs.links) = listings(inputs.secrets.iter().map(|s| &s.path).chain(&inputs.sockets));
    if ids.uid == 0 && inputs.may_id_map {
        let granted: Vec<&PathBuf> = std::iter::once(&inputs.cwd)
            .chain(&inputs.read)
            .chain(&inputs.write)
            .chain(&inputs.tools)
            .chain(&inputs.tool_links)
            .collect();
        inputs.closed = closed_to(unprivileged, &granted);
        inputs.unreadable = unreadable_to(unprivileged, &inputs.read);
    }
    inputs
}

/// What in a repository's git directory names programs git runs: its
/// config and hooks, and the settings, hooks and pointer to a common git
/// directory of its submodules' and worktrees' (`modules/…`, `worktrees/…`).
fn git_settings(git: &Path) -> Vec<PathBuf> {
    let mut found = vec![git.join("config"), git.join("hooks")];
    let nested = walkdir::WalkDir::new(git.join("modules"))
        .max_depth(12)
        .into_iter()
        .chain(walkdir::WalkDir::new(git.join("worktrees")).max_depth(1))
        .flatten()
        .take(10_000)
        .filter(|e| e.file_type().is_dir() && e.path().join("HEAD").is_file());
    for dir in nested {
        found.extend(
            super::git::SETTINGS
                .iter()
                .chain(&["hooks"])
                .map(|name| dir.path().join(name)),
        );
    }
    found
}

/// The entries of every directory above `paths`, and which of them are
/// links.
fn listings<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> (BTreeMap<PathBuf, Vec<PathBuf>>, BTreeSet<PathBuf>) {
    let (mut out, mut links) = (BTreeMap::new(), BTreeSet::new());
    for dir in paths.flat_map(|p| p.ancestors().skip(1)) {
        if out.contains_key(dir) {
            continue;
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten().take(10_000) {
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                links.insert(entry.path());
            }
            entries.push(entry.path());
        }
        out.insert(dir.to_owned(), entries);
    }
    (out, links)
}

/// The names Unix sockets in this network namespace were bound with, as
/// /proc/net/unix shows them (abstract ones, `@…`, left out).
fn bound_unix_sockets() -> BTreeSet<String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().skip(7).collect::<Vec<_>>().join(" "))
        .filter(|name| !name.is_empty() && !name.starts_with('@'))
        .collect()
}

/// The bound sockets that cannot be found by their name (bound by a
/// relative one, or moved or removed since), so not hidden.
fn unlocated(bound: &BTreeSet<String>) -> Vec<String> {
    bound
        .iter()
        .filter(|name| !name.starts_with('/') || std::fs::symlink_metadata(name).is_err())
        .cloned()
        .collect()
}

/// The directories on the way to `paths` that a process with `ids` (and no
/// other group) may not pass through, by their mode bits.
fn closed_to(ids: Ids, paths: &[&PathBuf]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let passable = |m: &std::fs::Metadata| {
        let bit = if m.uid() == ids.uid {
            0o100
        } else if m.gid() == ids.gid {
            0o010
        } else {
            0o001
        };
        m.mode() & bit != 0
    };
    paths
        .iter()
        .flat_map(|p| p.ancestors().skip(1))
        .filter(|dir| std::fs::metadata(dir).is_ok_and(|m| !passable(&m)))
        .map(Path::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The grants a process with `ids` (and no other group) may not read, by
/// their own mode bits: a directory it may not list or enter, a file it may
/// not read.
fn unreadable_to(ids: Ids, grants: &[PathBuf]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    grants
        .iter()
        .filter(|g| {
            std::fs::metadata(g).is_ok_and(|m| {
                let shift = if m.uid() == ids.uid {
                    6
                } else if m.gid() == ids.gid {
                    3
                } else {
                    0
                };
                let needed = if m.is_dir() { 0o5 } else { 0o4 };
                (m.mode() >> shift) & needed != needed
            })
        })
        .cloned()
        .collect()
}

/// Ids for this run's agent, drawn at random from [`AGENT_IDS`], that no
/// user, group or running process has: no other process on the machine runs
/// as the agent, so none may trace it or reach into it through /proc (as a
/// shared `nobody` would let every daemon running as `nobody`).
fn agent_ids() -> Ids {
    use ring::rand::SecureRandom;
    let span = AGENT_IDS.end - AGENT_IDS.start;
    let rng = ring::rand::SystemRandom::new();
    let mut drawn = AGENT_IDS.start + std::process::id() % span;
    for _ in 0..16 {
        let mut bytes = [0u8; 4];
        if rng.fill(&mut bytes).is_ok() {
            drawn = AGENT_IDS.start + u32::from_le_bytes(bytes) % span;
        }
        if id_is_free(drawn) {
            break;
        }
    }
    Ids { uid: drawn, gid: drawn }
}

fn id_is_free(id: u32) -> bool {
    use nix::unistd::{Gid, Group, Uid, User};
    let named = matches!(User::from_uid(Uid::from_raw(id)), Ok(Some(_)))
        || matches!(Group::from_gid(Gid::from_raw(id)), Ok(Some(_)));
    let running = std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
        std::fs::read_to_string(entry.path().join("status")).is_ok_and(|status| {
            status
                .lines()
                .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
                .flat_map(|l| l.split_whitespace().skip(1))
                .any(|field| field == id.to_string())
        })
    });
    let subordinate = ["/etc/subuid", "/etc/subgid"]
        .iter()
        .any(|file| std::fs::read_to_string(file).is_ok_and(|table| in_subordinate_range(&table, id)));
    !named && !running && !subordinate
}

/// Whether `id` lies in a range of an `/etc/subuid` (or subgid) table:
/// `NAME:START:COUNT` lines.
fn in_subordinate_range(table: &str, id: u32) -> bool {
    table.lines().any(|line| {
        let mut fields = line.split(':').skip(1).map(|f| f.trim().parse::<u64>());
        matches!((fields.next(), fields.next()), (Some(Ok(start)), Some(Ok(count)))
            if (start..start.saturating_add(count)).contains(&u64::from(id)))
    })
}

/// Whether this process is the machine's root, able to id-map its file
/// systems and change ids: in the machine's own user namespace (root in a
/// container's is someone else outside), with the capabilities for it (a
/// container may drop them).
fn machines_root() -> bool {
    use caps::{CapSet, Capability};
    let own_ids = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
    let able = [
        Capability::CAP_SYS_ADMIN,
        Capability::CAP_SETUID,
        Capability::CAP_SETGID,
    ]
    .into_iter()
    .all(|cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false));
    own_ids && able
}

/// Where the programs on PATH that are links lead (an installer's
/// `~/.local/bin/tool` → `../share/tool/1.0/tool`): the directories that
/// hold their targets.
fn link_targets(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten().take(10_000))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|e| std::fs::canonicalize(e.path()).ok())
        .filter_map(|target| target.parent().map(Path::to_owned))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_the_agents_ids_may_not_read_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let me = Ids {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        };
        let stranger = Ids {
            uid: 1_400_000_000,
            gid: 1_400_000_000,
        };
        let grant = |name: &str, mode: u32, is_dir: bool| {
            let path = dir.path().join(name);
            if is_dir {
                std::fs::create_dir(&path).unwrap();
            } else {
                std::fs::write(&path, b"x").unwrap();
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let closed = grant("closed", 0o700, true);
        let listable_only = grant("listable", 0o704, true);
        let open = grant("open", 0o755, true);
        let private_file = grant("private", 0o600, false);
        let shared_file = grant("shared", 0o644, false);
        let grants = [&closed, &listable_only, &open, &private_file, &shared_file].map(|p| p.clone());
        assert_eq!(
            unreadable_to(stranger, &grants),
            vec![closed, listable_only, private_file]
        );
        assert!(unreadable_to(me, &grants).is_empty(), "the owner reads them all");
    }

    #[test]
    fn an_id_in_a_subordinate_range_is_not_drawn() {
        let table = "dev:100000:65536\n# a comment\nci:1879048192:65536\nbroken line\n";
        assert!(in_subordinate_range(table, 100_000) && in_subordinate_range(table, 165_535));
        assert!(!in_subordinate_range(table, 165_536));
        assert!(in_subordinate_range(table, 1_879_048_200));
        assert!(!in_subordinate_range(table, AGENT_IDS.end - 1));
    }

    #[test]
    fn a_repositorys_settings_and_its_submodules_are_protected() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = std::fs::canonicalize(dir.path()).unwrap();
        let git = cwd.join(".git");
        for d in ["hooks", "modules/lib/hooks", "modules/lib/modules/deep", "worktrees/wt"] {
            std::fs::create_dir_all(git.join(d)).unwrap();
        }
        for f in [
            "config",
            "modules/lib/HEAD",
            "modules/lib/config",
            "modules/lib/modules/deep/HEAD",
            "modules/lib/modules/deep/config",
            "worktrees/wt/HEAD",
            "worktrees/wt/commondir",
            "worktrees/wt/config.worktree",
        ] {
            std::fs::write(git.join(f), "").unwrap();
        }
        let launcher = Launcher {
            cwd: cwd.clone(),
            ..Launcher::default()
        };
        let mut protect = gather(&Settings::default(), &launcher).protect;
        protect.sort();
        let expected: Vec<PathBuf> = [
            "config",
            "hooks",
            "modules/lib/config",
            "modules/lib/hooks",
            "modules/lib/modules/deep/config",
            "worktrees/wt/commondir",
            "worktrees/wt/config.worktree",
        ]
        .iter()
        .map(|p| git.join(p))
        .collect();
        assert_eq!(protect, expected);
    }

    #[test]
    fn paths_resolve_against_the_launchers_home_and_working_directory_and_missing_ones_drop() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let home = root.join("home");
        let cwd = root.join("app");
        std::fs::create_dir_all(home.join(".config/gh")).unwrap();
        std::fs::create_dir_all(home.join(".rustup")).unwrap();
        std::fs::create_dir_all(cwd.join("cache")).unwrap();
        std::fs::write(cwd.join("launcher.key"), "k").unwrap();
        // A program installed as a link, in a directory PATH names through
        // a link.
        std::fs::create_dir_all(home.join(".local/share/tool/1.0")).unwrap();
        std::fs::create_dir_all(home.join("dotfiles/bin")).unwrap();
        std::fs::write(home.join(".local/share/tool/1.0/tool"), "").unwrap();
        std::os::unix::fs::symlink(home.join(".local/share/tool/1.0/tool"), home.join("dotfiles/bin/tool")).unwrap();
        std::os::unix::fs::symlink(home.join("dotfiles/bin"), home.join("bin")).unwrap();
        std::os::unix::fs::symlink(home.join(".config/gh"), cwd.join("gh-link")).unwrap();
        let settings = Settings {
            hide: vec![
                PathBuf::from("~/.config/gh"),
                PathBuf::from("gh-link"),
                PathBuf::from("/nonexistent"),
            ],
            read: vec![PathBuf::from("~/.rustup")],
            write: vec![PathBuf::from("cache"), PathBuf::from("~/missing")],
            connect: vec![5432],
            variables: vec![],
        };
        let launcher = Launcher {
            cwd: cwd.clone(),
            home: Some(home.clone()),
            path_var: Some(OsString::from(format!(
                "relative/bin:{}:{}",
                home.join(".rustup").display(),
                home.join("bin").display()
            ))),
            key_files: vec![PathBuf::from("launcher.key")],
            broker_port: Some(8700),
        };
        let inputs = gather(&settings, &launcher);
        assert_eq!(inputs.cwd, cwd);
        let secrets: Vec<_> = inputs
            .secrets
            .iter()
            .filter(|s| !s.path.starts_with("/etc"))
            .map(|s| (s.path.clone(), s.is_dir))
            .collect();
        assert_eq!(
            secrets,
            vec![
                (home.join(".config/gh"), true),
                (home.join(".config/gh"), true),
                (cwd.join("launcher.key"), false),
                (home.join(".config/gh"), true),
            ],
            "links are followed, missing paths dropped, stores found in the home"
        );
        assert!(
            inputs.secrets.iter().any(|s| s.path == Path::new("/etc/shadow")),
            "the system's secrets are hidden too"
        );
        assert_eq!(inputs.read, vec![home.join(".rustup")]);
        assert_eq!(inputs.write, vec![cwd.join("cache")]);
        assert_eq!(
            inputs.tools,
            vec![
                home.join(".rustup"),
                home.join(".rustup"),
                home.join("dotfiles/bin"),
                home.join(".local/share/tool/1.0"),
            ]
        );
        assert_eq!(inputs.tool_links, vec![home.join("bin")]);
        assert_eq!(inputs.connect, vec![5432, 8700]);
    }
}
