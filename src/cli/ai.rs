//! `pulmo segment`, `pulmo train`, `pulmo eval`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::infer::worker::{Job, JobEvent, Worker};
use crate::infer::{DeviceChoice, Task, default_factory};
use crate::io::{dicom, load_ct};

/// Arguments of `pulmo segment`.
#[derive(clap::Args, Debug)]
pub struct SegmentArgs {
    /// lung or lesion.
    pub task: Task,
    /// The CT (DICOM file/folder/DICOMDIR, NIfTI or NRRD).
    pub ct: PathBuf,
    /// Output label map (.nii or .nii.gz), on the CT's grid.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// auto (CUDA when available), cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Model manifest (default: weights/<task>.json).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Lung model manifest for lesion runs (they restrict lesions to the lungs).
    #[arg(long)]
    pub lung_model: Option<PathBuf>,
    /// Benchmarking: run the study N times in the same worker (models stay loaded, as in
    /// the viewer after its first job) and print each run's timings.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
}

/// Arguments of `pulmo train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// lung or lesion.
    pub task: Task,
    /// Data folder (default: $PULMO_DATA/lctsc256 for lung, $PULMO_DATA for lesion).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder for <task>.safetensors / <task>.json and checkpoints.
    #[arg(short = 'o', long, default_value = "weights")]
    pub out: PathBuf,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Base channels of the U-Net.
    #[arg(long)]
    pub base: Option<i64>,
    /// Down-sampling steps of the U-Net.
    #[arg(long)]
    pub depth: Option<usize>,
    /// Training crop size (px).
    #[arg(long)]
    pub crop: Option<usize>,
    /// In-plane pixel size of the model's input grid (mm).
    #[arg(long)]
    pub spacing: Option<f64>,
    /// Batches per epoch (default: every training slice once).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Training cases, e.g. Case_000,Case_001.
    #[arg(long, value_delimiter = ',')]
    pub train_cases: Option<Vec<String>>,
    /// Validation cases.
    #[arg(long, value_delimiter = ',')]
    pub val_cases: Option<Vec<String>>,
    /// Use at most N evenly spaced slices per case (smoke tests).
    #[arg(long)]
    pub max_slices: Option<usize>,
    /// Continue from the checkpoint in the output folder.
    #[arg(long)]
    pub resume: bool,
    /// Lesion training: real slices per batch (default half the batch).
    #[arg(long)]
    pub real_per_batch: Option<usize>,
    /// Lesion training: normal slices per batch (MosMed CT-0 in
    /// DATA/classify/mosmed-slices, even-numbered images, taught as "no lesion").
    #[arg(long)]
    pub normal_per_batch: Option<usize>,
    /// Augmentation: standard or strong (stronger intensity jitter, resolution loss).
    #[arg(long, default_value = "standard")]
    pub augment: String,
    /// Skip the final evaluation.
    #[arg(long)]
    pub no_eval: bool,
    /// Wall-time budget in minutes: after the first epoch, the epochs (and the
    /// learning-rate schedule) are cut to what fits.
    #[arg(long)]
    pub time_budget_min: Option<f64>,
    /// End with the weights of the epoch with the best validation slice Dice.
    #[arg(long)]
    pub keep_best: bool,
    /// Version written into the manifest (name + version are recorded with accepted
    /// labels, so a retrained model needs a new one).
    #[arg(long, default_value = "1")]
    pub model_version: String,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Arguments of `pulmo finetune` (run by `pulmo-ai finetune`).
#[derive(clap::Args, Debug)]
pub struct FinetuneArgs {
    /// lesion (the only task that learns from the user's labels).
    pub task: Task,
    /// Label maps, or folders of them: NAME_labels.nii.gz (or _lesions, _seg, _mask;
    /// .nii, .nrrd) beside NAME_ct.nii.gz; 3 = GGO, 4 = consolidation, 1/2 = lungs
    /// (lung slices without lesions teach "no lesion here").
    #[arg(long, num_args = 1.., required = true)]
    pub labels: Vec<PathBuf>,
    /// The CTs of the label maps, in the same order (default: NAME_ct beside each map).
    #[arg(long, num_args = 1..)]
    pub ct: Vec<PathBuf>,
    /// New folder for the fine-tuned model (lesion.safetensors + lesion.json).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// The model to start from (default: weights/lesion.json).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training time in minutes (the evaluations before and after come on top).
    #[arg(long, default_value_t = 10.0)]
    pub time_budget_min: f64,
    /// Shared data root for the replay sample and the standard test split (default
    /// $PULMO_DATA or ../shared/data; "none" to go without).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Version of the new model (default: the parent's + "-ft" + a time stamp).
    #[arg(long)]
    pub model_version: Option<String>,
    /// Batches per progress line.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
}

/// Arguments of `pulmo eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// lung (LCTSC-layout cases) or lesion (a COVID-SemiSeg split folder, or a folder of
    /// real volumes with slice labels: NAME_ct.nii.gz + NAME_slice_labels.txt, as
    /// covid-ct-md/).
    pub task: Task,
    /// Model manifest (default: weights/<task>.json); `threshold` for the classic model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Data folder (default: $PULMO_DATA/lctsc256 for lung, .../covid-semiseg/test for
    /// lesion; PULMO_DATA defaults to ../shared/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Cases (default: the validation split Case_007,Case_008).
    #[arg(long, value_delimiter = ',')]
    pub cases: Option<Vec<String>>,
    /// Write the JSON report here (default: standard output).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Slice-labelled volumes: the lung model run first (default: weights/lung.json).
    #[arg(long)]
    pub lung_model: Option<PathBuf>,
    /// Slice-labelled volumes: a slice is called positive when the lesion proposal covers
    /// at least this area on it.
    #[arg(long, default_value_t = 20.0)]
    pub min_area_mm2: f64,
    /// Slice-labelled volumes: also write each volume's lesion proposal here
    /// (NAME_lesions.nii.gz).
    #[arg(long)]
    pub save_labels: Option<PathBuf>,
}

pub use crate::infer::data_root;

pub fn segment(a: &SegmentArgs) -> Result<()> {
    let t = Instant::now();
    let loaded = load_ct(&a.ct, None, &dicom::LoadOptions::default())
        .with_context(|| format!("loading {}", a.ct.display()))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let load_s = t.elapsed().as_secs_f64();
    let (lung, lesion) = match a.task {
        Task::Lung => (a.model.clone(), None),
        Task::Lesion => (a.lung_model.clone(), a.model.clone()),
    };
    let mut worker = Worker::spawn(default_factory(a.device, lung, lesion), Arc::new(|| {}), 1);
    let ct = Arc::new(loaded.volume);
    let mut proposal = None;
    for run in 1..=a.repeat.max(1) {
        let t_run = Instant::now();
        let p = run_job(&mut worker, a.task, &ct, run == 1)?;
        if a.repeat > 1 {
            eprintln!(
                "run {run}/{}: {:.2} s ({}; model {:.2} s, segmentation {:.2} s)",
                a.repeat,
                t_run.elapsed().as_secs_f64(),
                p.detail,
                p.model_seconds,
                p.total_seconds
            );
        }
        proposal = Some(p);
    }
    let proposal = proposal.expect("at least one run");
    let t_write = Instant::now();
    crate::io::nifti::write_nifti(&a.output, &proposal.labels)
        .with_context(|| format!("writing {}", a.output.display()))?;
    let write_s = t_write.elapsed().as_secs_f64();
    let ml = crate::metrics::voxel_volume_ml(&proposal.labels.geometry);
    let mut counts = [0u64; 256];
    for &v in &proposal.labels.voxels {
        counts[v as usize] += 1;
    }
    eprintln!(
        "{} {} on {} ({}): load {:.2} s, model {:.2} s, total {:.2} s \
         (segmentation {:.2} s, writing {write_s:.2} s)",
        proposal.model.name,
        proposal.model.version,
        proposal.model.device,
        proposal.detail,
        load_s,
        proposal.model_seconds,
        t.elapsed().as_secs_f64(),
        proposal.total_seconds,
    );
    for (v, &n) in counts.iter().enumerate().skip(1) {
        if n > 0 {
            println!("label {v}: {:.1} mL ({n} voxels)", n as f64 * ml);
        }
    }
    println!("wrote {}", a.output.display());
    // The AI process ends (and is reaped) with the worker; then report both peaks.
    drop(worker);
    let peak_mb = |who: libc::c_int| {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::getrusage(who, &mut u) } == 0;
        if ok {
            u.ru_maxrss as f64 / 1024.0
        } else {
            f64::NAN
        }
    };
    eprintln!(
        "peak RSS: pulmo {:.0} MB, AI process {:.0} MB",
        peak_mb(libc::RUSAGE_SELF),
        peak_mb(libc::RUSAGE_CHILDREN)
    );
    Ok(())
}

fn default_cases(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("Case_{i:03}")).collect()
}

/// `pulmo train ...` runs as `pulmo-ai train ...` (training needs libtorch, which only
/// the AI helper links).
pub fn train(_: &TrainArgs) -> Result<()> {
    forward_to_ai("train")
}

/// Runs `pulmo-ai SUBCOMMAND ARGS...` with this process's arguments from SUBCOMMAND on,
/// passing its exit status through.
pub fn forward_to_ai(subcommand: &str) -> Result<()> {
    let program = crate::infer::remote::program()?;
    let args: Vec<_> = std::env::args_os()
        .skip(1)
        .skip_while(|a| a != subcommand)
        .collect();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let status = std::process::Command::new(&program)
        .args(&args)
        .env("PULMO_COMMAND", command)
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    if !status.success() {
        bail!("{} {subcommand} failed ({status})", program.display());
    }
    Ok(())
}

pub fn eval(a: &EvalArgs) -> Result<()> {
    if a.task == Task::Lesion {
        return eval_lesion(a);
    }
    let data = a
        .data
        .clone()
        .unwrap_or_else(|| data_root().join("lctsc256"));
    let cases = a.cases.clone().unwrap_or_else(|| default_cases(7..9));
    let use_threshold = a.model.as_deref() == Some(Path::new("threshold"));
    let mut seg = if use_threshold {
        Box::new(crate::infer::classic::ThresholdLungs::pipeline())
            as Box<dyn crate::infer::Segmenter>
    } else {
        crate::infer::segmenter_for(Task::Lung, a.model.as_deref(), a.device)?
    };
    let info = seg.info();
    let mut rows = Vec::new();
    for name in &cases {
        let case = crate::infer::evaluate::read_lung_case(&data, name)?;
        let m = crate::infer::evaluate::evaluate_lung_case(seg.as_mut(), &case)?;
        eprintln!(
            "{}: Dice {:.4}, Jaccard {:.4}, ME {:.1} HU, MAE {:.1} HU, RVD {:.2} %, rel. HU diff {:.2} % ({:.1} s)",
            m.case,
            m.dice,
            m.jaccard,
            m.mean_error_hu,
            m.mean_absolute_error_hu,
            m.relative_volume_difference_pct.unwrap_or(f64::NAN),
            m.relative_mean_hu_difference_pct.unwrap_or(f64::NAN),
            m.seconds
        );
        rows.push(m);
    }
    let n = rows.len().max(1) as f64;
    let report = serde_json::json!({
        "model": info,
        "data": data.display().to_string(),
        "cases": rows,
        "mean_dice": rows.iter().map(|m| m.dice).sum::<f64>() / n,
        "min_dice": rows.iter().map(|m| m.dice).fold(f64::INFINITY, f64::min),
        "mean_jaccard": rows.iter().map(|m| m.jaccard).sum::<f64>() / n,
    });
    write_report(a, &report)
}

fn eval_lesion(a: &EvalArgs) -> Result<()> {
    use crate::infer::evaluate::{evaluate_semiseg_full, semiseg_means};
    let data = a
        .data
        .clone()
        .unwrap_or_else(|| data_root().join("covid-semiseg/test"));
    if !data.join("img").is_dir() {
        let images = std::fs::read_dir(&data)
            .with_context(|| format!("reading {}", data.display()))?
            .filter_map(|e| e.ok())
            .any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "jpg" || x == "png")
            });
        if images {
            return eval_lesion_normal_slices(a, &data);
        }
        return eval_lesion_volumes(a, &data);
    }
    let mut seg = crate::infer::segmenter_for(Task::Lesion, a.model.as_deref(), a.device)?;
    let info = seg.info();
    let full = evaluate_semiseg_full(seg.as_mut(), &data)?;
    let (rows, inst) = (full.slices, full.instances);
    let (inf, ggo, con) = semiseg_means(&rows);
    eprintln!(
        "{} slices: mean per-slice Dice infection {inf:.4}, GGO {ggo:.4}, consolidation {con:.4}",
        rows.len()
    );
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    eprintln!(
        "lesion instances: {} reference, {} proposed; AP@0.5 {}, AP@0.75 {}, mAP@[0.5:0.95] {}; \
         slice-level (any lesion): sensitivity {}, specificity {} ({} of {} slices with lesion)",
        inst.reference_instances,
        inst.predicted_instances,
        f(inst.ap50),
        f(inst.ap75),
        f(inst.map50_95),
        f(inst.slice_sensitivity),
        f(inst.slice_specificity),
        inst.slices_with_lesion,
        rows.len()
    );
    let report = serde_json::json!({
        "model": info,
        "data": data.display().to_string(),
        "protocol": "mean over slices of per-slice Dice (Inf-Net); 1 when both empty",
        "dice_infection": inf,
        "dice_ggo": ggo,
        "dice_consolidation": con,
        "instances": inst,
        "slices": rows,
    });
    write_report(a, &report)
}

/// Writes an evaluation report as pretty JSON to `--output`, or prints it.
fn write_report(a: &EvalArgs, report: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(report)? + "\n";
    match &a.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// `pulmo eval lesion --data DIR` on a folder of normal slices (MosMed `CT-0/`): the
/// odd-numbered images, which lesion training never sees.
fn eval_lesion_normal_slices(a: &EvalArgs, data: &Path) -> Result<()> {
    use crate::infer::evaluate::evaluate_normal_slices;
    use crate::infer::lesion_data::mosmed_normal_for_lesion_training;
    let mut lung = crate::infer::segmenter_for(Task::Lung, a.lung_model.as_deref(), a.device)?;
    let mut lesion = crate::infer::segmenter_for(Task::Lesion, a.model.as_deref(), a.device)?;
    let info = lesion.info();
    let scores = evaluate_normal_slices(
        lung.as_mut(),
        lesion.as_mut(),
        data,
        |n| !mosmed_normal_for_lesion_training(n),
        a.min_area_mm2,
    )?;
    let called: Vec<&str> = scores
        .rows
        .iter()
        .filter(|r| r.called)
        .map(|r| r.slice.as_str())
        .collect();
    eprintln!(
        "{} normal slices (odd-numbered, never trained on; {} left out, windowing not calibrated): \
         {} called (>= {} mm²), specificity {}, mean proposed lesion {:.1} mm² per slice ({} of the lungs); called: {}",
        scores.slices,
        scores.left_out_uncalibrated.len(),
        scores.called,
        a.min_area_mm2,
        scores.specificity.map_or("-".into(), |v| format!("{v:.3}")),
        scores.mean_lesion_mm2,
        scores
            .lesion_pct_of_lung
            .map_or("-".into(), |v| format!("{v:.2} %")),
        called.join(", ")
    );
    let report = serde_json::json!({
        "model": info,
        "data": data.display().to_string(),
        "protocol": format!(
            "radiologist-graded normal slices (no lesion): a slice is called when the lesion \
             proposal inside the lung model's lungs covers at least {} mm²; odd image numbers \
             only (even ones may be lesion training negatives)", a.min_area_mm2),
        "normal_slices": scores,
    });
    write_report(a, &report)
}

/// `pulmo eval lesion --data DIR` on real volumes with slice-level infection labels.
fn eval_lesion_volumes(a: &EvalArgs, data: &Path) -> Result<()> {
    use crate::infer::evaluate::{
        evaluate_slice_labelled, pooled_slice_scores, read_slice_labelled_volumes,
    };
    let volumes = read_slice_labelled_volumes(data)?;
    let mut lung = crate::infer::segmenter_for(Task::Lung, a.lung_model.as_deref(), a.device)?;
    let mut lesion = crate::infer::segmenter_for(Task::Lesion, a.model.as_deref(), a.device)?;
    let info = lesion.info();
    if let Some(dir) = &a.save_labels {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.3}", v));
    let mut rows = Vec::new();
    for v in &volumes {
        let (m, labels) =
            evaluate_slice_labelled(lung.as_mut(), lesion.as_mut(), v, a.min_area_mm2)?;
        eprintln!(
            "{}: {} slices ({} with lung, {} labelled infected): sensitivity {}, specificity {} \
             (lung slices {}), GGO {:.1} mL, consolidation {:.1} mL, lungs {:.0} mL ({:.1} s)",
            m.case,
            m.slices,
            m.lung_slices,
            m.labelled_positive,
            pct(m.sensitivity),
            pct(m.specificity),
            pct(m.specificity_lung_slices),
            m.ggo_ml,
            m.consolidation_ml,
            m.lung_ml,
            m.seconds
        );
        if let Some(dir) = &a.save_labels {
            let path = dir.join(format!("{}_lesions.nii.gz", v.name));
            crate::io::nifti::write_nifti(&path, &labels)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        rows.push(m);
    }
    let (sens, spec, spec_lung) = pooled_slice_scores(&rows);
    eprintln!(
        "pooled over {} volumes: slice sensitivity {}, specificity {} (lung slices {})",
        rows.len(),
        pct(sens),
        pct(spec),
        pct(spec_lung)
    );
    let report = serde_json::json!({
        "model": info,
        "data": data.display().to_string(),
        "protocol": format!(
            "slice-level: a slice is positive when the lesion proposal (GGO or consolidation, \
             inside the lung model's lungs) covers at least {} mm² of it; labels are the \
             radiologists' slice-level infection labels", a.min_area_mm2),
        "sensitivity": sens,
        "specificity": spec,
        "specificity_lung_slices": spec_lung,
        "volumes": rows,
    });
    write_report(a, &report)
}

/// Submits one job and waits for its proposal, printing progress when `verbose`.
pub(crate) fn run_job(
    worker: &mut Worker,
    task: Task,
    ct: &Arc<crate::volume::CtVolume>,
    verbose: bool,
) -> Result<crate::infer::Proposal> {
    let job = Job {
        task,
        ct: ct.clone(),
        lungs: None,
    };
    let mut last_pct = usize::MAX;
    worker
        .run_to_end(job, |ev| match ev {
            JobEvent::Started { model } if verbose => eprintln!("running {model}"),
            JobEvent::Progress { done, total } if verbose => {
                let pct = done * 100 / (*total).max(1);
                if pct / 10 != last_pct / 10 {
                    eprintln!("  {done}/{total} slices");
                    last_pct = pct;
                }
            }
            _ => {}
        })
        .map_err(|m| anyhow::anyhow!("{m}"))
}

/// Runs one model on a CT in a fresh worker and returns its labels (lungs 1, 2 for
/// `Task::Lung`; lungs and lesions 3, 4 for `Task::Lesion`).
pub fn propose(
    task: Task,
    ct: &Arc<crate::volume::CtVolume>,
    device: DeviceChoice,
) -> Result<crate::volume::LabelVolume> {
    let mut worker = Worker::spawn(default_factory(device, None, None), Arc::new(|| {}), 1);
    Ok(run_job(&mut worker, task, ct, false)?.labels)
}
