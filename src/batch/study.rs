//! One study of a batch run: its tasks, its outputs in its own folder (each written
//! atomically, the row last, so a study is complete exactly when its row is there), and
//! its row of the results table.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::manifest::StudyEntry;
use crate::followup::report::TimePoint;
use crate::io::{load_ct, nifti::write_nifti, read_label_map_on};
use crate::metrics::{compare, labels_present};
use crate::volume::{CtVolume, LabelVolume};

/// What a batch run does to each study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Lungs by the lung model (labels.nii.gz).
    Lung,
    /// Lungs and lesions by the lesion model (labels.nii.gz).
    Lesion,
    /// Lung, ground-glass and consolidation volumes and % involved (quantify.json).
    Quantify,
    /// Dice and HD95 of the study's labels against its reference (compare.json).
    Compare,
}

impl Task {
    pub const ALL: [(Task, &'static str); 4] = [
        (Task::Lung, "lung"),
        (Task::Lesion, "lesion"),
        (Task::Quantify, "quantify"),
        (Task::Compare, "compare"),
    ];

    pub fn name(self) -> &'static str {
        Task::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("", |x| x.1)
    }

    /// Parses a comma-separated list (`lung,quantify`), sorted and without repeats.
    pub fn parse_list(text: &str) -> Result<Vec<Task>, String> {
        let mut tasks = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let t = Task::ALL
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(word))
                .map(|x| x.0)
                .ok_or_else(|| {
                    let names: Vec<_> = Task::ALL.iter().map(|x| x.1).collect();
                    format!(
                        "unknown task {word:?}: the tasks are {} (classify and progress come with their issues)",
                        names.join(", ")
                    )
                })?;
            tasks.push(t);
        }
        tasks.sort();
        tasks.dedup();
        if tasks.is_empty() {
            return Err("no task given".into());
        }
        Ok(tasks)
    }
}

/// Which model the caller runs for a study (the batch module loads none itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Lung,
    Lesion,
}

/// Runs a model on a CT: the study's labels, or the error to record.
pub type Segment<'a> = dyn FnMut(Model, &Arc<CtVolume>) -> Result<LabelVolume, String> + 'a;

/// A study's row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub ct: String,
    /// "ok" or "failed".
    pub status: String,
    pub error: Option<String>,
    pub seconds: f64,
    /// Of `seconds`, the model's (lung or lesion task): the rest is reading, writing,
    /// quantifying and comparing.
    pub segment_seconds: Option<f64>,
    pub left_lung_ml: Option<f64>,
    pub right_lung_ml: Option<f64>,
    pub lungs_ml: Option<f64>,
    pub ggo_ml: Option<f64>,
    pub consolidation_ml: Option<f64>,
    pub involvement_pct: Option<f64>,
    /// Every non-zero voxel of the reference against every non-zero voxel of the labels.
    pub dice: Option<f64>,
    pub hd95_mm: Option<f64>,
}

/// The numeric columns of [`Row`], in CSV order (summary statistics are over these).
pub const NUMERIC_COLUMNS: [&str; 10] = [
    "seconds",
    "segment_seconds",
    "left_lung_ml",
    "right_lung_ml",
    "lungs_ml",
    "ggo_ml",
    "consolidation_ml",
    "involvement_pct",
    "dice",
    "hd95_mm",
];

impl Row {
    fn new(entry: &StudyEntry) -> Row {
        Row {
            id: entry.id.clone(),
            ct: entry.ct.display().to_string(),
            status: "ok".into(),
            error: None,
            seconds: 0.0,
            segment_seconds: None,
            left_lung_ml: None,
            right_lung_ml: None,
            lungs_ml: None,
            ggo_ml: None,
            consolidation_ml: None,
            involvement_pct: None,
            dice: None,
            hd95_mm: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// The numeric columns in [`NUMERIC_COLUMNS`] order.
    pub fn numbers(&self) -> [Option<f64>; 10] {
        [
            Some(self.seconds),
            self.segment_seconds,
            self.left_lung_ml,
            self.right_lung_ml,
            self.lungs_ml,
            self.ggo_ml,
            self.consolidation_ml,
            self.involvement_pct,
            self.dice,
            self.hd95_mm,
        ]
    }
}

/// What `row.json` holds: the row and what produced it (a study is complete for a run
/// when its record has the same CT and tasks and succeeded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    pub tasks: Vec<Task>,
    pub entry: StudyEntry,
    pub row: Row,
}

/// The file that marks a study done (written last).
pub const ROW_FILE: &str = "row.json";

/// The record of the study folder `dir`, if it holds a readable one.
pub fn read_record(dir: &Path) -> Option<StudyRecord> {
    let text = std::fs::read_to_string(dir.join(ROW_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether `dir` holds the successful outputs of `entry` for `tasks`.
pub fn is_complete(dir: &Path, entry: &StudyEntry, tasks: &[Task]) -> bool {
    read_record(dir).is_some_and(|r| r.row.ok() && r.tasks == tasks && r.entry == *entry)
}

/// Removes what a killed run left half-written in `dir` (the atomic writer's
/// `.<name>.tmp-*` files).
fn remove_stale_temporaries(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())? + "\n";
    crate::io::atomic::write_bytes(path, text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Runs `tasks` on one study into its folder `dir` and writes its record last.
/// `segment` runs a model on the CT (the caller keeps the models loaded). Failures
/// become a failed row naming the file; they are recorded too, and a later run tries
/// the study again.
pub fn run_study(entry: &StudyEntry, tasks: &[Task], dir: &Path, segment: &mut Segment<'_>) -> Row {
    let t0 = Instant::now();
    let mut row = Row::new(entry);
    if let Err(e) = std::fs::create_dir_all(dir) {
        row.status = "failed".into();
        row.error = Some(format!("creating {}: {e}", dir.display()));
        return row;
    }
    remove_stale_temporaries(dir);
    if let Err(e) = study_outputs(entry, tasks, dir, segment, &mut row) {
        row.status = "failed".into();
        row.error = Some(e);
    }
    row.seconds = t0.elapsed().as_secs_f64();
    let record = StudyRecord {
        tasks: tasks.to_vec(),
        entry: entry.clone(),
        row: row.clone(),
    };
    if let Err(e) = write_json(&dir.join(ROW_FILE), &record) {
        row.status = "failed".into();
        row.error = Some(e);
    }
    row
}

fn study_outputs(
    entry: &StudyEntry,
    tasks: &[Task],
    dir: &Path,
    segment: &mut Segment<'_>,
    row: &mut Row,
) -> Result<(), String> {
    let ct_name = entry.ct.display().to_string();
    let loaded = load_ct(&entry.ct, None, &Default::default())
        .map_err(|e| format!("{ct_name}: {}", crate::io::guard::error_chain(&e)))?;
    let ct = Arc::new(loaded.volume);
    let model = if tasks.contains(&Task::Lesion) {
        Some(Model::Lesion)
    } else if tasks.contains(&Task::Lung) {
        Some(Model::Lung)
    } else {
        None
    };
    let labels = match (model, &entry.labels) {
        (Some(m), _) => {
            let t = Instant::now();
            let labels = segment(m, &ct).map_err(|e| format!("{ct_name}: {e}"))?;
            row.segment_seconds = Some(t.elapsed().as_secs_f64());
            let path = dir.join("labels.nii.gz");
            write_nifti(&path, &labels).map_err(|e| e.to_string())?;
            Some(labels)
        }
        (None, Some(p)) => Some(read_labels(p, &ct, &ct_name)?),
        (None, None) => None,
    };
    let needs_labels = tasks.contains(&Task::Quantify) || tasks.contains(&Task::Compare);
    let Some(labels) = labels else {
        return if needs_labels {
            Err(format!(
                "{ct_name}: no labels: give a labels column in the manifest or run the lung or lesion task"
            ))
        } else {
            Ok(())
        };
    };
    if tasks.contains(&Task::Quantify) {
        let t = TimePoint::measure(&entry.id, &ct_name, &ct, &labels)
            .map_err(|e| format!("{ct_name}: {e}"))?;
        row.left_lung_ml = Some(t.left_lung_ml);
        row.right_lung_ml = Some(t.right_lung_ml);
        row.lungs_ml = Some(t.lungs_ml);
        row.ggo_ml = Some(t.ggo_ml);
        row.consolidation_ml = Some(t.consolidation_ml);
        row.involvement_pct = t.involvement_pct;
        write_json(&dir.join("quantify.json"), &t)?;
    }
    if tasks.contains(&Task::Compare)
        && let Some(p) = &entry.reference
    {
        let reference = read_labels(p, &ct, &ct_name)?;
        let cmp = compare(&reference, &labels, &labels_present(&reference, &labels))
            .map_err(|e| format!("{} vs the labels of {ct_name}: {e}", p.display()))?;
        let fg = &cmp.foreground;
        row.dice = Some(fg.overlap.dice);
        row.hd95_mm = fg.surface.hd95_mm;
        let per_label: Vec<_> = cmp
            .per_label
            .iter()
            .map(|c| {
                serde_json::json!({
                    "target": c.target.to_string(),
                    "dice": c.overlap.dice,
                    "hd95_mm": c.surface.hd95_mm,
                })
            })
            .collect();
        write_json(
            &dir.join("compare.json"),
            &serde_json::json!({
                "reference": p.display().to_string(),
                "foreground": {"dice": fg.overlap.dice, "hd95_mm": fg.surface.hd95_mm},
                "per_label": per_label,
            }),
        )?;
    }
    Ok(())
}

/// A label map on the CT's grid, or the error naming both.
fn read_labels(path: &Path, ct: &CtVolume, ct_name: &str) -> Result<LabelVolume, String> {
    read_label_map_on(path, &ct.geometry, ct_name).map_err(|e| crate::io::guard::error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_lists_parse_sorted_and_refuse_unknown_names() {
        assert_eq!(
            Task::parse_list("quantify, lung,quantify"),
            Ok(vec![Task::Lung, Task::Quantify])
        );
        let e = Task::parse_list("lung,segment").unwrap_err();
        assert!(
            e.contains("\"segment\"") && e.contains("lung, lesion"),
            "{e}"
        );
        assert!(Task::parse_list(" , ").is_err());
        assert_eq!(Task::Compare.name(), "compare");
    }
}
