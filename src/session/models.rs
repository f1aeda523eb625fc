//! The user's model library: the built-in lesion model plus every fine-tuned version
//! (`pulmo finetune lesion -o LIBRARY/NAME`), and which one proposals use.
//!
//! The library is a folder (`$PULMO_MODELS`, else `$XDG_DATA_HOME/pulmo/models`, else
//! `~/.local/share/pulmo/models`): each model in its own sub-folder with `lesion.json`
//! and its weights; `active-lesion.txt` names the manifest proposals use (none: the
//! built-in one). Switching is one write of that file; no model is ever changed or
//! deleted by switching, and the built-in weights are never written.

use std::path::{Path, PathBuf};

use crate::infer::Task;
use crate::infer::manifest::{Manifest, default_manifest_path};

/// One model the user can choose.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub manifest: PathBuf,
    pub name: String,
    pub version: String,
    /// "name version" of the model it was fine-tuned from.
    pub parent: Option<String>,
    pub built_in: bool,
    /// Held-out Dice before -> after (fine-tuned models), or the test split's Dice.
    pub summary: String,
}

/// The user's model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLibrary {
    pub dir: PathBuf,
}

impl Default for ModelLibrary {
    fn default() -> Self {
        let dir = std::env::var_os("PULMO_MODELS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("pulmo/models"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/pulmo/models"))
            })
            .unwrap_or_else(|| PathBuf::from("pulmo-models"));
        ModelLibrary { dir }
    }
}

fn summary(m: &Manifest) -> String {
    let f = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.3}"));
    let held = &m.metrics["held_out_user_slices"];
    if let (Some(b), Some(a)) = (
        f(&held["before"]["dice_infection"]),
        f(&held["after"]["dice_infection"]),
    ) {
        return format!("held-out Dice {b} -> {a}");
    }
    match f(&m.metrics["dice_infection"]) {
        Some(d) => format!("test Dice {d}"),
        None => String::new(),
    }
}

fn entry(manifest: &Path, built_in: bool) -> Option<ModelEntry> {
    let m = Manifest::read(manifest).ok()?;
    let parent = m.training["parent"]["name"].as_str().map(|n| {
        format!(
            "{n} {}",
            m.training["parent"]["version"].as_str().unwrap_or("?")
        )
    });
    Some(ModelEntry {
        manifest: manifest.to_path_buf(),
        name: m.name.clone(),
        version: m.version.clone(),
        parent,
        built_in,
        summary: summary(&m),
    })
}

impl ModelLibrary {
    pub fn new(dir: PathBuf) -> ModelLibrary {
        ModelLibrary { dir }
    }

    fn active_file(&self, task: Task) -> PathBuf {
        self.dir.join(format!("active-{}.txt", task.name()))
    }

    /// The built-in model first, then the library's models of `task` by folder name.
    /// Folders that hold no readable manifest are left out.
    pub fn list(&self, task: Task) -> Vec<ModelEntry> {
        let mut out: Vec<ModelEntry> = entry(&default_manifest_path(task), true)
            .into_iter()
            .collect();
        let file = format!("{}.json", task.name());
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(&file).is_file())
            .collect();
        dirs.sort();
        let builtin = out.first().map(|b| b.manifest.clone());
        out.extend(
            dirs.iter()
                .filter_map(|d| entry(&d.join(&file), false))
                .filter(|e| Some(&e.manifest) != builtin.as_ref()),
        );
        out
    }

    /// The manifest proposals of `task` use: the chosen one while it is still readable,
    /// else None (the built-in model).
    pub fn active(&self, task: Task) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.active_file(task)).ok()?;
        let path = PathBuf::from(text.trim());
        Manifest::read(&path).ok().map(|_| path)
    }

    /// Chooses the model of `task` (None: the built-in one).
    pub fn set_active(&self, task: Task, manifest: Option<&Path>) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let text = manifest.map_or_else(String::new, |p| format!("{}\n", p.display()));
        crate::io::atomic::write_bytes(&self.active_file(task), text.as_bytes())
    }

    /// A new, unused folder for a fine-tuned model: `lesion-YYYYMMDD-HHMMSS[-N]`.
    pub fn new_model_dir(&self, task: Task) -> PathBuf {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        let stamp = format!(
            "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        );
        let base = self.dir.join(format!("{}-{stamp}", task.name()));
        let mut p = base.clone();
        let mut n = 1;
        while p.exists() {
            n += 1;
            p = PathBuf::from(format!("{}-{n}", base.display()));
        }
        p
    }
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_listed_chosen_and_switched_back() {
        let dir = tempfile::tempdir().unwrap();
        let lib = ModelLibrary::new(dir.path().join("models"));
        // Only the built-in model (when weights/ has one) and no choice yet.
        let builtin = lib.list(Task::Lesion);
        assert!(builtin.iter().all(|e| e.built_in));
        assert_eq!(lib.active(Task::Lesion), None);
        // A fine-tuned model in the library.
        let mut m = Manifest::read(&default_manifest_path(Task::Lesion)).unwrap();
        m.version = "3-ft1".into();
        m.training = serde_json::json!({"parent": {"name": m.name, "version": "3"}});
        m.metrics = serde_json::json!({"held_out_user_slices": {
            "before": {"dice_infection": 0.5}, "after": {"dice_infection": 0.6}}});
        let sub = lib.new_model_dir(Task::Lesion);
        assert!(
            sub.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("lesion-20")
        );
        std::fs::create_dir_all(&sub).unwrap();
        m.write(&sub.join("lesion.json")).unwrap();
        let all = lib.list(Task::Lesion);
        let ft = all.iter().find(|e| !e.built_in).unwrap();
        assert_eq!(ft.version, "3-ft1");
        assert_eq!(ft.parent.as_deref(), Some("pulmo-lesion-unet 3"));
        assert_eq!(ft.summary, "held-out Dice 0.500 -> 0.600");
        // Choose it, then switch back to the built-in model.
        lib.set_active(Task::Lesion, Some(&ft.manifest)).unwrap();
        assert_eq!(
            lib.active(Task::Lesion).as_deref(),
            Some(ft.manifest.as_path())
        );
        assert_eq!(lib.active(Task::Lung), None);
        lib.set_active(Task::Lesion, None).unwrap();
        assert_eq!(lib.active(Task::Lesion), None);
        // A chosen model that disappeared falls back to the built-in one.
        lib.set_active(Task::Lesion, Some(&ft.manifest)).unwrap();
        std::fs::remove_file(&ft.manifest).unwrap();
        assert_eq!(lib.active(Task::Lesion), None);
        assert!(lib.list(Task::Lesion).iter().all(|e| e.built_in));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_429), (2025, 12, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
