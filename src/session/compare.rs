//! The comparison and quantification workflows behind `pulmo compare` / `pulmo quantify`
//! and the viewer's Compare and Quantification windows: inputs → results → report
//! documents (JSON, CSV, text lines).
//!
//! GUI-free: the viewer runs [`CompareResult::run`] and [`QuantResult::compute`] on its
//! own threads and draws their results; the CLI prints the same documents.
//!
//! - Compare: both label maps are read (a file must lie on the CT's grid), every label
//!   present in either map and "any foreground" are compared ([`crate::metrics::compare`]), and
//!   one target gets slice-level detail ([`TargetDetail`]: per-slice Dice, the worst
//!   slices, the slice ROC and the TP / FP / FN agreement map).
//! - Quantify: [`crate::metrics::quantify::quantify`] with the default options and HU histograms
//!   of the lungs and lesions.
//! - `pulmo compare --batch`: [`BatchTable`], one row per case and label, then summary
//!   rows per label.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::io::{IoError, read_label_map};
use crate::metrics::agreement::{
    AgreementCodes, agreement_map, roc_curve, slice_scores, worst_slices,
};
use crate::metrics::quantify::{
    HU_BAND_NAMES, HuHistogram, LabelName, Quantification, QuantifyOptions, hu_histogram, quantify,
};
use crate::metrics::report::{
    COMPARE_COLUMNS, CompareDoc, CompareRow, Summary, compare_csv, compare_json, compare_rows,
    csv_field, csv_opt, summarize, target_label, to_json_text,
};
use crate::metrics::{Comparison, MetricsError, SliceMetrics, Target, fmt_opt};
use crate::view::{Plane, slice_index};
use crate::volume::{CtVolume, Geometry, LabelVolume};

/// The HU histograms' range and bin width.
pub const HIST_LO_HU: i32 = -1100;
pub const HIST_HI_HU: i32 = 200;
pub const HIST_BIN_HU: i32 = 10;
/// How many worst slices [`TargetDetail::worst`] lists.
pub const WORST_SLICES: usize = 5;

/// Errors of the comparison workflow.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Read(#[from] IoError),
    #[error("{} is not on the CT's grid, so it cannot be compared: {reason}", path.display())]
    OffGrid { path: PathBuf, reason: MetricsError },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A label map to compare: a snapshot in memory, or a file still to read.
pub enum MapInput {
    Ready(LabelVolume),
    File(PathBuf),
}

impl MapInput {
    /// The map. A file (NIfTI or NRRD; its reader's warnings are dropped) must lie on
    /// `ct_grid`; `side` names it in the grid error.
    pub fn load(self, ct_grid: &Geometry, side: &'static str) -> Result<LabelVolume, CompareError> {
        let path = match self {
            MapInput::Ready(v) => return Ok(v),
            MapInput::File(p) => p,
        };
        let volume = read_label_map(&path)?.volume;
        match crate::metrics::check_same_grid("CT", ct_grid, side, &volume.geometry) {
            Ok(()) => Ok(volume),
            Err(reason) => Err(CompareError::OffGrid { path, reason }),
        }
    }
}

/// Slice-level results for one target.
pub struct TargetDetail {
    pub target: Target,
    pub slices: SliceMetrics,
    /// Up to [`WORST_SLICES`] (k, Dice) with the lowest Dice among slices holding the
    /// target.
    pub worst: Vec<(usize, f64)>,
    /// ROC curve of per-slice scores (test voxels / max) against reference-positive.
    pub roc: Vec<[f64; 2]>,
    pub auc: Option<f64>,
    /// TP / FP / FN voxels of the target (the codes given to [`target_detail`]).
    pub agreement: LabelVolume,
    /// The axial view's slice number (1-based) of each k.
    pub slice_numbers: Vec<usize>,
}

/// Slice-level results, agreement map (written with `codes`) and ROC of one target.
pub fn target_detail(
    reference: &LabelVolume,
    test: &LabelVolume,
    target: Target,
    codes: AgreementCodes,
) -> Result<TargetDetail, MetricsError> {
    let slices = crate::metrics::slice_metrics(reference, test, target)?;
    let (scores, truth) = slice_scores(&slices);
    let auc = crate::metrics::roc_auc(&scores, &truth)?;
    let agreement = agreement_map(reference, test, target, codes)?;
    let g = &reference.geometry;
    let [nx, ny, nz] = g.dims;
    let slice_numbers = (0..nz)
        .map(|k| {
            let centre = nalgebra::Vector3::new(nx as f64 / 2.0, ny as f64 / 2.0, k as f64);
            slice_index(g, Plane::Axial, g.world_at_voxel(centre)).0
        })
        .collect();
    Ok(TargetDetail {
        target,
        worst: worst_slices(&slices, WORST_SLICES),
        roc: roc_curve(&scores, &truth),
        auc,
        slices,
        agreement,
        slice_numbers,
    })
}

/// The slice-level part of the viewer's comparison document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SliceLevelDoc {
    pub target: String,
    pub slice_sensitivity: Option<f64>,
    pub slice_specificity: Option<f64>,
    pub slice_accuracy: f64,
    pub mean_dice: f64,
    pub mean_dice_reference_positive: Option<f64>,
    pub roc_auc: Option<f64>,
    pub roc_score: &'static str,
    pub worst_slices: Vec<WorstSliceDoc>,
    pub per_slice_dice: Vec<f64>,
}

/// One of the worst slices: voxel index k, the axial view's slice number, Dice.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorstSliceDoc {
    pub k: usize,
    pub axial_slice: usize,
    pub dice: f64,
}

impl TargetDetail {
    /// The slice-level part of the viewer's comparison document.
    pub fn to_doc(&self) -> SliceLevelDoc {
        let s = &self.slices;
        SliceLevelDoc {
            target: target_label(self.target),
            slice_sensitivity: s.sensitivity,
            slice_specificity: s.specificity,
            slice_accuracy: s.accuracy,
            mean_dice: s.mean_dice,
            mean_dice_reference_positive: s.mean_dice_reference_positive,
            roc_auc: self.auc,
            roc_score: "test voxels of the target in the slice / the largest slice's; truth = the reference holds it",
            worst_slices: self
                .worst
                .iter()
                .map(|&(k, dice)| WorstSliceDoc {
                    k,
                    axial_slice: self.slice_numbers.get(k).copied().unwrap_or(k + 1),
                    dice,
                })
                .collect(),
            per_slice_dice: s.per_slice.iter().map(|x| x.dice).collect(),
        }
    }
}

/// The viewer's comparison document: [`CompareDoc`], then `slice_level`.
#[derive(serde::Serialize)]
struct ViewerCompareDoc {
    #[serde(flatten)]
    comparison: CompareDoc,
    slice_level: SliceLevelDoc,
}

/// A finished comparison of two maps.
pub struct CompareResult {
    pub reference_name: String,
    pub test_name: String,
    pub comparison: Comparison,
    pub rows: Vec<CompareRow>,
    pub detail: TargetDetail,
    /// From taking the inputs to the result.
    pub seconds: f64,
    /// The maps compared (kept to recompute the detail for another target).
    reference: Arc<LabelVolume>,
    test: Arc<LabelVolume>,
}

impl CompareResult {
    /// Loads both maps ([`MapInput::load`]: files must lie on `ct_grid`), compares every
    /// label present in either and any foreground, and computes the detail of `target`
    /// with agreement `codes`. `reference_name` and `test_name` name the maps in reports.
    pub fn run(
        reference: (MapInput, String),
        test: (MapInput, String),
        ct_grid: &Geometry,
        target: Target,
        codes: AgreementCodes,
    ) -> Result<CompareResult, CompareError> {
        let t0 = Instant::now();
        let r = reference.0.load(ct_grid, "reference map")?;
        let t = test.0.load(ct_grid, "test map")?;
        let labels = crate::metrics::labels_present(&r, &t);
        let comparison = crate::metrics::compare(&r, &t, &labels)?;
        let rows = compare_rows(&comparison);
        let detail = target_detail(&r, &t, target, codes)?;
        Ok(CompareResult {
            reference_name: reference.1,
            test_name: test.1,
            comparison,
            rows,
            detail,
            seconds: t0.elapsed().as_secs_f64(),
            reference: Arc::new(r),
            test: Arc::new(t),
        })
    }

    /// The reference and test maps compared.
    pub fn maps(&self) -> (Arc<LabelVolume>, Arc<LabelVolume>) {
        (self.reference.clone(), self.test.clone())
    }

    /// The metrics table as CSV.
    pub fn to_csv(&self) -> String {
        compare_csv(&self.rows, false)
    }

    /// The comparison document with its slice-level detail, as JSON text with a final
    /// newline; `ct` names the CT of the study.
    pub fn to_json(&self, ct: &str) -> String {
        let doc = ViewerCompareDoc {
            comparison: compare_json(
                &self.reference_name,
                &self.test_name,
                Some(ct),
                &self.comparison,
                &self.rows,
                false,
            ),
            slice_level: self.detail.to_doc(),
        };
        to_json_text(&doc) + "\n"
    }
}

/// The rows of a comparison (one per label, then "any"), with intensity metrics when
/// a CT on the maps' grid is given.
pub fn rows_with_intensity(
    cmp: &Comparison,
    ct: Option<&CtVolume>,
    reference: &LabelVolume,
    test: &LabelVolume,
) -> Result<Vec<CompareRow>, MetricsError> {
    cmp.per_label
        .iter()
        .chain(std::iter::once(&cmp.foreground))
        .map(|c| {
            let intensity = match ct {
                Some(ct) => Some(crate::metrics::intensity_metrics(
                    ct, reference, test, c.target,
                )?),
                None => None,
            };
            Ok(CompareRow::new(c, intensity))
        })
        .collect()
}

/// The comparison as text (`pulmo compare`): `reference vs test`, the table, then one
/// line of intensity metrics per row that has them.
pub fn compare_text(reference: &str, test: &str, cmp: &Comparison, rows: &[CompareRow]) -> String {
    let mut out = format!("{reference} vs {test}\n{cmp}");
    for row in rows.iter().filter(|r| r.intensity.is_some()) {
        let v = row.values();
        out += &format!(
            "{:<6} ME {} HU, MAE {} HU, relative mean HU difference {} %\n",
            row.label,
            fmt_opt(v[11], 2),
            fmt_opt(v[12], 2),
            fmt_opt(v[13], 2)
        );
    }
    out
}

/// The CSV of `pulmo compare --batch`: comment lines, a header, one row per case and
/// label, then ([`BatchTable::finish`]) summary rows per label.
pub struct BatchTable {
    text: String,
    /// label -> per-case values of each column.
    by_label: Vec<(String, Vec<Vec<Option<f64>>>)>,
}

impl Default for BatchTable {
    fn default() -> Self {
        let mut text = String::new();
        text += "# pulmo compare --batch: one row per case and label (label \"any\" = every non-zero value).\n";
        text += "# Then summary rows per label: the case column names the statistic over cases (empty cells left out):\n";
        text += "# n, mean, sd (sample, n-1), median, q1, q3, iqr (q3-q1); percentiles interpolate linearly.\n";
        text += "# Empty cell = undefined value. HD95 follows the MONAI definition.\n";
        text += &format!("case,label,{}\n", COMPARE_COLUMNS.join(","));
        Self {
            text,
            by_label: Vec::new(),
        }
    }
}

impl BatchTable {
    /// Adds one case's rows.
    pub fn add_case(&mut self, case: &str, rows: Vec<CompareRow>) {
        for row in rows {
            let values = row.values();
            let cells: Vec<String> = values.iter().map(|&v| csv_opt(v)).collect();
            self.text += &format!(
                "{},{},{}\n",
                csv_field(case),
                csv_field(&row.label),
                cells.join(",")
            );
            match self.by_label.iter_mut().find(|(l, _)| *l == row.label) {
                Some((_, cases)) => cases.push(values),
                None => self.by_label.push((row.label, vec![values])),
            }
        }
    }

    /// The CSV text with the summary rows: numeric labels ascending, then "any".
    pub fn finish(mut self) -> String {
        self.by_label
            .sort_by_key(|(l, _)| l.parse::<u16>().unwrap_or(u16::MAX));
        for (label, cases) in &self.by_label {
            let summaries: Vec<_> = (0..COMPARE_COLUMNS.len())
                .map(|c| summarize(cases.iter().map(|v| v[c])))
                .collect();
            type Stat = fn(&Summary) -> Option<f64>;
            let stats: [(&str, Stat); 7] = [
                ("n", |s| Some(s.n as f64)),
                ("mean", |s| Some(s.mean)),
                ("sd", |s| s.sd),
                ("median", |s| Some(s.median)),
                ("q1", |s| Some(s.q1)),
                ("q3", |s| Some(s.q3)),
                ("iqr", |s| Some(s.iqr())),
            ];
            for (stat, f) in stats {
                let cells: Vec<String> = summaries
                    .iter()
                    .map(|s| csv_opt(s.as_ref().and_then(f)))
                    .collect();
                self.text += &format!("{stat},{},{}\n", csv_field(label), cells.join(","));
            }
        }
        self.text
    }
}

/// A finished quantification (default options) with HU histograms.
pub struct QuantResult {
    pub quantification: Quantification,
    /// Of the lungs and lesion labels, [`HIST_LO_HU`]..[`HIST_HI_HU`] in bins of
    /// [`HIST_BIN_HU`].
    pub histogram: HuHistogram,
    pub seconds: f64,
}

impl QuantResult {
    /// Quantifies `labels` on `ct` with [`QuantifyOptions::default`].
    pub fn compute(ct: &CtVolume, labels: &LabelVolume) -> Result<QuantResult, MetricsError> {
        let t0 = Instant::now();
        let options = QuantifyOptions::default();
        let quantification = quantify(ct, labels, &options)?;
        let mut wanted = vec![options.left_lung, options.right_lung];
        wanted.extend(&options.lesion_labels);
        let histogram = hu_histogram(ct, labels, &wanted, HIST_LO_HU, HIST_HI_HU, HIST_BIN_HU)?;
        Ok(QuantResult {
            quantification,
            histogram,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// The tables as CSV.
    pub fn to_csv(&self, label_name: LabelName<'_>) -> String {
        crate::metrics::quantify::to_csv(&self.quantification, label_name)
    }

    /// The quantification document as JSON text with a final newline.
    pub fn to_json(&self, ct: &str, labels_file: &str, label_name: LabelName<'_>) -> String {
        let doc = crate::metrics::quantify::to_json(
            &self.quantification,
            &QuantifyOptions::default(),
            ct,
            labels_file,
            label_name,
        );
        to_json_text(&doc) + "\n"
    }
}

/// A target as the windows and reports name it: "3 GGO", "label 9" (no name), "any
/// foreground".
pub fn target_name(target: Target, label_name: LabelName<'_>) -> String {
    match target {
        Target::Label(l) => {
            label_name(l).map_or_else(|| format!("label {l}"), |n| format!("{l} {n}"))
        }
        Target::AnyForeground => "any foreground".into(),
    }
}

/// The text lines of the one-page report: a notice for a synthetic study, the
/// quantification (or that it was not computed), then the comparison if any.
pub fn report_lines(
    synthetic: bool,
    quantification: Option<&QuantResult>,
    comparison: Option<&CompareResult>,
    label_name: LabelName<'_>,
) -> Vec<String> {
    let mut lines = Vec::new();
    if synthetic {
        lines.push("SYNTHETIC DEMO STUDY - not patient data".to_string());
        lines.push(String::new());
    }
    match quantification {
        Some(q) => {
            lines.push("Quantification of the current labels".to_string());
            lines.extend(crate::metrics::quantify::text_lines(
                &q.quantification,
                label_name,
            ));
            let both = &q.quantification.lungs[2].whole;
            let bands: Vec<String> = HU_BAND_NAMES
                .iter()
                .enumerate()
                .map(|(b, n)| format!("{n} {} %", fmt_opt(both.band_pct(b), 1)))
                .collect();
            lines.push(format!("  HU bands (both lungs): {}", bands.join(", ")));
        }
        None => lines.push("Quantification: not computed".to_string()),
    }
    lines.push(String::new());
    if let Some(r) = comparison {
        lines.push(format!(
            "Comparison: reference {} vs test {}",
            r.reference_name, r.test_name
        ));
        lines.extend(r.comparison.to_string().lines().map(|l| format!("  {l}")));
        let d = &r.detail;
        lines.push(format!(
            "  {}: slice sensitivity {}, specificity {}, ROC AUC {}",
            target_name(d.target, label_name),
            fmt_opt(d.slices.sensitivity, 3),
            fmt_opt(d.slices.specificity, 3),
            fmt_opt(d.auc, 3)
        ));
        lines.push("  HD95: MONAI definition (larger of the two directed 95th percentiles)".into());
    }
    lines
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::volume::Volume;

    const CODES: AgreementCodes = AgreementCodes {
        true_positive: 1,
        false_positive: 2,
        false_negative: 3,
    };

    /// A 4 x 3 x 2 grid; label 3 at (1, 1, 0) and (2, 1, 0) in the reference, at
    /// (2, 1, 0) and (3, 1, 1) in the test (also the viewer's tests' case).
    pub(crate) fn maps() -> (Geometry, LabelVolume, LabelVolume) {
        let g = Geometry::axis_aligned([4, 3, 2], [1.0; 3], [0.0; 3]);
        let mut r = Volume::filled(g.clone(), 0u8).expect("grid");
        let mut t = Volume::filled(g.clone(), 0u8).expect("grid");
        r.set(1, 1, 0, 3);
        r.set(2, 1, 0, 3);
        t.set(2, 1, 0, 3);
        t.set(3, 1, 1, 3);
        (g, r, t)
    }

    #[test]
    fn detail_of_a_small_case() {
        let (_, r, t) = maps();
        let d = target_detail(&r, &t, Target::Label(3), CODES).expect("same grid");
        assert_eq!(d.agreement.get(2, 1, 0), CODES.true_positive);
        assert_eq!(d.agreement.get(1, 1, 0), CODES.false_negative);
        assert_eq!(d.agreement.get(3, 1, 1), CODES.false_positive);
        // k = 1 holds only a false positive: the worst slice.
        assert_eq!(d.worst, [(1, 0.0), (0, 2.0 / 3.0)]);
        assert_eq!(d.slice_numbers, [1, 2]);
        // One positive and one negative slice, the negative one scored as high.
        assert_eq!(d.auc, Some(0.5));
    }

    #[test]
    fn a_run_gives_the_table_the_detail_and_the_documents() {
        let (g, r, t) = maps();
        let res = CompareResult::run(
            (MapInput::Ready(r), "ref".into()),
            (MapInput::Ready(t), "test".into()),
            &g,
            Target::Label(3),
            CODES,
        )
        .expect("same grid");
        assert_eq!(res.rows.len(), 2, "label 3 and any");
        assert!(res.to_csv().starts_with("label,dice,"));
        let json = res.to_json("ct");
        assert!(json.ends_with("}\n"));
        let doc: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(doc["ct"], "ct");
        assert_eq!(doc["slice_level"]["target"], "3");
        assert_eq!(doc["slice_level"]["worst_slices"][0]["axial_slice"], 2);
        let slice_level = json.find("\"slice_level\"").expect("slice level");
        assert!(json.find("\"results\"").is_some_and(|r| r < slice_level));
        let name = |v: u8| (v == 3).then(|| "GGO".to_string());
        let lines = report_lines(true, None, Some(&res), &name);
        assert_eq!(lines[0], "SYNTHETIC DEMO STUDY - not patient data");
        assert_eq!(lines[2], "Quantification: not computed");
        assert_eq!(lines[4], "Comparison: reference ref vs test test");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("  3 GGO: slice sensitivity"))
        );
    }

    #[test]
    fn files_must_be_label_maps_on_the_ct_grid() {
        let (g, r, _) = maps();
        let dir = tempfile::tempdir().expect("tempdir");
        let dicom = dir.path().join("labels.dcm");
        let e = MapInput::File(dicom.clone())
            .load(&g, "test map")
            .expect_err("not a label map");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: a label map must be .nii, .nii.gz or .nrrd",
                dicom.display()
            )
        );
        let path = dir.path().join("labels.nii");
        crate::io::nifti::write_nifti(&path, &r).expect("write");
        let other = Geometry::axis_aligned([4, 3, 3], [1.0; 3], [0.0; 3]);
        let e = MapInput::File(path.clone())
            .load(&other, "test map")
            .expect_err("off the grid");
        assert!(
            e.to_string().starts_with(&format!(
                "{} is not on the CT's grid, so it cannot be compared: grids differ",
                path.display()
            )),
            "{e}"
        );
        let read = MapInput::File(path)
            .load(&g, "test map")
            .expect("on the grid");
        assert_eq!(read.voxels, r.voxels);
    }

    #[test]
    fn batch_table_rows_then_summaries() {
        let (_, r, t) = maps();
        let cmp = crate::metrics::compare(&r, &t, &[3]).expect("same grid");
        let mut table = BatchTable::default();
        table.add_case("a,b", compare_rows(&cmp));
        table.add_case("c", compare_rows(&cmp));
        let text = table.finish();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines[0].starts_with("case,label,dice,"));
        assert!(lines[1].starts_with("\"a,b\",3,"));
        // 4 case rows, then 7 statistics for label 3 and for "any".
        assert_eq!(lines.len(), 1 + 4 + 14);
        assert!(lines[5].starts_with("n,3,2,"), "{}", lines[5]);
        assert!(lines[12].starts_with("n,any,2,"), "{}", lines[12]);
    }
}
