//! "Improve the model from my labels": the viewer's fine-tuning job.
//!
//! The open study's CT and labels join the user's training set (the library's `studies/`
//! folder, `NAME_ct.nii.gz` + `NAME_labels.nii.gz`, so later runs learn from every study
//! the user labelled), then `pulmo-ai finetune lesion` runs on the whole set as a child
//! process — the same command as `pulmo finetune lesion`, its progress read from its log
//! lines — and writes a new model folder in the library. Cancel kills the child; nothing
//! is written unless the run finishes, and the chosen model stays as it was until the user
//! picks the new one.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::jobs::{Job, JobControl};
use super::models::ModelLibrary;
use crate::infer::Task;
use crate::volume::{CtVolume, LabelVolume};

/// What the job produced.
#[derive(Debug, Clone)]
pub struct FinetuneOutcome {
    pub manifest: PathBuf,
    /// The before -> after lines of the run (held-out slices, the standard test split).
    pub figures: Vec<String>,
}

/// A fine-tuning job: `Ok` with the new model, or `Err` with what went wrong (cancelled
/// included).
pub type FinetuneJob = Job<Result<FinetuneOutcome, String>>;

/// Progress stages: 0 saving the study, 1 preparing, 2 training (done/total seconds),
/// 3 measuring.
pub const STAGES: [&str; 4] = [
    "saving the study into the training set",
    "reading the studies, measuring the current model",
    "training",
    "measuring the new model",
];

/// The training set's folder.
pub fn studies_dir(library: &ModelLibrary) -> PathBuf {
    library.dir.join("studies")
}

/// The studies in the training set (their label maps).
pub fn training_set(library: &ModelLibrary) -> Vec<PathBuf> {
    crate::infer::finetune::label_maps(&[studies_dir(library)]).unwrap_or_default()
}

/// A file-name-safe study name.
fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "study".into() } else { s }
}

/// Writes the study's CT and labels into the training set (replacing an earlier copy of
/// the same study), atomically.
pub fn add_to_training_set(
    library: &ModelLibrary,
    key: &str,
    name: &str,
    ct: &CtVolume,
    labels: &LabelVolume,
) -> Result<PathBuf, String> {
    use sha2::Digest;
    let dir = studies_dir(library);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let id = format!("{:x}", sha2::Sha256::digest(key.as_bytes()));
    let stem = format!("{}-{}", safe_name(name), &id[..8]);
    let ct_path = dir.join(format!("{stem}_ct.nii.gz"));
    let labels_path = dir.join(format!("{stem}_labels.nii.gz"));
    crate::io::nifti::write_nifti(&ct_path, ct).map_err(|e| e.to_string())?;
    crate::io::nifti::write_nifti(&labels_path, labels).map_err(|e| e.to_string())?;
    Ok(labels_path)
}

/// What to fine-tune.
#[derive(Debug, Clone)]
pub struct FinetuneRequest {
    pub library: ModelLibrary,
    /// The model to start from (the chosen lesion model).
    pub parent: PathBuf,
    pub time_budget_min: f64,
    /// Shared data for replay and the standard test split (None: without).
    pub data: Option<PathBuf>,
    /// The open study to add to the training set first: (key, name, CT, labels).
    pub add: Option<(String, String, CtVolume, LabelVolume)>,
}

/// "epoch N: loss L, A s of B s" → (A, B).
fn training_seconds(line: &str) -> Option<(f64, f64)> {
    let rest = line.strip_prefix("epoch ")?;
    let (_, tail) = rest.split_once(", ")?;
    let tail = tail.split_once(", ").map_or(tail, |(_, t)| t);
    let (a, b) = tail.split_once(" s of ")?;
    Some((
        a.trim().parse().ok()?,
        b.trim_end_matches(" s").trim().parse().ok()?,
    ))
}

/// Starts the job (`program`: the AI helper).
pub fn start_finetune(program: PathBuf, req: FinetuneRequest, control: JobControl) -> FinetuneJob {
    Job::spawn(
        "pulmo-finetune",
        "Improving the lesion model from your labels",
        control,
        move |ctl| run(&program, req, ctl),
    )
}

fn run(program: &Path, req: FinetuneRequest, ctl: &JobControl) -> Result<FinetuneOutcome, String> {
    ctl.set_progress(0, 0, 1);
    ctl.wake();
    if let Some((key, name, ct, labels)) = &req.add {
        add_to_training_set(&req.library, key, name, ct, labels)
            .map_err(|e| format!("could not add the study to the training set: {e}"))?;
    }
    drop(req.add);
    if ctl.is_cancelled() {
        return Err("cancelled; the model is unchanged".into());
    }
    let out = req.library.new_model_dir(Task::Lesion);
    let mut cmd = std::process::Command::new(program);
    cmd.args(["finetune", "lesion", "--labels"])
        .arg(studies_dir(&req.library))
        .arg("-o")
        .arg(&out)
        .arg("--model")
        .arg(&req.parent)
        .arg("--time-budget-min")
        .arg(format!("{}", req.time_budget_min))
        .arg("--data")
        .arg(req.data.clone().unwrap_or_else(|| PathBuf::from("none")))
        .env(
            "PULMO_COMMAND",
            "pulmo viewer: Improve the model from my labels",
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    ctl.set_progress(1, 0, 1);
    ctl.wake();
    let mut lines: Vec<String> = Vec::new();
    let status = loop {
        if ctl.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            // The reader ends when the pipe closes; a grandchild holding it open must not
            // keep Cancel waiting, so it is not joined.
            drop(reader);
            // A killed run may have left a half-written folder: it holds no manifest,
            // so it is not a model; remove it.
            if !out.join("lesion.json").is_file() {
                let _ = std::fs::remove_dir_all(&out);
            }
            return Err("cancelled; the model is unchanged".into());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some((a, b)) = training_seconds(&line) {
                    ctl.set_progress(2, a as usize, (b as usize).max(1));
                    ctl.wake();
                } else if line.starts_with("held-out slices:") {
                    ctl.set_progress(3, 0, 1);
                    ctl.wake();
                }
                lines.push(line);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                break child.wait().map_err(|e| e.to_string())?;
            }
        }
    };
    let _ = reader.join();
    if !status.success() {
        let last: Vec<&str> = lines
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect();
        return Err(format!(
            "fine-tuning failed ({status}); the model is unchanged: {}",
            last.join(" / ")
        ));
    }
    Ok(FinetuneOutcome {
        manifest: out.join("lesion.json"),
        figures: lines
            .into_iter()
            .filter(|l| l.contains(" -> ") || l.contains("held out ("))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            training_seconds("epoch 3: loss 0.8765, 45 s of 600 s"),
            Some((45.0, 600.0))
        );
        assert_eq!(training_seconds("before: held-out slices Dice"), None);
        assert_eq!(safe_name("CT / Thorax 1.0"), "CT---Thorax-1-0");
        assert_eq!(safe_name("///"), "study");
    }

    /// A stand-in helper that fails: the error carries its last lines, nothing is kept.
    #[test]
    fn a_failing_helper_leaves_the_model_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-ai");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'epoch 1: loss 1.0, 1 s of 2 s' >&2\necho 'out of memory' >&2\nexit 3\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let library = ModelLibrary::new(dir.path().join("lib"));
        let req = FinetuneRequest {
            library: library.clone(),
            parent: PathBuf::from("parent.json"),
            time_budget_min: 1.0,
            data: None,
            add: None,
        };
        let job = start_finetune(script, req, JobControl::default());
        let e = job.wait().unwrap().unwrap_err();
        assert!(
            e.contains("out of memory") && e.contains("unchanged"),
            "{e}"
        );
        assert_eq!(library.active(Task::Lesion), None);
    }

    /// Cancel kills a running helper and reports it.
    #[test]
    fn cancel_kills_the_helper() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("slow-ai");
        std::fs::write(&script, "#!/bin/sh\nsleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let req = FinetuneRequest {
            library: ModelLibrary::new(dir.path().join("lib")),
            parent: PathBuf::from("parent.json"),
            time_budget_min: 1.0,
            data: None,
            add: None,
        };
        let control = JobControl::default();
        let job = start_finetune(script, req, control.clone());
        std::thread::sleep(Duration::from_millis(300));
        let t = std::time::Instant::now();
        control.cancel();
        let e = job.wait().unwrap().unwrap_err();
        assert!(e.contains("cancelled"), "{e}");
        assert!(t.elapsed().as_secs() < 5, "the helper was killed");
    }
}
