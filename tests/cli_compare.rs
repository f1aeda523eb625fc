//! `pulmo compare` and `pulmo quantify`, run as the built binary on small NIfTI files
//! written here (and one real case).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pulmo::io::nifti::write_nifti;
use pulmo::volume::{Geometry, Volume};
use serde_json::{Value as Json, json};

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulmo"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("the pulmo binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A label map whose voxel (i, j, k) is `f(i, j, k)`.
fn labels(
    dims: [usize; 3],
    spacing: [f64; 3],
    f: impl Fn(usize, usize, usize) -> u8,
) -> Volume<u8> {
    let g = Geometry::axis_aligned(dims, spacing, [0.0; 3]);
    let mut v = Volume::filled(g, 0u8).expect("grid");
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                v.set(i, j, k, f(i, j, k));
            }
        }
    }
    v
}

fn inside(x: usize, lo: usize, hi: usize) -> bool {
    (lo..hi).contains(&x)
}

/// A 4³ cube of label 1 at [2, 6)³ (shifted by `dx` along i) in a 10³ grid, spacing
/// 2 x 1 x 1 mm.
fn cube(dx: usize) -> Volume<u8> {
    labels([10, 10, 10], [2.0, 1.0, 1.0], |i, j, k| {
        (inside(i, 2 + dx, 6 + dx) && inside(j, 2, 6) && inside(k, 2, 6)) as u8
    })
}

fn write(dir: &Path, name: &str, v: &Volume<u8>) -> PathBuf {
    let p = dir.join(name);
    write_nifti(&p, v).expect("write NIfTI");
    p
}

/// CSV rows (comment lines starting with `#` skipped) as header → cell maps.
fn csv_rows(text: &str) -> Vec<Vec<(String, String)>> {
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let header: Vec<String> = lines
        .next()
        .expect("a header")
        .split(',')
        .map(String::from)
        .collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(cells.len(), header.len(), "row {l:?}");
            header
                .iter()
                .cloned()
                .zip(cells.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect()
}

fn cell<'a>(row: &'a [(String, String)], key: &str) -> &'a str {
    row.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {key} in {row:?}"))
}

fn num(row: &[(String, String)], key: &str) -> f64 {
    let c = cell(row, key);
    c.parse()
        .unwrap_or_else(|_| panic!("{key} = {c:?} is not a number"))
}

fn find_row<'a>(
    rows: &'a [Vec<(String, String)>],
    first: (&str, &str),
    label: &str,
) -> &'a [(String, String)] {
    rows.iter()
        .find(|r| cell(r, first.0) == first.1 && cell(r, "label") == label)
        .unwrap_or_else(|| panic!("no row {first:?} label {label}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn parse_json(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn at<'a>(j: &'a Json, path: &[&str]) -> &'a Json {
    path.iter().fold(j, |j, k| {
        j.get(k)
            .unwrap_or_else(|| panic!("no key {k} (path {path:?})"))
    })
}

fn n(j: &Json) -> f64 {
    j.as_f64().unwrap_or_else(|| panic!("not a number: {j:?}"))
}

fn results(j: &Json) -> &[Json] {
    match at(j, &["results"]) {
        Json::Array(a) => a,
        other => panic!("results is not an array: {other:?}"),
    }
}

#[test]
fn identical_maps_json_has_dice_one_and_monai_hd95() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = write(dir.path(), "ref.nii.gz", &cube(0));
    let t = write(dir.path(), "test.nii", &cube(0));
    let o = run(&[&"compare", &r, &t, &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = parse_json(&stdout(&o));
    let hd95_note = match at(&j, &["metadata", "hd95"]) {
        Json::String(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert!(hd95_note.contains("MONAI definition"), "{hd95_note}");
    assert_eq!(at(&j, &["dims"]), &json!([10, 10, 10]));
    assert_eq!(at(&j, &["spacing_mm"]), &json!([2, 1, 1]));
    assert_eq!(at(&j, &["ct"]), &Json::Null);
    let rows = results(&j);
    assert_eq!(rows.len(), 2, "label 1 and any");
    assert_eq!(at(&rows[0], &["label"]), &json!(1));
    assert_eq!(at(&rows[1], &["label"]), &json!("any"));
    for row in rows {
        assert_eq!(n(at(row, &["dice"])), 1.0);
        assert_eq!(n(at(row, &["iou"])), 1.0);
        assert_eq!(n(at(row, &["hd_mm"])), 0.0);
        assert_eq!(n(at(row, &["hd95_mm"])), 0.0);
        assert_eq!(n(at(row, &["assd_mm"])), 0.0);
        assert_eq!(n(at(row, &["rvd_pct"])), 0.0);
        // 64 voxels of 2 mm³.
        assert!(close(n(at(row, &["ref_volume_ml"])), 0.128));
        assert!(
            row.get("me_hu").is_none(),
            "no intensity columns without --ct"
        );
    }
}

#[test]
fn shifted_cube_csv_and_ct_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = write(dir.path(), "ref.nii.gz", &cube(0));
    let t = write(dir.path(), "test.nii.gz", &cube(1));
    let o = run(&[&"compare", &r, &t, &"--csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = csv_rows(&stdout(&o));
    assert_eq!(rows.len(), 2);
    let row = &rows[0];
    assert_eq!(cell(row, "label"), "1");
    // TP = 3 x 4 x 4 = 48 of 64 + 64 voxels.
    assert_eq!(num(row, "dice"), 0.75);
    assert_eq!(num(row, "iou"), 0.6);
    assert_eq!(num(row, "sensitivity"), 0.75);
    assert_eq!(num(row, "rvd_pct"), 0.0);
    // The cube moved by one voxel of 2 mm along i.
    assert_eq!(num(row, "hd_mm"), 2.0);
    assert_eq!(num(row, "hd95_mm"), 2.0);
    assert_eq!(cell(&rows[1], "label"), "any");
    assert_eq!(num(&rows[1], "dice"), 0.75);

    // With a CT of constant 100 HU: ME 0, MAE = (16 + 16) x 100 / 80.
    let g = cube(0).geometry;
    let ct = Volume::filled(g, 100i16).expect("grid");
    let ct_path = dir.path().join("ct.nii.gz");
    write_nifti(&ct_path, &ct).expect("write CT");
    let o = run(&[&"compare", &r, &t, &"--ct", &ct_path, &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = parse_json(&stdout(&o));
    let row = &results(&j)[0];
    assert_eq!(n(at(row, &["me_hu"])), 0.0);
    assert_eq!(n(at(row, &["mae_hu"])), 40.0);
    assert_eq!(n(at(row, &["rel_mean_hu_diff_pct"])), 0.0);
}

#[test]
fn default_labels_and_missing_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reference: cube of 1 with a voxel of 3; test: the cube only.
    let mut with_lesion = cube(0);
    with_lesion.set(3, 3, 3, 3);
    let r = write(dir.path(), "ref.nii.gz", &with_lesion);
    let t = write(dir.path(), "test.nii.gz", &cube(0));
    let o = run(&[&"compare", &r, &t, &"--csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.to_ascii_lowercase().contains("nan"), "{text}");
    let rows = csv_rows(&text);
    let labels: Vec<&str> = rows.iter().map(|r| cell(r, "label")).collect();
    assert_eq!(labels, ["1", "3", "any"]);
    let lesion = &rows[1];
    assert_eq!(num(lesion, "dice"), 0.0);
    assert_eq!(num(lesion, "sensitivity"), 0.0);
    assert_eq!(cell(lesion, "hd_mm"), "", "one mask empty: HD undefined");
    assert_eq!(cell(lesion, "hd95_mm"), "");
    assert_eq!(cell(lesion, "assd_mm"), "");

    // --labels picks (an absent label gives Dice 1, RVD undefined); JSON null.
    let o = run(&[&"compare", &r, &t, &"--labels", &"3,4", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = parse_json(&stdout(&o));
    let rows = results(&j);
    assert_eq!(rows.len(), 3);
    assert_eq!(at(&rows[0], &["hd_mm"]), &Json::Null);
    assert_eq!(at(&rows[1], &["label"]), &json!(4));
    assert_eq!(n(at(&rows[1], &["dice"])), 1.0);
    assert_eq!(at(&rows[1], &["rvd_pct"]), &Json::Null);
}

#[test]
fn geometry_mismatch_is_one_line_naming_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = write(dir.path(), "reference_map.nii.gz", &cube(0));
    let small = labels([10, 10, 9], [2.0, 1.0, 1.0], |_, _, _| 1);
    let t = write(dir.path(), "other_grid.nii.gz", &small);
    let o = run(&[&"compare", &r, &t, &"--csv"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("reference_map.nii.gz"), "{err}");
    assert!(err.contains("other_grid.nii.gz"), "{err}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn batch_rows_summary_and_one_sided_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rd, td) = (dir.path().join("ref"), dir.path().join("test"));
    std::fs::create_dir_all(&rd).expect("mkdir");
    std::fs::create_dir_all(&td).expect("mkdir");
    write(&rd, "case_a.nii.gz", &cube(0));
    write(&td, "case_a.nii.gz", &cube(0));
    write(&rd, "case_b.nii.gz", &cube(0));
    write(&td, "case_b.nii.gz", &cube(1));
    write(&rd, "only_ref.nii.gz", &cube(0));
    write(&td, "only_test.nii", &cube(0));
    std::fs::write(td.join("notes.txt"), "ignored").expect("write");
    let out = dir.path().join("results.csv");
    let o = run(&[&"compare", &"--batch", &rd, &td, &"-o", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("[1/2] case_a..."), "{err}");
    assert!(err.contains("[2/2] case_b..."), "{err}");
    assert!(
        err.contains("only_ref.nii.gz") && err.contains("only_test.nii"),
        "{err}"
    );
    let text = std::fs::read_to_string(&out).expect("results.csv");
    assert!(text.starts_with("# "), "documented header: {text}");
    let rows = csv_rows(&text);
    // 2 cases x (label 1, any) + 2 labels x 7 statistics.
    assert_eq!(rows.len(), 4 + 14, "{text}");
    assert_eq!(num(find_row(&rows, ("case", "case_a"), "1"), "dice"), 1.0);
    assert_eq!(num(find_row(&rows, ("case", "case_b"), "1"), "dice"), 0.75);
    assert_eq!(
        num(find_row(&rows, ("case", "case_b"), "any"), "hd_mm"),
        2.0
    );
    let stat = |s: &str, label: &str, key: &str| num(find_row(&rows, ("case", s), label), key);
    assert_eq!(stat("n", "1", "dice"), 2.0);
    assert_eq!(stat("mean", "1", "dice"), 0.875);
    assert!(close(stat("sd", "1", "dice"), 0.125 * 2f64.sqrt()));
    assert_eq!(stat("median", "1", "dice"), 0.875);
    assert_eq!(stat("q1", "1", "dice"), 0.8125);
    assert_eq!(stat("q3", "1", "dice"), 0.9375);
    assert_eq!(stat("iqr", "1", "dice"), 0.125);
    assert_eq!(stat("mean", "any", "hd_mm"), 1.0);
}

#[test]
fn quantify_tiny_case_exact_volumes_and_involvement() {
    // 4 x 1 x 6 voxels of 8 x 12.5 x 10 mm = exactly 1 mL. Left lung (1) at i = 2, 3,
    // right lung (2) at i = 0, 1; GGO (3) and consolidation (4) in the right lung's top
    // slice, GGO in the left lung's bottom slice.
    let dims = [4, 1, 6];
    let spacing = [8.0, 12.5, 10.0];
    let lab = labels(dims, spacing, |i, _, k| match (i, k) {
        (0, 5) => 3,
        (1, 5) => 4,
        (3, 0) => 3,
        (0 | 1, _) => 2,
        _ => 1,
    });
    let mut ct = Volume::filled(lab.geometry.clone(), -1000i16).expect("grid");
    ct.set(0, 0, 5, -600);
    ct.set(1, 0, 5, 20);
    ct.set(3, 0, 0, -700);
    ct.set(2, 0, 2, -960);
    ct.set(2, 0, 3, -800);
    let dir = tempfile::tempdir().expect("tempdir");
    let lp = write(dir.path(), "labels.nii.gz", &lab);
    let cp = dir.path().join("ct.nii.gz");
    write_nifti(&cp, &ct).expect("write CT");
    let o = run(&[&"quantify", &cp, &lp, &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = parse_json(&stdout(&o));
    assert_eq!(n(at(&j, &["voxel_volume_ml"])), 1.0);
    let Json::Array(stats) = at(&j, &["labels"]) else {
        panic!("labels is not an array");
    };
    let vols: Vec<(f64, f64)> = stats
        .iter()
        .map(|s| (n(at(s, &["label"])), n(at(s, &["volume_ml"]))))
        .collect();
    assert_eq!(vols, [(1.0, 11.0), (2.0, 10.0), (3.0, 2.0), (4.0, 1.0)]);
    assert_eq!(n(at(&stats[2], &["mean_hu"])), -650.0);
    assert_eq!(n(at(&stats[2], &["std_hu"])), 50.0);
    assert_eq!(n(at(&stats[3], &["min_hu"])), 20.0);
    assert_eq!(at(&stats[0], &["name"]), &json!("left lung"));

    let lung = |name: &str, path: &[&str]| {
        let mut p = vec!["lungs", name];
        p.extend(path);
        n(at(&j, &p))
    };
    assert_eq!(lung("left", &["volume_ml"]), 12.0);
    assert_eq!(lung("left", &["lesion_volume_ml"]), 1.0);
    assert!(close(lung("left", &["involvement_pct"]), 100.0 / 12.0));
    assert!(close(lung("right", &["involvement_pct"]), 200.0 / 12.0));
    assert!(close(
        lung("right", &["by_lesion_label", "4", "pct"]),
        100.0 / 12.0
    ));
    assert_eq!(lung("both", &["involvement_pct"]), 12.5);
    assert_eq!(lung("right", &["thirds", "upper", "involvement_pct"]), 50.0);
    assert_eq!(lung("right", &["thirds", "middle", "involvement_pct"]), 0.0);
    assert_eq!(lung("left", &["thirds", "lower", "involvement_pct"]), 25.0);
    assert_eq!(lung("both", &["thirds", "upper", "volume_ml"]), 8.0);
    // Left lung: 10 of 12 voxels emphysema (-1000, -960), one inflated, one infiltrated.
    assert!(close(
        lung("left", &["hu_bands_pct", "emphysema"]),
        1000.0 / 12.0
    ));
    assert!(close(
        lung("left", &["hu_bands_pct", "inflated"]),
        100.0 / 12.0
    ));
    assert_eq!(lung("left", &["hu_bands_pct", "collapsed"]), 0.0);
    assert!(close(
        lung("right", &["hu_bands_pct", "collapsed"]),
        100.0 / 12.0
    ));
    let Json::String(bands) = at(&j, &["metadata", "hu_bands"]) else {
        panic!("hu_bands note");
    };
    assert!(bands.contains("[lo, hi)"), "{bands}");
}

#[test]
fn real_case_compared_with_itself() {
    let Some(dir) = common::data_dir("lctsc256") else {
        return;
    };
    let case = dir.join("Case_007_lungs.nii.gz");
    let Some(case) = common::require(case, "Case_007_lungs.nii.gz") else {
        return;
    };
    let o = run(&[&"compare", &case, &case, &"--csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = csv_rows(&stdout(&o));
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(num(row, "dice"), 1.0, "{row:?}");
        assert_eq!(num(row, "hd_mm"), 0.0, "{row:?}");
        assert_eq!(num(row, "hd95_mm"), 0.0, "{row:?}");
        assert!(num(row, "ref_volume_ml") > 100.0, "{row:?}");
    }
}
