//! Saving and opening the label map of a study with its sidecars: the map (NIfTI, saved
//! atomically), its ITK-SNAP label description (names and colours for ITK-SNAP and
//! Slicer) and, when AI proposals were accepted, their provenance — each sidecar written
//! atomically too, so no failed or interrupted save leaves a half-written file.

use std::path::{Path, PathBuf};

use crate::annotate::LabelTable;
use crate::annotate::itksnap::label_file_for;
use crate::infer::review::AcceptRecord;
use crate::io::atomic::write_bytes;
use crate::volume::{Geometry, LabelVolume};

#[derive(Debug, thiserror::Error)]
pub enum LabelsFileError {
    #[error("The labels were NOT saved (they are still here): {0}")]
    NotSaved(String),
    #[error("The labels were saved, but not their label description {}: {source}", path.display())]
    Description {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("The labels were saved, but not their provenance file {}: {source}", path.display())]
    Provenance {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Could not open the label map: {0}")]
    Unreadable(String),
    #[error("{} does not fit this CT ({reason}); nothing was changed.", path.display())]
    OtherGrid { path: PathBuf, reason: String },
    #[error("The labels were opened, but their description {} was not: {reason}", path.display())]
    DescriptionUnreadable { path: PathBuf, reason: String },
}

/// The provenance sidecar of a label map: `labels.nii.gz` → `labels.provenance.json`.
pub fn provenance_file_for(labels_path: &Path) -> PathBuf {
    let name = file_name(labels_path);
    let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
    labels_path.with_file_name(format!("{stem}.provenance.json"))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Saves `labels` at `path` (NIfTI, atomically), then its label description and, when
/// `accepted` is not empty, the provenance of the accepted proposals. `Err` means the
/// map was not saved; `Ok` lists the sidecars that could not be written (the map was).
pub fn save_labels(
    path: &Path,
    labels: &LabelVolume,
    table: &LabelTable,
    accepted: &[AcceptRecord],
) -> Result<Vec<LabelsFileError>, LabelsFileError> {
    crate::io::nifti::write_nifti(path, labels)
        .map_err(|e| LabelsFileError::NotSaved(e.to_string()))?;
    let mut sidecar_errors = Vec::new();
    let description = label_file_for(path);
    if let Err(source) = write_bytes(&description, table.to_itksnap().as_bytes()) {
        sidecar_errors.push(LabelsFileError::Description {
            path: description,
            source,
        });
    }
    if !accepted.is_empty() {
        // Which models contributed (name, version, what was accepted).
        let sidecar = provenance_file_for(path);
        let doc = serde_json::json!({ "labels": file_name(path), "accepted_proposals": accepted });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(source) = write_bytes(&sidecar, text.as_bytes()) {
            sidecar_errors.push(LabelsFileError::Provenance {
                path: sidecar,
                source,
            });
        }
    }
    Ok(sidecar_errors)
}

/// A label map opened for a study.
pub struct OpenedLabels {
    pub labels: LabelVolume,
    /// The ITK-SNAP description beside the map: absent, read, or unreadable.
    pub table: Option<Result<LabelTable, LabelsFileError>>,
}

/// Reads the label map at `path` (NIfTI or NRRD, by its name) and checks that it lies on the CT's
/// grid `ct`; reads its ITK-SNAP label description when there is one.
pub fn open_labels(path: &Path, ct: &Geometry) -> Result<OpenedLabels, LabelsFileError> {
    let labels = crate::io::read_label_map(path)
        .map_err(|e| LabelsFileError::Unreadable(e.to_string()))?
        .volume;
    crate::metrics::check_same_grid("CT", ct, "label map", &labels.geometry).map_err(|e| {
        LabelsFileError::OtherGrid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    let label_file = label_file_for(path);
    let table = label_file.is_file().then(|| {
        std::fs::read_to_string(&label_file)
            .map_err(|e| e.to_string())
            .and_then(|t| LabelTable::from_itksnap(&t).map_err(|e| e.to_string()))
            .map_err(|reason| LabelsFileError::DescriptionUnreadable {
                path: label_file.clone(),
                reason,
            })
    });
    Ok(OpenedLabels { labels, table })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Volume;

    #[test]
    fn saves_with_sidecars_and_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let g = Geometry::axis_aligned([3, 2, 2], [0.7, 0.7, 2.5], [1.0, 2.0, 3.0]);
        let labels = Volume::new(g.clone(), (0..12).map(|i| (i % 3) as u8).collect()).unwrap();
        let mut table = LabelTable::default();
        table.labels[0].name = "Left lung (edited)".into();
        let path = dir.path().join("labels.nii.gz");
        let errors = save_labels(&path, &labels, &table, &[]).unwrap();
        assert!(errors.is_empty());
        assert!(
            !provenance_file_for(&path).exists(),
            "no proposals, no provenance"
        );
        let opened = open_labels(&path, &g).unwrap();
        assert_eq!(opened.labels.voxels, labels.voxels);
        let read_table = opened.table.unwrap().unwrap();
        assert_eq!(read_table.labels[0].name, "Left lung (edited)");
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let other = Geometry::axis_aligned([3, 2, 2], [0.7, 0.7, 2.0], [1.0, 2.0, 3.0]);
        let e = open_labels(&path, &other).err().unwrap();
        assert!(matches!(e, LabelsFileError::OtherGrid { .. }), "{e}");
        let e = save_labels(
            &dir.path().join("no/such/dir/l.nii.gz"),
            &labels,
            &table,
            &[],
        );
        assert!(matches!(e, Err(LabelsFileError::NotSaved(_))));
    }

    /// Files that are not label maps on the CT's grid are errors naming the file, and
    /// nothing panics: another file type, a truncated map, a missing file.
    #[test]
    fn broken_and_foreign_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let g = Geometry::axis_aligned([4, 4, 3], [1.0; 3], [0.0; 3]);
        let labels = Volume::filled(g.clone(), 2u8).unwrap();
        let good = dir.path().join("labels.nii.gz");
        save_labels(&good, &labels, &LabelTable::default(), &[]).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.nii.gz");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let foreign = dir.path().join("slice.dcm");
        std::fs::write(&foreign, b"not a label map").unwrap();
        let missing = dir.path().join("missing.nrrd");
        for path in [&truncated, &foreign, &missing] {
            let e = open_labels(path, &g).err().expect("an error");
            assert!(matches!(e, LabelsFileError::Unreadable(_)), "{e}");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(e.to_string().contains(&name), "{e}");
        }
    }
}
