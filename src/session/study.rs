//! [`Study`]: an open study — the CT, its label map with the editor and undo history,
//! the series' DICOM metadata and load warnings, and the key of its edit journal.

use std::path::Path;

use crate::annotate::{Editor, LabelTable};
use crate::demo::DemoOptions;
use crate::io::LoadedCt;
use crate::io::dicom::SeriesMeta;
use crate::volume::{CtVolume, LabelVolume, Volume};

/// An open study.
pub struct Study {
    pub name: String,
    pub ct: CtVolume,
    /// The label map with its undo history (every edit goes through it).
    pub editor: Editor,
    /// The demo's exact ground truth (synthetic studies only).
    pub truth: Option<LabelVolume>,
    pub meta: Option<SeriesMeta>,
    pub warnings: Vec<String>,
    pub synthetic: bool,
    /// Identity of the study for its edit journal (file and series, or demo options).
    pub key: String,
}

impl Study {
    /// A study read from `path`, with an empty label map on the CT's grid.
    pub fn from_loaded(path: &Path, loaded: LoadedCt) -> Study {
        let name = loaded
            .dicom_meta
            .as_ref()
            .and_then(|m| m.series_description.clone())
            .map(|d| format!("{d} — {}", path.display()))
            .unwrap_or_else(|| path.display().to_string());
        let key = format!(
            "{}#{}#{:?}",
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display(),
            loaded
                .dicom_meta
                .as_ref()
                .map_or("", |m| m.series_uid.as_str()),
            loaded.volume.geometry.dims
        );
        let labels: LabelVolume = Volume {
            geometry: loaded.volume.geometry.clone(),
            voxels: vec![0u8; loaded.volume.voxels.len()],
        };
        Study {
            name,
            ct: loaded.volume,
            editor: Editor::new(labels, LabelTable::default()),
            truth: None,
            meta: loaded.dicom_meta,
            warnings: loaded.warnings,
            synthetic: false,
            key,
        }
    }

    /// The synthetic demo study, its labels starting as the exact truth.
    pub fn demo(options: &DemoOptions) -> Study {
        let demo = crate::demo::generate(options);
        Study {
            name: "SYNTHETIC DEMO (not patient data)".into(),
            editor: Editor::new(demo.truth.clone(), LabelTable::default()),
            truth: Some(demo.truth),
            ct: demo.ct,
            meta: None,
            warnings: Vec::new(),
            synthetic: true,
            key: format!(
                "demo:{}:{:?}:{:?}",
                options.seed, options.dims, options.spacing_mm
            ),
        }
    }
}
