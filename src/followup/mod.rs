//! Longitudinal follow-up: registering a follow-up CT (fixed) to its baseline (moving) and
//! mapping what changed between them.
//!
//! - [`transform`]: fixed → moving transforms (affine + dense displacement field, ITK's
//!   convention), warping CT and labels, Jacobian statistics, inversion;
//! - [`register`]: the pipeline: lung centroids, rigid then affine by mutual information,
//!   then compositive demons inside the dilated lungs, coarse to fine, multi-threaded;
//! - [`progress`]: the transition map (healthy / ground-glass / consolidation at each
//!   time point), its volumes per lung and lung third, lesions matched over time;
//! - [`report`]: the tables users export: a row per time point, change volumes, lesions
//!   over time (CSV, JSON, report lines);
//! - `image`, `affine`, `demons`: the working images and the two optimisers.
//!
//! GUI-free: used by the CLI (`pulmo register`, `pulmo progress`) and the session.

mod affine;
mod demons;
pub mod image;
pub mod progress;
pub mod register;
pub mod report;
pub mod transform;

pub use demons::DemonsSettings;
pub use register::{Pair, RegisterOptions, Registration, RegistrationReport, Steps, register};
pub use transform::{DisplacementField, JacobianStats, Transform, jacobian_stats};

/// Errors of registration and progression analysis; each names the file(s) concerned.
#[derive(Debug, thiserror::Error)]
pub enum FollowupError {
    #[error("{file}: {message}")]
    Geometry { file: String, message: String },
    #[error(
        "no lungs found in {fixed} or {moving} (no lung mask and no lung-like voxels between -950 and -500 HU)"
    )]
    NoLungs { fixed: String, moving: String },
    #[error(
        "the lungs of {fixed} and {moving} do not overlap after alignment (lung Dice {dice:.2}): are these the same patient's chest CTs?"
    )]
    NoOverlap {
        fixed: String,
        moving: String,
        dice: f64,
    },
    #[error("cancelled")]
    Cancelled,
}
