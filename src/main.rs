//! The `valetkey` binary: the command line in `valetkey::cli`, errors
//! printed with their context.

use std::process::ExitCode;

// The proxy path allocates per request (headers, the GraphQL tree, the
// audit record); glibc's allocator spent a sixth of the broker's CPU on it
// under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match valetkey::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("valetkey: {}", message(&anyhow::Error::from(e)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: most messages already quote
/// their cause.
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
