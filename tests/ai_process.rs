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
