//! Plain-text report helpers for the metrics: a tiny JSON value with an escaping
//! writer, CSV cells, summary statistics over cases, the comparison table as CSV and
//! JSON (shared by `pulmo compare` and the viewer's Compare window), and atomic file
//! writes.
//!
//! No serde: [`Json`] is built by hand and written with [`Json::to_pretty`] or
//! `Display` (compact). Numbers are written with Rust's `{}` formatting (shortest
//! representation that reads back exactly); non-finite numbers and `None` are written
//! as `null`. In CSV, missing values are empty cells ([`csv_opt`]); never NaN.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use super::surface::percentile_linear;
use super::{Comparison, IntensityMetrics, Target, TargetComparison};

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

/// Metric columns of the comparison table (CSV header names and JSON keys) without a
/// CT.
pub const COMPARE_COLUMNS: [&str; 11] = [
    "dice",
    "iou",
    "volume_similarity",
    "rvd_pct",
    "sensitivity",
    "specificity",
    "hd_mm",
    "hd95_mm",
    "assd_mm",
    "ref_volume_ml",
    "test_volume_ml",
];
/// Extra columns with a CT.
pub const INTENSITY_COLUMNS: [&str; 3] = ["me_hu", "mae_hu", "rel_mean_hu_diff_pct"];

/// How HD95 is defined (reports and tooltips).
pub const HD95_NOTE: &str = "MONAI definition: the larger of the two directed 95th percentiles \
(linear interpolation) of the distances from each mask's boundary voxels to the other \
mask's boundary voxels";

/// The columns of a comparison table: [`COMPARE_COLUMNS`], then [`INTENSITY_COLUMNS`]
/// when `with_intensity`.
pub fn compare_columns(with_intensity: bool) -> Vec<&'static str> {
    let mut columns = COMPARE_COLUMNS.to_vec();
    if with_intensity {
        columns.extend(INTENSITY_COLUMNS);
    }
    columns
}

/// A target's name in tables: the label value, or "any" for every non-zero value.
pub fn target_label(target: Target) -> String {
    match target {
        Target::Label(l) => l.to_string(),
        Target::AnyForeground => "any".to_string(),
    }
}

/// One row of the comparison table: overlap and surface metrics of one target, and
/// intensity ones with a CT.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    /// The label value, or "any" for every non-zero value.
    pub label: String,
    pub target: TargetComparison,
    pub intensity: Option<IntensityMetrics>,
}

impl CompareRow {
    pub fn new(target: &TargetComparison, intensity: Option<IntensityMetrics>) -> Self {
        Self {
            label: target_label(target.target),
            target: target.clone(),
            intensity,
        }
    }

    /// The values of [`COMPARE_COLUMNS`] (then [`INTENSITY_COLUMNS`] with a CT).
    pub fn values(&self) -> Vec<Option<f64>> {
        let o = &self.target.overlap;
        let s = &self.target.surface;
        let mut v = vec![
            Some(o.dice),
            Some(o.jaccard),
            Some(o.volume_similarity),
            o.relative_volume_difference_pct,
            o.sensitivity,
            o.specificity,
            s.hausdorff_mm,
            s.hd95_mm,
            s.assd_mm,
            Some(o.reference_volume_ml),
            Some(o.test_volume_ml),
        ];
        if let Some(i) = &self.intensity {
            v.extend([
                Some(i.mean_error_hu),
                Some(i.mean_absolute_error_hu),
                i.relative_mean_hu_difference_pct,
            ]);
        }
        v
    }
}

/// The rows of a comparison: one per label, then "any" foreground, without intensity
/// metrics.
pub fn compare_rows(cmp: &Comparison) -> Vec<CompareRow> {
    cmp.per_label
        .iter()
        .chain(std::iter::once(&cmp.foreground))
        .map(|c| CompareRow::new(c, None))
        .collect()
}

/// The comparison table as CSV: a header `label,<columns>`, then one line per row.
pub fn compare_csv(rows: &[CompareRow], with_intensity: bool) -> String {
    let columns = compare_columns(with_intensity);
    let mut out = format!("label,{}\n", columns.join(","));
    for row in rows {
        let cells: Vec<String> = row.values().into_iter().map(csv_opt).collect();
        out += &format!("{},{}\n", csv_field(&row.label), cells.join(","));
    }
    out
}

/// The comparison as a JSON document: what was compared (`reference`, `test`, `ct`:
/// file paths or descriptions), the grid, notes on the definitions, and the rows.
pub fn compare_json(
    reference: &str,
    test: &str,
    ct: Option<&str>,
    cmp: &Comparison,
    rows: &[CompareRow],
    with_intensity: bool,
) -> Json {
    let columns = compare_columns(with_intensity);
    let label_json = |l: &str| match l.parse::<f64>() {
        Ok(v) => Json::Num(v),
        Err(_) => Json::str(l),
    };
    let results = rows
        .iter()
        .map(|row| {
            let mut pairs = vec![("label".to_string(), label_json(&row.label))];
            pairs.extend(
                columns
                    .iter()
                    .zip(row.values())
                    .map(|(k, v)| (k.to_string(), Json::opt(v))),
            );
            Json::Obj(pairs)
        })
        .collect();
    Json::obj([
        ("reference", Json::str(reference)),
        ("test", Json::str(test)),
        ("ct", ct.map_or(Json::Null, Json::str)),
        ("dims", Json::nums(cmp.dims.map(|d| d as f64))),
        ("spacing_mm", Json::nums(cmp.spacing_mm)),
        (
            "metadata",
            Json::obj([
                (
                    "tool",
                    Json::str(concat!("pulmo ", env!("CARGO_PKG_VERSION"))),
                ),
                ("hd95", Json::str(HD95_NOTE)),
                (
                    "hd",
                    Json::str("Hausdorff distance between the boundary voxels (mm)"),
                ),
                ("assd", Json::str("average symmetric surface distance (mm)")),
                (
                    "rvd_pct",
                    Json::str("(test - reference) / reference volume x 100"),
                ),
                (
                    "intensity",
                    Json::str(
                        "ME / MAE over the union of the masks of CT*test - CT*reference (HU); relative mean HU difference = (mean test - mean reference) / |mean reference| x 100",
                    ),
                ),
                (
                    "missing",
                    Json::str("null where a value is undefined (e.g. an empty mask)"),
                ),
                (
                    "label_any",
                    Json::str("\"any\" = every non-zero value as one mask"),
                ),
            ]),
        ),
        ("results", Json::Arr(results)),
    ])
}

/// The temporary file [`write_atomic`] writes first: `path` with `.tmp` appended, in
/// the same folder.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: to [`temporary_path`] in the same folder, then
/// renamed over `path`. On failure the temporary file is removed and an existing `path`
/// is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = temporary_path(path);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

    fn comparison() -> Comparison {
        use crate::volume::{Geometry, Volume};
        let g = Geometry::axis_aligned([4, 1, 1], [1.0, 2.0, 5.0], [0.0; 3]);
        let r = Volume::new(g.clone(), vec![1, 1, 2, 0]).expect("grid");
        let t = Volume::new(g, vec![1, 0, 2, 2]).expect("grid");
        crate::metrics::compare(&r, &t, &[1, 2]).expect("same grid")
    }

    #[test]
    fn compare_table_csv_and_json() {
        let cmp = comparison();
        let rows = compare_rows(&cmp);
        assert_eq!(
            rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
            ["1", "2", "any"]
        );
        let csv = compare_csv(&rows, false);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], format!("label,{}", COMPARE_COLUMNS.join(",")));
        // Label 1: reference 2 voxels, test 1 shared -> Dice 2/3; volumes 0.02 / 0.01 mL.
        let cells: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(cells.len(), 12);
        assert_eq!(cells[0], "1");
        assert_eq!(cells[1].parse::<f64>().unwrap(), 2.0 / 3.0);
        assert_eq!(cells[10].parse::<f64>().unwrap(), 0.02);
        assert!(lines[3].starts_with("any,"));
        // With intensity columns: 3 more cells per row (empty without values).
        let header = compare_csv(&rows, true);
        assert!(header.starts_with("label,dice,") && header.contains(",test_volume_ml,me_hu,"));

        let doc = compare_json("ref.nii", "test.nii", None, &cmp, &rows, false);
        assert_eq!(doc.get("reference"), Some(&Json::str("ref.nii")));
        assert_eq!(doc.get("ct"), Some(&Json::Null));
        assert_eq!(doc.get("dims"), Some(&Json::nums([4.0, 1.0, 1.0])));
        let Some(Json::Arr(results)) = doc.get("results") else {
            panic!("results");
        };
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].get("label"), Some(&Json::Num(1.0)));
        assert_eq!(results[2].get("label"), Some(&Json::str("any")));
        assert_eq!(results[0].get("dice"), Some(&Json::Num(2.0 / 3.0)));
        assert!(results[0].get("me_hu").is_none());
        let text = doc.to_pretty();
        assert!(text.contains("\"hd95\": \"MONAI definition"), "{text}");
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("table.csv");
        assert_eq!(temporary_path(&path), dir.path().join("table.csv.tmp"));
        write_atomic(&path, b"first").expect("write");
        write_atomic(&path, b"second").expect("overwrite");
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!temporary_path(&path).exists());
        // A folder that does not exist: an error, nothing written.
        let bad = dir.path().join("missing").join("x.csv");
        assert!(write_atomic(&bad, b"x").is_err());
        assert!(!bad.exists() && !temporary_path(&bad).exists());
        // A target that cannot be replaced (a folder): the error, the folder intact.
        let folder = dir.path().join("folder.csv");
        std::fs::create_dir(&folder).unwrap();
        assert!(write_atomic(&folder, b"x").is_err());
        assert!(folder.is_dir() && !temporary_path(&folder).exists());
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
