//! Readers and writers: DICOM series (dicom-rs), NIfTI-1 (`.nii`, `.nii.gz`) and NRRD
//! (`.nrrd`, `.nhdr`). Every error names the file and the problem; nothing here panics on
//! malformed input: sizes from headers, special files, nesting depth and codec panics go
//! through [`guard`]. The NIfTI and NRRD readers share their sample conversion (stored
//! types to HU or labels) in `samples`.

pub mod atomic;
pub mod dicom;
pub mod guard;
pub mod nifti;
pub mod nrrd;
pub(crate) mod samples;

use std::path::{Path, PathBuf};

use crate::volume::Volume;

/// Which reader a path goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nifti,
    Nrrd,
    /// A DICOM file, a folder (searched recursively) or a DICOMDIR.
    Dicom,
}

impl Format {
    /// Guesses the format from the path: NIfTI and NRRD by extension, everything else
    /// (folders, DICOMDIR, `.dcm`, extension-less files) as DICOM.
    pub fn of_path(path: &Path) -> Format {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".nii") || name.ends_with(".nii.gz") {
            Format::Nifti
        } else if name.ends_with(".nrrd") || name.ends_with(".nhdr") {
            Format::Nrrd
        } else {
            Format::Dicom
        }
    }
}

/// Any reader's error.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error(transparent)]
    Dicom(#[from] dicom::DicomError),
    #[error(transparent)]
    Nifti(#[from] nifti::NiftiError),
    #[error(transparent)]
    Nrrd(#[from] nrrd::NrrdError),
    #[error("{}: a label map must be .nii, .nii.gz or .nrrd", path.display())]
    NotALabelMap { path: PathBuf },
    #[error("{} is not on the grid of {grid_name}: {difference}", path.display())]
    OffGrid {
        path: PathBuf,
        grid_name: String,
        difference: String,
    },
}

/// The label map at `path`, which must lie on `grid` (the grid of `grid_name`, a CT):
/// [`IoError::OffGrid`] names both when it does not.
pub fn read_label_map_on(
    path: &Path,
    grid: &crate::volume::Geometry,
    grid_name: &str,
) -> Result<crate::volume::LabelVolume, IoError> {
    let labels = read_label_map(path)?.volume;
    match grid.grid_difference(&labels.geometry) {
        Some(difference) => Err(IoError::OffGrid {
            path: path.to_path_buf(),
            grid_name: grid_name.to_string(),
            difference: difference.to_string(),
        }),
        None => Ok(labels),
    }
}

/// A volume read from a NIfTI or NRRD file, with the values as stored (converted to i16
/// or u8 by the caller's choice) and what the reader noticed.
#[derive(Debug, Clone)]
pub struct ReadVolume<T> {
    pub volume: Volume<T>,
    pub path: PathBuf,
    /// Things the user should know (e.g. values clamped to i16, qform used for lack of
    /// an sform), in plain words.
    pub warnings: Vec<String>,
}

/// A CT volume from any supported input, with the loader's warnings in plain words.
#[derive(Debug, Clone)]
pub struct LoadedCt {
    pub volume: crate::volume::CtVolume,
    pub warnings: Vec<String>,
    pub dicom_meta: Option<dicom::SeriesMeta>,
}

/// Loads a CT from a DICOM path (file, folder, DICOMDIR), NIfTI or NRRD file.
pub fn load_ct(
    path: &Path,
    series: Option<&str>,
    options: &dicom::LoadOptions,
) -> Result<LoadedCt, IoError> {
    Ok(match Format::of_path(path) {
        Format::Nifti => {
            let r = nifti::read_nifti_ct(path)?;
            LoadedCt {
                volume: r.volume,
                warnings: r.warnings,
                dicom_meta: None,
            }
        }
        Format::Nrrd => {
            let r = nrrd::read_nrrd_ct(path)?;
            LoadedCt {
                volume: r.volume,
                warnings: r.warnings,
                dicom_meta: None,
            }
        }
        Format::Dicom => {
            let v = dicom::load(path, series, options)?;
            LoadedCt {
                volume: v.volume,
                warnings: v.report.warnings.iter().map(|w| w.to_string()).collect(),
                dicom_meta: Some(v.meta),
            }
        }
    })
}

/// Reads a label map, choosing the reader by [`Format::of_path`]: NIfTI (`.nii`,
/// `.nii.gz`) or NRRD (`.nrrd`, `.nhdr`); any other path is
/// [`IoError::NotALabelMap`].
pub fn read_label_map(path: &Path) -> Result<ReadVolume<u8>, IoError> {
    Ok(match Format::of_path(path) {
        Format::Nifti => nifti::read_nifti_labels(path)?,
        Format::Nrrd => nrrd::read_nrrd_labels(path)?,
        Format::Dicom => {
            return Err(IoError::NotALabelMap {
                path: path.to_path_buf(),
            });
        }
    })
}
