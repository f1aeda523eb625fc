//! Fine-tuning data from the user's own labels (no libtorch): which CT belongs to which
//! label map, which slices teach the model, and which are held out to measure it.
//!
//! - A label map `DIR/NAME_labels.nii.gz` (or `_lesions`, `_seg`, `_mask`; NIfTI or NRRD)
//!   belongs to the CT `DIR/NAME_ct.nii.gz` (or `.nrrd`), unless the CTs are named
//!   explicitly, in the same order. A folder stands for every such label map in it.
//! - Slices used: every axial slice with a lesion label (3 GGO, 4 consolidation), and the
//!   lung slices without one (labelled lungs 1/2 and no lesion: the user looked and found
//!   none). Slices of a study with no lung labels count only where they hold lesions.
//! - Held out: the slices are cut into blocks of [`BLOCK_SLICES`] neighbouring slices
//!   (neighbours look alike, so single held-out slices would flatter the result); every
//!   [`HOLD_OUT_EVERY`]-th block of each study (the third, seventh, ...) is held out.

use std::path::{Path, PathBuf};

use super::{CONSOLIDATION, GGO, InferError};
use crate::volume::{CtVolume, LabelVolume};

/// Neighbouring slices kept together on one side of the split.
pub const BLOCK_SLICES: usize = 8;
/// One block in this many is held out.
pub const HOLD_OUT_EVERY: usize = 4;

/// Suffixes of label map names that name their CT (`NAME_<suffix>` → `NAME_ct`).
const LABEL_SUFFIXES: [&str; 4] = ["_labels", "_lesions", "_seg", "_mask"];
const EXTENSIONS: [&str; 3] = [".nii.gz", ".nii", ".nrrd"];

/// One of the user's studies: a CT and the label map drawn on it.
pub struct UserStudy {
    pub name: String,
    pub ct: CtVolume,
    pub labels: LabelVolume,
    pub ct_path: PathBuf,
    pub labels_path: PathBuf,
    /// sha256 of the label map file (recorded in the new model's manifest).
    pub labels_sha256: String,
    /// sha256 of the CT file (a folder of DICOM files: of their sorted names and sizes).
    pub ct_sha256: String,
}

/// Which slice of which study, and whether it is held out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SliceUse {
    pub study: usize,
    pub k: usize,
    pub held_out: bool,
    pub has_lesion: bool,
}

fn data_err(path: &Path, message: impl Into<String>) -> InferError {
    InferError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// `NAME` of `NAME_labels.nii.gz` (and the other suffixes / extensions), if it is one.
fn study_name(labels: &Path) -> Option<String> {
    let file = labels.file_name()?.to_str()?;
    let stem = EXTENSIONS.iter().find_map(|e| file.strip_suffix(e))?;
    LABEL_SUFFIXES
        .iter()
        .find_map(|s| stem.strip_suffix(s))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// The label maps named by `inputs`: files as they are, folders as the label maps in them.
pub fn label_maps(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, InferError> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| data_err(p, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && study_name(f).is_some())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(data_err(
                    p,
                    "no label maps here (NAME_labels.nii.gz, NAME_lesions.nii.gz, ... beside NAME_ct.nii.gz)",
                ));
            }
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(data_err(p, "no such file or folder"));
        }
    }
    Ok(out)
}

/// The CT beside a label map: `NAME_ct` with any of the known extensions.
pub fn ct_beside(labels: &Path) -> Result<PathBuf, InferError> {
    let name = study_name(labels).ok_or_else(|| {
        data_err(
            labels,
            "cannot tell which CT this label map belongs to: name it NAME_labels.nii.gz beside NAME_ct.nii.gz, or give the CTs with --ct",
        )
    })?;
    let dir = labels.parent().unwrap_or(Path::new("."));
    EXTENSIONS
        .iter()
        .map(|e| dir.join(format!("{name}_ct{e}")))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            data_err(
                labels,
                format!("its CT {name}_ct.nii.gz (or .nii, .nrrd) is not in the same folder"),
            )
        })
}

/// sha256 of a file, or of a folder's sorted file names and sizes.
fn fingerprint(path: &Path) -> Result<String, InferError> {
    use sha2::Digest;
    if path.is_dir() {
        let mut entries: Vec<(String, u64)> = std::fs::read_dir(path)
            .map_err(|e| data_err(path, e.to_string()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                Some((
                    e.file_name().to_str()?.to_string(),
                    e.metadata().ok()?.len(),
                ))
            })
            .collect();
        entries.sort();
        let mut h = sha2::Sha256::new();
        for (n, l) in entries {
            h.update(n.as_bytes());
            h.update(l.to_le_bytes());
        }
        Ok(format!("{:x}", h.finalize()))
    } else {
        super::manifest::sha256_file(path)
    }
}

/// Reads each label map and its CT (`cts` in the same order, or the CT beside each map),
/// checking that they share a grid and that lesions were labelled somewhere.
pub fn read_user_studies(
    labels: &[PathBuf],
    cts: &[PathBuf],
) -> Result<Vec<UserStudy>, InferError> {
    if labels.is_empty() {
        return Err(InferError::Finetune("no label maps given".into()));
    }
    if !cts.is_empty() && cts.len() != labels.len() {
        return Err(InferError::Finetune(format!(
            "{} label maps but {} CTs: give one CT per label map, in the same order, or none",
            labels.len(),
            cts.len()
        )));
    }
    let mut out = Vec::new();
    for (i, labels_path) in labels.iter().enumerate() {
        let ct_path = match cts.get(i) {
            Some(p) => p.clone(),
            None => ct_beside(labels_path)?,
        };
        let ct = crate::io::load_ct(&ct_path, None, &Default::default())
            .map_err(|e| data_err(&ct_path, e.to_string()))?
            .volume;
        let map = crate::io::read_label_map(labels_path)
            .map_err(|e| data_err(labels_path, e.to_string()))?
            .volume;
        // The full grid (dims, spacing, origin, axes; volume::GRID_TOLERANCE).
        if let Some(difference) = ct.geometry.grid_difference(&map.geometry) {
            return Err(data_err(
                labels_path,
                format!(
                    "label map grid differs from its CT's ({}): {difference}",
                    ct_path.display()
                ),
            ));
        }
        if let Some(bad) = map.voxels.iter().find(|&&v| v > CONSOLIDATION) {
            return Err(data_err(
                labels_path,
                format!(
                    "label value {bad} is not one of pulmo's lesion model classes (0 background, 1/2 lungs, 3 GGO, 4 consolidation)"
                ),
            ));
        }
        let name = study_name(labels_path).unwrap_or_else(|| {
            labels_path
                .file_name()
                .map_or_else(|| format!("study{i}"), |n| n.to_string_lossy().into_owned())
        });
        out.push(UserStudy {
            name,
            labels_sha256: fingerprint(labels_path)?,
            ct_sha256: fingerprint(&ct_path)?,
            ct,
            labels: map,
            ct_path,
            labels_path: labels_path.clone(),
        });
    }
    if !out.iter().any(|s| {
        s.labels
            .voxels
            .iter()
            .any(|&v| v == GGO || v == CONSOLIDATION)
    }) {
        return Err(data_err(
            &labels[0],
            "no lesion labels (3 GGO or 4 consolidation) in any of the label maps: there is nothing to learn from",
        ));
    }
    Ok(out)
}

/// The slices fine-tuning uses, each marked training or held out (see the module doc).
pub fn plan_slices(studies: &[UserStudy]) -> Vec<SliceUse> {
    let mut out = Vec::new();
    for (si, s) in studies.iter().enumerate() {
        let nz = s.labels.geometry.dims[2];
        let has_lungs = s.labels.voxels.iter().any(|&v| v == 1 || v == 2);
        for k in 0..nz {
            let slice = s.labels.slice_k(k);
            let lesion = slice.iter().any(|&v| v == GGO || v == CONSOLIDATION);
            let lung = slice.iter().any(|&v| v == 1 || v == 2);
            if lesion || (has_lungs && lung) {
                out.push(SliceUse {
                    study: si,
                    k,
                    held_out: (k / BLOCK_SLICES) % HOLD_OUT_EVERY == HOLD_OUT_EVERY / 2,
                    has_lesion: lesion,
                });
            }
        }
    }
    out
}

/// Mean per-slice Dice (the Inf-Net protocol: 1 when both are empty) of predicted
/// against reference classes (0 background, 1 GGO, 2 consolidation) over slices:
/// (infection, GGO, consolidation).
pub fn mean_slice_dice(pairs: &[(&[u8], &[u8])]) -> (f64, f64, f64) {
    use super::lesion_data::slice_dice;
    // Class indices to the label values `slice_dice` counts.
    let labels = |s: &[u8]| -> Vec<u8> {
        s.iter()
            .map(|&c| match c {
                1 => GGO,
                2 => CONSOLIDATION,
                _ => 0,
            })
            .collect()
    };
    let n = pairs.len().max(1) as f64;
    let mut acc = (0.0, 0.0, 0.0);
    for (r, p) in pairs {
        let (r, p) = (labels(r), labels(p));
        acc.0 += slice_dice(&r, &p, None);
        acc.1 += slice_dice(&r, &p, Some(GGO));
        acc.2 += slice_dice(&r, &p, Some(CONSOLIDATION));
    }
    (acc.0 / n, acc.1 / n, acc.2 / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn write_pair(dir: &Path, name: &str, labels: &LabelVolume) {
        let ct = labels.map(|_| -800i16);
        crate::io::nifti::write_nifti(&dir.join(format!("{name}_ct.nii.gz")), &ct).unwrap();
        crate::io::nifti::write_nifti(&dir.join(format!("{name}_labels.nii.gz")), labels).unwrap();
    }

    fn study_labels(nz: usize) -> LabelVolume {
        let g = Geometry::axis_aligned([8, 8, nz], [1.0, 1.0, 2.0], [0.0; 3]);
        let mut l = LabelVolume::filled(g, 0).unwrap();
        for k in 2..nz - 2 {
            for j in 1..7 {
                for i in 1..4 {
                    l.set(i, j, k, 1);
                    l.set(i + 3, j, k, 2);
                }
            }
        }
        for k in 5..12 {
            l.set(2, 3, k, GGO);
            l.set(5, 3, k, CONSOLIDATION);
        }
        l
    }

    #[test]
    fn pairs_are_found_read_and_split_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "a", &study_labels(40));
        let maps = label_maps(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(maps.len(), 1);
        assert_eq!(ct_beside(&maps[0]).unwrap(), dir.path().join("a_ct.nii.gz"));
        let studies = read_user_studies(&maps, &[]).unwrap();
        assert_eq!(studies[0].name, "a");
        assert_eq!(studies[0].labels_sha256.len(), 64);
        let plan = plan_slices(&studies);
        // Lung slices 2..38, lesions on 5..12.
        assert_eq!(plan.len(), 36);
        assert_eq!(plan.iter().filter(|u| u.has_lesion).count(), 7);
        // Blocks of 8: block 2 (slices 16..24) and block 6 would be held out; 36..38 is
        // block 4.
        let held: Vec<usize> = plan.iter().filter(|u| u.held_out).map(|u| u.k).collect();
        assert_eq!(held, (16..24).collect::<Vec<_>>());
    }

    #[test]
    fn bad_inputs_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        // No lesion anywhere.
        let mut l = study_labels(20);
        for v in &mut l.voxels {
            if *v > 2 {
                *v = 1;
            }
        }
        write_pair(dir.path(), "clear", &l);
        let maps = label_maps(&[dir.path().join("clear_labels.nii.gz")]).unwrap();
        let e = read_user_studies(&maps, &[]).err().unwrap().to_string();
        assert!(
            e.contains("no lesion labels") && e.contains("clear_labels"),
            "{e}"
        );
        // A label map on another grid.
        let other = LabelVolume::filled(
            Geometry::axis_aligned([8, 8, 19], [1.0, 1.0, 2.0], [0.0; 3]),
            3,
        )
        .unwrap();
        crate::io::nifti::write_nifti(&dir.path().join("clear_lesions.nii.gz"), &other).unwrap();
        let e = read_user_studies(&[dir.path().join("clear_lesions.nii.gz")], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("differs from its CT") && e.contains("clear_lesions"),
            "{e}"
        );
        // No CT beside it, and a name that does not say which CT.
        std::fs::copy(
            dir.path().join("clear_labels.nii.gz"),
            dir.path().join("lonely_labels.nii.gz"),
        )
        .unwrap();
        let e = read_user_studies(&[dir.path().join("lonely_labels.nii.gz")], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("lonely_ct.nii.gz") && e.contains("not in the same folder"),
            "{e}"
        );
        std::fs::copy(
            dir.path().join("clear_labels.nii.gz"),
            dir.path().join("whatever.nii.gz"),
        )
        .unwrap();
        let e = read_user_studies(&[dir.path().join("whatever.nii.gz")], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--ct"), "{e}");
        // A corrupt label map.
        std::fs::write(dir.path().join("bad_labels.nii.gz"), b"not a nifti").unwrap();
        std::fs::copy(
            dir.path().join("clear_ct.nii.gz"),
            dir.path().join("bad_ct.nii.gz"),
        )
        .unwrap();
        let e = read_user_studies(&[dir.path().join("bad_labels.nii.gz")], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bad_labels.nii.gz"), "{e}");
        // Counts of CTs and maps differ.
        let e = read_user_studies(&maps, &[dir.path().join("a"), dir.path().join("b")])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("1 label maps but 2 CTs"), "{e}");
        let e = label_maps(&[dir.path().join("missing")])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn slice_dice_follows_the_inf_net_protocol() {
        let r = [0u8, 1, 1, 2];
        let p = [0u8, 1, 2, 2];
        let empty = [0u8; 4];
        let (inf, ggo, con) = mean_slice_dice(&[(&r, &p), (&empty, &empty)]);
        assert!((inf - 1.0).abs() < 1e-12);
        assert!((ggo - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
        assert!((con - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
    }
}
