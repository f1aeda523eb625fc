//! `pulmo batch merge OUT`: the rows of every study folder joined into one table
//! (`results.csv`, `results.json`) with summary statistics of the successful rows.

use std::path::Path;

use serde::Serialize;

use super::BatchError;
use super::study::{NUMERIC_COLUMNS, Row, read_record};
use crate::metrics::report::{csv_field, csv_opt};
use crate::metrics::surface::percentile_linear;

/// Summary of one numeric column over the successful rows that have it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnSummary {
    pub column: &'static str,
    pub n: usize,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    /// 25th and 75th percentiles (linear, as numpy).
    pub q1: Option<f64>,
    pub q3: Option<f64>,
}

/// The merged table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merged {
    /// Rows sorted by study id.
    pub rows: Vec<Row>,
    pub summary: Vec<ColumnSummary>,
    /// Ids of the failed studies.
    pub failed: Vec<String>,
}

/// The CSV header of the results table.
pub fn csv_header() -> String {
    let mut h = vec!["id", "ct", "status", "error"];
    h.extend(NUMERIC_COLUMNS);
    h.join(",")
}

/// One row as CSV.
pub fn csv_line(r: &Row) -> String {
    let mut cells = vec![
        csv_field(&r.id),
        csv_field(&r.ct),
        csv_field(&r.status),
        csv_field(r.error.as_deref().unwrap_or("")),
    ];
    cells.extend(r.numbers().iter().map(|v| csv_opt(*v)));
    cells.join(",")
}

impl Merged {
    /// Joins rows (any order) into the sorted table with its summaries.
    pub fn from_rows(mut rows: Vec<Row>) -> Merged {
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let failed = rows
            .iter()
            .filter(|r| !r.ok())
            .map(|r| r.id.clone())
            .collect();
        let summary = NUMERIC_COLUMNS
            .iter()
            .enumerate()
            .map(|(c, &column)| {
                let mut v: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.ok())
                    .filter_map(|r| r.numbers()[c])
                    .filter(|x| x.is_finite())
                    .collect();
                let n = v.len();
                let mean = (n > 0).then(|| v.iter().sum::<f64>() / n as f64);
                ColumnSummary {
                    column,
                    n,
                    mean,
                    median: percentile_linear(&mut v, 50.0),
                    q1: percentile_linear(&mut v, 25.0),
                    q3: percentile_linear(&mut v, 75.0),
                }
            })
            .collect();
        Merged {
            rows,
            summary,
            failed,
        }
    }

    pub fn to_csv(&self) -> String {
        let mut s = csv_header() + "\n";
        for r in &self.rows {
            s += &csv_line(r);
            s.push('\n');
        }
        s
    }
}

/// Reads every `OUT/studies/*/row.json` and writes `OUT/results.csv` and
/// `OUT/results.json`.
pub fn merge(out: &Path) -> Result<Merged, BatchError> {
    let studies = out.join("studies");
    let entries = std::fs::read_dir(&studies).map_err(|source| BatchError::Io {
        path: studies.clone(),
        source,
    })?;
    let mut rows = Vec::new();
    for e in entries.flatten() {
        if e.path().is_dir() {
            match read_record(&e.path()) {
                Some(r) => rows.push(r.row),
                None if e.path().join(super::study::ROW_FILE).exists() => {
                    return Err(BatchError::Output {
                        path: e.path().join(super::study::ROW_FILE),
                        message: "not a study record (damaged? run the batch again)".into(),
                    });
                }
                // A study still running or killed before its row: not in the table.
                None => {}
            }
        }
    }
    let merged = Merged::from_rows(rows);
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        crate::io::atomic::write_bytes(&path, bytes).map_err(|source| BatchError::Io {
            path: path.clone(),
            source,
        })
    };
    write("results.csv", merged.to_csv().as_bytes())?;
    let json = serde_json::to_string_pretty(&merged).map_err(|e| BatchError::Output {
        path: out.join("results.json"),
        message: e.to_string(),
    })? + "\n";
    write("results.json", json.as_bytes())?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, lungs: Option<f64>, ok: bool) -> Row {
        Row {
            id: id.into(),
            ct: format!("{id}.nii.gz"),
            status: if ok { "ok" } else { "failed" }.into(),
            error: (!ok).then(|| format!("{id}.nii.gz: no such file")),
            seconds: 1.0,
            segment_seconds: None,
            left_lung_ml: None,
            right_lung_ml: None,
            lungs_ml: lungs,
            ggo_ml: None,
            consolidation_ml: None,
            involvement_pct: None,
            dice: None,
            hd95_mm: None,
        }
    }

    #[test]
    fn rows_are_sorted_and_summarised_over_successes() {
        let m = Merged::from_rows(vec![
            row("c", Some(3000.0), true),
            row("a", Some(1000.0), true),
            row("d", Some(9999.0), false),
            row("b", Some(2000.0), true),
            row("e", Some(4000.0), true),
        ]);
        let ids: Vec<_> = m.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);
        assert_eq!(m.failed, ["d"]);
        let lungs = m.summary.iter().find(|s| s.column == "lungs_ml").unwrap();
        assert_eq!(lungs.n, 4);
        assert_eq!(lungs.mean, Some(2500.0));
        assert_eq!(lungs.median, Some(2500.0));
        assert_eq!((lungs.q1, lungs.q3), (Some(1750.0), Some(3250.0)));
        let dice = m.summary.iter().find(|s| s.column == "dice").unwrap();
        assert_eq!((dice.n, dice.mean), (0, None));
        let csv = m.to_csv();
        assert_eq!(csv.lines().next().unwrap(), csv_header());
        assert!(
            csv.lines()
                .any(|l| l.starts_with("d,d.nii.gz,failed,d.nii.gz: no such file,"))
        );
    }
}
