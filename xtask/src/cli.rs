//! Command-line parsing with `clap`: one-line errors, and the value checks the commands share.
//!
//! Every command declares its flags once, as a `clap` derive whose doc comments are the
//! `--help` lines. [`parse`] turns clap's several-line errors into the one line the commands
//! return (`Err(String)`, printed as `error: …` with exit status 2) and prints `--help` itself.
//!
//! Output goes through [`print()`], never `print!`: `print!` panics when stdout is closed (the
//! reader of a pipe gone, as in `cargo xtask --help | head -0`); [`print()`] returns the error, and
//! `--help` written to a closed stdout is simply not shown.

use clap::Parser;
use clap::error::ErrorKind;
use std::fmt::Display;
use std::io::Write;

/// Writes `text` to stdout and flushes; a failed write (a closed stdout) is a one-line error.
pub fn print(text: impl Display) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to stdout: {e}"))
}

/// Parses `args` (without the program name) as `P`. `Ok(None)` when `--help` was printed.
pub fn parse<P: Parser>(name: &str, args: &[String]) -> Result<Option<P>, String> {
    let all = std::iter::once(name.to_string()).chain(args.iter().cloned());
    match P::try_parse_from(all) {
        Ok(p) => Ok(Some(p)),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // Help nobody reads (stdout closed) is not an error.
            let _ = print(&e);
            Ok(None)
        }
        Err(e) => Err(one_line(&e)),
    }
}

/// A clap error on one line, without its `error: ` prefix: its first line and the indented
/// lines right under it (the missing argument, the possible values), not the usage or tips.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    for more in lines.take_while(|l| l.starts_with("  ")) {
        line.push(' ');
        line.push_str(more.trim());
    }
    line
}

/// A count of at least 1.
pub fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>().map_err(|e| e.to_string())? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// A count of at least 1.
pub fn positive_u64(s: &str) -> Result<u64, String> {
    positive_usize(s).map(|n| n as u64)
}

/// A probability in `[0, 1)` (dropout).
pub fn dropout_probability(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be in [0, 1), got {v}"))
    }
}

/// A finite number > 0.
pub fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a positive number, got {v}"))
    }
}

/// A finite number ≥ 0.
pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a number ≥ 0, got {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long, default_value_t = 1, value_parser = positive_usize)]
        hidden: usize,
        #[arg(long, default_value_t = 0.0)]
        lr: f64,
        #[arg(long)]
        resume: bool,
    }

    #[derive(Debug, Parser)]
    struct Needs {
        dir: String,
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_values_switches_and_one_line_errors() {
        let f = parse::<Flags>("t", &args("--hidden 8 --lr=0.5 --resume"))
            .unwrap()
            .unwrap();
        assert_eq!((f.hidden, f.lr, f.resume), (8, 0.5, true));
        for bad in ["--nope 1", "--hidden", "--hidden 0", "--lr abc", "extra"] {
            let e = parse::<Flags>("t", &args(bad)).unwrap_err();
            assert!(
                !e.is_empty() && !e.contains('\n') && !e.starts_with("error"),
                "{bad}: {e}"
            );
        }
        let e = parse::<Flags>("t", &args("--hidden 0")).unwrap_err();
        assert!(e.contains("--hidden") && e.contains("at least 1"), "{e}");
        let e = parse::<Needs>("t", &[]).unwrap_err();
        assert_eq!(
            e,
            "the following required arguments were not provided: <DIR>"
        );
    }
}
