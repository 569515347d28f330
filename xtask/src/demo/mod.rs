//! `cargo xtask demo [NAME] [FLAGS]`: the demos, each training a model to a stated result while
//! a progress bar runs on stderr, and ending with one JSON line of its results on stdout.
//!
//! - `hello` (the default): the notebook's example, next letter of "hello" ([`hello`]);
//! - `charlm`: a character language model on any text file ([`charlm`]);
//! - `adding`: the adding problem, long-range memory ([`adding_demo`]);
//! - `reber`: the embedded Reber grammar ([`reber_demo`]).
//!
//! Each demo is a function from its options and an [`Output`] to a report, so the tests run
//! them in-process at tiny sizes. Bad flags or values are one-line `Err(String)`s.
//! Shared parts: [`progress`] (bar and budget), [`json`] (the last line), [`plot`] (SVG loss
//! curves), [`options`] (flags the demos share); data: [`text`], [`adding`], [`reber`].

pub mod adding;
pub mod adding_demo;
pub mod charlm;
pub mod hello;
pub mod json;
pub mod options;
pub mod plot;
pub mod progress;
pub mod reber;
pub mod reber_demo;
pub mod text;

pub use options::Output;

use crate::flags::Flags;
use std::io::IsTerminal;

const LIST: &str = "usage: cargo xtask demo [NAME] [FLAGS]

demos:
  hello     (default) an LSTM learns the next letter of \"hello\"; shows predictions before and after
  charlm    a character language model on a text file; prints a sample, plots the losses
  adding    the adding problem: sum the two marked values of a long sequence
  reber     the embedded Reber grammar: predict every legal next symbol

`cargo xtask demo NAME --help` lists a demo's flags. Each demo ends with one JSON line on stdout.";

fn dispatch<O>(
    args: &[String],
    help: &str,
    valued: &[&str],
    switches: &[&str],
    parse: fn(&Flags) -> Result<O, String>,
    run: fn(&O, &mut Output<'_>) -> Result<bool, String>,
) -> Result<bool, String> {
    let flags = Flags::parse(args, valued, switches)?;
    if flags.help {
        println!("{help}");
        return Ok(true);
    }
    if let Some(word) = flags.positional.first() {
        return Err(format!("unexpected argument `{word}` (see --help)"));
    }
    let options = parse(&flags)?;
    let mut stdout = std::io::stdout().lock();
    let mut out = Output {
        text: &mut stdout,
        progress: std::io::stderr().is_terminal(),
    };
    run(&options, &mut out)
}

/// Runs a demo; `Ok(true)` when it reached its stated result, `Ok(false)` when it ran but did
/// not (e.g. `adding --cell rnn`), `Err` for bad flags, values or files.
pub fn command(args: &[String]) -> Result<bool, String> {
    let (name, rest) = match args.first() {
        Some(first) if !first.starts_with('-') => (first.as_str(), &args[1..]),
        _ => {
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{LIST}\n\n{}", hello::HELP);
                return Ok(true);
            }
            ("hello", args)
        }
    };
    match name {
        "hello" => dispatch(
            rest,
            hello::HELP,
            hello::FLAGS,
            &[],
            hello::Options::from_flags,
            |o, out| hello::run(o, out).map(|r| r.success()),
        ),
        "charlm" => dispatch(
            rest,
            charlm::HELP,
            charlm::FLAGS,
            charlm::SWITCHES,
            charlm::Options::from_flags,
            |o, out| charlm::run(o, out).map(|_| true),
        ),
        "adding" => dispatch(
            rest,
            adding_demo::HELP,
            adding_demo::FLAGS,
            &[],
            adding_demo::Options::from_flags,
            |o, out| adding_demo::run(o, out).map(|r| r.solved),
        ),
        "reber" => dispatch(
            rest,
            reber_demo::HELP,
            reber_demo::FLAGS,
            &[],
            reber_demo::Options::from_flags,
            |o, out| reber_demo::run(o, out).map(|r| r.solved),
        ),
        other => Err(format!(
            "unknown demo `{other}` (hello, charlm, adding or reber)"
        )),
    }
}
