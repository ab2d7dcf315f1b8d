//! The `batchlab` binary: parse arguments, call the library, turn errors into one clear message and an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    batchlab::cli::main()
}
