//! The `valetkey` binary: the command line in `valetkey::cli`, errors
//! printed with their context.

use std::process::ExitCode;

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
