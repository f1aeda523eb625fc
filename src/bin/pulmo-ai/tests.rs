//! The libtorch side in process: a seconds-long training smoke test on real data (loss
//! goes down, checkpoints reload bit-exactly, resume continues), time budget and
//! keep-best, clear errors for broken weights, and TorchScript drop-ins. The committed
//! weights are checked through the AI process, as users run them
//! (`tests/ai_process.rs`).

#[path = "../../../tests/common/mod.rs"]
mod common;

use crate::torch::train::{TrainOptions, train};
use crate::torch::{UNet, builtin_net, load_segmenter, load_weights};
use pulmo::infer::manifest::{Arch, Manifest};
use pulmo::infer::{DeviceChoice, Task};
use tch::nn::ModuleT;

fn smoke_options(data: std::path::PathBuf, out: std::path::PathBuf) -> TrainOptions {
    let mut o = TrainOptions::lung_defaults(data, out);
    o.train_cases = vec!["Case_000".into()];
    o.val_cases = vec!["Case_007".into()];
    o.max_slices_per_case = Some(6);
    o.arch = Arch {
        kind: "unet2d".into(),
        base_channels: 4,
        depth: 2,
    };
    o.crop = 96;
    o.batch = 4;
    o.steps_per_epoch = Some(6);
    o.epochs = 4;
    o.lr = 1e-2;
    o.device = DeviceChoice::Cpu;
    o.skip_eval = true;
    o
}

#[test]
fn training_smoke_loss_falls_checkpoint_reloads_and_resume_continues() {
    let Some(data) = common::data_dir("lctsc256") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut o = smoke_options(data, dir.path().to_path_buf());
    let mut lines = Vec::new();
    let r = train(&o, &mut |l| lines.push(l.to_string())).unwrap();
    let losses = &r.state.epoch_losses;
    assert_eq!(losses.len(), 4, "{lines:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[3] < losses[0], "loss did not go down: {losses:?}");

    // The final weights and the last checkpoint hold the same tensors, bit for bit.
    let w = tch::Tensor::read_safetensors(dir.path().join("lung.safetensors")).unwrap();
    let c = tch::Tensor::read_safetensors(dir.path().join("lung.ckpt.safetensors")).unwrap();
    assert_eq!(w.len(), c.len());
    let c: std::collections::HashMap<_, _> = c.into_iter().collect();
    for (n, t) in &w {
        assert!(t.equal(&c[n]), "{n} differs");
    }
    // A fresh network loading them computes exactly what the saved one does.
    let manifest = Manifest::read(&dir.path().join("lung.json")).unwrap();
    let (mut vs1, net1) = builtin_net(&manifest, tch::Device::Cpu).unwrap();
    load_weights(&mut vs1, &dir.path().join("lung.ckpt.safetensors")).unwrap();
    let x = tch::Tensor::rand([2, 1, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
    let y1 = tch::no_grad(|| net1.forward_t(&x, false));
    let (mut vs2, net2) = builtin_net(&manifest, tch::Device::Cpu).unwrap();
    vs2.save(dir.path().join("other.safetensors")).unwrap();
    load_weights(&mut vs2, &dir.path().join("lung.safetensors")).unwrap();
    let y2 = tch::no_grad(|| net2.forward_t(&x, false));
    assert!(y1.equal(&y2), "reloaded weights compute something else");
    assert!(manifest.sha256.is_some());
    assert_eq!(manifest.training["seed"], 7);

    // Resume: two more epochs continue the loss history.
    o.epochs = 6;
    o.resume = true;
    let r2 = train(&o, &mut |_| {}).unwrap();
    assert_eq!(r2.state.epochs_done, 6);
    assert_eq!(&r2.state.epoch_losses[..4], &losses[..]);
}

#[test]
fn time_budget_cuts_the_epochs_and_keep_best_ends_on_the_best_validation_epoch() {
    let Some(data) = common::data_dir("lctsc256") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut o = smoke_options(data, dir.path().to_path_buf());
    o.epochs = 50;
    o.steps_per_epoch = Some(2);
    // Far less than one epoch takes: the run stops after its first epoch.
    o.time_budget_s = Some(1e-3);
    o.keep_best = true;
    let mut lines = Vec::new();
    let r = train(&o, &mut |l| lines.push(l.to_string())).unwrap();
    assert_eq!(r.state.epochs_done, 1, "{lines:?}");
    assert_eq!(r.state.planned_epochs, Some(1));
    assert!(
        lines.iter().any(|l| l.contains("1 of 50 epochs")),
        "{lines:?}"
    );
    let m = Manifest::read(&r.manifest_path).unwrap();
    assert_eq!(m.training["epochs"], 1);
    assert_eq!(m.training["epochs_requested"], 50);

    // Without a budget: three epochs, and the final weights are those of the epoch
    // with the best validation Dice (bit for bit the best checkpoint).
    let dir = tempfile::tempdir().unwrap();
    o.out = dir.path().to_path_buf();
    o.time_budget_s = None;
    o.epochs = 3;
    let r = train(&o, &mut |_| {}).unwrap();
    let (best, dice) = r.state.best_epoch.expect("a best epoch");
    let v = &r.state.epoch_val_dice;
    assert_eq!(dice, v.iter().cloned().fold(f64::MIN, f64::max), "{v:?}");
    assert_eq!(v[best - 1], dice);
    let m = Manifest::read(&r.manifest_path).unwrap();
    assert_eq!(m.training["kept_epoch"], best);
    let w = tch::Tensor::read_safetensors(dir.path().join("lung.safetensors")).unwrap();
    let b: std::collections::HashMap<_, _> =
        tch::Tensor::read_safetensors(dir.path().join("lung.best.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    for (n, t) in &w {
        assert!(t.equal(&b[n]), "{n} differs from the best checkpoint");
    }
}

#[test]
fn broken_weights_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Arch {
        kind: "unet2d".into(),
        base_channels: 4,
        depth: 2,
    };
    let mut m = Manifest {
        name: "t".into(),
        version: "1".into(),
        task: Task::Lung,
        format: pulmo::infer::manifest::WeightFormat::Safetensors,
        weights: "t.safetensors".into(),
        sha256: None,
        arch: Some(arch.clone()),
        classes: vec!["background".into(), "lung".into()],
        input: pulmo::infer::classic::ThresholdLungs::spec(),
        postprocess: Default::default(),
        training: serde_json::Value::Null,
        metrics: serde_json::Value::Null,
    };
    let mp = dir.path().join("t.json");
    m.write(&mp).unwrap();
    // Missing file.
    let e = load_segmenter(&mp, DeviceChoice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("t.safetensors") && e.contains("not found"),
        "{e}"
    );
    // Not safetensors.
    std::fs::write(dir.path().join("t.safetensors"), b"garbage").unwrap();
    let e = load_segmenter(&mp, DeviceChoice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("t.safetensors"), "{e}");
    // Another architecture's weights: wrong shapes named.
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = UNet::new(
        &vs.root(),
        1,
        2,
        &Arch {
            base_channels: 8,
            ..arch.clone()
        },
    );
    vs.save(dir.path().join("t.safetensors")).unwrap();
    let e = load_segmenter(&mp, DeviceChoice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("shape"), "{e}");
    // Right shapes, wrong checksum.
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = UNet::new(&vs.root(), 1, 2, &arch);
    vs.save(dir.path().join("t.safetensors")).unwrap();
    m.sha256 = Some("00".repeat(32));
    m.write(&mp).unwrap();
    let e = load_segmenter(&mp, DeviceChoice::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("sha256"), "{e}");
    // Correct: loads and runs.
    m.sha256 = None;
    m.write(&mp).unwrap();
    load_segmenter(&mp, DeviceChoice::Cpu).unwrap();
}

/// A lab's own TorchScript model, described by a manifest, runs through the same
/// pipeline: the built-in lung model traced to TorchScript gives the built-in's answer.
#[test]
fn torchscript_drop_in_runs_through_the_same_pipeline() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let builtin = root.join("weights/lung.json");
    let manifest = Manifest::read(&builtin).unwrap();
    let (mut vs, net) = builtin_net(&manifest, tch::Device::Cpu).unwrap();
    load_weights(&mut vs, &root.join("weights/lung.safetensors")).unwrap();
    vs.freeze(); // traced weights become constants
    let dir = tempfile::tempdir().unwrap();
    let example = tch::Tensor::zeros([2, 1, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
    let traced = tch::CModule::create_by_tracing("UNet", "forward", &[example], &mut |xs| {
        vec![net.forward_t(&xs[0], false)]
    })
    .unwrap();
    traced.save(dir.path().join("lung.pt")).unwrap();
    let mut m = manifest.clone();
    m.name = "traced-lung".into();
    m.format = pulmo::infer::manifest::WeightFormat::Torchscript;
    m.weights = "lung.pt".into();
    m.sha256 = None;
    m.arch = None;
    let mp = dir.path().join("traced.json");
    m.write(&mp).unwrap();

    let demo = pulmo::demo::generate(&pulmo::demo::DemoOptions {
        dims: [96, 96, 40],
        spacing_mm: [3.73, 3.73, 7.5],
        ..Default::default()
    });
    let run = |path: &std::path::Path| {
        let mut seg = load_segmenter(path, DeviceChoice::Cpu).unwrap();
        pulmo::infer::RunContext::detached(|ctx| {
            seg.segment(&demo.ct, pulmo::infer::SegmentInput::default(), ctx)
        })
        .unwrap()
    };
    let a = run(&builtin);
    let b = run(&mp);
    assert_eq!(b.model.name, "traced-lung");
    let lung = a.labels.voxels.iter().filter(|&&v| v != 0).count();
    assert!(
        lung > 1000,
        "the built-in model finds the demo's lungs ({lung} voxels)"
    );
    let differ = a
        .labels
        .voxels
        .iter()
        .zip(&b.labels.voxels)
        .filter(|(x, y)| x != y)
        .count();
    assert!(
        differ * 1000 <= lung,
        "{differ} of {lung} lung voxels differ"
    );
}
