//! `valetkey run`'s isolation of the agent: what it may read, write and
//! connect to, and what it must never see. [`plan`] is a pure function of
//! plain data (the broker's `[run]` settings and the launcher's paths,
//! gathered by `gather`); `enforce` applies a plan, once and irreversibly,
//! to the process about to become the agent.
//!
//! Landlock only allows (it cannot hide a folder inside an allowed one, and
//! the broker's data dir often lies inside the agent's working directory),
//! so secrets are hidden by mounts in a private mount namespace first, then
//! Landlock limits files and TCP ports, and seccomp refuses the sockets
//! Landlock does not cover.

mod enforce;
mod gather;
pub mod git;
mod supervise;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use enforce::{EnforceError, Gap, confine, prepare};
pub use gather::{Launcher, gather};
pub use supervise::{Forwarder, Lifeline, PASSED_ON, die_with_parent, parent_is_gone, supervise};

/// What every program needs, read-only (and executable).
pub const SYSTEM: [&str; 12] = [
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/nix/store",
    "/proc",
    "/sys",
];

/// Directories the agent gets an empty copy of, its own: what other
/// programs keep there (PostgreSQL's and Docker's sockets in /run, an
/// ssh-agent's in /tmp) does not exist for it.
pub const PRIVATE: [&str; 4] = ["/tmp", "/var/tmp", "/run", "/dev/shm"];

/// Where other tools keep real tokens, relative to the launcher's home;
/// hidden even when the home directory is exposed (an agent launched in it).
pub const CREDENTIAL_STORES: [&str; 20] = [
    ".config/valetkey",
    ".config/gh",
    ".config/hub",
    ".railway",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker/config.json",
    ".netrc",
    ".git-credentials",
    ".ssh",
    ".gnupg",
    ".password-store",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".terraform.d/credentials.tfrc.json",
];

/// Secrets of the system itself, hidden too (from an agent launched by a
/// user in their group, say).
pub const SYSTEM_SECRETS: [&str; 11] = [
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/credstore",
    "/etc/credstore.encrypted",
    "/etc/valetkey",
];

/// The device files a program needs; no disk, no other terminal.
pub const DEVICES: [&str; 8] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// Where the ids of agents launched by root are drawn from: above the
/// ranges systems give users, services and containers (systemd's end at
/// 1879048191), below its foreign range (2147352576) and the sign bit.
pub const AGENT_IDS: std::ops::Range<u32> = 1_879_048_192..2_147_352_576;

/// Toolchains in the launcher's home, readable by default so that the
/// agent's usual commands work (what is on PATH is readable too).
pub const TOOLCHAINS: [&str; 5] = [".rustup", ".cargo/bin", ".pyenv", ".nvm", ".local/bin"];

/// Environment variables that hold real tokens or reach them; `run` never
/// passes them on (the broker's own variables replace the ones it mints).
pub const TOKEN_VARIABLES: [&str; 16] = [
    "VALETKEY_AGENT_KEY",
    "VALETKEY_ADMIN_KEY",
    "VALETKEY_ADMIN_KEY_FILE",
    "VALETKEY_MASTER_KEY",
    "GH_TOKEN",
    "GITHUB_TOKEN",
    "GH_ENTERPRISE_TOKEN",
    "GITHUB_ENTERPRISE_TOKEN",
    "RAILWAY_TOKEN",
    "RAILWAY_API_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PGPASSWORD",
    "SSH_AUTH_SOCK",
    "DATABASE_URL",
];

/// What the broker's `[run]` section and the credential's database grants
/// add, as the mint answer carries them (`~/` is the launcher's home).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub hide: Vec<PathBuf>,
    #[serde(default)]
    pub read: Vec<PathBuf>,
    #[serde(default)]
    pub write: Vec<PathBuf>,
    #[serde(default)]
    pub connect: Vec<u16>,
    /// Environment variables the broker reads real tokens from: never
    /// passed on to the agent.
    #[serde(default)]
    pub variables: Vec<String>,
}

impl Settings {
    /// What the broker hands `run` with a credential: its own files and
    /// `[run]`, and the ports of the databases the credential logs in to.
    pub fn for_credential(config: &crate::config::Config, database_ports: &[u16]) -> Settings {
        let run = &config.run;
        let variables = config
            .providers
            .values()
            .flat_map(|p| p.get_ref().tokens.values())
            .filter_map(|source| match source.get_ref() {
                crate::config::TokenSource::Env(name) => Some(name.clone()),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Settings {
            hide: run.broker_files.iter().chain(&run.hide).cloned().collect(),
            read: run.read.clone(),
            write: run.write.clone(),
            connect: database_ports.iter().chain(&run.allow_connect).copied().collect(),
            variables,
        }
    }

    /// Whether the agent must not be given this environment variable: it
    /// carries a key or a real token, by its name or by its value.
    pub fn withholds(&self, name: &str, value: &str) -> Option<String> {
        if TOKEN_VARIABLES.contains(&name) || self.variables.iter().any(|v| v == name) {
            return Some("it holds a key or a real token".into());
        }
        crate::scan::scan_text(".env", &format!("{name}={value}"))
            .into_iter()
            .next()
            .map(|hit| format!("its value is {}", hit.kind))
    }
}

/// The facts [`plan`] decides from, every path absolute and resolved
/// (links followed), and existing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
    /// The broker's files, the launcher's key files, credential stores,
    /// the system's secrets and `[run] hide`.
    pub secrets: Vec<Secret>,
    /// `[run] read`.
    pub read: Vec<PathBuf>,
    /// `[run] write`.
    pub write: Vec<PathBuf>,
    /// Toolchains and the directories on PATH, and where the programs in
    /// them that are links lead: dropped, not refused, when they lie inside
    /// a secret.
    pub tools: Vec<PathBuf>,
    /// What in the working directory runs later as the launcher, outside
    /// the confinement (a repository's `.git/config`, which names programs
    /// git runs, and `.git/hooks`): kept read-only.
    pub protect: Vec<PathBuf>,
    /// Directories on PATH named through a link (`~/bin` → `dotfiles/bin`),
    /// as named: mounted back there too, read-only, when in a private
    /// directory.
    pub tool_links: Vec<PathBuf>,
    /// The broker's port, the granted databases' and `[run] allow_connect`.
    pub connect: Vec<u16>,
    /// The Unix sockets listening when the agent starts, by path.
    pub sockets: Vec<PathBuf>,
    /// Those that cannot be found by the name they were bound with (a
    /// relative name, or moved since): not hidden, so `run` names them.
    pub unlocated_sockets: Vec<String>,
    /// The entries of every directory above a secret or a socket.
    pub listings: BTreeMap<PathBuf, Vec<PathBuf>>,
    /// Which of those entries are links: no Landlock rule is made on one (a
    /// rule on a link is a rule on where it leads).
    pub links: BTreeSet<PathBuf>,
    /// Where the system's directories that are links lead (`/lib` →
    /// `/usr/lib`): the read rules are split by where they lead.
    pub resolved: BTreeMap<PathBuf, PathBuf>,
    /// Who launches the agent.
    pub launcher: Ids,
    /// Whether the launcher is the machine's root, able to id-map its file
    /// systems (not root in a container's user namespace, nor root without
    /// the capabilities).
    pub may_id_map: bool,
    /// The ids an agent launched by root runs as: drawn for this run from
    /// [`AGENT_IDS`], no user's, group's or running process's.
    pub unprivileged: Ids,
    /// Directories on the way to a grant that the unprivileged user may not
    /// pass through (a home of mode 0700), when the launcher is root.
    pub closed: Vec<PathBuf>,
    /// `[run] read` grants the unprivileged user may not read, by their own
    /// mode, when the launcher is root: `run` names them.
    pub unreadable: Vec<PathBuf>,
}

/// A user and group id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub path: PathBuf,
    pub is_dir: bool,
}

/// How the agent's process is confined, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub cwd: PathBuf,
    /// Covered by an empty tmpfs, parents first.
    pub private: Vec<PrivateDir>,
    /// Granted paths that lie in a private directory, mounted back from the
    /// real file system, parents first.
    pub bind_back: Vec<BindBack>,
    /// Covered by an empty, unreadable, read-only mount.
    pub hide: Vec<PathBuf>,
    /// Directories that hold a file hidden alone where a mount on the file
    /// would not last: covered by a tmpfs with every other entry mounted
    /// back, read-only.
    pub rebuild: Vec<Rebuild>,
    /// Mounted read-only on themselves.
    pub protect: Vec<PathBuf>,
    /// Directories between a writable grant and something hidden or
    /// protected in it,
    /// mounted on themselves so the agent cannot rename them and carry the
    /// hidden thing to a path the next launch does not hide.
    pub pin: Vec<PathBuf>,
    /// Landlock: read and execute beneath these.
    pub read: Vec<PathBuf>,
    /// Landlock: list the entries beneath these (read rules above a hidden
    /// path, split around it).
    pub list: Vec<PathBuf>,
    /// Landlock: everything beneath these.
    pub write: Vec<PathBuf>,
    /// Landlock: read, write and ioctl on these device files (and the
    /// agent's own terminals, in a private `/dev/pts`).
    pub devices: Vec<PathBuf>,
    /// Landlock: the only TCP ports `connect` may reach, on any address.
    pub connect: Vec<u16>,
    /// Who the agent runs as when that is not its launcher.
    pub agent: Option<Agent>,
    /// With `agent`: the writable grants outside the private directories,
    /// mounted on themselves with the launcher's ids shown as the agent's,
    /// so the agent may write there and what it writes stays its
    /// launcher's. (Writable grants mounted back into a private directory
    /// are id-mapped the same way.)
    pub remap: Vec<PathBuf>,
}

/// An agent launched by root runs as ids of its own: root in a user
/// namespace of its own would still be root to the files outside, owning
/// (so reading whatever their mode, and changing the mode of) everything
/// root owns in the trees Landlock lets it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// The ids the agent runs as.
    pub runs_as: Ids,
    /// The launcher's ids, which the writable grants show as `runs_as`.
    pub maps: Ids,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateDir {
    pub path: PathBuf,
    pub mode: u32,
    /// Only a way through to the grants mounted back into it: not
    /// writable, so that Landlock's rules on those grants are what decide
    /// (a rule on a directory reaches through the mounts below it).
    pub passage: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuild {
    pub dir: PathBuf,
    /// The entries mounted back (links made again).
    pub keep: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindBack {
    pub path: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "refusing to launch the agent in {}: it would be granted all of it; launch it in its project's directory",
        cwd.display()
    )]
    WorkingDirTooWide { cwd: PathBuf },
    #[error(
        "refusing to launch: the agent would be granted {}, which lies inside {}, a path that holds secrets; \
         launch it elsewhere or change `[run]`",
        grant.display(),
        secret.display()
    )]
    GrantInsideSecret { grant: PathBuf, secret: PathBuf },
    #[error(
        "refusing to launch: `[run]` grants {}, which would open too much (the root, a top-level directory, \
         the system's or your home); grant the directories the agent needs inside it",
        grant.display()
    )]
    GrantTooWide { grant: PathBuf },
    #[error(
        "refusing to launch: {} holds secrets and lies directly in {}, which the agent may write; a file there \
         cannot stay hidden (replacing it uncovers it). Move it into a directory of its own, outside the \
         agent's reach or inside it (`config/`, `keys/`)",
        file.display(),
        dir.display()
    )]
    SecretInWritableDir { file: PathBuf, dir: PathBuf },
}

/// Whether granting `path` would open what no agent needs whole: the root,
/// a top-level directory that is not a system one, the home or above it.
fn opens_too_much(path: &Path, home: Option<&PathBuf>) -> bool {
    path == Path::new("/")
        || (path.components().count() == 2 && !SYSTEM.iter().any(|s| path == Path::new(s)))
        || home.is_some_and(|h| h.starts_with(path))
}

/// Decides the agent's confinement. Refuses a working directory or a grant
/// that would open too much, any grant inside a secret (which hiding the
/// secret would take away, or granting would expose), and a secret file
/// lying directly in a directory the agent may write. A secret inside a
/// grant is hidden by a mount (a secret file by hiding its directory where
/// it can): that is why the mount namespace is not optional.
pub fn plan(inputs: &Inputs) -> Result<Plan, PlanError> {
    let cwd = inputs.cwd.clone();
    let home = inputs.home.as_ref();
    let too_wide = opens_too_much(&cwd, home)
        || SYSTEM.iter().any(|s| cwd.starts_with(s))
        || PRIVATE.iter().any(|s| cwd == Path::new(s));
    if too_wide {
        return Err(PlanError::WorkingDirTooWide { cwd });
    }
    for grant in &inputs.read {
        if opens_too_much(grant, home) {
            return Err(PlanError::GrantTooWide { grant: grant.clone() });
        }
    }
    for grant in &inputs.write {
        if opens_too_much(grant, home) || SYSTEM.iter().any(|s| grant.starts_with(s)) {
            return Err(PlanError::GrantTooWide { grant: grant.clone() });
        }
    }
    let secrets: Vec<&PathBuf> = inputs.secrets.iter().map(|s| &s.path).collect();
    let inside_secret = |grant: &Path| secrets.iter().find(|s| grant.starts_with(s)).map(|s| (*s).clone());
    for grant in std::iter::once(&cwd).chain(&inputs.read).chain(&inputs.write) {
        if let Some(secret) = inside_secret(grant) {
            return Err(PlanError::GrantInsideSecret {
                grant: grant.clone(),
                secret,
            });
        }
    }
    let system: Vec<PathBuf> = SYSTEM
        .iter()
        .map(|s| {
            inputs
                .resolved
                .get(Path::new(s))
                .cloned()
                .unwrap_or_else(|| PathBuf::from(s))
        })
        .collect();
    let tools: Vec<PathBuf> = inputs
        .tools
        .iter()
        .filter(|t| !opens_too_much(t, home))
        .chain(&system)
        .filter(|t| inside_secret(t).is_none())
        .cloned()
        .collect();

    let writable: Vec<&PathBuf> = std::iter::once(&cwd).chain(&inputs.write).collect();
    let mut private: Vec<PrivateDir> = PRIVATE
        .iter()
        .map(|p| PrivateDir {
            path: PathBuf::from(p),
            mode: if *p == "/run" { 0o755 } else { 0o1777 },
            passage: false,
        })
        // A home of `/` or in the system (a service user's) is not covered:
        // that would cover what every program needs; one of the private
        // directories is private already.
        .chain(
            home.filter(|h| {
                h.as_path() != Path::new("/")
                    && !SYSTEM.iter().any(|s| h.starts_with(s))
                    && !PRIVATE.iter().any(|p| h.as_path() == Path::new(p))
            })
            .map(|h| PrivateDir {
                path: h.clone(),
                mode: 0o700,
                passage: false,
            }),
        )
        // A directory granted whole for writing is not made private only
        // to be mounted back.
        .filter(|p| !writable.contains(&&p.path))
        .collect();
    // An agent that runs as another user passes a directory closed to it
    // only as a private one, with its grants mounted back: it reaches
    // nothing more there than it could as itself.
    // Root in a container's user namespace, or without the capabilities,
    // may not id-map the machine's file systems: its agent runs as that
    // root (`run` warns).
    let runs_as_another = inputs.launcher.uid == 0 && inputs.may_id_map;
    let closed: Vec<PrivateDir> = outermost(inputs.closed.iter().filter(|c| c.as_path() != Path::new("/")))
        .into_iter()
        .filter(|_| runs_as_another)
        .filter(|c| {
            !private
                .iter()
                .map(|p| &p.path)
                .chain(writable.iter().copied())
                .any(|open| c.starts_with(open))
        })
        .map(|path| PrivateDir {
            path,
            mode: 0o755,
            passage: true,
        })
        .collect();
    // A grant that is such a directory, or holds one, opens nothing to the
    // agent (it could not pass it) and would cover what is mounted back.
    let passed_only = |g: &PathBuf| closed.iter().any(|c| c.path.starts_with(g));
    let read_grants: Vec<PathBuf> = inputs.read.iter().filter(|g| !passed_only(g)).cloned().collect();
    let mut tools = tools;
    tools.retain(|t| !passed_only(t));
    private.extend(closed);
    private.sort_by_key(|p| p.path.components().count());

    let mut grants: Vec<BindBack> = writable
        .iter()
        .map(|p| BindBack {
            path: (*p).clone(),
            writable: true,
        })
        .chain(read_grants.iter().chain(&tools).map(|p| BindBack {
            path: p.clone(),
            writable: false,
        }))
        .chain(
            inputs
                .tool_links
                .iter()
                .filter(|l| !opens_too_much(l, home))
                .map(|p| BindBack {
                    path: p.clone(),
                    writable: false,
                }),
        )
        .filter(|g| private.iter().any(|p| g.path.starts_with(&p.path)))
        .collect();
    grants.sort_by_key(|g| (g.path.components().count(), !g.writable));
    let mut bind_back: Vec<BindBack> = Vec::new();
    for g in grants {
        if !bind_back.iter().any(|b| g.path.starts_with(&b.path)) {
            bind_back.push(g);
        }
    }

    // A file is hidden with its directory: a mount on a file comes off when
    // the file is replaced (an editor saving it, a key rotated). Where the
    // directory is one the agent needs, the file is hidden alone, unless
    // the agent could write there.
    let reached: Vec<&PathBuf> = tools
        .iter()
        .chain(&read_grants)
        .chain(writable.iter().copied())
        .chain(private.iter().map(|p| &p.path))
        .chain(home)
        .collect();
    let needed = |dir: &Path| reached.iter().any(|g| g.starts_with(dir));
    let mut hide = Vec::new();
    // The files hidden by a mount on themselves, not on their directory.
    let mut alone = BTreeSet::new();
    for secret in &inputs.secrets {
        let target = match (secret.is_dir, secret.path.parent()) {
            (true, _) | (false, None) => secret.path.clone(),
            (false, Some(dir)) => {
                if writable.iter().any(|w| *w == dir) {
                    return Err(PlanError::SecretInWritableDir {
                        file: secret.path.clone(),
                        dir: dir.to_owned(),
                    });
                }
                if needed(dir) {
                    secret.path.clone()
                } else {
                    dir.to_owned()
                }
            }
        };
        if target == secret.path && !secret.is_dir {
            alone.insert(target.clone());
        }
        hide.push(target);
    }
    // A Unix socket listening at launch reaches its service past the broker
    // (Landlock below ABI 9 does not cover Unix sockets): hidden like a
    // secret file, never refused, and alone where hiding its directory could
    // take away what the agent reads or works on.
    let granted = |dir: &Path| reached.iter().any(|g| g.starts_with(dir) || dir.starts_with(g));
    for socket in &inputs.sockets {
        match socket.parent() {
            Some(dir) if !granted(dir) => hide.push(dir.to_owned()),
            _ => {
                alone.insert(socket.clone());
                hide.push(socket.clone());
            }
        }
    }
    // A secret in a private directory is gone with it, unless a grant
    // brought its directory back.
    let reachable =
        |s: &Path| !private.iter().any(|p| s.starts_with(&p.path)) || bind_back.iter().any(|b| s.starts_with(&b.path));
    let mut hide = sorted(hide.into_iter().filter(|s| reachable(s)));
    // Under a private directory the agent may write, Landlock's rule on it
    // reaches every mount below: a file hidden alone in what comes back
    // there would be readable once replaced from outside. Its directory is
    // rebuilt instead (a tmpfs with every other entry mounted back), so its
    // name is gone whatever takes its place.
    let fragile = |h: &Path| {
        alone.contains(h)
            && private.iter().any(|p| !p.passage && h.starts_with(&p.path))
            && bind_back
                .iter()
                .any(|b| !b.writable && h.starts_with(&b.path) && h != b.path)
    };
    let mut left_out: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for h in hide.iter().filter(|h| fragile(h)) {
        if let Some(dir) = h.parent() {
            left_out.entry(dir.to_owned()).or_default().insert(h.clone());
        }
    }
    hide.retain(|h| !fragile(h));
    let rebuild: Vec<Rebuild> = left_out
        .into_iter()
        .map(|(dir, out)| Rebuild {
            keep: inputs
                .listings
                .get(&dir)
                .into_iter()
                .flatten()
                .filter(|e| !out.contains(*e))
                .cloned()
                .collect(),
            dir,
        })
        .collect();
    let protect = sorted(inputs.protect.iter().filter(|p| reachable(p)).cloned());
    let pin = sorted(hide.iter().chain(&protect).flat_map(|h| {
        writable
            .iter()
            .filter(|w| h.starts_with(w) && h != **w)
            .flat_map(|w| h.ancestors().skip(1).take_while(move |a| a != w).map(Path::to_owned))
            .collect::<Vec<_>>()
    }));

    let (read, list) = split_around(
        tools.into_iter().chain(read_grants.iter().cloned()).collect(),
        &hide,
        &inputs.listings,
        &inputs.links,
    );
    let write = sorted(
        writable
            .into_iter()
            .cloned()
            .chain(private.iter().filter(|p| !p.passage).map(|p| p.path.clone())),
    );
    let agent = runs_as_another.then_some(Agent {
        runs_as: inputs.unprivileged,
        maps: inputs.launcher,
    });
    let remap = match agent {
        None => Vec::new(),
        Some(_) => outermost(write.iter().filter(|w| !private.iter().any(|p| w.starts_with(&p.path)))),
    };
    let connect: Vec<u16> = inputs
        .connect
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(Plan {
        cwd,
        private,
        bind_back,
        hide,
        rebuild,
        protect,
        pin,
        read,
        list,
        write,
        devices: DEVICES.iter().map(PathBuf::from).collect(),
        connect,
        agent,
        remap,
    })
}

fn sorted(paths: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    paths.collect::<BTreeSet<_>>().into_iter().collect()
}

/// Landlock's rules hold to files, not names: a hidden path replaced from
/// outside while the agent runs (`passwd` rewriting `/etc/shadow`) comes out
/// from under its mount, and a rule on its directory would let the agent
/// read what took its place. So a read rule above a hidden path becomes a
/// rule to list its directories and one to read each other entry (by the
/// listings; a directory not listed is listed only).
fn split_around(
    reads: Vec<PathBuf>,
    hidden: &[PathBuf],
    listings: &BTreeMap<PathBuf, Vec<PathBuf>>,
    links: &BTreeSet<PathBuf>,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut read, mut list) = (BTreeSet::new(), BTreeSet::new());
    let mut todo = reads;
    while let Some(path) = todo.pop() {
        if hidden.contains(&path) || links.contains(&path) {
            continue;
        }
        if !hidden.iter().any(|h| h.starts_with(&path)) {
            read.insert(path);
            continue;
        }
        todo.extend(listings.get(&path).into_iter().flatten().cloned());
        list.insert(path);
    }
    (read.into_iter().collect(), list.into_iter().collect())
}

/// The paths not inside another of them, sorted.
fn outermost<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
    let all = sorted(paths.cloned());
    all.iter()
        .filter(|p| !all.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn dir(s: &str) -> Secret {
        Secret {
            path: p(s),
            is_dir: true,
        }
    }

    fn file(s: &str) -> Secret {
        Secret {
            path: p(s),
            is_dir: false,
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            cwd: p("/work/app"),
            home: Some(p("/home/dev")),
            secrets: vec![
                dir("/work/app/valetkey-data"),
                file("/work/app/config/valetkey.toml"),
                dir("/home/dev/.config/gh"),
                file("/home/dev/.config/valetkey/launcher.key"),
                file("/etc/shadow"),
            ],
            read: vec![],
            write: vec![],
            tools: vec![p("/home/dev/.cargo/bin"), p("/usr/local/bin")],
            tool_links: vec![],
            protect: vec![],
            connect: vec![8700, 5432, 8700],
            launcher: Ids { uid: 1000, gid: 1000 },
            may_id_map: true,
            unprivileged: AGENT,
            closed: vec![],
            unreadable: vec![],
            sockets: vec![],
            unlocated_sockets: vec![],
            listings: BTreeMap::from([(p("/etc"), vec![p("/etc/passwd"), p("/etc/shadow"), p("/etc/ssl")])]),
            resolved: BTreeMap::new(),
            links: BTreeSet::new(),
        }
    }

    const AGENT: Ids = Ids {
        uid: 1_400_000_000,
        gid: 1_400_000_000,
    };

    #[test]
    fn listening_unix_sockets_are_hidden_with_their_directory_where_the_agent_has_nothing() {
        let plan = plan(&Inputs {
            sockets: vec![
                p("/var/lib/mysql/mysql.sock"),
                p("/run/postgresql/.s.PGSQL.5432"),
                p("/work/app/tmp/dev.sock"),
                p("/usr/local/lib/helper/agent.sock"),
                p("/srv.sock"),
            ],
            ..inputs()
        })
        .unwrap();
        for hidden in [
            "/var/lib/mysql",
            "/work/app/tmp/dev.sock",
            "/usr/local/lib/helper/agent.sock",
            "/srv.sock",
        ] {
            assert!(plan.hide.contains(&p(hidden)), "{hidden}: {:?}", plan.hide);
        }
        assert!(
            !plan.hide.iter().any(|h| h.starts_with("/run")),
            "a socket in a private directory is gone with it: {:?}",
            plan.hide
        );
        assert!(plan.pin.contains(&p("/work/app/tmp")), "{:?}", plan.pin);
    }

    #[test]
    fn a_file_hidden_alone_in_what_comes_back_into_a_writable_private_directory_is_left_out_of_a_rebuild() {
        let plan = plan(&Inputs {
            cwd: p("/tmp/work/app"),
            tools: vec![p("/tmp/work/tools")],
            secrets: vec![file("/tmp/work/tools/hidden.key"), file("/etc/shadow")],
            listings: BTreeMap::from([(
                p("/tmp/work/tools"),
                vec![
                    p("/tmp/work/tools/hidden.key"),
                    p("/tmp/work/tools/run"),
                    p("/tmp/work/tools/link"),
                ],
            )]),
            links: BTreeSet::from([p("/tmp/work/tools/link")]),
            ..inputs()
        })
        .unwrap();
        assert_eq!(
            plan.rebuild,
            vec![Rebuild {
                dir: p("/tmp/work/tools"),
                keep: vec![p("/tmp/work/tools/run"), p("/tmp/work/tools/link")],
            }]
        );
        assert!(
            !plan.hide.contains(&p("/tmp/work/tools/hidden.key")),
            "its name is gone instead"
        );
        assert!(
            plan.hide.contains(&p("/etc/shadow")),
            "outside a writable private directory, the split holds"
        );
    }

    #[test]
    fn a_developer_runs_the_agent_as_themselves() {
        let plan = plan(&inputs()).unwrap();
        assert_eq!(plan.agent, None);
        assert!(plan.remap.is_empty());
    }

    #[test]
    fn a_directory_closed_to_the_agents_user_becomes_private_with_its_grants_mounted_back() {
        let closed = Inputs {
            write: vec![p("/srv/team/cache")],
            read: vec![p("/srv/team")],
            tools: vec![p("/srv/team"), p("/usr/local/bin")],
            closed: vec![p("/srv/team"), p("/srv/team/cache/deeper"), p("/work/app/sub"), p("/")],
            ..inputs()
        };
        let as_root = plan(&Inputs {
            launcher: Ids { uid: 0, gid: 0 },
            ..closed.clone()
        })
        .unwrap();
        let private: Vec<_> = as_root.private.iter().map(|d| d.path.clone()).collect();
        assert!(private.contains(&p("/srv/team")), "{private:?}");
        assert!(
            !as_root.write.contains(&p("/srv/team")) && !as_root.read.contains(&p("/srv/team")),
            "a passage grants nothing itself: the rules on what is mounted back into it decide"
        );
        assert!(
            !private.contains(&p("/work/app/sub")) && !private.contains(&p("/srv/team/cache/deeper")),
            "what lies in a writable grant is the agent's through the id-mapped mount: {private:?}"
        );
        assert!(!private.contains(&p("/")));
        assert!(as_root.bind_back.contains(&BindBack {
            path: p("/srv/team/cache"),
            writable: true
        }));
        assert_eq!(as_root.remap, vec![p("/work/app")]);
        assert!(
            !as_root.read.contains(&p("/srv/team")) && !as_root.bind_back.iter().any(|b| b.path == p("/srv/team")),
            "a grant of a directory the agent only passes through is dropped: {:?}",
            as_root.bind_back
        );
        let as_developer = plan(&closed).unwrap();
        assert!(!as_developer.private.iter().any(|d| d.path == p("/srv/team")));
    }

    #[test]
    fn root_runs_the_agent_as_ids_of_its_own_with_its_writable_grants_id_mapped() {
        let root = Ids { uid: 0, gid: 0 };
        let plan = plan(&Inputs {
            launcher: root,
            write: vec![p("/srv/cache"), p("/work/app/build"), p("/tmp/scratch")],
            ..inputs()
        })
        .unwrap();
        assert_eq!(
            plan.agent,
            Some(Agent {
                runs_as: AGENT,
                maps: root
            })
        );
        assert_eq!(
            plan.remap,
            vec![p("/srv/cache"), p("/work/app")],
            "the outermost writable grants outside the private directories; /tmp/scratch comes back id-mapped"
        );
        assert!(plan.bind_back.contains(&BindBack {
            path: p("/tmp/scratch"),
            writable: true
        }));
    }

    #[test]
    fn root_in_a_containers_user_namespace_runs_the_agent_as_itself() {
        let in_a_container = plan(&Inputs {
            launcher: Ids { uid: 0, gid: 0 },
            may_id_map: false,
            closed: vec![p("/srv/team")],
            ..inputs()
        })
        .unwrap();
        assert_eq!(
            in_a_container.agent, None,
            "it may not id-map the machine's file systems"
        );
        assert!(in_a_container.remap.is_empty());
        assert!(!in_a_container.private.iter().any(|d| d.path == p("/srv/team")));
    }

    #[test]
    fn the_readme_layout_hides_the_data_dir_and_config_inside_the_working_directory() {
        let plan = plan(&inputs()).unwrap();
        assert_eq!(
            plan.hide,
            vec![p("/etc/shadow"), p("/work/app/config"), p("/work/app/valetkey-data")],
            "a file is hidden with its directory, unless the agent needs that"
        );
        assert_eq!(plan.write.first(), Some(&p("/dev/shm")));
        assert!(plan.write.contains(&p("/work/app")));
        assert!(plan.write.contains(&p("/home/dev")), "the private home is writable");
        assert!(!plan.read.iter().any(|r| r.starts_with("/work")), "{:?}", plan.read);
        assert_eq!(plan.connect, vec![5432, 8700]);
    }

    #[test]
    fn the_home_directory_is_private_and_toolchains_in_it_come_back_read_only() {
        let plan = plan(&inputs()).unwrap();
        let homes: Vec<_> = plan.private.iter().filter(|d| d.path == p("/home/dev")).collect();
        assert_eq!(homes.len(), 1);
        assert_eq!(homes[0].mode, 0o700);
        assert_eq!(
            plan.bind_back,
            vec![BindBack {
                path: p("/home/dev/.cargo/bin"),
                writable: false
            }]
        );
        assert!(plan.read.contains(&p("/home/dev/.cargo/bin")));
        assert!(
            plan.private
                .windows(2)
                .all(|w| { w[0].path.components().count() <= w[1].path.components().count() })
        );
    }

    #[test]
    fn a_path_directory_named_through_a_link_comes_back_where_path_names_it() {
        let mut i = inputs();
        i.tools.push(p("/home/dev/dotfiles/bin"));
        i.tool_links.push(p("/home/dev/bin"));
        let plan = plan(&i).unwrap();
        for back in ["/home/dev/bin", "/home/dev/dotfiles/bin"] {
            assert!(
                plan.bind_back.contains(&BindBack {
                    path: p(back),
                    writable: false
                }),
                "{back}: {:?}",
                plan.bind_back
            );
        }
        assert!(plan.read.contains(&p("/home/dev/dotfiles/bin")));
    }

    #[test]
    fn a_repositorys_config_and_hooks_stay_as_they_were_and_in_place() {
        let mut i = inputs();
        i.protect = vec![p("/work/app/.git/config"), p("/work/app/.git/hooks")];
        let plan = plan(&i).unwrap();
        assert_eq!(plan.protect, i.protect);
        assert_eq!(
            plan.pin,
            vec![p("/work/app/.git")],
            "the repository cannot be swapped for another"
        );
    }

    #[test]
    fn what_holds_a_hidden_path_inside_the_working_directory_is_pinned() {
        let mut i = inputs();
        i.secrets.push(dir("/work/app/infra/vk/data"));
        let plan = plan(&i).unwrap();
        assert!(plan.hide.contains(&p("/work/app/infra/vk/data")));
        assert_eq!(plan.pin, vec![p("/work/app/infra"), p("/work/app/infra/vk")]);
        // Directly in the working directory, the hidden path is its own mount.
        assert!(super::plan(&inputs()).unwrap().pin.is_empty());
    }

    #[test]
    fn a_home_that_is_the_root_or_in_the_system_is_not_covered() {
        let mut i = inputs();
        i.home = Some(p("/tmp"));
        let covered = plan(&i).unwrap();
        assert_eq!(
            covered.private.iter().filter(|d| d.path == p("/tmp")).count(),
            1,
            "a home that is a private directory is covered once"
        );
        for home in ["/", "/usr/lib/svc", "/etc/x"] {
            let mut i = inputs();
            i.home = Some(p(home));
            let plan = plan(&i).unwrap();
            assert!(!plan.private.iter().any(|d| d.path == p(home)), "{home}");
        }
    }

    #[test]
    fn a_secret_file_directly_in_a_writable_directory_is_refused() {
        let mut i = inputs();
        i.secrets.push(file("/work/app/launcher.key"));
        assert_eq!(
            plan(&i),
            Err(PlanError::SecretInWritableDir {
                file: p("/work/app/launcher.key"),
                dir: p("/work/app"),
            })
        );
        // Above the working directory, the file is hidden alone.
        let mut i = inputs();
        i.secrets.push(file("/work/launcher.key"));
        assert!(plan(&i).unwrap().hide.contains(&p("/work/launcher.key")));
    }

    #[test]
    fn grants_that_open_too_much_are_refused_and_such_tool_directories_dropped() {
        for (read, write) in [
            (Some("/home"), None),
            (None, Some("/var")),
            (Some("/home/dev"), None),
            (None, Some("/usr/local")),
        ] {
            let mut i = inputs();
            i.read.extend(read.map(p));
            i.write.extend(write.map(p));
            assert!(
                matches!(plan(&i), Err(PlanError::GrantTooWide { .. })),
                "{read:?} {write:?}"
            );
        }
        let mut i = inputs();
        i.tools.extend([p("/"), p("/home/dev"), p("/srv")]);
        let plan = plan(&i).unwrap();
        for wide in ["/", "/home/dev", "/srv"] {
            assert!(!plan.read.contains(&p(wide)), "{wide}");
        }
        assert!(
            plan.private.iter().any(|d| d.path == p("/home/dev")),
            "the home stays private"
        );
    }

    #[test]
    fn a_working_directory_in_a_temporary_directory_is_bound_back_and_its_secrets_hidden() {
        let mut i = inputs();
        i.cwd = p("/tmp/t1/app");
        i.secrets.push(dir("/tmp/t1/app/valetkey-data"));
        i.secrets.push(file("/tmp/elsewhere/token"));
        let plan = plan(&i).unwrap();
        assert!(plan.bind_back.contains(&BindBack {
            path: p("/tmp/t1/app"),
            writable: true
        }));
        assert!(plan.hide.contains(&p("/tmp/t1/app/valetkey-data")));
        assert!(
            !plan.hide.iter().any(|h| h.starts_with("/tmp/elsewhere")),
            "gone with the private /tmp"
        );
    }

    #[test]
    fn a_grant_inside_a_secret_is_refused() {
        let mut i = inputs();
        i.cwd = p("/work/app/valetkey-data/x");
        assert_eq!(
            plan(&i),
            Err(PlanError::GrantInsideSecret {
                grant: p("/work/app/valetkey-data/x"),
                secret: p("/work/app/valetkey-data"),
            })
        );
        let mut i = inputs();
        i.write.push(p("/home/dev/.config/gh"));
        assert!(matches!(plan(&i), Err(PlanError::GrantInsideSecret { .. })));
        let mut i = inputs();
        i.read.push(p("/work/app/valetkey-data"));
        assert!(matches!(plan(&i), Err(PlanError::GrantInsideSecret { .. })));
    }

    #[test]
    fn a_tool_directory_inside_a_secret_is_dropped_not_refused() {
        let mut i = inputs();
        i.tools.push(p("/work/app/valetkey-data/bin"));
        let plan = plan(&i).unwrap();
        assert!(!plan.read.contains(&p("/work/app/valetkey-data/bin")));
    }

    #[test]
    fn working_directories_that_would_grant_the_system_are_refused() {
        for cwd in [
            "/",
            "/etc",
            "/usr/local/src",
            "/tmp",
            "/run",
            "/home",
            "/srv",
            "/home/dev",
        ] {
            let mut i = inputs();
            i.cwd = p(cwd);
            assert_eq!(plan(&i), Err(PlanError::WorkingDirTooWide { cwd: p(cwd) }), "{cwd}");
        }
    }

    #[test]
    fn a_read_rule_above_a_hidden_path_is_split_around_it() {
        let split = plan(&Inputs {
            secrets: vec![file("/etc/shadow"), dir("/etc/ssl/private")],
            listings: BTreeMap::from([
                (p("/etc"), vec![p("/etc/passwd"), p("/etc/shadow"), p("/etc/ssl")]),
                (p("/etc/ssl"), vec![p("/etc/ssl/certs"), p("/etc/ssl/private")]),
            ]),
            ..inputs()
        })
        .unwrap();
        assert_eq!(split.list, vec![p("/etc"), p("/etc/ssl")]);
        assert!(split.read.contains(&p("/etc/passwd")) && split.read.contains(&p("/etc/ssl/certs")));
        for gone in ["/etc", "/etc/ssl", "/etc/shadow", "/etc/ssl/private"] {
            assert!(!split.read.contains(&p(gone)), "{gone}: {:?}", split.read);
        }
        assert!(
            split.read.contains(&p("/usr")),
            "what holds no hidden path is read whole"
        );
        // A system directory that is a link is split where it leads.
        let merged = plan(&Inputs {
            sockets: vec![p("/usr/lib/helper/agent.sock")],
            resolved: BTreeMap::from([(p("/lib"), p("/usr/lib"))]),
            listings: BTreeMap::from([
                (p("/usr"), vec![p("/usr/bin"), p("/usr/lib")]),
                (
                    p("/usr/lib"),
                    vec![p("/usr/lib/helper"), p("/usr/lib/x86_64-linux-gnu")],
                ),
                (
                    p("/usr/lib/helper"),
                    vec![p("/usr/lib/helper/agent.sock"), p("/usr/lib/helper/tool")],
                ),
            ]),
            ..inputs()
        })
        .unwrap();
        assert!(merged.list.contains(&p("/usr/lib")), "{:?}", merged.list);
        assert!(!merged.read.contains(&p("/lib")) && !merged.read.contains(&p("/usr/lib")));
        assert!(merged.read.contains(&p("/usr/lib/helper/tool")));
        let unlisted = plan(&Inputs {
            listings: BTreeMap::new(),
            ..inputs()
        })
        .unwrap();
        assert!(unlisted.list.contains(&p("/etc")) && !unlisted.read.iter().any(|r| r.starts_with("/etc")));
    }

    #[test]
    fn the_system_is_read_only_and_devices_are_their_own_rule() {
        let plan = plan(&inputs()).unwrap();
        for s in SYSTEM {
            assert!(plan.read.contains(&p(s)) || plan.list.contains(&p(s)), "{s}");
            assert!(!plan.write.contains(&p(s)), "{s}");
        }
        assert!(plan.devices.contains(&p("/dev/null")) && plan.devices.contains(&p("/dev/pts")));
        assert!(!plan.devices.contains(&p("/dev")), "no disk and no other terminal");
    }
}
