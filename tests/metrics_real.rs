//! `pulmo::metrics` on a real lung mask (LCTSC Case_007, 256x256xN, 1.953x1.953x3 mm)
//! against copies shifted and eroded here, and a cross-check of Dice / Jaccard with
//! SimpleITK's `LabelOverlapMeasuresImageFilter` (`tests/metrics_sitk.py`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use pulmo::io::nifti::{read_nifti_ct, read_nifti_labels, write_nifti};
use pulmo::metrics::{
    Connectivity, Target, compare, intensity_metrics, lung_involvement, match_instances,
    slice_metrics, surface_distances,
};
use pulmo::volume::LabelVolume;

fn case_007() -> Option<(LabelVolume, PathBuf)> {
    let dir = common::data_dir("lctsc256")?;
    let path = dir.join("Case_007_lungs.nii.gz");
    let read = read_nifti_labels(&path).unwrap();
    Some((read.volume, dir))
}

/// `m` moved by `by` voxels along i (voxels pushed out of the grid are dropped).
fn shift_i(m: &LabelVolume, by: usize) -> LabelVolume {
    let mut out = m.clone();
    out.voxels.fill(0);
    let [nx, ny, nz] = m.dims();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx - by {
                out.set(i + by, j, k, m.get(i, j, k));
            }
        }
    }
    out
}

/// Erosion with the 6-neighbourhood (outside the grid counts as background).
fn erode6(m: &LabelVolume) -> LabelVolume {
    let mut out = m.clone();
    let d = m.dims();
    for k in 0..d[2] {
        for j in 0..d[1] {
            for i in 0..d[0] {
                let v = m.get(i, j, k);
                if v == 0 {
                    continue;
                }
                let p = [i, j, k];
                let keep = (0..3).all(|a| {
                    let mut lo = p;
                    let mut hi = p;
                    if p[a] == 0 || p[a] + 1 == d[a] {
                        return false;
                    }
                    lo[a] -= 1;
                    hi[a] += 1;
                    m.get(lo[0], lo[1], lo[2]) == v && m.get(hi[0], hi[1], hi[2]) == v
                });
                if !keep {
                    out.set(i, j, k, 0);
                }
            }
        }
    }
    out
}

fn i_extent(m: &LabelVolume) -> (usize, usize) {
    let [nx, ny, nz] = m.dims();
    let (mut lo, mut hi) = (usize::MAX, 0);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if m.get(i, j, k) != 0 {
                    lo = lo.min(i);
                    hi = hi.max(i);
                }
            }
        }
    }
    (lo, hi)
}

#[test]
fn shifted_real_lungs_hausdorff_is_the_shift() {
    let Some((lungs, _)) = case_007() else {
        return;
    };
    let (lo, hi) = i_extent(&lungs);
    let nx = lungs.dims()[0];
    assert!(lo > 0 && hi + 3 < nx, "lungs touch the i edges: {lo}..{hi}");
    let shifted = shift_i(&lungs, 2);
    let s_i = lungs.geometry.spacing_mm[0];
    let c = compare(&lungs, &shifted, &[1]).unwrap();
    let l = &c.per_label[0];
    eprintln!("{c}");
    let hd = l.surface.hausdorff_mm.unwrap();
    assert!((hd - 2.0 * s_i).abs() < 1e-9, "HD {hd} vs {}", 2.0 * s_i);
    assert!(l.surface.hd95_mm.unwrap() <= hd + 1e-12);
    let assd = l.surface.assd_mm.unwrap();
    assert!(assd > 0.0 && assd <= hd);
    assert!(
        l.overlap.dice < 1.0 && l.overlap.dice > 0.8,
        "{}",
        l.overlap.dice
    );
    assert_eq!(l.overlap.relative_volume_difference_pct, Some(0.0));
    assert_eq!(l.overlap.volume_similarity, 1.0);
    assert_eq!(c.foreground.overlap, l.overlap);
    let j = l.overlap.jaccard;
    assert!((l.overlap.dice - 2.0 * j / (1.0 + j)).abs() < 1e-12);
    // Lung volume of a real adult: a few litres.
    assert!((1000.0..10000.0).contains(&l.overlap.reference_volume_ml));

    let slices = slice_metrics(&lungs, &shifted, Target::Label(1)).unwrap();
    assert_eq!(
        slices.false_positive_slices + slices.false_negative_slices,
        0
    );
    assert_eq!(slices.sensitivity, Some(1.0));
    assert!(slices.mean_dice_reference_positive.unwrap() < 1.0);

    let m = match_instances(&lungs, &shifted, Target::Label(1), Connectivity::TwentySix).unwrap();
    assert_eq!(m.reference.count(), m.test.count());
    let d = m.at(0.5).unwrap();
    assert!(d.true_positives >= 1);
}

#[test]
fn eroded_real_lungs() {
    let Some((lungs, dir)) = case_007() else {
        return;
    };
    let eroded = erode6(&lungs);
    let c = compare(&lungs, &eroded, &[1]).unwrap();
    let l = &c.per_label[0];
    assert!(l.overlap.dice < 1.0);
    assert_eq!(l.overlap.counts.false_positive, 0);
    assert_eq!(l.overlap.specificity, Some(1.0));
    assert!(l.overlap.sensitivity.unwrap() < 1.0);
    assert!(l.overlap.relative_volume_difference_pct.unwrap() < 0.0);
    let sp = lungs.geometry.spacing_mm;
    let hd = l.surface.hausdorff_mm.unwrap();
    assert!(hd >= sp.min() - 1e-12, "HD {hd}");
    assert!(l.surface.hd95_mm.unwrap() <= hd);
    // Same from the other side.
    let back = surface_distances(&eroded, &lungs, Target::Label(1)).unwrap();
    assert_eq!(back.hausdorff_mm, l.surface.hausdorff_mm);

    let ct = read_nifti_ct(&dir.join("Case_007_ct.nii.gz"))
        .unwrap()
        .volume;
    let im = intensity_metrics(&ct, &lungs, &eroded, Target::Label(1)).unwrap();
    // Eroding removes voxels only: Ip - Ir = -HU of the removed (mostly negative) lung.
    assert!(im.mean_error_hu > 0.0);
    assert!(im.mean_absolute_error_hu >= im.mean_error_hu);
    eprintln!("{im:?}");
    let (mr, mt) = (im.mean_hu_reference.unwrap(), im.mean_hu_test.unwrap());
    assert!((-1000.0..-500.0).contains(&mr), "mean lung HU {mr}");
    assert!(
        mt < mr,
        "interior lung is darker than its rim: {mt} vs {mr}"
    );

    // The rim removed by erosion, as "lesion", is a sizeable part of the lungs.
    let mut rim = lungs.clone();
    for (r, (&a, &b)) in rim
        .voxels
        .iter_mut()
        .zip(lungs.voxels.iter().zip(&eroded.voxels))
    {
        *r = if a != 0 && b == 0 { 3 } else { 0 };
    }
    let inv = lung_involvement(&lungs, &[1], &rim, &[3], 0.4).unwrap();
    let pct = inv.percent_involved.unwrap();
    let expected =
        l.overlap.counts.false_negative as f64 / l.overlap.counts.reference_voxels() as f64 * 100.0;
    assert!((pct - expected).abs() < 1e-9);
    assert!(inv.positive);
}

#[test]
fn dice_and_jaccard_agree_with_simpleitk() {
    let Some((lungs, _)) = case_007() else {
        return;
    };
    let Some(python) = common::tools_python() else {
        return;
    };
    // Reference: lungs split into two labels (left/right half of the grid); test: the
    // same shifted by 2 voxels along i and eroded.
    let nx = lungs.dims()[0];
    let mut two = lungs.clone();
    for (idx, v) in two.voxels.iter_mut().enumerate() {
        if *v != 0 && idx % nx >= nx / 2 {
            *v = 2;
        }
    }
    let test = erode6(&shift_i(&two, 2));
    let dir = tempfile::tempdir().unwrap();
    let (pr, pt) = (
        dir.path().join("ref.nii.gz"),
        dir.path().join("test.nii.gz"),
    );
    write_nifti(&pr, &two).unwrap();
    write_nifti(&pt, &test).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/metrics_sitk.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&pr)
        .arg(&pt)
        .args(["1", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let number = |key: &str, from: &str| -> f64 {
        let at = from
            .find(&format!("\"{key}\": "))
            .unwrap_or_else(|| panic!("{key} in {from}"));
        let rest = &from[at + key.len() + 4..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].trim().parse().unwrap()
    };
    let c = compare(&two, &test, &[1, 2]).unwrap();
    // SimpleITK's overall Dice / Jaccard pool all labels: sum of per-label overlaps.
    let (mut inter, mut sum, mut union) = (0u64, 0u64, 0u64);
    for l in &c.per_label {
        let k = l.overlap.counts;
        inter += k.true_positive;
        sum += k.reference_voxels() + k.test_voxels();
        union += k.true_positive + k.false_positive + k.false_negative;
    }
    let top = &text[..text.find("\"labels\"").unwrap()];
    assert!(
        (number("dice", top) - 2.0 * inter as f64 / sum as f64).abs() < 1e-6,
        "{text}"
    );
    assert!(
        (number("jaccard", top) - inter as f64 / union as f64).abs() < 1e-6,
        "{text}"
    );
    for l in &c.per_label {
        let pulmo::metrics::Target::Label(v) = l.target else {
            unreachable!()
        };
        let section = &text[text.find(&format!("\"{v}\": {{")).unwrap()..];
        let (d, j) = (number("dice", section), number("jaccard", section));
        assert!(
            (d - l.overlap.dice).abs() < 1e-6,
            "label {v}: sitk {d} vs {}",
            l.overlap.dice
        );
        assert!(
            (j - l.overlap.jaccard).abs() < 1e-6,
            "label {v}: sitk {j} vs {}",
            l.overlap.jaccard
        );
        assert!(l.overlap.dice < 1.0 && l.overlap.dice > 0.5);
    }
}
