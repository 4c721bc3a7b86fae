//! The two processes between `run` and the agent's command: `run`'s helper,
//! outside the agent's PID namespace, and PID 1 inside it. Each starts one
//! child, passes on the signals sent to it, reaps, and exits with the
//! child's status. PID 1 exiting ends every process left in its namespace,
//! and each dies with its parent, so nothing the agent started outlives
//! `run`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, ExitCode};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;

/// The signals `run` forwards to the agent.
pub const PASSED_ON: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Dies when its parent does (`run` killed, or the helper). Call it first
/// thing: only the moments before it are left unwatched. (Whether the
/// parent is gone already cannot be told by its PID: `run` may be PID 1
/// itself, in a container.)
pub fn die_with_parent() -> std::io::Result<()> {
    Ok(nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?)
}

/// A pipe from a parent to the child it starts (`run` to its helper, the
/// helper to PID 1). The parent keeps the writing end for its whole life;
/// the child inherits the reading end, which hangs up when the parent is
/// gone. That covers the moments the parent-death signal does not: before
/// the child sets it, and while changing ids has made it forget it.
pub struct Lifeline {
    read: OwnedFd,
    write: OwnedFd,
}

impl Lifeline {
    pub fn new() -> std::io::Result<Lifeline> {
        use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        fcntl(&read, FcntlArg::F_SETFD(FdFlag::empty()))?;
        Ok(Lifeline { read, write })
    }

    /// The descriptor the child inherits.
    pub fn inherited(&self) -> i32 {
        self.read.as_raw_fd()
    }

    /// Once the child has started: the writing end, to hold as long as the
    /// parent lives (the reading end is closed here).
    pub fn started(self) -> OwnedFd {
        self.write
    }
}

/// Whether the parent at the other end of a [`Lifeline`] is gone.
pub fn parent_is_gone(read: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        // Hung up, readable (nothing is ever written: end of file) or an
        // error: gone, or not to be trusted.
        _ => true,
    }
}

/// Starts `command`, passes the signals sent to this process on to it,
/// reaps every child (PID 1 adopts the agent's orphans), and returns
/// `command`'s status as an exit code (128 + the signal that ended it).
pub fn supervise(mut command: Command) -> std::io::Result<ExitCode> {
    // Handlers, installed before the child starts: PID 1 of a namespace
    // gets no signal it has no handler for, and one that arrived before
    // would be lost. No signal is blocked, so the child, whose handlers
    // reset when it executes, starts with none blocked either.
    let mut wanted: Vec<i32> = PASSED_ON.iter().map(|s| *s as i32).collect();
    wanted.push(Signal::SIGCHLD as i32);
    let mut signals = SignalsInfo::<WithOrigin>::new(&wanted)?;
    let child = Pid::from_raw(command.spawn()?.id() as i32);
    if let Some(code) = reap(child) {
        return Ok(code);
    }
    for origin in signals.forever() {
        let Ok(signal) = Signal::try_from(origin.signal) else {
            continue;
        };
        if signal == Signal::SIGCHLD {
            if let Some(code) = reap(child) {
                return Ok(code);
            }
        } else if matches!(origin.cause, Cause::Sent(_)) {
            // A terminal's Ctrl-C (sent by the kernel) reaches the whole
            // foreground process group, the agent included, by itself.
            let _ = kill(child, signal);
        }
    }
    Err(std::io::Error::other("stopped listening for signals"))
}

/// `run`'s own passing on of signals: listening starts before the child
/// exists (a signal that comes early waits), forwarding once it does. Only
/// signals sent by a process are passed on: a terminal's Ctrl-C reaches the
/// agent directly, and a second copy would read as "press again to quit".
pub struct Forwarder {
    signals: SignalsInfo<WithOrigin>,
}

impl Forwarder {
    pub fn listen() -> std::io::Result<Forwarder> {
        let wanted: Vec<i32> = PASSED_ON.iter().map(|s| *s as i32).collect();
        Ok(Forwarder {
            signals: SignalsInfo::<WithOrigin>::new(&wanted)?,
        })
    }

    /// Passes signals on to `child` from a thread of its own until the
    /// returned handle is closed.
    pub fn start(mut self, child: Pid) -> signal_hook::iterator::Handle {
        let handle = self.signals.handle();
        std::thread::spawn(move || {
            for origin in self.signals.forever() {
                if let (Ok(signal), Cause::Sent(_)) = (Signal::try_from(origin.signal), origin.cause) {
                    let _ = kill(child, signal);
                }
            }
        });
        handle
    }
}

/// Reaps what has ended; `command`'s exit code once it has.
fn reap(child: Pid) -> Option<ExitCode> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                return Some(ExitCode::from(code.clamp(0, 255) as u8));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                return Some(ExitCode::from(128 + signal as u8));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifeline_tells_when_its_parent_is_gone() {
        let lifeline = Lifeline::new().unwrap();
        let fd = lifeline.inherited();
        let flags = nix::fcntl::fcntl(&lifeline.read, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & nix::libc::FD_CLOEXEC, 0, "the child inherits the reading end");
        let read = lifeline.read.try_clone().unwrap();
        assert!(
            !parent_is_gone(&read),
            "descriptor {fd}: the parent holds the other end"
        );
        let write = lifeline.started();
        assert!(!parent_is_gone(&read), "the parent still holds the writing end");
        drop(write);
        assert!(parent_is_gone(&read), "the parent's end closed");
    }
}
