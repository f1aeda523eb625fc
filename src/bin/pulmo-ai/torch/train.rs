//! `pulmo train`: trains the built-in U-Net with tch (Adam, cross-entropy + soft Dice,
//! flips / rotations / scales / intensity jitter / noise), checkpoints every epoch,
//! resumes, and ends with the evaluation that goes into the manifest.
//!
//! Checkpoints hold the weights (safetensors) and a JSON state (epoch, generator state,
//! losses); Adam's moment estimates are not saved, so a resumed run restarts them.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use super::data::{Rng, Sample, case_samples, crop_into};
use super::{builtin_net, device_name, load_weights};
use pulmo::infer::evaluate::{
    Case, evaluate_lung_case, evaluate_semiseg_full, read_lung_case, semiseg_means,
};
use pulmo::infer::manifest::{
    Arch, InputSpec, Manifest, PostprocessSpec, WeightFormat, sha256_file,
};
use pulmo::infer::{DeviceChoice, InferError, Task};

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
    pub augment: Augment,
    /// Lesion training: real COVID-SemiSeg slices per batch (the rest synthetic);
    /// default half.
    pub real_per_batch: Option<usize>,
    /// Lesion training: radiologist-graded normal slices per batch (MosMed CT-0, the
    /// even-numbered images; labels all "no lesion"); default none.
    pub normal_per_batch: Option<usize>,
    /// Wall-time budget (seconds): after the first epoch of a run the number of epochs
    /// is cut to what fits (never raised above `epochs`) and the learning-rate schedule
    /// is fitted to that number.
    pub time_budget_s: Option<f64>,
    /// Finish with the weights of the epoch with the best validation slice Dice
    /// instead of the last epoch's.
    pub keep_best: bool,
    /// The version written into the manifest (recorded with accepted labels).
    pub model_version: String,
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
            augment: Augment::Standard,
            real_per_batch: None,
            normal_per_batch: None,
            time_budget_s: None,
            keep_best: false,
            model_version: "1".into(),
        }
    }

    /// The lesion model's defaults: `data` is the shared data root holding
    /// `covid-semiseg/train` and `lctsc256` (synthetic lesions in the training cases).
    pub fn lesion_defaults(data: PathBuf, out: PathBuf) -> TrainOptions {
        TrainOptions {
            task: Task::Lesion,
            epochs: 10,
            lr: 2e-3,
            arch: Arch {
                kind: "unet2d".into(),
                base_channels: 12,
                depth: 4,
            },
            spacing_mm: 1.5,
            crop: 160,
            ..TrainOptions::lung_defaults(data, out)
        }
    }

    pub fn input_spec(&self) -> InputSpec {
        let (hu_min, hu_max) = match self.task {
            Task::Lung => (-1000.0, 400.0),
            Task::Lesion => pulmo::infer::lesion_data::LESION_INPUT_WINDOW_HU,
        };
        InputSpec {
            spacing_mm: self.spacing_mm,
            context_slices: 0,
            hu_min,
            hu_max,
            pad_multiple: 1 << self.arch.depth,
            flip_average: false,
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
    /// Epochs this run plans (`epochs`, or fewer under a time budget).
    #[serde(default)]
    pub planned_epochs: Option<usize>,
    /// Epoch (1-based) whose weights are in the best checkpoint, and its Dice.
    #[serde(default)]
    pub best_epoch: Option<(usize, f64)>,
}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub manifest_path: PathBuf,
    pub state: CheckpointState,
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
/// Augmentation strength: `Standard`, or `Strong` (gain 0.75..1.25, offset ±0.12, and
/// in 30 % of slices a resolution loss: bilinear down-sampling to 35..75 % and back),
/// for scanners and reconstructions unlike the training data's (e.g. 4 mm pixels,
/// emphysematous lungs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Augment {
    #[default]
    Standard,
    Strong,
}

impl std::str::FromStr for Augment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "standard" => Ok(Augment::Standard),
            "strong" => Ok(Augment::Strong),
            o => Err(format!("unknown augmentation '{o}' (standard or strong)")),
        }
    }
}

pub(crate) fn augment(
    x: &Tensor,
    y: &Tensor,
    rng: &mut Rng,
    flips: bool,
    rot90: bool,
    strength: Augment,
) -> (Tensor, Tensor) {
    let n = x.size()[0] as usize;
    let mut theta = Vec::with_capacity(n * 6);
    let mut gain = Vec::with_capacity(n);
    let mut shift = Vec::with_capacity(n);
    for _ in 0..n {
        let quarter = if rot90 {
            rng.below(4) as f64 * 90.0
        } else {
            0.0
        };
        let a = (quarter + rng.range(-12.0, 12.0)).to_radians();
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
        let (g, o) = match strength {
            Augment::Standard => (0.1, 0.05),
            Augment::Strong => (0.25, 0.12),
        };
        gain.push(rng.range(1.0 - g, 1.0 + g) as f32);
        shift.push(rng.range(-o, o) as f32);
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
    let mut xs = xs;
    if strength == Augment::Strong {
        let size = xs.size();
        let (h, w) = (size[2], size[3]);
        let mut parts = Vec::with_capacity(n);
        for i in 0..n as i64 {
            let xi = xs.narrow(0, i, 1);
            if rng.uniform() < 0.3 {
                let f = rng.range(0.35, 0.75);
                let small = xi.upsample_bilinear2d(
                    [
                        ((h as f64 * f) as i64).max(4),
                        ((w as f64 * f) as i64).max(4),
                    ],
                    false,
                    None,
                    None,
                );
                parts.push(small.upsample_bilinear2d([h, w], false, None, None));
            } else {
                parts.push(xi);
            }
        }
        xs = Tensor::cat(&parts, 0);
    }
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

pub(crate) fn batch_tensors(
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
        // Batches of up to 8 consecutive slices of one size.
        let mut chunks: Vec<&[Sample]> = Vec::new();
        let mut start = 0;
        for i in 1..=samples.len() {
            if i == samples.len()
                || i - start == 8
                || (samples[i].h, samples[i].w) != (samples[start].h, samples[start].w)
            {
                chunks.push(&samples[start..i]);
                start = i;
            }
        }
        for chunk in chunks {
            let (h, w) = (chunk[0].h as i64, chunk[0].w as i64);
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
    let best_path = opts.out.join(format!("{name}.best.safetensors"));
    let state_path = opts.out.join(format!("{name}.ckpt.json"));

    let mut manifest = Manifest {
        name: format!("pulmo-{name}-unet"),
        version: opts.model_version.clone(),
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
    log(&format!(
        "loading training data from {}",
        opts.data.display()
    ));
    // Pools of training slices and how many of each go into a batch.
    let (pools, val, data_note) = match opts.task {
        Task::Lung => {
            let train = load_samples(opts, &opts.train_cases, &spec, opts.max_slices_per_case)?;
            let val = load_samples(opts, &opts.val_cases, &spec, opts.max_slices_per_case)?;
            (vec![(train, opts.batch)], val, serde_json::json!({}))
        }
        Task::Lesion => lesion_pools(opts, &spec, log)?,
    };
    let train: Vec<&Sample> = pools.iter().flat_map(|(p, _)| p.iter()).collect();
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
        planned_epochs: None,
        best_epoch: None,
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
        if opts.time_budget_s.is_none() {
            state.planned_epochs = None;
        }
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
    let mut orders: Vec<(Vec<usize>, usize)> = pools
        .iter()
        .map(|(p, _)| ((0..p.len()).collect(), usize::MAX))
        .collect();
    let run_start = state.epochs_done;
    let mut epoch = state.epochs_done;
    loop {
        let planned = state.planned_epochs.unwrap_or(opts.epochs);
        if epoch >= planned {
            break;
        }
        let te = Instant::now();
        // Cosine decay of the learning rate over the run.
        let lr = opts.lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * epoch as f64 / planned.max(1) as f64).cos());
        opt.set_lr(lr.max(opts.lr * 0.02));
        let mut sum = 0.0;
        for _ in 0..steps {
            let mut picked = Vec::with_capacity(opts.batch);
            for ((pool, take), (order, pos)) in pools.iter().zip(orders.iter_mut()) {
                for _ in 0..(*take).min(pool.len()) {
                    if *pos >= order.len() {
                        rng.shuffle(order);
                        *pos = 0;
                    }
                    picked.push(&pool[order[*pos]]);
                    *pos += 1;
                }
            }
            let (x, y) = batch_tensors(&picked, channels, opts.crop, &mut rng, device);
            let (x, y) = augment(
                &x,
                &y,
                &mut rng,
                true,
                opts.task == Task::Lesion,
                opts.augment,
            );
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
        if opts.keep_best && vd.is_finite() && state.best_epoch.is_none_or(|(_, b)| vd > b) {
            vs.save(&best_path).map_err(|e| InferError::Weights {
                path: best_path.clone(),
                message: e.to_string(),
            })?;
            state.best_epoch = Some((epoch + 1, vd));
        }
        let epoch_s = te.elapsed().as_secs_f64();
        if epoch == run_start
            && let Some(budget) = opts.time_budget_s
        {
            // Epochs that fit in the budget, counting the one just done.
            let fit = run_start + (budget / epoch_s.max(1e-3)).floor().max(1.0) as usize;
            let planned = fit.min(opts.epochs).max(epoch + 1);
            if planned < opts.epochs {
                log(&format!(
                    "time budget {budget:.0} s at {epoch_s:.1} s per epoch: {planned} of {} epochs",
                    opts.epochs
                ));
            }
            state.planned_epochs = Some(planned);
        }
        std::fs::write(
            &state_path,
            serde_json::to_string_pretty(&state).expect("state serialises"),
        )
        .map_err(|e| InferError::Io {
            path: state_path.clone(),
            source: e,
        })?;
        log(&format!(
            "epoch {}/{}: loss {mean:.4}, validation slice Dice {vd:.4}, lr {lr:.2e}, {epoch_s:.0} s",
            epoch + 1,
            state.planned_epochs.unwrap_or(opts.epochs),
        ));
        epoch += 1;
    }
    if let Some((best, dice)) = state.best_epoch {
        log(&format!(
            "keeping epoch {best}'s weights (validation slice Dice {dice:.4})"
        ));
        load_weights(&mut vs, &best_path)?;
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
        "epochs": state.epochs_done,
        "epochs_requested": opts.epochs,
        "time_budget_s": opts.time_budget_s,
        "kept_epoch": state.best_epoch.map(|(e, _)| e).unwrap_or(state.epochs_done),
        "batch": opts.batch,
        "steps_per_epoch": steps,
        "crop_px": opts.crop,
        "learning_rate": opts.lr,
        "optimizer": "Adam, cosine decay",
        "loss": "cross-entropy + (1 - soft Dice)",
        "augmentation": match opts.augment {
            Augment::Standard => "flip, rotation +-12 deg, scale 0.85..1.15, shift +-4 %, gain 0.9..1.1, offset +-0.05, noise sd 0.02",
            Augment::Strong => "flip, rotation +-12 deg, scale 0.85..1.15, shift +-4 %, gain 0.75..1.25, offset +-0.12, 30 % resolution loss to 35..75 %, noise sd 0.02",
        },
        "rot90": opts.task == Task::Lesion,
        "data_detail": data_note,
        "device": device_name(device),
        "train_seconds": state.seconds,
        "epoch_losses": state.epoch_losses,
        "epoch_validation_slice_dice": state.epoch_val_dice,
    });
    manifest.write(&manifest_path)?;

    let mut eval = Vec::new();
    if !opts.skip_eval && opts.task == Task::Lesion {
        log("evaluating on the 48 COVID-SemiSeg test slices (Inf-Net protocol)");
        let mut seg = super::load_segmenter(&manifest_path, opts.device)?;
        let full = evaluate_semiseg_full(seg.as_mut(), &opts.data.join("covid-semiseg/test"))?;
        let (rows, inst) = (full.slices, full.instances);
        let (inf, ggo, con) = semiseg_means(&rows);
        log(&format!(
            "  mean per-slice Dice: infection {inf:.4}, GGO {ggo:.4}, consolidation {con:.4}"
        ));
        manifest.metrics = serde_json::json!({
            "test_split": "covid-semiseg/test (48 slices, never trained on)",
            "protocol": "mean over slices of per-slice Dice (Inf-Net); 1 when both empty",
            "dice_infection": inf,
            "dice_ggo": ggo,
            "dice_consolidation": con,
            "instances": inst,
            "slices": rows,
        });
        manifest.write(&manifest_path)?;
    }
    if !opts.skip_eval && opts.task == Task::Lung && !opts.val_cases.is_empty() {
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
    })
}

pub(crate) fn class_of_lesion(v: u8) -> u8 {
    match v {
        pulmo::infer::GGO => 1,
        pulmo::infer::CONSOLIDATION => 2,
        _ => 0,
    }
}

/// Lesion training pools: the real COVID-SemiSeg training slices (every sixth held out
/// for validation) and synthetic lesions in the LCTSC training cases; half of each batch
/// from each.
#[allow(clippy::type_complexity)]
pub(crate) fn lesion_pools(
    opts: &TrainOptions,
    spec: &InputSpec,
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<(Vec<Sample>, usize)>, Vec<Sample>, serde_json::Value), InferError> {
    use pulmo::infer::lesion_data::{insert_lesions, read_semiseg};
    let semiseg = read_semiseg(&opts.data.join("covid-semiseg/train"))?;
    let (mut real, mut val) = (Vec::new(), Vec::new());
    let (mut real_names, mut val_names) = (Vec::new(), Vec::new());
    for (i, s) in semiseg.iter().enumerate() {
        let case = Case {
            name: s.name.clone(),
            ct: s.ct.clone(),
            mask: s.labels.clone(),
            ct_path: opts
                .data
                .join("covid-semiseg/train/img")
                .join(format!("{}.jpg", s.name)),
        };
        let samples = case_samples(&case, spec, &class_of_lesion)?;
        if i % 6 == 5 {
            val.extend(samples);
            val_names.push(s.name.clone());
        } else {
            real.extend(samples);
            real_names.push(s.name.clone());
        }
    }
    if let Some(n) = opts.max_slices_per_case {
        real.truncate(n);
        val.truncate(n);
    }
    let mut synth = Vec::new();
    let per_case = opts.max_slices_per_case.unwrap_or(80);
    let mut rng = Rng(opts.seed ^ 0x5EED);
    let lctsc = opts.data.join("lctsc256");
    for name in &opts.train_cases {
        let case = read_lung_case(&lctsc, name)?;
        let nz = case.ct.geometry.dims[2];
        let plane = case.ct.geometry.dims[0] * case.ct.geometry.dims[1];
        let with_lung: Vec<usize> = (0..nz)
            .filter(|&k| case.mask.slice_k(k).iter().filter(|&&v| v != 0).count() > plane / 50)
            .collect();
        for _ in 0..per_case.min(with_lung.len() * 4) {
            let k = with_lung[rng.below(with_lung.len())];
            let s = insert_lesions(&case.ct, &case.mask, k, &mut || rng.uniform());
            let c = Case {
                name: s.name.clone(),
                ct: s.ct,
                mask: s.labels,
                ct_path: case.ct_path.clone(),
            };
            synth.extend(case_samples(&c, spec, &class_of_lesion)?);
        }
    }
    log(&format!(
        "lesion data: {} real COVID-SemiSeg training slices, {} held out for validation, {} synthetic slices",
        real.len(),
        val.len(),
        synth.len()
    ));
    let mut normal = Vec::new();
    let mut normal_note = serde_json::Value::Null;
    let normal_per_batch = opts.normal_per_batch.unwrap_or(0);
    if normal_per_batch > 0 {
        use pulmo::infer::lesion_data::{
            SEMISEG_PIXEL_MM, mosmed_normal_for_lesion_training, read_normal_slices,
        };
        let dir = opts.data.join("classify/mosmed-slices/CT-0");
        let (slices, skipped) =
            read_normal_slices(&dir, SEMISEG_PIXEL_MM, mosmed_normal_for_lesion_training)?;
        let mut names = Vec::new();
        for s in &slices {
            let case = Case {
                name: s.name.clone(),
                ct: s.ct.clone(),
                mask: s.labels.clone(),
                ct_path: dir.join(&s.name),
            };
            normal.extend(case_samples(&case, spec, &class_of_lesion)?);
            names.push(s.name.clone());
        }
        if let Some(n) = opts.max_slices_per_case {
            normal.truncate(n);
        }
        log(&format!(
            "normal slices: {} MosMed CT-0 images (even numbers), {} left out (windowing not calibrated: {})",
            normal.len(),
            skipped.len(),
            skipped.join(", ")
        ));
        normal_note = serde_json::json!({
            "folder": "classify/mosmed-slices/CT-0",
            "rule": "even image numbers (lesion_data::mosmed_normal_for_lesion_training); odd ones never seen",
            "images": names,
            "left_out_uncalibrated": skipped,
        });
    }
    let half = opts
        .real_per_batch
        .unwrap_or(opts.batch / 2)
        .clamp(1, opts.batch.max(1));
    let normal_n = if normal.is_empty() {
        0
    } else {
        normal_per_batch.min(opts.batch.saturating_sub(half + 1))
    };
    let synth_n = opts.batch.saturating_sub(half + normal_n).max(1);
    let note = serde_json::json!({
        "real_training_slices": real_names,
        "real_validation_slices": val_names,
        "synthetic_slices": synth.len(),
        "synthetic_from_cases": opts.train_cases,
        "semiseg_mapping": format!(
            "8-bit grey -> HU per image (lesion_data::calibrate_windowed): aerated-lung peak -> {} HU, soft-tissue peak -> {} HU (else {:.2} HU per level), 0.75 mm pixels",
            pulmo::infer::lesion_data::AERATED_LUNG_HU,
            pulmo::infer::lesion_data::SOFT_TISSUE_HU,
            pulmo::infer::lesion_data::DEFAULT_HU_PER_LEVEL
        ),
        "batch_mix": format!("{half} real + {synth_n} synthetic + {normal_n} normal"),
        "normal_slices": normal_note,
    });
    let mut pools = vec![(real, half), (synth, synth_n)];
    if normal_n > 0 {
        pools.push((normal, normal_n));
    }
    Ok((pools, val, note))
}
