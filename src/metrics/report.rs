//! Plain-text report helpers for the metrics: JSON text in pulmo's report layout,
//! CSV cells, summary statistics over cases, and the comparison table as CSV and JSON
//! (shared by `pulmo compare` and the viewer's Compare window).
//!
//! JSON documents are serde-derived structs (keys in field order; [`Ordered`] for keys
//! only known at run time) written by [`to_json_text`]: two-space indentation, arrays
//! of scalars on one line (`[1, 0.5, -2]`), numbers with Rust's `{}` formatting
//! (shortest representation that reads back exactly, so `1` rather than `1.0`),
//! non-finite numbers and `None` as `null`. In CSV, missing values are empty cells
//! ([`csv_opt`]); never NaN.

use std::io::{self, Write};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::ser::{CharEscape, Formatter};

use super::surface::percentile_linear;
use super::{Comparison, IntensityMetrics, Target, TargetComparison};

/// An object whose keys are known only at run time, written in insertion order.
#[derive(Debug, Clone, PartialEq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> FromIterator<(String, V)> for Ordered<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        Ordered(iter.into_iter().collect())
    }
}

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `value` as indented JSON text in the report layout (see the module doc), without a
/// trailing newline.
pub fn to_json_text<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, ReportFormatter::default());
    // Writing into a Vec fails only for a Serialize impl that reports an error itself
    // (none of the report documents do); the text written so far is returned then.
    let _ = value.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// serde_json's pretty layout with two differences: an array whose first element is
/// a scalar is written on one line with `", "` between elements, and floats use `{}`.
/// (The documents' arrays are homogeneous: all scalars or all containers.)
#[derive(Default)]
struct ReportFormatter {
    /// Nesting depth of the containers being written.
    depth: usize,
    /// One entry per open array: whether it is written on one line, once known.
    arrays: Vec<Option<bool>>,
    /// An array element was announced and its separator is not written yet: whether it
    /// is the first.
    pending: Option<bool>,
    /// The innermost open container has an element.
    has_value: bool,
}

impl ReportFormatter {
    fn indent<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        for _ in 0..self.depth {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    /// Writes the separator of an announced array element once its kind is known.
    fn element<W: ?Sized + Write>(&mut self, w: &mut W, container: bool) -> io::Result<()> {
        let Some(first) = self.pending.take() else {
            return Ok(());
        };
        let inline = match self.arrays.last_mut() {
            Some(mode) => *mode.get_or_insert(!container),
            None => false,
        };
        if inline {
            if !first {
                w.write_all(b", ")?;
            }
            Ok(())
        } else {
            if !first {
                w.write_all(b",")?;
            }
            w.write_all(b"\n")?;
            self.indent(w)
        }
    }
}

impl Formatter for ReportFormatter {
    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.element(w, false)?;
        w.write_all(b"null")
    }
    fn write_bool<W: ?Sized + Write>(&mut self, w: &mut W, value: bool) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_i8<W: ?Sized + Write>(&mut self, w: &mut W, value: i8) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_i16<W: ?Sized + Write>(&mut self, w: &mut W, value: i16) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_i32<W: ?Sized + Write>(&mut self, w: &mut W, value: i32) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_i64<W: ?Sized + Write>(&mut self, w: &mut W, value: i64) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_i128<W: ?Sized + Write>(&mut self, w: &mut W, value: i128) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_u8<W: ?Sized + Write>(&mut self, w: &mut W, value: u8) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_u16<W: ?Sized + Write>(&mut self, w: &mut W, value: u16) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_u32<W: ?Sized + Write>(&mut self, w: &mut W, value: u32) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_u64<W: ?Sized + Write>(&mut self, w: &mut W, value: u64) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_u128<W: ?Sized + Write>(&mut self, w: &mut W, value: u128) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    /// `{}` formatting (serde_json calls `write_null` for non-finite values).
    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        self.element(w, false)?;
        write!(w, "{value}")
    }
    fn write_number_str<W: ?Sized + Write>(&mut self, w: &mut W, value: &str) -> io::Result<()> {
        self.element(w, false)?;
        w.write_all(value.as_bytes())
    }
    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.element(w, false)?;
        w.write_all(b"\"")
    }
    /// Control characters other than `\n`, `\r`, `\t` as `\u00xx` (also backspace and
    /// form feed, which serde_json would write as `\b` and `\f`).
    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        match escape {
            CharEscape::Quote => w.write_all(b"\\\""),
            CharEscape::ReverseSolidus => w.write_all(b"\\\\"),
            CharEscape::Solidus => w.write_all(b"/"),
            CharEscape::LineFeed => w.write_all(b"\\n"),
            CharEscape::CarriageReturn => w.write_all(b"\\r"),
            CharEscape::Tab => w.write_all(b"\\t"),
            CharEscape::Backspace => w.write_all(b"\\u0008"),
            CharEscape::FormFeed => w.write_all(b"\\u000c"),
            CharEscape::AsciiControl(c) => write!(w, "\\u{:04x}", c),
        }
    }
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.element(w, true)?;
        self.depth += 1;
        self.arrays.push(None);
        self.has_value = false;
        w.write_all(b"[")
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        let inline = self.arrays.pop().flatten().unwrap_or(true);
        if self.has_value && !inline {
            w.write_all(b"\n")?;
            self.indent(w)?;
        }
        self.has_value = true;
        w.write_all(b"]")
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, _w: &mut W, first: bool) -> io::Result<()> {
        self.pending = Some(first);
        Ok(())
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.element(w, true)?;
        self.depth += 1;
        self.arrays.push(Some(false));
        self.has_value = false;
        w.write_all(b"{")
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        self.arrays.pop();
        if self.has_value {
            w.write_all(b"\n")?;
            self.indent(w)?;
        }
        self.has_value = true;
        w.write_all(b"}")
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        w.write_all(b"\n")?;
        self.indent(w)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
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

/// The comparison as a JSON document ([`compare_json`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompareDoc {
    /// What was compared: file paths or descriptions.
    pub reference: String,
    pub test: String,
    pub ct: Option<String>,
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub metadata: CompareNotes,
    /// One object per row: `label` (the value, or "any"), then the columns.
    pub results: Vec<Ordered<serde_json::Value>>,
}

/// Notes on the definitions in a comparison document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompareNotes {
    pub tool: &'static str,
    pub hd95: &'static str,
    pub hd: &'static str,
    pub assd: &'static str,
    pub rvd_pct: &'static str,
    pub intensity: &'static str,
    pub missing: &'static str,
    pub label_any: &'static str,
}

impl Default for CompareNotes {
    fn default() -> Self {
        Self {
            tool: concat!("pulmo ", env!("CARGO_PKG_VERSION")),
            hd95: HD95_NOTE,
            hd: "Hausdorff distance between the boundary voxels (mm)",
            assd: "average symmetric surface distance (mm)",
            rvd_pct: "(test - reference) / reference volume x 100",
            intensity: "ME / MAE over the union of the masks of CT*test - CT*reference (HU); relative mean HU difference = (mean test - mean reference) / |mean reference| x 100",
            missing: "null where a value is undefined (e.g. an empty mask)",
            label_any: "\"any\" = every non-zero value as one mask",
        }
    }
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
) -> CompareDoc {
    let columns = compare_columns(with_intensity);
    let label_json = |l: &str| match l.parse::<f64>() {
        Ok(v) => serde_json::Value::from(v),
        Err(_) => serde_json::Value::from(l),
    };
    let results = rows
        .iter()
        .map(|row| {
            std::iter::once(("label".to_string(), label_json(&row.label)))
                .chain(
                    columns
                        .iter()
                        .zip(row.values())
                        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v))),
                )
                .collect()
        })
        .collect();
    CompareDoc {
        reference: reference.to_string(),
        test: test.to_string(),
        ct: ct.map(str::to_string),
        dims: cmp.dims,
        spacing_mm: cmp.spacing_mm,
        metadata: CompareNotes::default(),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Sample {
        v: Vec<f64>,
        o: Option<f64>,
        n: f64,
        s: &'static str,
        t: bool,
        e: Vec<f64>,
        m: Ordered<f64>,
        a: Vec<Ordered<f64>>,
    }

    #[test]
    fn json_text_layout_escapes_and_nulls() {
        let doc = Sample {
            v: vec![1.0, 0.5, -2.0, 1e21],
            o: None,
            n: f64::NAN,
            s: "x\\y\n\u{1}\u{8}\"",
            t: true,
            e: vec![],
            m: Ordered(vec![("a\"b".into(), f64::INFINITY)]),
            a: vec![Ordered(vec![("k".into(), 1.0)])],
        };
        assert_eq!(
            to_json_text(&doc),
            r#"{
  "v": [1, 0.5, -2, 1000000000000000000000],
  "o": null,
  "n": null,
  "s": "x\\y\n\u0001\u0008\"",
  "t": true,
  "e": [],
  "m": {
    "a\"b": null
  },
  "a": [
    {
      "k": 1
    }
  ]
}"#
        );
        assert_eq!(to_json_text(&Ordered::<f64>(vec![])), "{}");
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
        let text = to_json_text(&doc);
        let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(doc["reference"], "ref.nii");
        assert!(doc["ct"].is_null());
        assert_eq!(doc["dims"], serde_json::json!([4, 1, 1]));
        let results = doc["results"].as_array().expect("results");
        assert_eq!(results.len(), 3);
        assert_eq!(results[0]["label"].as_f64(), Some(1.0));
        assert_eq!(results[2]["label"], "any");
        assert_eq!(results[0]["dice"].as_f64(), Some(2.0 / 3.0));
        assert!(results[0].get("me_hu").is_none());
        assert!(text.contains("\n  \"dims\": [4, 1, 1],\n"), "{text}");
        assert!(text.contains("\"hd95\": \"MONAI definition"), "{text}");
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
