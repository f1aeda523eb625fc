//! Opening a study off the UI thread: a file or folder (one of several series chosen by
//! the user) or the synthetic demo, as a [`Job`] with progress and Cancel. A load can
//! start before the window exists ([`PreparedLoad`], `pulmo PATH`) so decoding overlaps
//! the window's creation.

use std::path::PathBuf;

use super::error_chain;
use super::jobs::{Job, JobControl, JobFailure};
use super::startup;
use super::study::Study;
use crate::demo::DemoOptions;
use crate::io::dicom::{self, DicomError, LoadStage, SeriesSummary};
use crate::io::{IoError, load_ct};

/// What a load ends with.
pub enum LoadOutcome {
    Loaded(Box<Study>),
    /// The folder holds several series: the user picks one.
    ChooseSeries(PathBuf, Vec<SeriesSummary>),
    /// The error and its causes, one line, as the user should read it.
    Failed(String),
}

/// A load in flight.
pub type LoadJob = Job<LoadOutcome>;

impl From<Result<LoadOutcome, JobFailure>> for LoadOutcome {
    fn from(r: Result<LoadOutcome, JobFailure>) -> Self {
        r.unwrap_or_else(|failure| LoadOutcome::Failed(failure.message("the loader")))
    }
}

/// The stage of a running load, for its progress line.
pub fn stage_name(stage: usize) -> &'static str {
    match stage {
        x if x == LoadStage::Decoding as usize => "decoding",
        x if x == LoadStage::Resampling as usize => "resampling",
        _ => "reading headers",
    }
}

/// Starts loading `path` (a file or folder; `series` picks one of several).
pub fn start_load(path: PathBuf, series: Option<String>, control: JobControl) -> LoadJob {
    let what = format!("loading {}", path.display());
    Job::spawn("pulmo-load", what, control, move |ctl| {
        let outcome = load(path, series, ctl);
        startup::mark("study read and decoded (loader thread)");
        outcome
    })
}

/// Starts generating the synthetic demo study.
pub fn start_demo(options: DemoOptions, control: JobControl) -> LoadJob {
    let what = "generating the synthetic demo study";
    Job::spawn("pulmo-load", what, control, move |_| {
        let study = Study::demo(&options);
        startup::mark("study read and decoded (loader thread)");
        LoadOutcome::Loaded(Box::new(study))
    })
}

fn load(path: PathBuf, series: Option<String>, ctl: &JobControl) -> LoadOutcome {
    // No wake-up per slice: the loading window polls the progress four times a second,
    // and a repaint per slice would render frames as fast as the GPU allows while the
    // decoder needs the CPU.
    let progress =
        |stage: LoadStage, done: usize, total: usize| ctl.set_progress(stage as usize, done, total);
    let options = dicom::LoadOptions {
        progress: Some(&progress),
        cancel: Some(ctl.cancel_flag()),
    };
    match load_ct(&path, series.as_deref(), &options) {
        Ok(loaded) => LoadOutcome::Loaded(Box::new(Study::from_loaded(&path, loaded))),
        Err(IoError::Dicom(DicomError::MultipleSeries { series, .. })) => {
            LoadOutcome::ChooseSeries(path.clone(), series)
        }
        Err(IoError::Dicom(DicomError::Cancelled)) => {
            LoadOutcome::Failed("loading was cancelled".into())
        }
        Err(e) => LoadOutcome::Failed(error_chain(&e)),
    }
}

/// A load started before the window opens (`pulmo PATH`); the viewer adopts it and
/// sets its waker once it exists.
#[derive(Clone)]
pub struct PreparedLoad {
    pub path: PathBuf,
    pub job: LoadJob,
}

impl std::fmt::Debug for PreparedLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedLoad({})", self.path.display())
    }
}

impl PreparedLoad {
    /// Starts loading `path` now, on a loader thread.
    pub fn start(path: PathBuf, series: Option<String>) -> Self {
        let job = start_load(path.clone(), series, JobControl::default());
        PreparedLoad { path, job }
    }
}
