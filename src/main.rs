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
            let e = anyhow::Error::from(e);
            eprintln!("valetkey: {e:#}");
            ExitCode::FAILURE
        }
    }
}
