//! The two processes between `run` and the agent's command: `run`'s helper,
//! outside the agent's PID namespace, and PID 1 inside it. Each starts one
//! child, passes on the signals `run` forwards, reaps, and exits with the
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

/// Starts `command`, passes the forwarded signals on to it, reaps every
/// child (PID 1 adopts the agent's orphans), and returns `command`'s status
/// as an exit code (128 + the signal that ended it).
pub fn supervise(mut command: Command) -> std::io::Result<ExitCode> {
    // Dies with its parent: `run`, or the helper, killed.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    let mut mask = SigSet::empty();
    for signal in PASSED_ON {
        mask.add(signal);
    }
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)?;
    // The standard library clears the signal mask in the child.
    let child = Pid::from_raw(command.spawn()?.id() as i32);
    loop {
        let Some(info) = signals.read_signal()? else {
            continue;
        };
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if signal != Signal::SIGCHLD {
            let _ = kill(child, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    return Ok(ExitCode::from(code.clamp(0, 255) as u8));
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                    return Ok(ExitCode::from(128 + signal as u8));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
