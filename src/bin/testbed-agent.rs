//! A node's agent: `testbed-agent LAB NODE`, started by the lab's supervisor
//! inside the lab (see `testbed::agent`). A binary of its own because a
//! thousand of them run at once: it holds only the agent's code, so each maps
//! a few megabytes of code instead of the whole testbed's.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, lab, node] = args.as_slice() else {
        eprintln!(
            "usage: testbed-agent LAB NODE\n\nStarted by the lab's supervisor (`testbed up`); not for direct use."
        );
        return ExitCode::from(2);
    };
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    match testbed::agent::run(lab, node) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
