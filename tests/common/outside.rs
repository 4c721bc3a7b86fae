//! What a test needs from outside the crate (a PostgreSQL server, node with
//! the reference implementations in tests/js, Chromium with Playwright):
//! there, or the test fails saying how to get it. A machine without one may
//! skip the tests that need it only by naming it in
//! `VALETKEY_TEST_ALLOW_SKIP` (`postgres,node,chromium`), and each skip
//! says so loudly on standard error. `.ci/run` never sets it.
#![allow(dead_code)]

pub const ALLOW_SKIP: &str = "VALETKEY_TEST_ALLOW_SKIP";

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// The loud line to print.
    Skip(String),
    /// The failure's message.
    Fail(String),
}

/// Whether the test that needs `what` runs: `missing` says why it is not
/// there (`None` when it is), `allowed` is `VALETKEY_TEST_ALLOW_SKIP`.
pub fn decide(test: &str, what: &str, missing: Option<&str>, allowed: Option<&str>) -> Decision {
    let Some(why) = missing else {
        return Decision::Run;
    };
    let allowed = allowed.unwrap_or_default().split(',').any(|w| w.trim() == what);
    if allowed {
        Decision::Skip(format!(
            "\n!!!!! SKIPPED {test}: {what} is missing ({why}); {ALLOW_SKIP} names it, so this run did NOT test \
             what needs {what} !!!!!\n"
        ))
    } else {
        Decision::Fail(format!(
            "{test} needs {what}, which is missing: {why}. Run the suite with scripts/test, which provides it \
             (.ci/run installs it), or set {ALLOW_SKIP}={what} to skip the tests that need it, loudly"
        ))
    }
}

/// `true` when what the test needs is there; `false` when it is missing and
/// allowed to be skipped (said loudly); a failure otherwise.
pub fn present(what: &str, missing: Option<String>) -> bool {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let allowed = std::env::var(ALLOW_SKIP).ok();
    match decide(test, what, missing.as_deref(), allowed.as_deref()) {
        Decision::Run => true,
        Decision::Skip(line) => {
            // Past the test harness's capture, which would hide it in a
            // passing test's output.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{line}");
            false
        }
        Decision::Fail(message) => panic!("{message}"),
    }
}

/// Why a program is not on PATH, if it is not.
pub fn program_missing(name: &str) -> Option<String> {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    (!found).then(|| format!("`{name}` is not on PATH"))
}

/// Why a file is not there, if it is not.
pub fn file_missing(path: &std::path::Path) -> Option<String> {
    (!path.exists()).then(|| format!("{} does not exist", path.display()))
}
