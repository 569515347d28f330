//! A small `--name value` flag parser for the xtask commands, with one-line errors.
//!
//! Every flag takes a value except those declared as switches. Unknown flags, missing values and
//! values that do not parse are errors naming the flag; `--help`/`-h` is reported separately.

use std::collections::HashMap;
use std::str::FromStr;

/// Parsed flags.
#[derive(Debug, Default)]
pub struct Flags {
    values: HashMap<String, String>,
    switches: Vec<String>,
    /// `--help` or `-h` was given.
    pub help: bool,
    /// Words that are not flags, in order.
    pub positional: Vec<String>,
}

impl Flags {
    /// Parses `args`; `valued` lists the flags that take a value, `switches` those that do not
    /// (both without the leading `--`).
    pub fn parse(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Flags, String> {
        let mut flags = Flags::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--help" || arg == "-h" {
                flags.help = true;
            } else if let Some(name) = arg.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (name, None),
                };
                if switches.contains(&name) {
                    flags.switches.push(name.to_string());
                } else if valued.contains(&name) {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .cloned()
                            .ok_or_else(|| format!("--{name} needs a value"))?,
                    };
                    flags.values.insert(name.to_string(), value);
                } else {
                    return Err(format!("unknown flag --{name} (see --help)"));
                }
            } else {
                flags.positional.push(arg.clone());
            }
        }
        Ok(flags)
    }

    /// The value of `--name` parsed as `V`, or `default`.
    pub fn get<V: FromStr>(&self, name: &str, default: V) -> Result<V, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: cannot read `{v}` as a value of this flag")),
        }
    }

    /// The value of `--name` if given.
    pub fn opt<V: FromStr>(&self, name: &str) -> Result<Option<V>, String> {
        self.values
            .get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("--{name}: cannot read `{v}` as a value of this flag"))
            })
            .transpose()
    }

    /// A positive integer flag (`--hidden 0` is an error).
    pub fn positive(&self, name: &str, default: usize) -> Result<usize, String> {
        let v: usize = self.get(name, default)?;
        if v == 0 {
            return Err(format!("--{name} must be at least 1"));
        }
        Ok(v)
    }

    /// A finite number flag that must be > 0.
    pub fn positive_f64(&self, name: &str, default: f64) -> Result<f64, String> {
        let v: f64 = self.get(name, default)?;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("--{name} must be a positive number, got {v}"));
        }
        Ok(v)
    }

    /// `true` when the switch `--name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_values_switches_and_errors() {
        let f = Flags::parse(
            &args("--hidden 8 --lr=0.5 --resume x"),
            &["hidden", "lr"],
            &["resume"],
        )
        .unwrap();
        assert_eq!(f.positive("hidden", 1).unwrap(), 8);
        assert_eq!(f.get("lr", 0.0).unwrap(), 0.5);
        assert!(f.switch("resume"));
        assert_eq!(f.positional, vec!["x"]);
        assert!(Flags::parse(&args("--nope 1"), &["hidden"], &[]).is_err());
        assert!(Flags::parse(&args("--hidden"), &["hidden"], &[]).is_err());
        let f = Flags::parse(&args("--hidden 0 --lr abc"), &["hidden", "lr"], &[]).unwrap();
        assert!(f.positive("hidden", 1).is_err());
        assert!(f.get::<f64>("lr", 0.0).is_err());
    }
}
