//! Batch processing of many studies (`pulmo batch`): a manifest of studies, the
//! deterministic shard of it one process runs, each study's outputs in its own folder
//! (`OUT/studies/<id>/`), each file written atomically and the study's row last, so a
//! study is complete exactly when its row is there: a killed run resumes where it
//! stopped and a re-run does nothing. A failed study fails its own row and the run
//! goes on. [`merge`] joins the rows into one table with summary statistics.
//!
//! GUI-free and model-free: the caller runs the models (the CLI keeps one AI worker
//! for the whole run, so they load once per process).

pub mod manifest;
pub mod merge;
pub mod scheduler;
pub mod study;

use std::path::PathBuf;

pub use manifest::{Shard, StudyEntry, read_manifest};
pub use merge::{Merged, merge};
pub use study::{Model, Row, StudyRecord, Task, is_complete, run_study};

/// The folder of study `id` under the output folder.
pub fn study_dir(out: &std::path::Path, id: &str) -> PathBuf {
    out.join("studies").join(id)
}

/// Errors of a batch run as a whole (a study's own failure is its row's error).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Manifest {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Output { path: PathBuf, message: String },
}
