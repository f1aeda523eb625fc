//! `pulmo batch` end to end on small synthetic studies (labels given, so no model runs):
//! rows per study, a failing study that fails only its own row, re-runs that skip what
//! is complete, shards that merge to the single-process table, and a run killed with
//! SIGKILL half-way that resumes with every study processed once and nothing half-written.

use std::path::{Path, PathBuf};
use std::process::Command;

use pulmo::io::nifti::write_nifti;
use pulmo::volume::{Geometry, Volume};

fn pulmo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pulmo"))
        .args(args)
        .output()
        .unwrap()
}

/// A study: a CT, its labels (lungs 1 and 2, a ground-glass block of `ggo` voxels in
/// the left lung) and reference labels (the lungs one voxel narrower).
fn write_study(dir: &Path, name: &str, dims: [usize; 3], ggo: usize) -> usize {
    let g = Geometry::axis_aligned(dims, [1.5, 1.5, 2.0], [0.0, 0.0, 0.0]);
    let [nx, ny, nz] = dims;
    let mut ct = vec![-1000i16; g.voxel_count()];
    let mut labels = vec![0u8; g.voxel_count()];
    let mut reference = vec![0u8; g.voxel_count()];
    let mut lung_voxels = 0;
    let mut placed = 0;
    for k in 1..nz - 1 {
        for j in 2..ny - 2 {
            for i in 2..nx - 2 {
                let idx = g.index(i, j, k);
                let left = i < nx / 2 - 1;
                let right = i > nx / 2;
                if !(left || right) {
                    continue;
                }
                lung_voxels += 1;
                ct[idx] = -850 + ((i * 7 + j * 3 + k) % 40) as i16;
                labels[idx] = if left { 2 } else { 1 };
                if j > 2 {
                    reference[idx] = labels[idx];
                }
                if left && placed < ggo && k > nz / 3 {
                    labels[idx] = 3;
                    ct[idx] = -550;
                    placed += 1;
                }
            }
        }
    }
    for (suffix, v) in [("labels", labels), ("ref", reference)] {
        let vol = Volume::new(g.clone(), v).unwrap();
        write_nifti(&dir.join(format!("{name}_{suffix}.nii.gz")), &vol).unwrap();
    }
    write_nifti(
        &dir.join(format!("{name}_ct.nii.gz")),
        &Volume::new(g, ct).unwrap(),
    )
    .unwrap();
    lung_voxels
}

fn manifest(dir: &Path, names: &[&str]) -> PathBuf {
    let mut csv = String::from("id,ct,labels,reference\n");
    for n in names {
        csv += &format!("{n},{n}_ct.nii.gz,{n}_labels.nii.gz,{n}_ref.nii.gz\n");
    }
    let p = dir.join("manifest.csv");
    std::fs::write(&p, csv).unwrap();
    p
}

/// results.csv without the `seconds` column (it differs run to run).
fn table_without_times(out: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let t = header.iter().position(|h| *h == "seconds").unwrap();
    csv.lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(n, _)| *n != t)
                .map(|(_, c)| c)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn batch_rows_failures_resume_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lungs_a = write_study(d, "a", [30, 26, 14], 40);
    write_study(d, "b", [28, 30, 12], 0);
    write_study(d, "c", [32, 24, 16], 100);
    // "d" is in the manifest but its files are missing.
    let m = manifest(d, &["a", "b", "c", "d"]);
    let out = d.join("out");
    let o = pulmo(&[
        "batch",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--tasks",
        "quantify,compare",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a failed study fails the run: {err}");
    assert!(err.contains("1 of 4 studies failed: d"), "{err}");
    assert!(
        err.contains("d_ct.nii.gz"),
        "the error names the file: {err}"
    );
    let table = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "{table}");
    assert!(
        rows[1].starts_with("a,") && rows[4].starts_with("d,"),
        "{table}"
    );
    assert!(rows[4].contains(",failed,"), "{}", rows[4]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let a = &json["rows"][0];
    let ml = 1.5 * 1.5 * 2.0 / 1000.0;
    let lungs = a["lungs_ml"].as_f64().unwrap();
    assert!((lungs - lungs_a as f64 * ml).abs() < 1e-6, "{lungs}");
    assert!((a["ggo_ml"].as_f64().unwrap() - 40.0 * ml).abs() < 1e-6);
    let dice = a["dice"].as_f64().unwrap();
    assert!(dice > 0.8 && dice < 1.0, "{dice}");
    assert_eq!(json["failed"], serde_json::json!(["d"]));
    let lung_summary = json["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["column"] == "lungs_ml")
        .unwrap();
    assert_eq!(lung_summary["n"], 3);
    assert!(out.join("studies/a/quantify.json").is_file());
    assert!(out.join("studies/a/compare.json").is_file());

    // A re-run skips the complete studies (their rows untouched) and retries d.
    let row_a = out.join("studies/a/row.json");
    let before = std::fs::metadata(&row_a).unwrap().modified().unwrap();
    let first = table_without_times(&out);
    let o = pulmo(&[
        "batch",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--tasks",
        "quantify,compare",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 run, 3 already complete, 1 failed"), "{err}");
    assert_eq!(
        std::fs::metadata(&row_a).unwrap().modified().unwrap(),
        before
    );
    // Other tasks make the studies incomplete again.
    let o = pulmo(&[
        "batch",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--tasks",
        "quantify",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("4 run, 0 already complete"));

    // Shards 0/2 and 1/2 merged give the single-process table.
    let sharded = d.join("sharded");
    for s in ["0/2", "1/2"] {
        let o = pulmo(&[
            "batch",
            m.to_str().unwrap(),
            "-o",
            sharded.to_str().unwrap(),
            "--tasks",
            "quantify,compare",
            "--shard",
            s,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("2 of 4 studies"), "{err}");
        assert!(
            !sharded.join("results.csv").exists(),
            "a shard does not merge"
        );
    }
    let o = pulmo(&["batch", "merge", sharded.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(table_without_times(&sharded), first);
    // Bad arguments name the problem.
    let o = pulmo(&["batch", m.to_str().unwrap(), "-o", "x", "--shard", "2/2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 <= I < N"));
    let o = pulmo(&["batch", m.to_str().unwrap(), "-o", "x", "--tasks", "lungs"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown task \"lungs\""));
}

#[test]
fn a_killed_batch_resumes_with_each_study_processed_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names: Vec<String> = (0..16).map(|n| format!("s{n:02}")).collect();
    for n in &names {
        write_study(d, n, [160, 150, 60], 500);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let m = manifest(d, &refs);
    let out = d.join("out");
    let args = [
        "batch",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--tasks",
        "quantify,compare",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulmo"))
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rows = |out: &Path| {
        names
            .iter()
            .filter(|n| out.join("studies").join(n).join("row.json").exists())
            .count()
    };
    let start = std::time::Instant::now();
    while rows(&out) < 2 {
        assert!(start.elapsed().as_secs() < 300, "no rows after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SIGKILL: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let done_at_kill: Vec<(String, std::time::SystemTime)> = names
        .iter()
        .filter_map(|n| {
            let p = out.join("studies").join(n).join("row.json");
            std::fs::metadata(&p)
                .ok()
                .map(|m| (n.clone(), m.modified().unwrap()))
        })
        .collect();
    assert!(
        done_at_kill.len() < names.len(),
        "the run was killed half-way ({} of {} done)",
        done_at_kill.len(),
        names.len()
    );
    let o = pulmo(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("{} already complete", done_at_kill.len())),
        "{err}"
    );
    // Studies done before the kill were not run again; every study has its row and
    // nothing half-written is left.
    for (n, t) in &done_at_kill {
        let p = out.join("studies").join(n).join("row.json");
        assert_eq!(
            std::fs::metadata(&p).unwrap().modified().unwrap(),
            *t,
            "{n}"
        );
    }
    assert_eq!(rows(&out), names.len());
    for n in &names {
        for e in std::fs::read_dir(out.join("studies").join(n)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(!name.contains(".tmp-"), "{n}: {name} left behind");
        }
        let row: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("studies").join(n).join("row.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(row["row"]["status"], "ok", "{n}");
    }
    let table = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(table.lines().count(), names.len() + 1);
}
