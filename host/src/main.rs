//! The `sluice` command: thin glue over the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    sluice::cli::main()
}
