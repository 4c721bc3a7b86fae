//! The two processes between `run` and the agent's command: `run`'s helper,
//! outside the agent's PID namespace, and PID 1 inside it. Each starts one
//! child, passes on the signals sent to it, reaps, and exits with the
//! child's status. PID 1 exiting ends every process left in its namespace,
//! and each dies with its parent, so nothing the agent started outlives
//! `run`.

use std::process::{Command, ExitCode};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The signals `run` forwards to the agent.
pub const PASSED_ON: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// `si_code` of a signal the kernel sent: a terminal's Ctrl-C reaches the
/// whole foreground process group, the agent included, by itself.
const SI_KERNEL: i32 = 0x80;

/// Dies when its parent does (`run` killed, or the helper), and says so
/// when the parent is gone already. Call it first thing.
pub fn die_with_parent() -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // Orphaned before the line above: adopted by PID 1 of our namespace.
    if nix::unistd::getppid() == Pid::from_raw(1) {
        return Err(std::io::Error::other("the process that started it is gone"));
    }
    Ok(())
}

/// Starts `command`, passes the signals sent to this process on to it,
/// reaps every child (PID 1 adopts the agent's orphans), and returns
/// `command`'s status as an exit code (128 + the signal that ended it).
pub fn supervise(mut command: Command) -> std::io::Result<ExitCode> {
    // Started before the signals are blocked: a child inherits its
    // parent's signal mask.
    let child = Pid::from_raw(command.spawn()?.id() as i32);
    let mut mask = SigSet::empty();
    for signal in PASSED_ON {
        mask.add(signal);
    }
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)?;
    // The child may have ended before SIGCHLD was blocked.
    if let Some(code) = reap(child) {
        return Ok(code);
    }
    loop {
        let Some(info) = signals.read_signal()? else {
            continue;
        };
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if signal == Signal::SIGCHLD {
            if let Some(code) = reap(child) {
                return Ok(code);
            }
        } else if info.ssi_code != SI_KERNEL {
            let _ = kill(child, signal);
        }
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
