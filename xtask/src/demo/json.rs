//! The one JSON line each demo ends with, keys in a fixed order (`demo` first), so scripts can
//! read the last line of stdout: `{"demo":"hello","predicted":"ello","loss_before":1.38,…}`.
//!
//! Floats are written with 6 significant digits; NaN and infinities become `null`.

use serde_json::{Number, Value};

/// A JSON object built key by key, in order.
#[derive(Debug, Clone)]
pub struct JsonLine {
    text: String,
}

/// Rounds `v` to 6 significant digits (`1.234567e-3` → `0.00123457`).
pub fn round6(v: f64) -> f64 {
    format!("{v:.5e}").parse().unwrap_or(v)
}

impl JsonLine {
    /// `{"demo":"<name>"`.
    pub fn new(demo: &str) -> JsonLine {
        let mut line = JsonLine {
            text: String::from("{"),
        };
        line.push("demo", Value::from(demo));
        line
    }

    fn push(&mut self, key: &str, value: Value) {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        self.text.push_str(&Value::from(key).to_string());
        self.text.push(':');
        self.text.push_str(&value.to_string());
    }

    /// Adds a string.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.push(key, Value::from(value));
        self
    }

    /// Adds a number, rounded to 6 significant digits (`null` when not finite).
    pub fn num(mut self, key: &str, value: f64) -> Self {
        let v = Number::from_f64(round6(value)).map_or(Value::Null, Value::Number);
        self.push(key, v);
        self
    }

    /// Adds an integer.
    pub fn int(mut self, key: &str, value: u64) -> Self {
        self.push(key, Value::from(value));
        self
    }

    /// Adds a boolean.
    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.push(key, Value::from(value));
        self
    }

    /// The finished line, without a newline.
    pub fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_order_and_valid_json() {
        let line = JsonLine::new("x")
            .str("s", "a\"b")
            .num("f", 1.0 / 3.0)
            .num("nan", f64::NAN)
            .int("i", 7)
            .bool("b", true)
            .finish();
        assert_eq!(
            line,
            r#"{"demo":"x","s":"a\"b","f":0.333333,"nan":null,"i":7,"b":true}"#
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["i"], 7);
    }
}
