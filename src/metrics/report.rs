//! Plain-text report helpers for the metrics: a tiny JSON value with an escaping
//! writer, CSV cells, and summary statistics over cases.
//!
//! No serde: [`Json`] is built by hand and written with [`Json::to_pretty`] or
//! `Display` (compact). Numbers are written with Rust's `{}` formatting (shortest
//! representation that reads back exactly); non-finite numbers and `None` are written
//! as `null`. In CSV, missing values are empty cells ([`csv_opt`]); never NaN.

use std::fmt::{self, Write as _};

use super::surface::percentile_linear;

/// A JSON value. Objects keep their keys in insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// Written with `{}`; non-finite is written as `null`.
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// A number, or `null` when `None` or not finite.
    pub fn opt(value: Option<f64>) -> Json {
        value.map_or(Json::Null, Json::Num)
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// An object from `(key, value)` pairs.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Numbers as an array.
    pub fn nums(values: impl IntoIterator<Item = f64>) -> Json {
        Json::Arr(values.into_iter().map(Json::Num).collect())
    }

    /// The value of `key` when `self` is an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Indented (two spaces) JSON text, without a trailing newline.
    pub fn to_pretty(&self) -> String {
        let mut out = String::new();
        self.write_pretty(&mut out, 0);
        out
    }

    fn write_pretty(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            Json::Arr(items) if !items.is_empty() => {
                // Arrays of scalars stay on one line.
                if items
                    .iter()
                    .all(|v| !matches!(v, Json::Arr(_) | Json::Obj(_)))
                {
                    let _ = write!(out, "{self}");
                    return;
                }
                out.push_str("[\n");
                for (n, v) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    v.write_pretty(out, indent + 2);
                    out.push_str(if n + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(pairs) if !pairs.is_empty() => {
                out.push_str("{\n");
                for (n, (k, v)) in pairs.iter().enumerate() {
                    pad(out, indent + 2);
                    write_json_string(out, k);
                    out.push_str(": ");
                    v.write_pretty(out, indent + 2);
                    out.push_str(if n + 1 < pairs.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
            _ => {
                let _ = write!(out, "{self}");
            }
        }
    }
}

/// Compact JSON text.
impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(v) if v.is_finite() => write!(f, "{v}"),
            Json::Num(_) => f.write_str("null"),
            Json::Str(s) => {
                let mut out = String::with_capacity(s.len() + 2);
                write_json_string(&mut out, s);
                f.write_str(&out)
            }
            Json::Arr(items) => {
                f.write_str("[")?;
                for (n, v) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Json::Obj(pairs) => {
                f.write_str("{")?;
                for (n, (k, v)) in pairs.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    let mut key = String::new();
                    write_json_string(&mut key, k);
                    write!(f, "{key}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Appends `s` as a quoted JSON string (escaping `"`, `\` and control characters).
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A CSV cell: quoted (with doubled quotes) when it holds a comma, quote or newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A CSV number cell: `{}` formatting; empty when `None` or not finite.
pub fn csv_opt(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => String::new(),
    }
}

/// Summary statistics of one metric over cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Number of finite values summarised.
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1); `None` for a single value.
    pub sd: Option<f64>,
    /// Percentiles with linear interpolation (as `numpy.percentile`'s default).
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
}

impl Summary {
    /// Interquartile range q3 − q1.
    pub fn iqr(&self) -> f64 {
        self.q3 - self.q1
    }
}

/// Summary of the finite values of `values` (`None` values and non-finite ones are
/// left out); `None` when nothing is left.
pub fn summarize(values: impl IntoIterator<Item = Option<f64>>) -> Option<Summary> {
    let mut v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| x.is_finite())
        .collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = (n > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    let median = percentile_linear(&mut v, 50.0)?;
    let q1 = percentile_linear(&mut v, 25.0)?;
    let q3 = percentile_linear(&mut v, 75.0)?;
    Some(Summary {
        n,
        mean,
        sd,
        median,
        q1,
        q3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_nulls() {
        let j = Json::obj([
            ("a\"b", Json::str("x\\y\n\u{1}")),
            ("n", Json::Num(f64::NAN)),
            ("i", Json::Num(f64::INFINITY)),
            ("o", Json::opt(None)),
            ("v", Json::nums([1.0, 0.5, -2.0])),
            ("t", Json::Bool(true)),
        ]);
        assert_eq!(
            j.to_string(),
            r#"{"a\"b": "x\\y\n\u0001", "n": null, "i": null, "o": null, "v": [1, 0.5, -2], "t": true}"#
        );
        let pretty = j.to_pretty();
        assert!(pretty.starts_with("{\n  \"a\\\"b\": "), "{pretty}");
        assert!(pretty.contains("\"v\": [1, 0.5, -2]"), "{pretty}");
        assert_eq!(Json::Arr(vec![]).to_pretty(), "[]");
        assert_eq!(Json::obj::<&str>([]).to_pretty(), "{}");
        let nested = Json::Arr(vec![Json::obj([("k", Json::Num(1.0))])]);
        assert_eq!(nested.to_pretty(), "[\n  {\n    \"k\": 1\n  }\n]");
    }

    #[test]
    fn csv_cells() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_opt(Some(0.25)), "0.25");
        assert_eq!(csv_opt(None), "");
        assert_eq!(csv_opt(Some(f64::NAN)), "");
    }

    #[test]
    fn summary_statistics() {
        let s = summarize([
            Some(1.0),
            Some(2.0),
            None,
            Some(3.0),
            Some(4.0),
            Some(f64::NAN),
        ])
        .expect("values");
        assert_eq!(s.n, 4);
        assert_eq!(s.mean, 2.5);
        // Sample variance of 1..4 = 5/3.
        assert!((s.sd.expect("n > 1") - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.median, 2.5);
        assert_eq!(s.q1, 1.75);
        assert_eq!(s.q3, 3.25);
        assert_eq!(s.iqr(), 1.5);
        let one = summarize([Some(7.0)]).expect("one value");
        assert_eq!((one.n, one.mean, one.sd, one.median), (1, 7.0, None, 7.0));
        assert!(summarize([None, Some(f64::INFINITY)]).is_none());
    }
}
