//! `cargo xtask`: see the library docs (`xtask/src/lib.rs`) for the commands.

use clap::{CommandFactory, Parser};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The project's task runner.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask")]
enum Command {
    /// Run a demo (default: hello); `cargo xtask demo --help` lists them
    Demo(Box<xtask::demo::DemoArgs>),
    /// Run the reference workloads (benches/workloads.json)
    Bench(xtask::bench::Args),
    /// Check every PyTorch fixture file in DIR
    CheckFixtures {
        /// The folder of `.safetensors` fixtures.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        let _ = write!(std::io::stderr(), "{}", Command::command().render_help());
        return ExitCode::from(2);
    }
    let outcome = xtask::cli::parse::<Command>("xtask", &args).and_then(|command| match command {
        None => Ok(true),
        Some(Command::Demo(args)) => xtask::demo::run(*args),
        Some(Command::Bench(args)) => xtask::bench::run(&args),
        Some(Command::CheckFixtures { dir }) => xtask::fixtures::command(&dir),
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(msg) => {
            // Not `eprintln!`, which panics when stderr is closed.
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::from(2)
        }
    }
}
