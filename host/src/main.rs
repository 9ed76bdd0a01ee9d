//! The `sluice` command: thin glue over the library.

use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: a message's life is many small allocations
/// freed on other threads (HTTP, the store's worker threads, delivery tasks), where
/// glibc's arenas spent ~12 % of the server's CPU in `malloc`/`free` under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sluice::cli::main()
}
