//! `cargo xtask`: see the library docs (`xtask/src/lib.rs`) for the commands.

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo [NAME] [FLAGS]    run a demo (default: hello); `cargo xtask demo --help` lists them
  bench [FLAGS]          run the reference workloads (benches/workloads.json)
  check-fixtures DIR     check every PyTorch fixture file in DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let outcome = match cmd.as_str() {
        "check-fixtures" => xtask::fixtures::command(rest),
        "demo" => xtask::demo::command(rest),
        "bench" => xtask::bench::command(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(true)
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
