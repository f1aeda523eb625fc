//! Models through the AI process (`pulmo-ai serve`), as the viewer and the CLI run them:
//! the committed weights reach their targets on real data via the wire protocol, and
//! the `pulmo` binary itself never links libtorch.
#![cfg(feature = "torch")]

mod common;

use std::path::Path;

use pulmo::infer::evaluate::{evaluate_lung_case, evaluate_semiseg, read_lung_case, semiseg_means};
use pulmo::infer::manifest::Manifest;
use pulmo::infer::{DeviceChoice, Task, segmenter_for};

fn use_built_helper() {
    // SAFETY: set before any thread of this test reads the environment (each test sets
    // the same value).
    unsafe { std::env::set_var("PULMO_AI_BIN", env!("CARGO_BIN_EXE_pulmo-ai")) };
}

fn weights(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("weights")
        .join(name)
}

/// The committed lung model keeps Dice >= 0.97 on both validation cases (full CT grid,
/// post-processed): catches any pipeline or protocol change that breaks preprocessing.
#[test]
fn committed_lung_weights_reach_target_on_validation_cases() {
    let Some(data) = common::data_dir("lctsc256") else {
        return;
    };
    use_built_helper();
    let manifest = weights("lung.json");
    assert!(manifest.is_file(), "weights/lung.json is committed");
    let mut seg = segmenter_for(Task::Lung, Some(&manifest), DeviceChoice::Cpu).unwrap();
    for name in ["Case_007", "Case_008"] {
        let r = evaluate_lung_case(seg.as_mut(), &read_lung_case(&data, name).unwrap()).unwrap();
        eprintln!(
            "{}: Dice {:.4} Jaccard {:.4} MAE {:.1} HU",
            r.case, r.dice, r.jaccard, r.mean_absolute_error_hu
        );
        assert!(r.dice >= 0.97, "{}: Dice {:.4} < 0.97", r.case, r.dice);
    }
    assert_eq!(seg.info().name, Manifest::read(&manifest).unwrap().name);
}

/// The committed lesion model still reaches the Dice its manifest reports on the 48 real
/// COVID-SemiSeg test slices (Inf-Net protocol), so a preprocessing change is caught.
#[test]
fn committed_lesion_weights_reach_their_reported_dice() {
    let Some(data) = common::data_dir("covid-semiseg/test") else {
        return;
    };
    use_built_helper();
    let manifest = weights("lesion.json");
    assert!(manifest.is_file(), "weights/lesion.json is committed");
    let m = Manifest::read(&manifest).unwrap();
    let reported = |k: &str| {
        m.metrics[k]
            .as_f64()
            .unwrap_or_else(|| panic!("metrics.{k} in the manifest"))
    };
    let mut seg = segmenter_for(Task::Lesion, Some(&manifest), DeviceChoice::Cpu).unwrap();
    let rows = evaluate_semiseg(seg.as_mut(), &data).unwrap();
    assert_eq!(rows.len(), 48);
    let (inf, ggo, con) = semiseg_means(&rows);
    eprintln!("infection {inf:.4} GGO {ggo:.4} consolidation {con:.4}");
    for (name, got, want) in [
        ("infection", inf, reported("dice_infection")),
        ("GGO", ggo, reported("dice_ggo")),
        ("consolidation", con, reported("dice_consolidation")),
    ] {
        assert!(
            (got - want).abs() < 0.005,
            "{name}: Dice {got:.4}, manifest says {want:.4}"
        );
    }
}

/// The committed lesion model still gives the slice-level scores and lesion volumes its
/// manifest reports on the real COVID-CT-MD volumes in HU (lung model first, lesions
/// inside the lungs, a slice positive at >= 20 mm² of proposal).
#[test]
fn committed_lesion_weights_reach_their_reported_scores_on_real_volumes() {
    use pulmo::infer::evaluate::{
        evaluate_slice_labelled, pooled_slice_scores, read_slice_labelled_volumes,
    };
    let Some(data) = common::data_dir("covid-ct-md") else {
        return;
    };
    use_built_helper();
    let manifest = weights("lesion.json");
    let m = Manifest::read(&manifest).unwrap();
    let reported = &m.metrics["real_volumes"];
    let mut lung =
        segmenter_for(Task::Lung, Some(&weights("lung.json")), DeviceChoice::Cpu).unwrap();
    let mut lesion = segmenter_for(Task::Lesion, Some(&manifest), DeviceChoice::Cpu).unwrap();
    let mut rows = Vec::new();
    for v in read_slice_labelled_volumes(&data).unwrap() {
        let (r, _) = evaluate_slice_labelled(lung.as_mut(), lesion.as_mut(), &v, 20.0).unwrap();
        eprintln!(
            "{}: sensitivity {:?} specificity {:?} lesion {:.1} mL",
            r.case,
            r.sensitivity,
            r.specificity,
            r.ggo_ml + r.consolidation_ml
        );
        // Each volume's lesion mL as reported (the normal volume's is the false-positive
        // volume users see on clear lungs).
        let want = reported["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["case"] == r.case.as_str()))
            .unwrap_or_else(|| panic!("metrics.real_volumes.volumes has {}", r.case));
        let want_ml = want["ggo_ml"].as_f64().unwrap() + want["consolidation_ml"].as_f64().unwrap();
        let got_ml = r.ggo_ml + r.consolidation_ml;
        assert!(
            (got_ml - want_ml).abs() <= 0.5 + 0.02 * want_ml,
            "{}: {got_ml:.1} mL of lesion, manifest says {want_ml:.1}",
            r.case
        );
        rows.push(r);
    }
    assert_eq!(rows.len(), 3);
    let (sens, spec, _) = pooled_slice_scores(&rows);
    for (name, got) in [("sensitivity", sens), ("specificity", spec)] {
        let want = reported[name]
            .as_f64()
            .unwrap_or_else(|| panic!("metrics.real_volumes.{name} in the manifest"));
        let got = got.unwrap();
        assert!(
            (got - want).abs() < 0.01,
            "{name}: {got:.4}, manifest says {want:.4}"
        );
    }
}

/// The committed lesion model's false positives on the radiologist-graded normal MosMed
/// slices it never saw (odd image numbers) are those its manifest reports.
#[test]
fn committed_lesion_weights_reach_their_reported_scores_on_unseen_normal_slices() {
    use pulmo::infer::evaluate::evaluate_normal_slices;
    use pulmo::infer::lesion_data::mosmed_normal_for_lesion_training;
    let Some(dir) = common::data_dir("classify/mosmed-slices/CT-0") else {
        return;
    };
    use_built_helper();
    let manifest = weights("lesion.json");
    let m = Manifest::read(&manifest).unwrap();
    let reported = &m.metrics["normal_slices"];
    let mut lung =
        segmenter_for(Task::Lung, Some(&weights("lung.json")), DeviceChoice::Cpu).unwrap();
    let mut lesion = segmenter_for(Task::Lesion, Some(&manifest), DeviceChoice::Cpu).unwrap();
    let got = evaluate_normal_slices(
        lung.as_mut(),
        lesion.as_mut(),
        &dir,
        |n| !mosmed_normal_for_lesion_training(n),
        20.0,
    )
    .unwrap();
    eprintln!(
        "{} slices, {} called, specificity {:?}, mean {:.1} mm²",
        got.slices, got.called, got.specificity, got.mean_lesion_mm2
    );
    let want = |k: &str| {
        reported[k]
            .as_f64()
            .unwrap_or_else(|| panic!("metrics.normal_slices.{k} in the manifest"))
    };
    assert_eq!(got.slices as f64, want("slices"));
    assert!((got.specificity.unwrap() - want("specificity")).abs() < 0.01);
    let mm2 = want("mean_lesion_mm2");
    assert!(
        (got.mean_lesion_mm2 - mm2).abs() <= 2.0 + 0.05 * mm2,
        "{:.1} mm² per slice, manifest says {mm2:.1}",
        got.mean_lesion_mm2
    );
}

/// `pulmo finetune lesion` on a small study: a new model folder with its parent, the
/// study's sha256, the split and before/after figures; the parent is untouched; a second
/// run into the same folder, a study without lesions and a map on another grid are
/// refused with the file named.
#[test]
fn finetune_writes_a_new_versioned_model_and_never_touches_the_parent() {
    use pulmo::volume::{Geometry, Volume};
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry::axis_aligned([96, 96, 24], [1.0, 1.0, 3.0], [0.0; 3]);
    let (mut ct, mut labels) = (Vec::new(), Vec::new());
    for k in 0..24usize {
        for j in 0..96usize {
            for i in 0..96usize {
                let in_lung = (16..80).contains(&i) && (16..80).contains(&j);
                let d2 = (i as i64 - 40).pow(2) + (j as i64 - 48).pow(2);
                let blob = in_lung && d2 < (6 + (k % 5) as i64).pow(2);
                ct.push(if blob {
                    -450i16
                } else if in_lung {
                    -860
                } else {
                    30
                });
                labels.push(if blob {
                    3u8
                } else if in_lung {
                    1
                } else {
                    0
                });
            }
        }
    }
    let ct = Volume::new(g.clone(), ct).unwrap();
    let labels = Volume::new(g, labels).unwrap();
    pulmo::io::nifti::write_nifti(&dir.path().join("s1_ct.nii.gz"), &ct).unwrap();
    pulmo::io::nifti::write_nifti(&dir.path().join("s1_labels.nii.gz"), &labels).unwrap();
    let parent = weights("lesion.json");
    let parent_sha = pulmo::infer::manifest::sha256_file(&weights("lesion.safetensors")).unwrap();
    let out = dir.path().join("model");
    let run = |labels: &Path, out: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pulmo"))
            .args(["finetune", "lesion", "--labels"])
            .arg(labels)
            .arg("-o")
            .arg(out)
            .args(["--time-budget-min", "0.1", "--data", "none", "--steps", "2"])
            .args(["--device", "cpu", "--model"])
            .arg(&parent)
            .env("PULMO_AI_BIN", env!("CARGO_BIN_EXE_pulmo-ai"))
            .output()
            .unwrap()
    };
    let o = run(dir.path(), &out);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("held out"), "{log}");
    let m = Manifest::read(&out.join("lesion.json")).unwrap();
    assert!(
        m.version.starts_with("1-ft") || m.version.contains("-ft"),
        "{}",
        m.version
    );
    assert_eq!(
        m.training["parent"]["sha256"].as_str(),
        Some(parent_sha.as_str())
    );
    let study = &m.training["studies"][0];
    assert_eq!(study["name"], "s1");
    assert_eq!(study["labels_sha256"].as_str().unwrap().len(), 64);
    // Blocks 16..24 of the 24 slices are held out.
    assert_eq!(study["held_out_slices"], 8);
    assert!(m.metrics["held_out_user_slices"]["before"]["dice_infection"].is_f64());
    assert!(m.metrics["held_out_user_slices"]["after"]["dice_infection"].is_f64());
    // The new model loads and runs.
    let mut seg = segmenter_for(
        Task::Lesion,
        Some(&out.join("lesion.json")),
        DeviceChoice::Cpu,
    )
    .unwrap();
    pulmo::infer::RunContext::detached(|ctx| {
        seg.segment(&ct, pulmo::infer::SegmentInput::default(), ctx)
    })
    .unwrap();
    // The parent is untouched, and a model folder is never overwritten.
    assert_eq!(
        pulmo::infer::manifest::sha256_file(&weights("lesion.safetensors")).unwrap(),
        parent_sha
    );
    let before = std::fs::read(out.join("lesion.safetensors")).unwrap();
    let o = run(dir.path(), &out);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && log.contains("never overwritten"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(out.join("lesion.safetensors")).unwrap(),
        before
    );
    // No lesion labels: a clear error naming the file; nothing written.
    let clear = labels.map(|v| v.min(1));
    pulmo::io::nifti::write_nifti(&dir.path().join("s2_ct.nii.gz"), &ct).unwrap();
    pulmo::io::nifti::write_nifti(&dir.path().join("s2_labels.nii.gz"), &clear).unwrap();
    let out2 = dir.path().join("model2");
    let o = run(&dir.path().join("s2_labels.nii.gz"), &out2);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && log.contains("s2_labels.nii.gz") && log.contains("no lesion labels"),
        "{log}"
    );
    assert!(!out2.join("lesion.json").exists());
}

/// A model the helper cannot load is an error naming the file, from the AI process.
#[test]
fn a_broken_model_is_a_clear_error_from_the_ai_process() {
    use_built_helper();
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manifest::read(&weights("lung.json")).unwrap();
    m.weights = "missing.safetensors".into();
    let mp = dir.path().join("broken.json");
    m.write(&mp).unwrap();
    let mut seg = segmenter_for(Task::Lung, Some(&mp), DeviceChoice::Cpu).unwrap();
    let demo = pulmo::demo::generate(&pulmo::demo::DemoOptions {
        dims: [32, 32, 8],
        spacing_mm: [10.0, 10.0, 30.0],
        ..Default::default()
    });
    let e = pulmo::infer::RunContext::detached(|ctx| {
        seg.segment(&demo.ct, pulmo::infer::SegmentInput::default(), ctx)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("missing.safetensors") && e.contains("not found"),
        "{e}"
    );
    // A lesion manifest offered as a lung model is refused before any process starts.
    let e = segmenter_for(Task::Lung, Some(&weights("lesion.json")), DeviceChoice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("lesion model"), "{e}");
}

/// `pulmo train` and `pulmo doctor` run the helper: its messages and exit status come
/// through.
#[test]
fn pulmo_forwards_train_and_doctor_to_the_helper() {
    let pulmo = env!("CARGO_BIN_EXE_pulmo");
    let out = std::process::Command::new(pulmo)
        .args(["train", "lung", "--data", "/nonexistent/pulmo-data"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("pulmo-ai: error: /nonexistent/pulmo-data: training data folder not found"),
        "{err}"
    );
    let out = std::process::Command::new(pulmo)
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("libtorch: not loaded") || text.contains("libtorch not loaded"));
    assert!(text.contains("tensor check: sum(1,2,3) = 6"), "{text}");
}

/// The AI process keeps the last CT: a second job on the same CT sends only the request
/// and gives the same proposal; another CT is sent again.
#[test]
fn the_ai_process_keeps_the_ct_between_jobs() {
    use_built_helper();
    let mut seg =
        segmenter_for(Task::Lung, Some(&weights("lung.json")), DeviceChoice::Cpu).unwrap();
    let demo = |seed| {
        pulmo::demo::generate(&pulmo::demo::DemoOptions {
            dims: [64, 64, 12],
            spacing_mm: [5.5, 5.5, 25.0],
            seed,
        })
        .ct
    };
    let (a, b) = (demo(1), demo(2));
    let run = |seg: &mut Box<dyn pulmo::infer::Segmenter>, ct| {
        pulmo::infer::RunContext::detached(|ctx| {
            seg.segment(ct, pulmo::infer::SegmentInput::default(), ctx)
        })
        .unwrap()
    };
    let first = run(&mut seg, &a);
    let again = run(&mut seg, &a);
    let other = run(&mut seg, &b);
    assert!(first.detail.contains("sending the CT"), "{}", first.detail);
    assert!(again.detail.contains("CT kept there"), "{}", again.detail);
    assert!(other.detail.contains("sending the CT"), "{}", other.detail);
    assert_eq!(first.labels.voxels, again.labels.voxels);
    assert_eq!(first.confidence.voxels, again.confidence.voxels);
}
