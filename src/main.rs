//! The `testbed` command line. Parsing, calling the library and printing only.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
