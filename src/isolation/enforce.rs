//! Applies a [`Plan`], in two processes and in the order the mechanisms
//! depend on each other. `run`'s helper, a fresh single-threaded process,
//! makes the user, mount and PID namespaces and the mounts ([`prepare`]);
//! its child, PID 1 of the new PID namespace, mounts that namespace's
//! /proc, drops every capability and sets no_new_privs, then applies
//! Landlock and seccomp, which also forbids mounting ([`confine`]), and
//! starts the agent's command.
//!
//! A launcher that is not root gets a user namespace, the only way it may
//! mount, with its own ids mapped to themselves: the agent runs as its
//! launcher. A root launcher's agent runs as an unprivileged user instead
//! (PID 1 changes its ids before it confines itself), because root in a
//! user namespace is still root to the files outside; its writable grants
//! are id-mapped mounts that show root's files as the agent's. Either way
//! the agent holds no capability over any process outside, so it cannot
//! read another process's memory, environment or root directory through
//! /proc (which would step around the mounts). The PID namespace ends
//! every process the agent left behind when its command exits, and shows it
//! only its own processes.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, LandlockStatus, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use super::{Agent, Ids, Plan};

/// The newest Landlock ABI whose rights this plan was written for; older
/// kernels enforce what they can (and `enforce` names what they cannot).
const LANDLOCK_ABI: ABI = ABI::V9;

/// A mechanism the kernel lacks, and what that leaves within the agent's
/// reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub mechanism: &'static str,
    pub leaves_open: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(
        "cannot make a private mount namespace for the agent ({source}), so the broker's keys and other tools' \
         tokens would stay in its reach; allow user namespaces (sysctl kernel.unprivileged_userns_clone=1, or \
         kernel.apparmor_restrict_unprivileged_userns=0), or launch with --no-isolation"
    )]
    Namespace { source: std::io::Error },
    #[error("cannot {action} {}: {source}", path.display())]
    Mount {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot show {}'s files as the agent's ({source}): one of the file systems there ({mounts}) cannot be \
         id-mapped. Launch the agent as an unprivileged user rather than root, or with --no-isolation",
        path.display()
    )]
    IdMap {
        path: PathBuf,
        mounts: String,
        source: std::io::Error,
    },
    #[error("cannot drop the agent's privileges: {0}")]
    Privileges(String),
    #[error("cannot apply Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("cannot apply the seccomp filter: {0}")]
    Seccomp(String),
}

/// Moves the current process into new mount and PID namespaces, and a user
/// namespace unless the agent runs as another user (its next child is the
/// PID namespace's first process), and makes the plan's mounts.
/// Irreversible: call it only in `run`'s helper, while it has one thread.
pub fn prepare(plan: &Plan) -> Result<(), EnforceError> {
    // Made before the PID namespace: the process that holds it for a
    // moment would otherwise be that namespace's first.
    let idmap = plan.agent.as_ref().map(id_mapping).transpose()?;
    namespaces(idmap.is_none())?;
    mounts(plan, idmap.as_ref())?;
    if idmap.is_none() {
        keep_for_init()?;
    }
    Ok(())
}

/// What PID 1 needs of this process's capabilities in the user namespace,
/// kept across its execution: it runs there as its launcher, not as the
/// namespace's root, so executing a program would drop them all. It mounts
/// its /proc, then empties the bounding set.
fn keep_for_init() -> Result<(), EnforceError> {
    use caps::{CapSet, Capability};
    for cap in [Capability::CAP_SYS_ADMIN, Capability::CAP_SETPCAP] {
        caps::raise(None, CapSet::Inheritable, cap)
            .and_then(|()| caps::raise(None, CapSet::Ambient, cap))
            .map_err(|e| EnforceError::Privileges(e.to_string()))?;
    }
    Ok(())
}

/// Confines the current process, PID 1 of the namespaces [`prepare`] made:
/// its own /proc, no privileges, Landlock, seccomp. Irreversible; what it
/// starts inherits all of it.
pub fn confine(plan: &Plan) -> Result<Vec<Gap>, EnforceError> {
    let proc = Path::new("/proc");
    mount(
        Some("proc"),
        proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_error("mount the agent's own", proc))?;
    drop_privileges(plan.agent.as_ref())?;
    let mut gaps = landlock(plan)?;
    gaps.extend(seccomp()?);
    Ok(gaps)
}

fn namespaces(user: bool) -> Result<(), EnforceError> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let failed = |source: std::io::Error| EnforceError::Namespace { source };
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID;
    if user {
        unshare(flags | CloneFlags::CLONE_NEWUSER).map_err(|e| failed(e.into()))?;
        let write = |file: &str, text: String| std::fs::write(file, text).map_err(failed);
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
        write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    } else {
        unshare(flags).map_err(|e| failed(e.into()))?;
    }
    // Nothing mounted from here on propagates back to the launcher's view.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| failed(e.into()))
}

fn mount_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> EnforceError + 'a {
    move |e| EnforceError::Mount {
        action,
        path: path.to_owned(),
        source: std::io::Error::from(e),
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EnforceError + 'a {
    move |source| EnforceError::Mount {
        action,
        path: path.to_owned(),
        source,
    }
}

fn mounts(plan: &Plan, idmap: Option<&OwnedFd>) -> Result<(), EnforceError> {
    let owner = plan.agent.map(|a| a.runs_as);
    // What comes back into a private directory is opened before the
    // directory is covered.
    let mut sources: Vec<(OwnedFd, bool)> = Vec::new();
    for b in &plan.bind_back {
        sources.push((open_path(&b.path)?, b.path.is_dir()));
    }
    let mut hidden_file = None;
    for dir in &plan.private {
        if !dir.path.is_dir() {
            if !plan
                .private
                .iter()
                .any(|p| p.path != dir.path && dir.path.starts_with(&p.path))
            {
                continue;
            }
            std::fs::create_dir_all(&dir.path).map_err(io_error("create", &dir.path))?;
        }
        empty_tmpfs(&dir.path, dir.mode, owner, "make a private")?;
        if hidden_file.is_none() {
            // The empty, unreadable file every hidden file is covered with.
            let file = dir.path.join(".valetkey-hidden");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o000)
                .open(&file)
                .map_err(io_error("create", &file))?;
            hidden_file = Some(file);
        }
    }
    for (b, (fd, is_dir)) in plan.bind_back.iter().zip(&sources) {
        if *is_dir {
            create_dirs(&b.path, owner)?;
        } else {
            if let Some(parent) = b.path.parent() {
                create_dirs(parent, owner)?;
            }
            std::fs::File::create(&b.path).map_err(io_error("create", &b.path))?;
        }
        match idmap.filter(|_| b.writable) {
            Some(idmap) => attach_id_mapped(fd, &b.path, idmap)?,
            None => {
                let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
                mount(
                    Some(source.as_str()),
                    &b.path,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(mount_error("mount back", &b.path))?;
            }
        }
        if !b.writable {
            read_only(&b.path)?;
        }
    }
    drop(sources);
    if let Some(idmap) = idmap {
        for path in &plan.remap {
            attach_id_mapped(&open_path(path)?, path, idmap)?;
        }
    }
    for r in &plan.rebuild {
        rebuild(r, owner)?;
    }
    // A mount point cannot be renamed: what holds a hidden path stays put.
    for path in &plan.pin {
        onto_itself(path, "pin")?;
    }
    for path in &plan.protect {
        onto_itself(path, "protect")?;
        read_only(path)?;
    }
    private_terminals()?;
    if let (Some(agent), Some(dir)) = (plan.agent, plan.private.first()) {
        name_the_agent(agent.runs_as, &dir.path)?;
    }
    for path in &plan.hide {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if meta.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=0,size=4k"),
            )
            .map_err(mount_error("hide", path))?;
        } else {
            let Some(file) = &hidden_file else {
                return Err(EnforceError::Mount {
                    action: "hide",
                    path: path.clone(),
                    source: std::io::Error::other("no private directory to make the cover in"),
                });
            };
            mount(Some(file), path, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(mount_error("hide", path))?;
            read_only(path)?;
        }
    }
    std::env::set_current_dir(&plan.cwd).map_err(io_error("enter", &plan.cwd))
}

/// Covers `path` with an empty tmpfs of `mode`, the agent's when it runs as
/// another user than the one making it.
fn empty_tmpfs(path: &Path, mode: u32, owner: Option<Ids>, action: &'static str) -> Result<(), EnforceError> {
    let mut data = format!("mode={mode:o}");
    if let Some(Ids { uid, gid }) = owner {
        data.push_str(&format!(",uid={uid},gid={gid}"));
    }
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(mount_error(action, path))
}

/// Covers a directory with a tmpfs holding its kept entries: each mounted
/// back (a link made again), then all of it read-only. What is left out is
/// gone by name, whatever later takes that name in the real directory.
fn rebuild(r: &super::Rebuild, owner: Option<Ids>) -> Result<(), EnforceError> {
    enum Entry {
        Link(PathBuf),
        Mount(OwnedFd, bool),
    }
    let mut entries = Vec::new();
    for path in &r.keep {
        let (Some(name), Ok(meta)) = (path.file_name(), std::fs::symlink_metadata(path)) else {
            continue;
        };
        let entry = if meta.file_type().is_symlink() {
            Entry::Link(std::fs::read_link(path).map_err(io_error("read", path))?)
        } else {
            Entry::Mount(open_path(path)?, meta.is_dir())
        };
        entries.push((r.dir.join(name), entry));
    }
    empty_tmpfs(&r.dir, 0o755, owner, "rebuild")?;
    for (at, entry) in entries {
        match entry {
            Entry::Link(target) => std::os::unix::fs::symlink(&target, &at).map_err(io_error("link", &at))?,
            Entry::Mount(fd, is_dir) => {
                if is_dir {
                    std::fs::create_dir(&at).map_err(io_error("create", &at))?;
                } else {
                    std::fs::File::create(&at).map_err(io_error("create", &at))?;
                }
                let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
                mount(
                    Some(source.as_str()),
                    &at,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(mount_error("mount back", &at))?;
            }
        }
    }
    read_only(&r.dir)
}

fn open_path(path: &Path) -> Result<OwnedFd, EnforceError> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(mount_error("open", path))
}

/// Creates `dir` and its missing parents, owned by `owner` (an agent that
/// runs as another user than the one making them owns what it is given).
fn create_dirs(dir: &Path, owner: Option<Ids>) -> Result<(), EnforceError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    for path in missing.into_iter().rev() {
        std::fs::create_dir(path).map_err(io_error("create", path))?;
        if let Some(Ids { uid, gid }) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_error("give the agent", path))?;
        }
    }
    Ok(())
}

/// A user namespace whose only mapping shows the launcher's ids as the
/// agent's: what an id-mapped mount is made with. A child made for the
/// purpose enters a new user namespace; this process, privileged outside
/// it, writes the mapping and keeps a handle on the namespace.
fn id_mapping(agent: &Agent) -> Result<OwnedFd, EnforceError> {
    use nix::unistd::{ForkResult, fork, pipe, read, write};
    let failed = |source: std::io::Error| EnforceError::Namespace { source };
    let (ready_r, ready_w) = pipe().map_err(|e| failed(e.into()))?;
    let (hold_r, hold_w) = pipe().map_err(|e| failed(e.into()))?;
    // SAFETY: `prepare` runs in `run`'s helper while it has one thread, and
    // the child only makes system calls before it exits.
    match unsafe { fork() }.map_err(|e| failed(e.into()))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            let made = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = write(&ready_w, &[u8::from(made)]);
            // Until the parent has its handle (and closes its end).
            let _ = read(&hold_r, &mut [0u8]);
            // SAFETY: ends the child without running the parent's exit
            // handlers or destructors.
            unsafe { nix::libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(hold_r);
            let mut made = [0u8];
            let answered = read(&ready_r, &mut made).map_err(|e| failed(e.into()));
            let handle = answered.and_then(|n| {
                if n != 1 || made[0] != 1 {
                    return Err(failed(std::io::Error::other("cannot make a user namespace")));
                }
                let (from, to) = (agent.maps, agent.runs_as);
                let proc = PathBuf::from(format!("/proc/{child}"));
                std::fs::write(proc.join("uid_map"), format!("{} {} 1\n", from.uid, to.uid)).map_err(failed)?;
                std::fs::write(proc.join("gid_map"), format!("{} {} 1\n", from.gid, to.gid)).map_err(failed)?;
                let ns = std::fs::File::open(proc.join("ns/user")).map_err(failed)?;
                Ok(OwnedFd::from(ns))
            });
            drop(hold_w);
            let _ = nix::sys::wait::waitpid(child, None);
            handle
        }
    }
}

/// Mounts a copy of the tree `source` opens on `target`, id-mapped by the
/// user namespace `idmap`.
fn attach_id_mapped(source: &OwnedFd, target: &Path, idmap: &OwnedFd) -> Result<(), EnforceError> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
    let failed = |source: std::io::Error| EnforceError::IdMap {
        path: target.to_owned(),
        mounts: file_systems_under(target),
        source,
    };
    let tree = open_tree(
        source,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| failed(e.into()))?;
    let attr = nix::libc::mount_attr {
        attr_set: nix::libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: idmap.as_raw_fd() as u64,
    };
    mount_setattr(&tree, &attr).map_err(failed)?;
    move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| failed(e.into()))
}

/// The file systems mounted at or below `dir`, as `TYPE at PATH`, for an
/// error to name the one that cannot be id-mapped.
fn file_systems_under(dir: &Path) -> String {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let found: Vec<String> = table
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let point = PathBuf::from(mount.split_whitespace().nth(4)?);
            let kind = fs.split_whitespace().next()?;
            (point.starts_with(dir) || dir.starts_with(&point)).then(|| format!("{kind} at {}", point.display()))
        })
        .collect();
    found.join(", ")
}

/// The user and group an agent launched by root runs as, named in its view
/// of /etc/passwd and /etc/group (copies, in a private directory, with one
/// more line each), so that `whoami`, `id` and a shell's prompt know it.
fn name_the_agent(ids: Ids, private: &Path) -> Result<(), EnforceError> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
    for (file, line) in [
        (
            "/etc/passwd",
            format!(
                "valetkey-agent:x:{}:{}:valetkey agent:{home}:/bin/sh\n",
                ids.uid, ids.gid
            ),
        ),
        ("/etc/group", format!("valetkey-agent:x:{}:\n", ids.gid)),
    ] {
        let real = Path::new(file);
        let Ok(mut text) = std::fs::read_to_string(real) else {
            continue;
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        let copy = private.join(format!(".valetkey-{}", file.trim_start_matches("/etc/")));
        std::fs::write(&copy, text).map_err(io_error("write", &copy))?;
        mount(Some(&copy), real, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(mount_error("name the agent in", real))?;
        read_only(real)?;
    }
    Ok(())
}

/// A devpts of the agent's own: the terminals of the launcher's other
/// sessions do not exist for it (the one it was started on stays open).
fn private_terminals() -> Result<(), EnforceError> {
    let pts = Path::new("/dev/pts");
    mount(
        Some("devpts"),
        pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(mount_error("make private", pts))?;
    let ptmx = Path::new("/dev/ptmx");
    mount(
        Some("/dev/pts/ptmx"),
        ptmx,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_error("make private", ptmx))
}

/// Mounts `path` on itself: a mount point, which cannot be renamed, and can
/// be made read-only.
fn onto_itself(path: &Path, action: &'static str) -> Result<(), EnforceError> {
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_error(action, path))
}

/// Makes the mount at `path` read-only, and every mount below it (a tmpfs
/// mounted inside a granted directory stays read-only too); the flags a user
/// namespace may not clear are kept.
fn read_only(path: &Path) -> Result<(), EnforceError> {
    let attr = nix::libc::mount_attr {
        attr_set: nix::libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(&open_path(path)?, &attr).map_err(io_error("make read-only", path))
}

/// mount_setattr(2) on the mount tree `tree` opens, recursively. No rustix
/// or nix wrapper exists for it.
fn mount_setattr(tree: &impl AsRawFd, attr: &nix::libc::mount_attr) -> std::io::Result<()> {
    // SAFETY: the call reads `size` bytes of `attr`, which outlives it, and
    // the empty path is NUL-terminated.
    let set = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            nix::libc::AT_EMPTY_PATH | nix::libc::AT_RECURSIVE,
            attr as *const nix::libc::mount_attr,
            std::mem::size_of::<nix::libc::mount_attr>(),
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// No capability in the agent's namespace, none regained by executing a
/// program (root included: the bounding set is empty), no setuid gain; and
/// the agent's own ids when it runs as another user than its launcher.
fn drop_privileges(agent: Option<&Agent>) -> Result<(), EnforceError> {
    use caps::CapSet;
    let failed = |e: &dyn std::fmt::Display| EnforceError::Privileges(e.to_string());
    nix::sys::prctl::set_no_new_privs().map_err(|e| failed(&e))?;
    for cap in caps::all() {
        caps::drop(None, CapSet::Bounding, cap).map_err(|e| failed(&e))?;
    }
    if let Some(agent) = agent {
        use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
        let (uid, gid) = (Uid::from_raw(agent.runs_as.uid), Gid::from_raw(agent.runs_as.gid));
        setgroups(&[]).map_err(|e| failed(&e))?;
        setresgid(gid, gid, gid).map_err(|e| failed(&e))?;
        setresuid(uid, uid, uid).map_err(|e| failed(&e))?;
        // Changing ids forgets the parent-death signal.
        super::die_with_parent().map_err(|e| failed(&e))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| failed(&e))?;
    }
    Ok(())
}

fn landlock(plan: &Plan) -> Result<Vec<Gap>, EnforceError> {
    let abi = LANDLOCK_ABI;
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::ReadDir | AccessFs::IoctlDev;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)?
        .scope(Scope::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(&plan.read, AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(&plan.list, AccessFs::ReadDir))?
        .add_rules(path_beneath_rules(&plan.write, AccessFs::from_all(abi)))?
        .add_rules(path_beneath_rules(&plan.devices, device))?
        .add_rules(inherited_stdio())?
        .add_rules(
            plan.connect
                .iter()
                .map(|port| Ok::<_, landlock::RulesetError>(NetPort::new(*port, AccessNet::ConnectTcp))),
        )?
        // Binding port 0 only: the kernel picks a free port. A fixed port
        // could be the broker's, taken while it restarts, to collect the
        // keys sent to it.
        .add_rule(NetPort::new(0, AccessNet::BindTcp))?
        .restrict_self()?;
    Ok(landlock_gaps(status.ruleset, status.landlock))
}

/// The terminal or files the launcher gave the agent as its standard
/// input, output and error, reopenable as they were opened: `echo x >
/// /dev/stderr` opens them again by path, and the launcher's terminal lies
/// outside the agent's own /dev/pts. The agent holds them open already.
fn inherited_stdio() -> impl Iterator<Item = Result<PathBeneath<PathFd>, landlock::RulesetError>> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::stat::SFlag;
    (0..=2).filter_map(|fd: i32| {
        // SAFETY: 0, 1 and 2 stay open for the whole of this process (it
        // never closes them); the borrow ends with this closure.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let kind = SFlag::from_bits_truncate(nix::sys::stat::fstat(borrowed).ok()?.st_mode) & SFlag::S_IFMT;
        let device = match kind {
            SFlag::S_IFREG => false,
            SFlag::S_IFCHR => true,
            _ => return None,
        };
        let mode = OFlag::from_bits_truncate(fcntl(borrowed, FcntlArg::F_GETFL).ok()?) & OFlag::O_ACCMODE;
        let mut access: BitFlags<AccessFs> = match mode {
            OFlag::O_RDONLY => AccessFs::ReadFile.into(),
            OFlag::O_WRONLY => AccessFs::WriteFile.into(),
            _ => AccessFs::ReadFile | AccessFs::WriteFile,
        };
        if device {
            access |= AccessFs::IoctlDev;
        } else if access.contains(AccessFs::WriteFile) {
            // `> /dev/stdout` opens it with O_TRUNC.
            access |= AccessFs::Truncate;
        }
        let path = PathFd::new(format!("/proc/self/fd/{fd}")).ok()?;
        Some(Ok(PathBeneath::new(path, access)))
    })
}

/// What the running kernel's Landlock could not enforce.
fn landlock_gaps(ruleset: RulesetStatus, landlock: LandlockStatus) -> Vec<Gap> {
    let effective = match (ruleset, landlock) {
        (RulesetStatus::NotEnforced, _) | (_, LandlockStatus::NotEnabled | LandlockStatus::NotImplemented) => {
            return vec![Gap {
                mechanism: "Landlock",
                leaves_open: "the agent can read and write every file you can, except those hidden from it, \
                              connect to any TCP port, and signal your other processes",
            }];
        }
        (_, LandlockStatus::Available { effective_abi, .. }) => effective_abi,
    };
    let mut gaps = Vec::new();
    if effective < ABI::V4 {
        gaps.push(Gap {
            mechanism: "Landlock TCP rules (Linux 6.7)",
            leaves_open: "the agent can connect to any TCP port, providers included",
        });
    }
    if effective < ABI::V6 {
        gaps.push(Gap {
            mechanism: "Landlock scopes (Linux 6.12)",
            leaves_open: "the agent can signal your other processes and reach abstract Unix sockets",
        });
    }
    if effective < ABI::V9 {
        gaps.push(Gap {
            mechanism: "Landlock rules for Unix sockets (ABI 9)",
            leaves_open: "the agent can connect to a Unix socket that starts listening after it does, outside its \
                          own /run and /tmp (those listening before are hidden from it)",
        });
    }
    gaps
}

/// Refuses the sockets Landlock does not cover (UDP, raw, packet,
/// netlink and every family but Unix and IP), io_uring (which would make
/// sockets past this filter), mounting, pushing input into the terminal,
/// the kernel's keyrings and setuid or setgid files.
fn seccomp() -> Result<Vec<Gap>, EnforceError> {
    let arch = match TargetArch::try_from(std::env::consts::ARCH) {
        Ok(arch) => arch,
        Err(_) => {
            return Ok(vec![Gap {
                mechanism: "seccomp (not built for this architecture)",
                leaves_open: "the agent can send UDP, open raw and netlink sockets",
            }]);
        }
    };
    for bpf in [refusals(arch), unanswered(arch)] {
        let bpf = bpf.map_err(EnforceError::Seccomp)?;
        seccompiler::apply_filter(&bpf).map_err(|e| EnforceError::Seccomp(e.to_string()))?;
    }
    #[cfg(target_arch = "x86_64")]
    seccompiler::apply_filter(&x32_filter()).map_err(|e| EnforceError::Seccomp(e.to_string()))?;
    Ok(Vec::new())
}

/// x86-64's second table of system calls, x32: the same calls under their
/// numbers with bit 30 set (and some, ioctl among them, under others), which
/// the filter above, naming x86-64's numbers, would let through. Refused
/// whole, on kernels that have it (most turn it off); seccompiler has no
/// way to say "every number past this one".
#[cfg(target_arch = "x86_64")]
fn x32_filter() -> seccompiler::BpfProgram {
    use nix::libc::{
        BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, EPERM, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO,
    };
    use seccompiler::sock_filter;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    // `struct seccomp_data`: the call's number at offset 0, the arch at 4.
    let (nr, arch) = (0, 4);
    let op = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        op(BPF_LD | BPF_W | BPF_ABS, arch, 0, 0),
        // Another arch: the filter above decides (it kills).
        op(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 3),
        op(BPF_LD | BPF_W | BPF_ABS, nr, 0, 0),
        op(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        op(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM as u32, 0, 0),
        op(BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0),
    ]
}

const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const SOCK_STREAM: u64 = 1;
const IPPROTO_TCP: u64 = 6;

const S_ISUID: u64 = 0o4000;
const S_ISGID: u64 = 0o2000;
const O_CREAT: u64 = 0o100;
const O_TMPFILE: u64 = 0o20000000;
/// fchmodat2 has this number on every architecture, but not every target's
/// libc names it.
const SYS_FCHMODAT2: i64 = 452;

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds).map_err(|e| e.to_string())
}

/// A file the agent makes setuid or setgid in its working directory is its
/// launcher's on disk (root's, for a root launcher, through the id-mapped
/// mount): anyone on the machine could run it as them. So no call that sets
/// a file's mode may carry those bits: `(call, the argument holding the
/// mode, the argument holding open's flags)`. (mkdir ignores them: a new
/// directory takes its setgid bit from its parent.)
fn mode_setters() -> Vec<(i64, u8, Option<u8>)> {
    use nix::libc;
    let mut calls = vec![
        (libc::SYS_fchmod, 1, None),
        (libc::SYS_fchmodat, 2, None),
        (SYS_FCHMODAT2, 2, None),
        (libc::SYS_mknodat, 2, None),
        (libc::SYS_openat, 3, Some(2)),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        (libc::SYS_chmod, 1, None),
        (libc::SYS_creat, 1, None),
        (libc::SYS_mknod, 1, None),
        (libc::SYS_open, 2, Some(1)),
    ]);
    calls
}

/// The calls refused with EPERM.
fn refusals(arch: TargetArch) -> Result<seccompiler::BpfProgram, String> {
    let mut socket = vec![rule(vec![
        cond(0, SeccompCmpOp::Ne, AF_UNIX)?,
        cond(0, SeccompCmpOp::Ne, AF_INET)?,
        cond(0, SeccompCmpOp::Ne, AF_INET6)?,
    ])?];
    for family in [AF_INET, AF_INET6] {
        // Only TCP streams: every other type of the IP families (datagram,
        // raw, SCTP's sequenced packets, …) and every other protocol.
        socket.push(rule(vec![
            cond(0, SeccompCmpOp::Eq, family)?,
            cond(1, SeccompCmpOp::MaskedEq(0xf), 0)?,
        ])?);
        for kind in 2..=15 {
            socket.push(rule(vec![
                cond(0, SeccompCmpOp::Eq, family)?,
                cond(1, SeccompCmpOp::MaskedEq(0xf), kind)?,
            ])?);
        }
        socket.push(rule(vec![
            cond(0, SeccompCmpOp::Eq, family)?,
            cond(1, SeccompCmpOp::MaskedEq(0xf), SOCK_STREAM)?,
            cond(2, SeccompCmpOp::Ne, 0)?,
            cond(2, SeccompCmpOp::Ne, IPPROTO_TCP)?,
        ])?);
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(nix::libc::SYS_socket, socket);
    for (call, mode, flags) in mode_setters() {
        let mut when = Vec::new();
        for bit in [S_ISUID, S_ISGID] {
            match flags {
                None => when.push(rule(vec![cond(mode, SeccompCmpOp::MaskedEq(bit), bit)?])?),
                // open sets a mode only when it makes the file.
                Some(flags) => {
                    for making in [O_CREAT, O_TMPFILE] {
                        when.push(rule(vec![
                            cond(flags, SeccompCmpOp::MaskedEq(making), making)?,
                            cond(mode, SeccompCmpOp::MaskedEq(bit), bit)?,
                        ])?);
                    }
                }
            }
        }
        rules.insert(call, when);
    }
    // Typing into the terminal the agent shares with its launcher would run
    // commands in the launcher's shell once `run` exits.
    rules.insert(
        nix::libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, SeccompCmpOp::Eq, nix::libc::TIOCSTI)?])?,
            rule(vec![cond(1, SeccompCmpOp::Eq, nix::libc::TIOCLINUX)?])?,
        ],
    );
    for always in [
        nix::libc::SYS_io_uring_setup,
        nix::libc::SYS_io_uring_enter,
        nix::libc::SYS_io_uring_register,
        nix::libc::SYS_mount,
        nix::libc::SYS_umount2,
        nix::libc::SYS_pivot_root,
        nix::libc::SYS_move_mount,
        nix::libc::SYS_open_tree,
        nix::libc::SYS_fsopen,
        nix::libc::SYS_fsmount,
        nix::libc::SYS_fsconfig,
        nix::libc::SYS_fspick,
        nix::libc::SYS_mount_setattr,
        // The launcher's session keyring may hold tokens.
        nix::libc::SYS_keyctl,
        nix::libc::SYS_add_key,
        nix::libc::SYS_request_key,
    ] {
        rules.insert(always, Vec::new());
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(nix::libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())
}

/// The calls answered as if the kernel had none (ENOSYS), so that programs
/// fall back to the ones the filter above judges: openat2 passes its mode
/// in a structure a filter cannot read.
fn unanswered(arch: TargetArch) -> Result<seccompiler::BpfProgram, String> {
    let filter = SeccompFilter::new(
        BTreeMap::from([(nix::libc::SYS_openat2, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(nix::libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_machine() {
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        assert!(refusals(arch).unwrap().len() > 40);
        assert!(!unanswered(arch).unwrap().is_empty());
    }

    /// A process calls getpid under its x32 number: refused with the
    /// filter; without it, not (ENOSYS where the kernel has no x32).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_x32_system_calls_are_refused() {
        use std::os::unix::process::CommandExt;
        let errno_of_x32_getpid = |filtered: bool| {
            let mut cmd = std::process::Command::new("/usr/bin/python3");
            cmd.args([
                "-c",
                "import ctypes; libc = ctypes.CDLL(None, use_errno=True); \
                 r = libc.syscall(0x40000000 | 39); print(ctypes.get_errno() if r < 0 else 0)",
            ]);
            if filtered {
                let filter = x32_filter();
                // SAFETY: between fork and exec the child only makes the
                // prctl and seccomp system calls apply_filter makes; the
                // filter was built before the fork.
                unsafe {
                    cmd.pre_exec(move || seccompiler::apply_filter(&filter).map_err(std::io::Error::other));
                }
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().parse::<i32>().unwrap()
        };
        assert_eq!(errno_of_x32_getpid(true), nix::libc::EPERM);
        assert_ne!(errno_of_x32_getpid(false), nix::libc::EPERM);
    }

    #[test]
    fn a_kernel_without_landlock_or_its_newer_parts_is_named() {
        let full = LandlockStatus::Available {
            effective_abi: ABI::V9,
            kernel_abi: None,
        };
        assert!(landlock_gaps(RulesetStatus::FullyEnforced, full).is_empty());
        let this_machine = LandlockStatus::Available {
            effective_abi: ABI::V7,
            kernel_abi: None,
        };
        let gaps = landlock_gaps(RulesetStatus::PartiallyEnforced, this_machine);
        assert_eq!(gaps.len(), 1);
        assert!(gaps[0].leaves_open.contains("Unix socket"));
        let old = LandlockStatus::Available {
            effective_abi: ABI::V3,
            kernel_abi: None,
        };
        let gaps = landlock_gaps(RulesetStatus::PartiallyEnforced, old);
        assert_eq!(gaps.len(), 3);
        assert!(gaps[0].leaves_open.contains("any TCP port"));
        let none = landlock_gaps(RulesetStatus::NotEnforced, LandlockStatus::NotImplemented);
        assert_eq!(none[0].mechanism, "Landlock");
    }
}
