//! `pulmo train`: trains the built-in U-Net with tch (Adam, cross-entropy + soft Dice,
//! flips / rotations / scales / intensity jitter / noise), checkpoints every epoch,
//! resumes, and ends with the evaluation that goes into the manifest.
//!
//! Checkpoints hold the weights (safetensors) and a JSON state (epoch, generator state,
//! losses); Adam's moment estimates are not saved, so a resumed run restarts them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use super::data::{Rng, Sample, case_samples, crop_into};
use super::{builtin_net, device_name, load_weights};
pub use crate::infer::evaluate::{
    Case, LungCaseMetrics, evaluate_lung_case, read_lung_case, score_lungs,
};
use crate::infer::manifest::{
    Arch, InputSpec, Manifest, PostprocessSpec, WeightFormat, sha256_file,
};
use crate::infer::pipeline::SlicePipeline;
use crate::infer::{DeviceChoice, InferError, Task};

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub task: Task,
    /// Data folder (lung: LCTSC layout `Case_NNN_ct.nii.gz` + `Case_NNN_lungs.nii.gz`).
    pub data: PathBuf,
    pub train_cases: Vec<String>,
    pub val_cases: Vec<String>,
    /// Output folder: `<task>.safetensors`, `<task>.json`, checkpoints.
    pub out: PathBuf,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    pub arch: Arch,
    pub spacing_mm: f64,
    /// Square training crops (pixels); inference runs on whole slices.
    pub crop: usize,
    pub device: DeviceChoice,
    pub resume: bool,
    /// Use at most this many training slices per case (smoke tests).
    pub max_slices_per_case: Option<usize>,
    /// Batches per epoch (default: every training slice once).
    pub steps_per_epoch: Option<usize>,
    /// Skip the final full-grid evaluation (smoke tests).
    pub skip_eval: bool,
    /// The command line that started the run (recorded in the manifest).
    pub command: String,
}

impl TrainOptions {
    /// The lung model's defaults on `../shared/data/lctsc256`.
    pub fn lung_defaults(data: PathBuf, out: PathBuf) -> TrainOptions {
        TrainOptions {
            task: Task::Lung,
            data,
            train_cases: (0..7).map(|i| format!("Case_{i:03}")).collect(),
            val_cases: (7..9).map(|i| format!("Case_{i:03}")).collect(),
            out,
            epochs: 12,
            batch: 8,
            lr: 2e-3,
            seed: 7,
            arch: Arch {
                kind: "unet2d".into(),
                base_channels: 12,
                depth: 4,
            },
            spacing_mm: 1.953125,
            crop: 192,
            device: DeviceChoice::Auto,
            resume: false,
            max_slices_per_case: None,
            steps_per_epoch: None,
            skip_eval: false,
            command: String::new(),
        }
    }

    pub fn input_spec(&self) -> InputSpec {
        InputSpec {
            spacing_mm: self.spacing_mm,
            context_slices: 0,
            hu_min: -1000.0,
            hu_max: 400.0,
            pad_multiple: 1 << self.arch.depth,
        }
    }

    pub fn classes(&self) -> Vec<String> {
        match self.task {
            Task::Lung => vec!["background".into(), "lung".into()],
            Task::Lesion => vec!["background".into(), "ggo".into(), "consolidation".into()],
        }
    }
}

/// Checkpoint state beside the checkpoint weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub epochs_done: usize,
    pub rng: Rng,
    pub epoch_losses: Vec<f64>,
    pub epoch_val_dice: Vec<f64>,
    pub seconds: f64,
}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub manifest_path: PathBuf,
    pub state: CheckpointState,
    pub eval: Vec<LungCaseMetrics>,
}

fn class_of_lung(v: u8) -> u8 {
    (v != 0) as u8
}

fn load_samples(
    opts: &TrainOptions,
    cases: &[String],
    spec: &InputSpec,
    limit: Option<usize>,
) -> Result<Vec<Sample>, InferError> {
    let mut all = Vec::new();
    for name in cases {
        let case = read_lung_case(&opts.data, name)?;
        let mut s = case_samples(&case, spec, &class_of_lung)?;
        if let Some(n) = limit {
            // Evenly spaced slices, so a smoke test still sees lung.
            let step = (s.len() / n.max(1)).max(1);
            s = s.into_iter().step_by(step).take(n).collect();
        }
        all.extend(s);
    }
    Ok(all)
}

/// Random flip / rotation / scale by an affine grid (bilinear for the image, nearest
/// for the labels), then intensity scale and shift and Gaussian noise.
fn augment(x: &Tensor, y: &Tensor, rng: &mut Rng, flips: bool) -> (Tensor, Tensor) {
    let n = x.size()[0] as usize;
    let mut theta = Vec::with_capacity(n * 6);
    let mut gain = Vec::with_capacity(n);
    let mut shift = Vec::with_capacity(n);
    for _ in 0..n {
        let a = rng.range(-12.0, 12.0).to_radians();
        let s = rng.range(0.85, 1.15);
        let f = if flips && rng.uniform() < 0.5 {
            -1.0
        } else {
            1.0
        };
        let (c, sn) = (a.cos() / s, a.sin() / s);
        theta.extend_from_slice(&[
            (f * c) as f32,
            (-sn) as f32,
            rng.range(-0.08, 0.08) as f32,
            (f * sn) as f32,
            c as f32,
            rng.range(-0.08, 0.08) as f32,
        ]);
        gain.push(rng.range(0.9, 1.1) as f32);
        shift.push(rng.range(-0.05, 0.05) as f32);
    }
    let dev = x.device();
    let theta = Tensor::from_slice(&theta)
        .view([n as i64, 2, 3])
        .to_device(dev);
    let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
    let xs = x.grid_sampler(&grid, 0, 0, false);
    let ys = y
        .unsqueeze(1)
        .to_kind(Kind::Float)
        .grid_sampler(&grid, 1, 0, false)
        .squeeze_dim(1)
        .to_kind(Kind::Int64);
    let gain = Tensor::from_slice(&gain)
        .view([n as i64, 1, 1, 1])
        .to_device(dev);
    let shift = Tensor::from_slice(&shift)
        .view([n as i64, 1, 1, 1])
        .to_device(dev);
    let noise = xs.randn_like() * 0.02;
    (xs * gain + shift + noise, ys)
}

/// Cross-entropy plus (1 − mean soft Dice of the foreground classes).
pub fn loss(logits: &Tensor, y: &Tensor, classes: i64) -> Tensor {
    let ce = logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0);
    let probs = logits.softmax(1, Kind::Float);
    let onehot = y
        .one_hot(classes)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float);
    let dims: &[i64] = &[0, 2, 3];
    let inter = (&probs * &onehot).sum_dim_intlist(dims, false, Kind::Float);
    let denom = probs.sum_dim_intlist(dims, false, Kind::Float)
        + onehot.sum_dim_intlist(dims, false, Kind::Float);
    let dice = (inter * 2.0 + 1.0) / (denom + 1.0);
    ce + (1.0 - dice.narrow(0, 1, classes - 1).mean(Kind::Float))
}

fn batch_tensors(
    samples: &[&Sample],
    channels: usize,
    crop: usize,
    rng: &mut Rng,
    device: Device,
) -> (Tensor, Tensor) {
    let n = samples.len();
    let mut input = vec![0f32; n * channels * crop * crop];
    let mut target = vec![0i64; n * crop * crop];
    for (b, s) in samples.iter().enumerate() {
        let x0 = if s.w > crop {
            rng.below(s.w - crop + 1) as isize
        } else {
            -(((crop - s.w) / 2) as isize)
        };
        let y0 = if s.h > crop {
            rng.below(s.h - crop + 1) as isize
        } else {
            -(((crop - s.h) / 2) as isize)
        };
        crop_into(
            s,
            channels,
            crop,
            x0,
            y0,
            &mut input[b * channels * crop * crop..(b + 1) * channels * crop * crop],
            &mut target[b * crop * crop..(b + 1) * crop * crop],
        );
    }
    let c = crop as i64;
    (
        Tensor::from_slice(&input)
            .view([n as i64, channels as i64, c, c])
            .to_device(device),
        Tensor::from_slice(&target)
            .view([n as i64, c, c])
            .to_device(device),
    )
}

/// Mean per-slice foreground Dice on whole validation slices (no post-processing), the
/// quick check logged after each epoch.
fn slice_dice(net: &dyn ModuleT, samples: &[Sample], channels: usize, device: Device) -> f64 {
    let (mut inter, mut total) = (0f64, 0f64);
    tch::no_grad(|| {
        for chunk in samples.chunks(8) {
            let (h, w) = (chunk[0].h as i64, chunk[0].w as i64);
            if chunk.iter().any(|s| s.h as i64 != h || s.w as i64 != w) {
                continue;
            }
            let input: Vec<f32> = chunk.iter().flat_map(|s| s.input.iter().copied()).collect();
            let x = Tensor::from_slice(&input)
                .view([chunk.len() as i64, channels as i64, h, w])
                .to_device(device);
            let pred = net
                .forward_t(&x, false)
                .argmax(1, false)
                .gt(0)
                .to_device(Device::Cpu);
            let target: Vec<u8> = chunk
                .iter()
                .flat_map(|s| s.target.iter().map(|&t| (t > 0) as u8))
                .collect();
            let t = Tensor::from_slice(&target)
                .view([chunk.len() as i64, h, w])
                .gt(0);
            inter += f64::try_from(pred.logical_and(&t).sum(Kind::Float)).unwrap_or(0.0);
            total += f64::try_from(pred.sum(Kind::Float) + t.sum(Kind::Float)).unwrap_or(0.0);
        }
    });
    if total == 0.0 {
        1.0
    } else {
        2.0 * inter / total
    }
}

/// Trains as `opts` says; writes `<task>.safetensors` and `<task>.json` into `opts.out`.
pub fn train(opts: &TrainOptions, log: &mut dyn FnMut(&str)) -> Result<TrainReport, InferError> {
    let t0 = Instant::now();
    let device = super::device(opts.device)?;
    tch::manual_seed(opts.seed as i64);
    let spec = opts.input_spec();
    let classes = opts.classes();
    let channels = spec.channels();
    std::fs::create_dir_all(&opts.out).map_err(|e| InferError::Io {
        path: opts.out.clone(),
        source: e,
    })?;
    let name = opts.task.name();
    let weights_path = opts.out.join(format!("{name}.safetensors"));
    let manifest_path = opts.out.join(format!("{name}.json"));
    let ckpt_path = opts.out.join(format!("{name}.ckpt.safetensors"));
    let state_path = opts.out.join(format!("{name}.ckpt.json"));

    let mut manifest = Manifest {
        name: format!("pulmo-{name}-unet"),
        version: "1".into(),
        task: opts.task,
        format: WeightFormat::Safetensors,
        weights: format!("{name}.safetensors"),
        sha256: None,
        arch: Some(opts.arch.clone()),
        classes: classes.clone(),
        input: spec.clone(),
        postprocess: PostprocessSpec::default(),
        training: serde_json::Value::Null,
        metrics: serde_json::Value::Null,
    };
    if opts.task != Task::Lung {
        return Err(InferError::Input(
            "only the lung model trains from LCTSC-layout folders in this version".into(),
        ));
    }

    log(&format!(
        "loading training data from {}",
        opts.data.display()
    ));
    let train = load_samples(opts, &opts.train_cases, &spec, opts.max_slices_per_case)?;
    let val = load_samples(opts, &opts.val_cases, &spec, opts.max_slices_per_case)?;
    log(&format!(
        "{} training and {} validation slices ({}x{} px at {} mm), device {}",
        train.len(),
        val.len(),
        train.first().map_or(0, |s| s.w),
        train.first().map_or(0, |s| s.h),
        spec.spacing_mm,
        device_name(device)
    ));
    if train.is_empty() {
        return Err(InferError::Data {
            path: opts.data.clone(),
            message: "no training slices".into(),
        });
    }

    let (mut vs, net) = builtin_net(&manifest, device)?;
    let mut state = CheckpointState {
        epochs_done: 0,
        rng: Rng(opts.seed),
        epoch_losses: Vec::new(),
        epoch_val_dice: Vec::new(),
        seconds: 0.0,
    };
    if opts.resume && state_path.is_file() && ckpt_path.is_file() {
        let text = std::fs::read_to_string(&state_path).map_err(|e| InferError::Io {
            path: state_path.clone(),
            source: e,
        })?;
        state = serde_json::from_str(&text).map_err(|e| InferError::Data {
            path: state_path.clone(),
            message: e.to_string(),
        })?;
        load_weights(&mut vs, &ckpt_path)?;
        log(&format!("resumed after epoch {}", state.epochs_done));
    }
    let mut opt = nn::Adam::default()
        .build(&vs, opts.lr)
        .map_err(|e| InferError::Model {
            model: manifest.name.clone(),
            message: e.to_string(),
        })?;
    let mut rng = state.rng;
    let steps = opts
        .steps_per_epoch
        .unwrap_or_else(|| train.len().div_ceil(opts.batch.max(1)));
    let mut order: Vec<usize> = (0..train.len()).collect();
    for epoch in state.epochs_done..opts.epochs {
        let te = Instant::now();
        // Cosine decay of the learning rate over the run.
        let lr = opts.lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * epoch as f64 / opts.epochs.max(1) as f64).cos());
        opt.set_lr(lr.max(opts.lr * 0.02));
        let mut sum = 0.0;
        let mut pos = order.len();
        for _ in 0..steps {
            let mut picked = Vec::with_capacity(opts.batch);
            while picked.len() < opts.batch.min(train.len()) {
                if pos >= order.len() {
                    rng.shuffle(&mut order);
                    pos = 0;
                }
                picked.push(&train[order[pos]]);
                pos += 1;
            }
            let (x, y) = batch_tensors(&picked, channels, opts.crop, &mut rng, device);
            let (x, y) = augment(&x, &y, &mut rng, true);
            let logits = net.forward_t(&x, true);
            let l = loss(&logits, &y, classes.len() as i64);
            opt.backward_step(&l);
            sum += f64::try_from(&l).unwrap_or(f64::NAN);
        }
        let mean = sum / steps.max(1) as f64;
        let vd = if val.is_empty() {
            f64::NAN
        } else {
            slice_dice(&net, &val, channels, device)
        };
        state.epochs_done = epoch + 1;
        state.rng = rng;
        state.epoch_losses.push(mean);
        state.epoch_val_dice.push(vd);
        state.seconds += te.elapsed().as_secs_f64();
        vs.save(&ckpt_path).map_err(|e| InferError::Weights {
            path: ckpt_path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(
            &state_path,
            serde_json::to_string_pretty(&state).expect("state serialises"),
        )
        .map_err(|e| InferError::Io {
            path: state_path.clone(),
            source: e,
        })?;
        log(&format!(
            "epoch {}/{}: loss {mean:.4}, validation slice Dice {vd:.4}, lr {lr:.2e}, {:.0} s",
            epoch + 1,
            opts.epochs,
            te.elapsed().as_secs_f64()
        ));
    }

    vs.save(&weights_path).map_err(|e| InferError::Weights {
        path: weights_path.clone(),
        message: e.to_string(),
    })?;
    manifest.sha256 = Some(sha256_file(&weights_path)?);
    manifest.training = serde_json::json!({
        "command": opts.command,
        "data": opts.data.display().to_string(),
        "train_cases": opts.train_cases,
        "validation_cases": opts.val_cases,
        "seed": opts.seed,
        "epochs": opts.epochs,
        "batch": opts.batch,
        "steps_per_epoch": steps,
        "crop_px": opts.crop,
        "learning_rate": opts.lr,
        "optimizer": "Adam, cosine decay",
        "loss": "cross-entropy + (1 - soft Dice)",
        "augmentation": "flip, rotation +-12 deg, scale 0.85..1.15, shift +-4 %, gain 0.9..1.1, offset +-0.05, noise sd 0.02",
        "device": device_name(device),
        "train_seconds": state.seconds,
        "epoch_losses": state.epoch_losses,
        "epoch_validation_slice_dice": state.epoch_val_dice,
    });
    manifest.write(&manifest_path)?;

    let mut eval = Vec::new();
    if !opts.skip_eval && !opts.val_cases.is_empty() {
        log("evaluating on the validation cases (full CT grid, post-processed)");
        let mut seg = super::load_segmenter(&manifest_path, opts.device)?;
        for name in &opts.val_cases {
            let case = read_lung_case(&opts.data, name)?;
            let m = evaluate_lung_case(seg.as_mut(), &case)?;
            log(&format!(
                "  {}: Dice {:.4}, Jaccard {:.4}, MAE {:.1} HU, RVD {:.2} %",
                m.case,
                m.dice,
                m.jaccard,
                m.mean_absolute_error_hu,
                m.relative_volume_difference_pct.unwrap_or(f64::NAN)
            ));
            eval.push(m);
        }
        manifest.metrics = serde_json::json!({
            "validation": eval,
            "mean_dice": eval.iter().map(|m| m.dice).sum::<f64>() / eval.len() as f64,
            "min_dice": eval.iter().map(|m| m.dice).fold(f64::INFINITY, f64::min),
        });
        manifest.write(&manifest_path)?;
    }
    log(&format!(
        "done in {:.0} s: {}",
        t0.elapsed().as_secs_f64(),
        manifest_path.display()
    ));
    Ok(TrainReport {
        manifest_path,
        state,
        eval,
    })
}

/// Loads the lung model of `manifest` and scores it on `cases` of `data`.
pub fn evaluate_lung_model(
    manifest: &Path,
    data: &Path,
    cases: &[String],
    device: DeviceChoice,
) -> Result<Vec<LungCaseMetrics>, InferError> {
    let mut seg = super::load_segmenter(manifest, device)?;
    cases
        .iter()
        .map(|name| evaluate_lung_case(seg.as_mut(), &read_lung_case(data, name)?))
        .collect()
}

/// Any [`SlicePipeline`] can be scored the same way (the classic threshold model too).
pub fn evaluate_pipeline<M: crate::infer::pipeline::SliceModel>(
    p: &mut SlicePipeline<M>,
    case: &Case,
) -> Result<LungCaseMetrics, InferError> {
    evaluate_lung_case(p, case)
}
