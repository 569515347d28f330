//! `cargo xtask demo [NAME] [FLAGS]`: the demos, each training a model to a stated result while
//! a progress bar runs on stderr, and ending with one JSON line of its results on stdout.
//!
//! - `hello` (the default): the notebook's example, next letter of "hello" ([`hello`]);
//! - `charlm`: a character language model on any text file ([`charlm`]);
//! - `adding`: the adding problem, long-range memory ([`adding_demo`]);
//! - `reber`: the embedded Reber grammar ([`reber_demo`]).
//!
//! Each demo is a function from its options and an [`Output`] to a report, so the tests run
//! them in-process at tiny sizes. Flags are declared once per demo with `clap` ([`DemoArgs`]);
//! bad flags, values or files are one-line `Err(String)`s.
//! Shared parts: [`progress`] (bar and budget), [`json`] (the last line), [`plot`] (SVG loss
//! curves), [`options`] (optimizer names, budget, output), [`limits`] (the memory budget the
//! size flags are checked against), [`checkpoint`] (the checkpoint path and the vocabulary kept
//! in it); data: [`text`], [`adding`], [`reber`].

pub mod adding;
pub mod adding_demo;
pub mod charlm;
pub mod checkpoint;
pub mod hello;
pub mod json;
pub mod limits;
pub mod options;
pub mod plot;
pub mod progress;
pub mod reber;
pub mod reber_demo;
pub mod text;

pub use options::Output;

use crate::cli;
use std::io::IsTerminal;

/// `cargo xtask demo [NAME] [FLAGS]`: the hello demo's flags, or a demo and its flags.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "demo",
    bin_name = "cargo xtask demo",
    args_conflicts_with_subcommands = true,
    after_help = "`cargo xtask demo NAME --help` lists a demo's flags. Each demo ends with one JSON line on stdout."
)]
pub struct DemoArgs {
    /// The demo (hello when none is named).
    #[command(subcommand)]
    pub demo: Option<Demo>,
    /// Flags of the default demo, hello.
    #[command(flatten)]
    pub hello: hello::Options,
}

/// The demos.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Demo {
    // Each one's help is the doc comment of its flags' struct.
    Hello(hello::Options),
    Charlm(charlm::Args),
    Adding(adding_demo::Args),
    Reber(reber_demo::Args),
}

/// Runs a demo; `Ok(true)` when it reached its stated result, `Ok(false)` when it ran but did
/// not (e.g. `adding --cell rnn`), `Err` for bad files or values.
pub fn run(args: DemoArgs) -> Result<bool, String> {
    let mut stdout = std::io::stdout().lock();
    let mut out = Output {
        text: &mut stdout,
        progress: std::io::stderr().is_terminal(),
    };
    match args.demo.unwrap_or(Demo::Hello(args.hello)) {
        Demo::Hello(o) => hello::run(&o, &mut out).map(|r| r.success()),
        Demo::Charlm(a) => charlm::run(&a.into(), &mut out).map(|_| true),
        Demo::Adding(a) => adding_demo::run(&a.into(), &mut out).map(|r| r.solved),
        Demo::Reber(a) => reber_demo::run(&a.into(), &mut out).map(|r| r.solved),
    }
}

/// Parses `args` (the words after `demo`) and runs the demo, as [`run`]; bad flags and values
/// are one-line errors too, and `--help` prints the help and gives `Ok(true)`.
pub fn command(args: &[String]) -> Result<bool, String> {
    match cli::parse::<DemoArgs>("demo", args)? {
        Some(args) => run(args),
        None => Ok(true),
    }
}
