//! Scoring lung proposals against reference masks on the full CT grid (Dice, Jaccard,
//! mean (absolute) HU error, relative volume and mean-HU differences), as the
//! lung-segmentation seed reports them; shared by `pulmo train`, `pulmo eval` and the
//! tests (no libtorch needed). Lesions: per-slice Dice and instances on the 2D test
//! slices, slice-level calls on real volumes with slice labels, and false positives on
//! radiologist-graded normal slices.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{InferError, RunContext, SegmentInput, Segmenter};
use crate::io::nifti::{read_nifti_ct, read_nifti_labels};
use crate::metrics::Target;
use crate::metrics::intensity::intensity_metrics;
use crate::metrics::overlap::{JointHistogram, OverlapMetrics};
use crate::volume::{CtVolume, LabelVolume};

/// One CT with its reference mask.
pub struct Case {
    pub name: String,
    pub ct: CtVolume,
    pub mask: LabelVolume,
    pub ct_path: PathBuf,
}

/// Reads `NAME_ct.nii.gz` and `NAME_lungs.nii.gz` from `dir`.
pub fn read_lung_case(dir: &Path, name: &str) -> Result<Case, InferError> {
    let ct_path = dir.join(format!("{name}_ct.nii.gz"));
    let mask_path = dir.join(format!("{name}_lungs.nii.gz"));
    let data_err = |path: &Path, message: String| InferError::Data {
        path: path.to_path_buf(),
        message,
    };
    let ct = read_nifti_ct(&ct_path)
        .map_err(|e| data_err(&ct_path, e.to_string()))?
        .volume;
    let mask = read_nifti_labels(&mask_path)
        .map_err(|e| data_err(&mask_path, e.to_string()))?
        .volume;
    if ct.geometry.dims != mask.geometry.dims {
        return Err(data_err(
            &mask_path,
            format!(
                "mask dims {:?} differ from the CT's {:?}",
                mask.geometry.dims, ct.geometry.dims
            ),
        ));
    }
    Ok(Case {
        name: name.to_string(),
        ct,
        mask,
        ct_path,
    })
}

/// Per-case evaluation of a lung model on the full CT grid, as the lung-segmentation
/// seed reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LungCaseMetrics {
    pub case: String,
    pub dice: f64,
    pub jaccard: f64,
    pub mean_error_hu: f64,
    pub mean_absolute_error_hu: f64,
    pub relative_volume_difference_pct: Option<f64>,
    pub relative_mean_hu_difference_pct: Option<f64>,
    pub volume_ml_reference: f64,
    pub volume_ml_predicted: f64,
    pub seconds: f64,
}

/// Runs `seg` on a case and scores "any lung" against the reference mask.
pub fn evaluate_lung_case(
    seg: &mut dyn Segmenter,
    case: &Case,
) -> Result<LungCaseMetrics, InferError> {
    let t = Instant::now();
    let p = RunContext::detached(|ctx| seg.segment(&case.ct, SegmentInput::default(), ctx))?;
    let seconds = t.elapsed().as_secs_f64();
    score_lungs(&case.name, &case.ct, &case.mask, &p.labels, seconds)
}

/// Lung metrics of `predicted` (any non-zero) against `reference` (any non-zero).
pub fn score_lungs(
    name: &str,
    ct: &crate::volume::CtVolume,
    reference: &LabelVolume,
    predicted: &LabelVolume,
    seconds: f64,
) -> Result<LungCaseMetrics, InferError> {
    let bad = |e: crate::metrics::MetricsError| InferError::Input(format!("{name}: {e}"));
    let hist = JointHistogram::new(reference, predicted).map_err(bad)?;
    let ml = crate::metrics::voxel_volume_ml(&reference.geometry);
    let o = OverlapMetrics::from_counts(hist.confusion(Target::AnyForeground), ml);
    let i = intensity_metrics(ct, reference, predicted, Target::AnyForeground).map_err(bad)?;
    Ok(LungCaseMetrics {
        case: name.to_string(),
        dice: o.dice,
        jaccard: o.jaccard,
        mean_error_hu: i.mean_error_hu,
        mean_absolute_error_hu: i.mean_absolute_error_hu,
        relative_volume_difference_pct: o.relative_volume_difference_pct,
        relative_mean_hu_difference_pct: i.relative_mean_hu_difference_pct,
        volume_ml_reference: o.reference_volume_ml,
        volume_ml_predicted: o.test_volume_ml,
        seconds,
    })
}

/// Per-slice results on COVID-SemiSeg test slices (the Inf-Net protocol: Dice per
/// slice, averaged over slices; 1 when reference and prediction are both empty).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LesionSliceMetrics {
    pub slice: String,
    pub dice_infection: f64,
    pub dice_ggo: f64,
    pub dice_consolidation: f64,
}

/// Runs a lesion segmenter on every slice of a COVID-SemiSeg split folder.
pub fn evaluate_semiseg(
    seg: &mut dyn super::Segmenter,
    dir: &Path,
) -> Result<Vec<LesionSliceMetrics>, InferError> {
    Ok(evaluate_semiseg_full(seg, dir)?.slices)
}

/// Lesion instances on the test slices (connected components of "any lesion" per
/// slice, 8-connected in-plane), scored COCO-style over all slices, and the slice-level
/// call "any lesion on this slice".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LesionInstanceScores {
    pub reference_instances: usize,
    pub predicted_instances: usize,
    /// AP at IoU 0.5 and the mean over 0.50:0.05:0.95 (pycocotools' dataset-level AP;
    /// an instance's score is its mean proposal confidence).
    pub ap50: Option<f64>,
    pub ap75: Option<f64>,
    pub map50_95: Option<f64>,
    pub slices_with_lesion: usize,
    pub slice_sensitivity: Option<f64>,
    pub slice_specificity: Option<f64>,
}

/// Per-slice Dice and the instance scores of one run over a COVID-SemiSeg split.
pub struct SemisegEvaluation {
    pub slices: Vec<LesionSliceMetrics>,
    pub instances: LesionInstanceScores,
}

/// [`evaluate_semiseg`] with lesion instances and slice-level calls.
pub fn evaluate_semiseg_full(
    seg: &mut dyn super::Segmenter,
    dir: &Path,
) -> Result<SemisegEvaluation, InferError> {
    use super::lesion_data::{read_semiseg, slice_dice};
    use super::{CONSOLIDATION, GGO, RunContext, SegmentInput};
    use crate::metrics::instances::{Connectivity, match_instances, pooled_coco_ap};
    let mut rows = Vec::new();
    let mut matchings = Vec::new();
    let (mut tp, mut fneg, mut fp, mut tn) = (0usize, 0usize, 0usize, 0usize);
    for s in read_semiseg(dir)? {
        let p = RunContext::detached(|ctx| seg.segment(&s.ct, SegmentInput::default(), ctx))?;
        let (r, q) = (&s.labels.voxels, &p.labels.voxels);
        rows.push(LesionSliceMetrics {
            slice: s.name.clone(),
            dice_infection: slice_dice(r, q, None),
            dice_ggo: slice_dice(r, q, Some(GGO)),
            dice_consolidation: slice_dice(r, q, Some(CONSOLIDATION)),
        });
        let m = match_instances(
            &s.labels,
            &p.labels,
            Target::AnyForeground,
            Connectivity::TwentySix,
        )
        .map_err(|e| InferError::Input(format!("slice {}: {e}", s.name)))?;
        let scores: Vec<f64> = m.test.mean_values(&p.confidence);
        matchings.push((m, scores));
        match (r.iter().any(|&v| v != 0), q.iter().any(|&v| v != 0)) {
            (true, true) => tp += 1,
            (true, false) => fneg += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
        }
    }
    let images: Vec<_> = matchings.iter().map(|(m, s)| (m, s.as_slice())).collect();
    let ap = pooled_coco_ap(&images).map_err(|e| InferError::Input(e.to_string()))?;
    let instances = LesionInstanceScores {
        reference_instances: matchings.iter().map(|(m, _)| m.reference.count()).sum(),
        predicted_instances: matchings.iter().map(|(m, _)| m.test.count()).sum(),
        ap50: ap.ap50,
        ap75: ap.ap75,
        map50_95: ap.ap50_95,
        slices_with_lesion: tp + fneg,
        slice_sensitivity: ratio(tp, tp + fneg),
        slice_specificity: ratio(tn, tn + fp),
    };
    Ok(SemisegEvaluation {
        slices: rows,
        instances,
    })
}

/// Means of [`evaluate_semiseg`] rows: (infection, GGO, consolidation).
pub fn semiseg_means(rows: &[LesionSliceMetrics]) -> (f64, f64, f64) {
    let n = rows.len().max(1) as f64;
    (
        rows.iter().map(|r| r.dice_infection).sum::<f64>() / n,
        rows.iter().map(|r| r.dice_ggo).sum::<f64>() / n,
        rows.iter().map(|r| r.dice_consolidation).sum::<f64>() / n,
    )
}

/// A real CT volume with the radiologists' slice-level infection labels (the COVID-CT-MD
/// layout: `NAME_ct.nii.gz` and `NAME_slice_labels.txt`, one 0/1 line per slice of the
/// NIfTI in its own slice order; a volume whose name starts with `Normal` and has no
/// label file has no infection on any slice).
pub struct SliceLabelledVolume {
    pub name: String,
    pub ct: CtVolume,
    /// Per slice k: the radiologists marked infection on it.
    pub infected: Vec<bool>,
    pub ct_path: PathBuf,
}

/// Reads every `*_ct.nii.gz` of `dir` with its slice labels, in name order.
pub fn read_slice_labelled_volumes(dir: &Path) -> Result<Vec<SliceLabelledVolume>, InferError> {
    let data_err = |path: &Path, message: String| InferError::Data {
        path: path.to_path_buf(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| data_err(dir, e.to_string()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix("_ct.nii.gz"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(data_err(
            dir,
            "no NAME_ct.nii.gz volumes in this folder".into(),
        ));
    }
    let mut out = Vec::new();
    for name in names {
        let ct_path = dir.join(format!("{name}_ct.nii.gz"));
        let ct = read_nifti_ct(&ct_path)
            .map_err(|e| data_err(&ct_path, e.to_string()))?
            .volume;
        let nz = ct.geometry.dims[2];
        let labels_path = dir.join(format!("{name}_slice_labels.txt"));
        let infected = match std::fs::read_to_string(&labels_path) {
            Ok(text) => parse_slice_labels(&text, nz).map_err(|m| data_err(&labels_path, m))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !name.to_ascii_lowercase().starts_with("normal") {
                    return Err(data_err(
                        &labels_path,
                        "missing (only volumes named Normal* may go without slice labels)".into(),
                    ));
                }
                vec![false; nz]
            }
            Err(e) => return Err(data_err(&labels_path, e.to_string())),
        };
        out.push(SliceLabelledVolume {
            name,
            ct,
            infected,
            ct_path,
        });
    }
    Ok(out)
}

/// One `0`/`1` per line, exactly `slices` lines (blank lines ignored).
pub fn parse_slice_labels(text: &str, slices: usize) -> Result<Vec<bool>, String> {
    let mut out = Vec::with_capacity(slices);
    for (i, line) in text.lines().enumerate() {
        match line.trim() {
            "" => continue,
            "0" => out.push(false),
            "1" => out.push(true),
            other => {
                return Err(format!(
                    "line {}: expected 0 or 1, found {:?}",
                    i + 1,
                    other.chars().take(20).collect::<String>()
                ));
            }
        }
    }
    if out.len() != slices {
        return Err(format!(
            "{} slice labels for a volume of {slices} slices",
            out.len()
        ));
    }
    Ok(out)
}

/// Slice-level scores of lesion proposals on one volume: a slice is called positive
/// when the proposal covers at least `min_area_mm2` of it (any lesion class).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeLesionMetrics {
    pub case: String,
    pub slices: usize,
    /// Slices on which the lung proposal has any voxel.
    pub lung_slices: usize,
    pub labelled_positive: usize,
    pub true_positive: usize,
    pub false_positive: usize,
    pub false_negative: usize,
    pub true_negative: usize,
    /// None when no slice is labelled positive.
    pub sensitivity: Option<f64>,
    /// Over every slice (the data set's protocol); None when no slice is negative.
    pub specificity: Option<f64>,
    /// Negative slices that contain lung, and how many of them were not called.
    pub negative_lung_slices: usize,
    pub true_negative_lung_slices: usize,
    /// Over the negative slices that contain lung (the harder half).
    pub specificity_lung_slices: Option<f64>,
    pub ggo_ml: f64,
    pub consolidation_ml: f64,
    pub lung_ml: f64,
    /// Lesion volume as a percentage of the lung volume.
    pub involvement_pct: Option<f64>,
    /// Slice indices (the volume's own k) labelled positive and not called.
    pub missed_slices: Vec<usize>,
    /// Slice indices called positive but labelled negative.
    pub false_positive_slices: Vec<usize>,
    pub seconds: f64,
}

/// Counts of a binary confusion table as ratios (None when the denominator is 0).
fn ratio(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// Scores `lesions` (labels [`super::GGO`] / [`super::CONSOLIDATION`]) against slice
/// labels; `lungs` (any non-zero) gives the lung volume and which slices hold lung.
pub fn score_slice_labels(
    name: &str,
    infected: &[bool],
    lesions: &LabelVolume,
    lungs: &LabelVolume,
    min_area_mm2: f64,
    seconds: f64,
) -> Result<VolumeLesionMetrics, InferError> {
    use super::{CONSOLIDATION, GGO};
    let g = &lesions.geometry;
    let [nx, ny, nz] = g.dims;
    if infected.len() != nz || lungs.geometry.dims != g.dims {
        return Err(InferError::Input(format!(
            "{name}: {} slice labels, lesion grid {:?}, lung grid {:?} do not match",
            infected.len(),
            g.dims,
            lungs.geometry.dims
        )));
    }
    let pixel_mm2 = g.spacing_mm[0] * g.spacing_mm[1];
    let ml = crate::metrics::voxel_volume_ml(g);
    let mut m = VolumeLesionMetrics {
        case: name.to_string(),
        slices: nz,
        lung_slices: 0,
        labelled_positive: infected.iter().filter(|&&b| b).count(),
        true_positive: 0,
        false_positive: 0,
        false_negative: 0,
        true_negative: 0,
        sensitivity: None,
        specificity: None,
        negative_lung_slices: 0,
        true_negative_lung_slices: 0,
        specificity_lung_slices: None,
        ggo_ml: 0.0,
        consolidation_ml: 0.0,
        lung_ml: 0.0,
        involvement_pct: None,
        missed_slices: Vec::new(),
        false_positive_slices: Vec::new(),
        seconds,
    };
    for (k, &truth) in infected.iter().enumerate() {
        let s = &lesions.voxels[k * nx * ny..(k + 1) * nx * ny];
        let ggo = s.iter().filter(|&&v| v == GGO).count();
        let con = s.iter().filter(|&&v| v == CONSOLIDATION).count();
        let lung = lungs.slice_k(k).iter().filter(|&&v| v != 0).count();
        m.ggo_ml += ggo as f64 * ml;
        m.consolidation_ml += con as f64 * ml;
        m.lung_ml += lung as f64 * ml;
        let called = (ggo + con) as f64 * pixel_mm2 >= min_area_mm2;
        if lung > 0 {
            m.lung_slices += 1;
        }
        match (truth, called) {
            (true, true) => m.true_positive += 1,
            (true, false) => {
                m.false_negative += 1;
                m.missed_slices.push(k);
            }
            (false, true) => {
                m.false_positive += 1;
                m.false_positive_slices.push(k);
            }
            (false, false) => m.true_negative += 1,
        }
        if !truth && lung > 0 {
            m.negative_lung_slices += 1;
            m.true_negative_lung_slices += usize::from(!called);
        }
    }
    m.sensitivity = ratio(m.true_positive, m.labelled_positive);
    m.specificity = ratio(m.true_negative, m.true_negative + m.false_positive);
    m.specificity_lung_slices = ratio(m.true_negative_lung_slices, m.negative_lung_slices);
    m.involvement_pct =
        (m.lung_ml > 0.0).then(|| 100.0 * (m.ggo_ml + m.consolidation_ml) / m.lung_ml);
    Ok(m)
}

/// Pooled slice-level sensitivity and specificity over volumes:
/// (sensitivity, specificity, specificity on lung slices).
pub fn pooled_slice_scores(
    rows: &[VolumeLesionMetrics],
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let sum = |f: fn(&VolumeLesionMetrics) -> usize| rows.iter().map(f).sum::<usize>();
    let (tp, fp, fneg, tn) = (
        sum(|r| r.true_positive),
        sum(|r| r.false_positive),
        sum(|r| r.false_negative),
        sum(|r| r.true_negative),
    );
    let spec_lung = ratio(
        sum(|r| r.true_negative_lung_slices),
        sum(|r| r.negative_lung_slices),
    );
    (ratio(tp, tp + fneg), ratio(tn, tn + fp), spec_lung)
}

/// The lung proposal, then the lesion proposal inside those lungs, as the viewer runs them.
fn lesions_in_lungs(
    lung: &mut dyn Segmenter,
    lesion: &mut dyn Segmenter,
    ct: &CtVolume,
) -> Result<(super::Proposal, super::Proposal), InferError> {
    let lungs = RunContext::detached(|ctx| lung.segment(ct, SegmentInput::default(), ctx))?;
    let input = SegmentInput {
        lungs: Some(&lungs.labels),
    };
    let lesions = RunContext::detached(|ctx| lesion.segment(ct, input, ctx))?;
    Ok((lungs, lesions))
}

/// Runs the lung model, then the lesion model inside those lungs (as the viewer does),
/// and scores the lesions against the volume's slice labels. Returns the lesion labels too.
pub fn evaluate_slice_labelled(
    lung: &mut dyn Segmenter,
    lesion: &mut dyn Segmenter,
    volume: &SliceLabelledVolume,
    min_area_mm2: f64,
) -> Result<(VolumeLesionMetrics, LabelVolume), InferError> {
    let t = Instant::now();
    let (lungs, p) = lesions_in_lungs(lung, lesion, &volume.ct)?;
    let seconds = t.elapsed().as_secs_f64();
    let m = score_slice_labels(
        &volume.name,
        &volume.infected,
        &p.labels,
        &lungs.labels,
        min_area_mm2,
        seconds,
    )?;
    Ok((m, p.labels))
}

/// Lesion proposals on radiologist-graded normal slices (no lesion anywhere), one row per
/// slice: the false positives a user would see on clear lungs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NormalSliceRow {
    pub slice: String,
    pub lung_mm2: f64,
    pub lesion_mm2: f64,
    /// At least the slice-call area of lesion was proposed.
    pub called: bool,
}

/// [`NormalSliceRow`]s and their summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NormalSliceScores {
    pub slices: usize,
    pub called: usize,
    /// Slices not called / all slices.
    pub specificity: Option<f64>,
    pub mean_lesion_mm2: f64,
    /// Proposed lesion area / lung area, over all slices (%).
    pub lesion_pct_of_lung: Option<f64>,
    pub left_out_uncalibrated: Vec<String>,
    pub rows: Vec<NormalSliceRow>,
}

/// Runs the lung model, then the lesion model inside those lungs, on the normal slices
/// of `dir` that pass `select` (see [`super::lesion_data::read_normal_slices`]): a slice
/// is called when the proposal covers at least `min_area_mm2`.
pub fn evaluate_normal_slices(
    lung: &mut dyn Segmenter,
    lesion: &mut dyn Segmenter,
    dir: &Path,
    select: impl Fn(u64) -> bool,
    min_area_mm2: f64,
) -> Result<NormalSliceScores, InferError> {
    use super::lesion_data::{SEMISEG_PIXEL_MM, read_normal_slices};
    let (slices, skipped) = read_normal_slices(dir, SEMISEG_PIXEL_MM, select)?;
    let mut rows = Vec::new();
    for s in &slices {
        let (lungs, p) = lesions_in_lungs(lung, lesion, &s.ct)?;
        let sp = s.ct.geometry.spacing_mm;
        let pixel_mm2 = sp[0] * sp[1];
        let count = |v: &[u8]| v.iter().filter(|&&x| x != 0).count() as f64 * pixel_mm2;
        let lesion_mm2 = count(&p.labels.voxels);
        rows.push(NormalSliceRow {
            slice: s.name.clone(),
            lung_mm2: count(&lungs.labels.voxels),
            lesion_mm2,
            called: lesion_mm2 >= min_area_mm2,
        });
    }
    let called = rows.iter().filter(|r| r.called).count();
    let n = rows.len();
    let lung: f64 = rows.iter().map(|r| r.lung_mm2).sum();
    let lesion_total: f64 = rows.iter().map(|r| r.lesion_mm2).sum();
    Ok(NormalSliceScores {
        slices: n,
        called,
        specificity: ratio(n - called, n),
        mean_lesion_mm2: lesion_total / n.max(1) as f64,
        lesion_pct_of_lung: (lung > 0.0).then(|| 100.0 * lesion_total / lung),
        left_out_uncalibrated: skipped,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn slice_labels_parse_and_reject_bad_files() {
        assert_eq!(
            parse_slice_labels("0\n1\n\n1\n", 3),
            Ok(vec![false, true, true])
        );
        assert!(
            parse_slice_labels("0\n1\n", 3)
                .unwrap_err()
                .contains("2 slice labels")
        );
        assert!(
            parse_slice_labels("0\n2\n1\n", 3)
                .unwrap_err()
                .contains("line 2")
        );
    }

    #[test]
    fn slices_are_called_by_lesion_area() {
        // 4 x 4 x 4 voxels of 2 x 2 x 3 mm: 4 mm² per pixel; 20 mm² = 5 pixels.
        let g = Geometry::axis_aligned([4, 4, 4], [2.0, 2.0, 3.0], [0.0; 3]);
        let mut lesions = LabelVolume::filled(g.clone(), 0).unwrap();
        let mut lungs = LabelVolume::filled(g, 0).unwrap();
        for k in 0..3 {
            for j in 0..4 {
                for i in 0..4 {
                    lungs.set(i, j, k, 1);
                }
            }
        }
        // Slice 0: 5 GGO pixels (called); slice 1: 4 pixels (not called);
        // slice 2: none; slice 3 (no lung): 6 consolidation pixels (called).
        for p in 0..5 {
            lesions.set(p % 4, p / 4, 0, crate::infer::GGO);
        }
        for p in 0..4 {
            lesions.set(p, 0, 1, crate::infer::GGO);
        }
        for p in 0..6 {
            lesions.set(p % 4, p / 4, 3, crate::infer::CONSOLIDATION);
        }
        let truth = [true, true, false, false];
        let m = score_slice_labels("t", &truth, &lesions, &lungs, 20.0, 0.0).unwrap();
        assert_eq!(
            (
                m.true_positive,
                m.false_negative,
                m.false_positive,
                m.true_negative
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(m.missed_slices, vec![1]);
        assert_eq!(m.false_positive_slices, vec![3]);
        assert_eq!(m.lung_slices, 3);
        // The only negative lung slice (2) was not called.
        assert_eq!(m.specificity_lung_slices, Some(1.0));
        assert_eq!(m.sensitivity, Some(0.5));
        assert_eq!(m.specificity, Some(0.5));
        let voxel_ml = 12.0 / 1000.0;
        assert!((m.ggo_ml - 9.0 * voxel_ml).abs() < 1e-9);
        assert!((m.consolidation_ml - 6.0 * voxel_ml).abs() < 1e-9);
        assert!((m.involvement_pct.unwrap() - 100.0 * 15.0 / 48.0).abs() < 1e-9);
        let (sens, spec, spec_lung) = pooled_slice_scores(&[m.clone(), m]);
        assert_eq!((sens, spec, spec_lung), (Some(0.5), Some(0.5), Some(1.0)));
        let bad = score_slice_labels("t", &truth[..3], &lesions, &lungs, 20.0, 0.0);
        assert!(bad.is_err());
    }
}
