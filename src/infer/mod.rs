//! AI proposals: segmenters, the slice-wise pipeline, post-processing and the worker.
//!
//! - [`Segmenter`]: CT volume in, [`Proposal`] (labels + confidence on the CT grid) out.
//!   The worker, the review UI and the tests only see this trait.
//! - [`pipeline::SlicePipeline`] turns any [`pipeline::SliceModel`] (a 2D network that maps
//!   a batch of normalised slices to class probabilities) into a [`Segmenter`]: it
//!   resamples each axial slice onto an axis-aligned patient-frame grid at the model's
//!   spacing (so flips and axis order of the file do not matter), normalises as the
//!   manifest says, runs batches, maps probabilities back to the CT grid bilinearly,
//!   takes the arg-max and post-processes ([`postprocess`]). Lesion models run only on
//!   the lungs' slices and box plus 32 mm of context ([`pipeline::Roi`]); a manifest may
//!   ask for test-time left-right flip averaging (`input.flip_average`).
//! - [`manifest::Manifest`]: what a weight file is (task, classes, input spacing, HU
//!   window, architecture, training and metrics, sha256).
//! - [`worker::Worker`]: one thread owns the models, takes jobs on a bounded channel,
//!   reports progress, honours cancellation, tags everything with the job id and wakes
//!   the UI through a callback; a failing or panicking model becomes an error event.
//! - [`classic`]: a threshold lung segmenter with no libtorch (the test segmenter, and a
//!   fallback when no weights are present).
//! - [`remote`]: models run in a child process (`pulmo-ai serve`, the only binary that
//!   links libtorch); its U-Net (in tch), TorchScript loading and training live in
//!   `src/bin/pulmo-ai/`.

pub mod classic;
pub mod evaluate;
pub mod finetune;
pub mod lesion_data;
pub mod manifest;
pub mod pipeline;
pub mod postprocess;
pub mod remote;
pub mod review;
pub mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::volume::{LabelVolume, Volume};

/// The shared training and test data: `$PULMO_DATA`, else `../shared/data` (relative to
/// the working folder).
pub fn data_root() -> PathBuf {
    std::env::var_os("PULMO_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

/// Label values written by the proposals (the default label table's).
pub const LEFT_LUNG: u8 = 1;
pub const RIGHT_LUNG: u8 = 2;
pub const GGO: u8 = 3;
pub const CONSOLIDATION: u8 = 4;

/// What a segmenter proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Left (1) and right (2) lung.
    Lung,
    /// Ground-glass opacity (3) and consolidation (4).
    Lesion,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Lung => "lung",
            Task::Lesion => "lesion",
        }
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lung" | "lungs" => Ok(Task::Lung),
            "lesion" | "lesions" => Ok(Task::Lesion),
            other => Err(format!("unknown task '{other}' (expected lung or lesion)")),
        }
    }
}

/// The device a model runs on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            other => Err(format!(
                "unknown device '{other}' (expected auto, cpu or cuda)"
            )),
        }
    }
}

/// Which model made a proposal (recorded with accepted labels).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub device: String,
}

/// A proposal on the CT grid: label values ([`LEFT_LUNG`], ..., 0 = none) and the
/// model's probability of the proposed class (0..=255 for 0..1; 0 where unlabelled).
#[derive(Debug, Clone)]
pub struct Proposal {
    pub task: Task,
    pub labels: LabelVolume,
    pub confidence: Volume<u8>,
    pub model: ModelInfo,
    /// Seconds spent in the model and the whole segmentation.
    pub model_seconds: f64,
    pub total_seconds: f64,
    /// How it ran, in words (input size, batch, slices), for logs and benchmarks.
    pub detail: String,
}

/// Errors of the AI side, with the model or file in context.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("cancelled")]
    Cancelled,
    #[error("model manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("model weights {path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("model '{model}' failed: {message}")]
    Model { model: String, message: String },
    /// An error reported by the AI process, or about it (already in words).
    #[error("{0}")]
    Remote(String),
    #[error("no {task} model available: {message}")]
    NoModel { task: &'static str, message: String },
    #[error("the CT cannot be segmented: {0}")]
    Input(String),
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    /// Fine-tuning cannot run as asked (already in words).
    #[error("fine-tuning: {0}")]
    Finetune(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Progress and cancellation of one run.
pub struct RunContext<'a> {
    pub cancel: &'a AtomicBool,
    pub progress: &'a (dyn Fn(usize, usize) + Sync),
}

impl RunContext<'_> {
    /// A context that is never cancelled and reports nowhere.
    pub fn detached<R>(f: impl FnOnce(&mut RunContext<'_>) -> R) -> R {
        let cancel = AtomicBool::new(false);
        let progress = |_: usize, _: usize| {};
        f(&mut RunContext {
            cancel: &cancel,
            progress: &progress,
        })
    }

    pub fn check(&self) -> Result<(), InferError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(InferError::Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn report(&self, done: usize, total: usize) {
        (self.progress)(done, total)
    }
}

/// Extra input a segmenter may use.
#[derive(Default, Clone, Copy)]
pub struct SegmentInput<'a> {
    /// Lung labels (1, 2) on the CT grid, to restrict lesions to the lungs; a lesion
    /// segmenter without them segments the lungs itself or uses the whole body.
    pub lungs: Option<&'a LabelVolume>,
}

/// CT in, proposal out. Implementations own their model and may keep state between
/// runs (e.g. a loaded network), hence `&mut self`; they move to the worker thread.
pub trait Segmenter: Send {
    fn task(&self) -> Task;
    fn info(&self) -> ModelInfo;
    fn segment(
        &mut self,
        ct: &crate::volume::CtVolume,
        input: SegmentInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<Proposal, InferError>;
}

/// The segmenter for `task`: the model of `manifest` (or the built-in
/// `weights/<task>.json`) on `device`, run in its own AI process ([`remote`]). When no
/// lung weights are installed, lungs fall back to the classic threshold segmenter (in
/// process); lesions need a model.
pub fn segmenter_for(
    task: Task,
    manifest: Option<&std::path::Path>,
    device: DeviceChoice,
) -> Result<Box<dyn Segmenter>, InferError> {
    segmenter_in(task, manifest, device, &remote::AiProcess::shared())
}

/// [`segmenter_for`] with models in a given (shared) AI process.
pub fn segmenter_in(
    task: Task,
    manifest: Option<&std::path::Path>,
    device: DeviceChoice,
    process: &std::sync::Arc<std::sync::Mutex<remote::AiProcess>>,
) -> Result<Box<dyn Segmenter>, InferError> {
    let path = manifest
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| manifest::default_manifest_path(task));
    if manifest.is_some() || path.is_file() {
        return Ok(Box::new(remote::ChildSegmenter::new(
            task,
            &path,
            device,
            process.clone(),
        )?));
    }
    match task {
        Task::Lung => Ok(Box::new(classic::ThresholdLungs::pipeline())),
        Task::Lesion => Err(InferError::NoModel {
            task: task.name(),
            message: format!(
                "{} not found (train one with `pulmo train lesion`)",
                path.display()
            ),
        }),
    }
}

/// A worker factory for the built-in (or given) models; both tasks share one AI
/// process, which keeps their models loaded between jobs.
pub fn default_factory(
    device: DeviceChoice,
    lung_model: Option<PathBuf>,
    lesion_model: Option<PathBuf>,
) -> worker::Factory {
    let process = remote::AiProcess::shared();
    Box::new(move |task| {
        let m = match task {
            Task::Lung => lung_model.as_deref(),
            Task::Lesion => lesion_model.as_deref(),
        };
        segmenter_in(task, m, device, &process)
    })
}
