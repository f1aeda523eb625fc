//! Model manifests: a JSON file beside each weight file saying what the model is and how
//! to feed it.
//!
//! ```json
//! { "name": "pulmo-lung-unet", "version": "1", "task": "lung",
//!   "format": "safetensors", "weights": "lung.safetensors", "sha256": "…",
//!   "arch": { "kind": "unet2d", "base_channels": 16, "depth": 4 },
//!   "classes": ["background", "lung"],
//!   "input": { "spacing_mm": 1.953125, "context_slices": 0,
//!              "hu_min": -1000, "hu_max": 400, "pad_multiple": 16 },
//!   "postprocess": { "min_lesion_mm3": 20 },
//!   "training": { … free text … }, "metrics": { … } }
//! ```
//!
//! `format` is `safetensors` (a built-in architecture, `arch` says which) or
//! `torchscript` (a `.pt` module taking `[N, C, H, W]` float input normalised as `input`
//! says and returning `[N, classes, H, W]` logits). `classes` names the output channels
//! in order; a lung model's classes are `background` and `lung` (or `left lung`,
//! `right lung`), a lesion model's `background`, `ggo`, `consolidation`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{InferError, Task};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    Safetensors,
    Torchscript,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    /// `unet2d` is the only built-in architecture.
    pub kind: String,
    pub base_channels: i64,
    /// Number of down-sampling steps.
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// In-plane pixel size of the model's input grid (mm).
    pub spacing_mm: f64,
    /// Neighbouring slices on each side given as extra channels (2.5D); 0 = 2D.
    #[serde(default)]
    pub context_slices: usize,
    /// HU clipped to [hu_min, hu_max] and mapped linearly to [0, 1].
    pub hu_min: f32,
    pub hu_max: f32,
    /// Input height and width are padded to a multiple of this.
    #[serde(default = "default_pad")]
    pub pad_multiple: usize,
    /// Test-time augmentation: run each slice and its left-right mirror image and
    /// average the probabilities (twice the model time).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flip_average: bool,
}

fn default_pad() -> usize {
    16
}

impl InputSpec {
    pub fn channels(&self) -> usize {
        2 * self.context_slices + 1
    }

    /// HU to the model's input value.
    #[inline]
    pub fn normalise(&self, hu: f32) -> f32 {
        ((hu - self.hu_min) / (self.hu_max - self.hu_min)).clamp(0.0, 1.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PostprocessSpec {
    /// Lesion components smaller than this are dropped.
    #[serde(default)]
    pub min_lesion_mm3: Option<f64>,
    /// Lesions are kept inside the lung mask dilated by this much.
    #[serde(default)]
    pub lung_margin_mm: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub task: Task,
    pub format: WeightFormat,
    /// Weight file, relative to the manifest's folder.
    pub weights: String,
    /// sha256 of the weight file (hex); checked on load when present.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub arch: Option<Arch>,
    pub classes: Vec<String>,
    pub input: InputSpec,
    #[serde(default)]
    pub postprocess: PostprocessSpec,
    #[serde(default)]
    pub training: serde_json::Value,
    #[serde(default)]
    pub metrics: serde_json::Value,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, InferError> {
        let text = std::fs::read_to_string(path).map_err(|e| InferError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| InferError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        m.validate(path)?;
        Ok(m)
    }

    pub fn write(&self, path: &Path) -> Result<(), InferError> {
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        std::fs::write(path, text + "\n").map_err(|e| InferError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    }

    pub fn validate(&self, path: &Path) -> Result<(), InferError> {
        let bad = |message: String| InferError::Manifest {
            path: path.to_path_buf(),
            message,
        };
        if self.classes.len() < 2 {
            return Err(bad(format!(
                "needs at least 2 classes (background first), has {}",
                self.classes.len()
            )));
        }
        let i = &self.input;
        if !(i.spacing_mm.is_finite() && i.spacing_mm > 0.05 && i.spacing_mm < 50.0) {
            return Err(bad(format!(
                "input spacing_mm {} is not plausible",
                i.spacing_mm
            )));
        }
        if i.hu_max.partial_cmp(&i.hu_min) != Some(std::cmp::Ordering::Greater) {
            return Err(bad(format!(
                "hu_max {} must exceed hu_min {}",
                i.hu_max, i.hu_min
            )));
        }
        if i.pad_multiple == 0 || i.pad_multiple > 256 {
            return Err(bad(format!(
                "pad_multiple {} out of 1..=256",
                i.pad_multiple
            )));
        }
        if self.format == WeightFormat::Safetensors {
            match &self.arch {
                Some(a)
                    if a.kind == "unet2d" && (1..=6).contains(&a.depth) && a.base_channels > 0 => {}
                Some(a) => {
                    return Err(bad(format!(
                        "unknown architecture {:?} (built in: unet2d, depth 1..6)",
                        a
                    )));
                }
                None => return Err(bad("safetensors weights need an 'arch'".into())),
            }
        }
        Ok(())
    }

    /// Index of the class that a label value comes from, per task.
    pub fn class_labels(&self) -> Vec<u8> {
        self.classes
            .iter()
            .map(|c| match c.to_ascii_lowercase().as_str() {
                "lung" | "left lung" => super::LEFT_LUNG,
                "right lung" => super::RIGHT_LUNG,
                "ggo" | "ground-glass opacity" => super::GGO,
                "consolidation" => super::CONSOLIDATION,
                _ => 0,
            })
            .collect()
    }

    pub fn weights_path(&self, manifest_path: &Path) -> PathBuf {
        manifest_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.weights)
    }
}

/// sha256 of a file as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, InferError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|e| InferError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let digest = sha2::Sha256::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a weight file against the manifest's sha256 (when given).
pub fn check_sha256(manifest: &Manifest, weights: &Path) -> Result<(), InferError> {
    if let Some(expected) = &manifest.sha256 {
        let got = sha256_file(weights)?;
        if !got.eq_ignore_ascii_case(expected) {
            return Err(InferError::Weights {
                path: weights.to_path_buf(),
                message: format!(
                    "sha256 {got} does not match the manifest's {expected} (corrupt or replaced file)"
                ),
            });
        }
    }
    Ok(())
}

/// The folder holding built-in weights: `$PULMO_WEIGHTS`, else `weights/` beside the
/// executable's project (the crate's folder at build time), else `./weights`.
pub fn weights_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PULMO_WEIGHTS") {
        return PathBuf::from(d);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
    if built.is_dir() {
        return built;
    }
    PathBuf::from("weights")
}

/// The manifest of the built-in model for `task` (`weights/<task>.json`).
pub fn default_manifest_path(task: Task) -> PathBuf {
    weights_dir().join(format!("{}.json", task.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            name: "t".into(),
            version: "1".into(),
            task: Task::Lung,
            format: WeightFormat::Safetensors,
            weights: "t.safetensors".into(),
            sha256: None,
            arch: Some(Arch {
                kind: "unet2d".into(),
                base_channels: 8,
                depth: 3,
            }),
            classes: vec!["background".into(), "lung".into()],
            input: InputSpec {
                spacing_mm: 2.0,
                context_slices: 0,
                hu_min: -1000.0,
                hu_max: 400.0,
                pad_multiple: 16,
                flip_average: false,
            },
            postprocess: Default::default(),
            training: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
        }
    }

    #[test]
    fn round_trips_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        let m = sample();
        m.write(&p).unwrap();
        assert_eq!(Manifest::read(&p).unwrap(), m);
        assert_eq!(m.class_labels(), vec![0, 1]);
    }

    #[test]
    fn bad_manifests_name_the_file_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        std::fs::write(&p, "{ \"name\": 3 }").unwrap();
        let e = Manifest::read(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
        let mut m = sample();
        m.input.hu_max = -2000.0;
        m.write(&p).unwrap();
        let e = Manifest::read(&p).unwrap_err().to_string();
        assert!(e.contains("hu_max"), "{e}");
        let mut m = sample();
        m.arch = None;
        m.write(&p).unwrap();
        assert!(Manifest::read(&p).unwrap_err().to_string().contains("arch"));
    }

    #[test]
    fn sha_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w.bin");
        std::fs::write(&w, b"abc").unwrap();
        let mut m = sample();
        m.sha256 = Some(sha256_file(&w).unwrap());
        assert_eq!(
            m.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        check_sha256(&m, &w).unwrap();
        std::fs::write(&w, b"abd").unwrap();
        assert!(
            check_sha256(&m, &w)
                .unwrap_err()
                .to_string()
                .contains("does not match")
        );
    }
}
