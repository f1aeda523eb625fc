//! `pulmo finetune lesion`: a copy of a lesion model learns from the user's own label maps.
//!
//! The parent's weights are the start; each batch mixes slices of the user's studies
//! (half) with a replay sample of the original training data (real COVID-SemiSeg
//! training slices and synthetic lesions in LCTSC lungs, when `$PULMO_DATA` has them),
//! so the model does not forget what it knew; batch-norm statistics stay the parent's.
//! Blocks of neighbouring slices of the
//! user's studies are held out (`pulmo::infer::finetune`), and the model is measured on
//! them before and after, and on the standard test split (COVID-SemiSeg test, never
//! trained on) when it is there. The run stops at the time budget or on Cancel; only a
//! finished run writes anything, into a new folder: a new model version whose manifest
//! names its parent, the studies (by sha256), the command and the figures. The parent
//! (the built-in weights included) is never written to.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::data::{Rng, Sample, case_samples};
use super::train::{
    Augment, TrainOptions, augment, batch_tensors, class_of_lesion, lesion_pools, loss,
};
use super::{builtin_net, device_name, load_weights};
use pulmo::infer::evaluate::{Case, evaluate_semiseg, semiseg_means};
use pulmo::infer::finetune::{SliceUse, mean_slice_dice, plan_slices, read_user_studies};
use pulmo::infer::manifest::{Manifest, WeightFormat, check_sha256, sha256_file};
use pulmo::infer::{DeviceChoice, InferError, Task};

/// What to fine-tune, on what, for how long.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// The parent model's manifest.
    pub parent: PathBuf,
    /// Label maps (files or folders) and, optionally, their CTs in the same order.
    pub labels: Vec<PathBuf>,
    pub cts: Vec<PathBuf>,
    /// New folder for `lesion.safetensors` and `lesion.json`.
    pub out: PathBuf,
    pub time_budget_s: f64,
    /// The shared data root (replay data and the standard test split); None: neither.
    pub data: Option<PathBuf>,
    pub device: DeviceChoice,
    pub seed: u64,
    pub batch: usize,
    pub crop: usize,
    pub lr: f64,
    pub steps_per_epoch: usize,
    /// Version of the new model (default: the parent's with `-ft` and the date and time).
    pub version: Option<String>,
    pub command: String,
}

impl FinetuneOptions {
    pub fn new(parent: PathBuf, labels: Vec<PathBuf>, out: PathBuf) -> FinetuneOptions {
        FinetuneOptions {
            parent,
            labels,
            cts: Vec::new(),
            out,
            time_budget_s: 600.0,
            data: None,
            device: DeviceChoice::Auto,
            seed: 7,
            batch: 8,
            crop: 160,
            lr: 3e-4,
            steps_per_epoch: 25,
            version: None,
            command: String::new(),
        }
    }
}

/// Mean per-slice Dice of `net` on whole slices: (infection, GGO, consolidation).
fn dice_on(
    net: &dyn ModuleT,
    samples: &[Sample],
    channels: usize,
    device: Device,
) -> (f64, f64, f64) {
    let mut preds: Vec<Vec<u8>> = Vec::with_capacity(samples.len());
    tch::no_grad(|| {
        for s in samples {
            let x = Tensor::from_slice(&s.input)
                .view([1, channels as i64, s.h as i64, s.w as i64])
                .to_device(device);
            let p = net
                .forward_t(&x, false)
                .argmax(1, false)
                .to_kind(Kind::Uint8)
                .to_device(Device::Cpu)
                .view([-1]);
            preds.push(Vec::<u8>::try_from(&p).unwrap_or_default());
        }
    });
    let pairs: Vec<(&[u8], &[u8])> = samples
        .iter()
        .zip(&preds)
        .map(|(s, p)| (s.target.as_slice(), p.as_slice()))
        .collect();
    mean_slice_dice(&pairs)
}

fn dice_json((inf, ggo, con): (f64, f64, f64)) -> serde_json::Value {
    serde_json::json!({ "dice_infection": inf, "dice_ggo": ggo, "dice_consolidation": con })
}

/// The standard test split's Dice of the model at `manifest`, if the split is there.
fn test_split(
    manifest: &Path,
    data: Option<&Path>,
    device: DeviceChoice,
) -> Result<Option<(f64, f64, f64)>, InferError> {
    let Some(dir) = data.map(|d| d.join("covid-semiseg/test")) else {
        return Ok(None);
    };
    if !dir.join("img").is_dir() {
        return Ok(None);
    }
    let mut seg = super::load_segmenter(manifest, device)?;
    Ok(Some(semiseg_means(&evaluate_semiseg(seg.as_mut(), &dir)?)))
}

/// Fine-tunes as `o` says; `cancelled` is polled between steps. Returns the new manifest.
pub fn finetune(
    o: &FinetuneOptions,
    log: &mut dyn FnMut(&str),
    cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, InferError> {
    let t0 = Instant::now();
    let parent = Manifest::read(&o.parent)?;
    if parent.task != Task::Lesion {
        return Err(InferError::Finetune(format!(
            "{} is a {} model; fine-tuning is for lesion models",
            o.parent.display(),
            parent.task.name()
        )));
    }
    if parent.format != WeightFormat::Safetensors || parent.arch.is_none() {
        return Err(InferError::Finetune(format!(
            "{} is not one of pulmo's built-in U-Nets (TorchScript models cannot be fine-tuned here)",
            o.parent.display()
        )));
    }
    let parent_weights = parent.weights_path(&o.parent);
    check_sha256(&parent, &parent_weights)?;
    // Never write into the parent's folder (the built-in weights included).
    let manifest_path = o.out.join("lesion.json");
    let weights_path = o.out.join("lesion.safetensors");
    let same_dir = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_dir(&o.out, o.parent.parent().unwrap_or(Path::new("."))) || manifest_path.exists() {
        return Err(InferError::Finetune(format!(
            "{}: choose a new folder for the fine-tuned model (it holds a model already; models are never overwritten)",
            o.out.display()
        )));
    }
    let device = super::device(o.device)?;
    tch::manual_seed(o.seed as i64);
    let spec = parent.input.clone();
    let channels = spec.channels();

    let label_maps = pulmo::infer::finetune::label_maps(&o.labels)?;
    let studies = read_user_studies(&label_maps, &o.cts)?;
    let plan = plan_slices(&studies);
    let (mut train, mut held): (Vec<Sample>, Vec<Sample>) = (Vec::new(), Vec::new());
    let mut study_notes = Vec::new();
    for (si, s) in studies.iter().enumerate() {
        let case = Case {
            name: s.name.clone(),
            ct: s.ct.clone(),
            mask: s.labels.clone(),
            ct_path: s.ct_path.clone(),
        };
        let samples = case_samples(&case, &spec, &class_of_lesion)?;
        let uses: Vec<&SliceUse> = plan.iter().filter(|u| u.study == si).collect();
        let count = |held_out: bool, lesion: bool| {
            uses.iter()
                .filter(|u| u.held_out == held_out && (!lesion || u.has_lesion))
                .count()
        };
        study_notes.push(serde_json::json!({
            "name": s.name,
            "labels": s.labels_path.display().to_string(),
            "labels_sha256": s.labels_sha256,
            "ct": s.ct_path.display().to_string(),
            "ct_sha256": s.ct_sha256,
            "training_slices": count(false, false),
            "training_slices_with_lesion": count(false, true),
            "held_out_slices": count(true, false),
            "held_out_slices_with_lesion": count(true, true),
            "held_out_k": uses.iter().filter(|u| u.held_out).map(|u| u.k).collect::<Vec<_>>(),
        }));
        for u in &uses {
            let sample = samples[u.k].clone();
            if u.held_out {
                held.push(sample);
            } else {
                train.push(sample);
            }
        }
        log(&format!(
            "{}: {} training slices ({} with lesions), {} held out ({} with lesions): slices {}",
            s.name,
            count(false, false),
            count(false, true),
            count(true, false),
            count(true, true),
            held_out_ranges(&plan, si)
        ));
    }
    if !train.iter().any(|s| s.target.iter().any(|&t| t != 0)) {
        return Err(InferError::Finetune(
            "no lesion labels outside the held-out slices: label lesions on more slices".into(),
        ));
    }

    // Replay: the original training data, when the shared data is at hand.
    let mut pools: Vec<(Vec<Sample>, usize)> = Vec::new();
    let user_per_batch = if o.batch >= 2 { o.batch / 2 } else { 1 };
    let replay_note = match &o.data {
        Some(d) if d.join("covid-semiseg/train/img").is_dir() && d.join("lctsc256").is_dir() => {
            let mut topts = TrainOptions::lesion_defaults(d.clone(), o.out.clone());
            topts.seed = o.seed;
            topts.batch = o.batch - user_per_batch;
            topts.max_slices_per_case = Some(20);
            // A parent that learnt "no lesion" from normal slices replays them too.
            if parent.training["data_detail"]["normal_slices"].is_object()
                && d.join("classify/mosmed-slices/CT-0").is_dir()
            {
                topts.normal_per_batch = Some(1);
            }
            let (replay, _, note) = lesion_pools(&topts, &spec, log)?;
            for (p, take) in replay {
                pools.push((p, take.min(o.batch - user_per_batch).max(1)));
            }
            serde_json::json!({ "data": d.display().to_string(), "pools": note })
        }
        _ => {
            log(
                "warning: no replay data ($PULMO_DATA/covid-semiseg and lctsc256): the model may forget what it knew",
            );
            serde_json::Value::Null
        }
    };
    pools.insert(0, (train, user_per_batch));
    // One replay slice from each replay pool per batch at most, the rest from the user.
    let replay_take: usize = pools.iter().skip(1).map(|(_, t)| *t).sum();
    if replay_take + user_per_batch > o.batch && pools.len() > 1 {
        let over = replay_take + user_per_batch - o.batch;
        if let Some((_, t)) = pools.last_mut() {
            *t = t.saturating_sub(over).max(1);
        }
    }

    let (mut vs, net) = builtin_net(&parent, device)?;
    load_weights(&mut vs, &parent_weights)?;
    let before_held = (!held.is_empty()).then(|| dice_on(&net, &held, channels, device));
    if let Some(d) = before_held {
        log(&format!(
            "before: held-out slices Dice infection {:.4}, GGO {:.4}, consolidation {:.4}",
            d.0, d.1, d.2
        ));
    }
    let before_test = test_split(&o.parent, o.data.as_deref(), o.device)?;
    if let Some(d) = before_test {
        log(&format!(
            "before: standard test split Dice infection {:.4}, GGO {:.4}, consolidation {:.4}",
            d.0, d.1, d.2
        ));
    }

    let mut opt = nn::Adam::default()
        .build(&vs, o.lr)
        .map_err(|e| InferError::Model {
            model: parent.name.clone(),
            message: e.to_string(),
        })?;
    let mut rng = Rng(o.seed);
    let mut orders: Vec<(Vec<usize>, usize)> = pools
        .iter()
        .map(|(p, _)| ((0..p.len()).collect(), usize::MAX))
        .collect();
    let train_start = Instant::now();
    let mut losses = Vec::new();
    let mut steps = 0usize;
    'epochs: loop {
        let mut sum = 0.0;
        let mut n = 0;
        for _ in 0..o.steps_per_epoch {
            if cancelled() {
                return Err(InferError::Cancelled);
            }
            if train_start.elapsed().as_secs_f64() >= o.time_budget_s {
                if n > 0 {
                    losses.push(sum / n as f64);
                }
                break 'epochs;
            }
            // The learning rate decays over the time budget (cosine).
            let f = (train_start.elapsed().as_secs_f64() / o.time_budget_s).min(1.0);
            opt.set_lr(o.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * f).cos())));
            let mut picked = Vec::with_capacity(o.batch);
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
            let (x, y) = batch_tensors(&picked, channels, o.crop, &mut rng, device);
            let (x, y) = augment(&x, &y, &mut rng, true, true, Augment::Standard);
            // Batch-norm statistics stay the parent's (`train = false`): a few slices of
            // one study per batch would otherwise shift them for every scan.
            let logits = net.forward_t(&x, false);
            let l = loss(&logits, &y, parent.classes.len() as i64);
            opt.backward_step(&l);
            sum += f64::try_from(&l).unwrap_or(f64::NAN);
            n += 1;
            steps += 1;
        }
        losses.push(sum / n.max(1) as f64);
        log(&format!(
            "epoch {}: loss {:.4}, {:.0} s of {:.0} s",
            losses.len(),
            losses.last().copied().unwrap_or(f64::NAN),
            train_start.elapsed().as_secs_f64(),
            o.time_budget_s
        ));
    }
    let train_seconds = train_start.elapsed().as_secs_f64();
    let after_held = (!held.is_empty()).then(|| dice_on(&net, &held, channels, device));

    // Write the new model (weights, then the manifest: a folder without lesion.json is
    // not a model).
    std::fs::create_dir_all(&o.out).map_err(|e| InferError::Io {
        path: o.out.clone(),
        source: e,
    })?;
    vs.save(&weights_path).map_err(|e| InferError::Weights {
        path: weights_path.clone(),
        message: e.to_string(),
    })?;
    let version = o.version.clone().unwrap_or_else(|| {
        format!(
            "{}-ft{}",
            parent.version,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        )
    });
    let mut manifest = Manifest {
        version,
        weights: "lesion.safetensors".into(),
        sha256: Some(sha256_file(&weights_path)?),
        ..parent.clone()
    };
    manifest.training = serde_json::json!({
        "kind": "fine-tuning from the user's labels",
        "command": o.command,
        "parent": {
            "name": parent.name,
            "version": parent.version,
            "sha256": parent.sha256,
            "manifest": o.parent.display().to_string(),
        },
        "studies": study_notes,
        "split": format!(
            "blocks of {} neighbouring slices, every {}th block held out",
            pulmo::infer::finetune::BLOCK_SLICES,
            pulmo::infer::finetune::HOLD_OUT_EVERY
        ),
        "replay": replay_note,
        "batch": format!("{} user slices + {} replay", user_per_batch, o.batch - user_per_batch),
        "crop_px": o.crop,
        "learning_rate": o.lr,
        "seed": o.seed,
        "time_budget_s": o.time_budget_s,
        "steps": steps,
        "epoch_losses": losses,
        "train_seconds": train_seconds,
        "device": device_name(device),
    });
    manifest.write(&manifest_path)?;
    let after_test = test_split(&manifest_path, o.data.as_deref(), o.device)?;
    manifest.metrics = serde_json::json!({
        "held_out_user_slices": {
            "slices": held.len(),
            "protocol": "mean over slices of per-slice Dice on the model grid, no post-processing (1 when both empty)",
            "before": before_held.map(dice_json),
            "after": after_held.map(dice_json),
        },
        "standard_test_split": {
            "data": "covid-semiseg/test (48 slices, never trained on)",
            "before": before_test.map(dice_json),
            "after": after_test.map(dice_json),
        },
        "parent_metrics": parent.metrics,
    });
    manifest.write(&manifest_path)?;
    for (what, b, a) in [
        ("held-out slices", before_held, after_held),
        ("standard test split", before_test, after_test),
    ] {
        if let (Some(b), Some(a)) = (b, a) {
            log(&format!(
                "{what}: Dice infection {:.4} -> {:.4}, GGO {:.4} -> {:.4}, consolidation {:.4} -> {:.4}",
                b.0, a.0, b.1, a.1, b.2, a.2
            ));
        }
    }
    log(&format!(
        "done in {:.0} s ({steps} steps): {}",
        t0.elapsed().as_secs_f64(),
        manifest_path.display()
    ));
    Ok(manifest_path)
}

/// "16-23, 48-55" for the held-out slices of study `si`.
fn held_out_ranges(plan: &[SliceUse], si: usize) -> String {
    let ks: Vec<usize> = plan
        .iter()
        .filter(|u| u.study == si && u.held_out)
        .map(|u| u.k)
        .collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ks.len() {
        let mut j = i;
        while j + 1 < ks.len() && ks[j + 1] == ks[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            format!("{}", ks[i])
        } else {
            format!("{}-{}", ks[i], ks[j])
        });
        i = j + 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}
