//! The session: what the user has open and is working on, GUI-free, so that the viewer
//! draws it and the CLI and tests can drive it. [`Session`] holds the open study, its
//! label table, its edit journal and its AI proposals, and does what changes them
//! together (opening a study, saving and opening labels, undo, recording edits).
//!
//! - [`study`]: the open study (CT, labels with the editor and undo history, metadata);
//! - [`proposals`]: AI proposals (worker, running job, the proposal under review);
//! - [`models`]: the user's model library (built-in and fine-tuned lesion models, which
//!   one proposals use) and [`finetune`], "Improve the model from my labels" (the
//!   training set of the user's studies, the fine-tuning job with progress and Cancel);
//! - [`load`]: opening a study or the demo off the UI thread, with progress and Cancel;
//! - [`labels_file`]: saving and opening label maps with their sidecars;
//! - [`compare`]: the compare / quantify workflows of the CLI and the viewer (inputs
//!   read on the job's thread, results, CSV / JSON / report documents);
//! - [`followup`]: another time point of the open study's patient registered onto it,
//!   the transition map, its volumes and the lesions matched over time (a job);
//! - [`journal`]: the edit journal file that makes every completed edit survive a crash,
//!   and [`edit_journal`], the open study's use of it (restore offer, unsaved count);
//! - [`jobs`]: background jobs (thread, result, cancel, progress, contained panics);
//! - [`startup`]: the start-up trace.

pub mod compare;
pub mod edit_journal;
pub mod finetune;
pub mod followup;
pub mod jobs;
pub mod journal;
pub mod labels_file;
pub mod load;
pub mod models;
pub mod proposals;
pub mod startup;
pub mod study;

pub use edit_journal::EditJournal;
pub use journal::{Journal, JournalError, Recovered};
pub use load::{LoadJob, LoadOutcome, PreparedLoad};
pub use proposals::{AiFactory, Proposals};
pub use study::Study;

use std::path::{Path, PathBuf};

use crate::annotate::LabelTable;
use labels_file::LabelsFileError;

/// The open study and everything that belongs to it.
pub struct Session {
    pub study: Option<Study>,
    /// Names, colours and visibility of the labels (saved as the ITK-SNAP description).
    pub label_table: LabelTable,
    pub journal: EditJournal,
    pub proposals: Proposals,
}

impl Session {
    /// A session with no study; journals go to `journal_dir` (None: no journal).
    pub fn new(journal_dir: Option<PathBuf>, factory: AiFactory) -> Self {
        Session {
            study: None,
            label_table: LabelTable::default(),
            journal: EditJournal::new(journal_dir),
            proposals: Proposals::new(factory),
        }
    }

    /// Makes `study` the open study: proposals of the last one are dropped, and its
    /// journal offers earlier unsaved edits or starts afresh.
    pub fn open(&mut self, study: Study) {
        self.proposals.reset();
        self.journal.open(&study);
        self.study = Some(study);
    }

    /// Saves the labels with their sidecars (see [`labels_file::save_labels`]); once the
    /// map is saved, nothing is unsaved any more.
    pub fn save_labels(&mut self, path: &Path) -> Result<Vec<LabelsFileError>, LabelsFileError> {
        let Some(study) = &self.study else {
            return Ok(Vec::new());
        };
        let labels = study.editor.labels();
        let sidecar_errors =
            labels_file::save_labels(path, labels, &self.label_table, &self.proposals.accepted)?;
        self.journal.saved();
        Ok(sidecar_errors)
    }

    /// Opens a label map on the study's grid into the editor as one undoable step, with
    /// its label description when there is one. `Ok(true)` when the label table changed;
    /// `Err` when nothing was changed, or when only the description could not be read.
    pub fn open_labels(&mut self, path: &Path) -> Result<bool, LabelsFileError> {
        let Some(study) = self.study.as_mut() else {
            return Ok(false);
        };
        let opened = labels_file::open_labels(path, &study.ct.geometry)?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        study
            .editor
            .apply_map(&format!("Open labels {name}"), &opened.labels);
        match opened.table {
            Some(Ok(t)) => {
                self.label_table = t;
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }

    /// Undoes (or redoes) the last edit.
    pub fn undo(&mut self, redo: bool) {
        if let Some(study) = self.study.as_mut() {
            if redo {
                study.editor.redo();
            } else {
                study.editor.undo();
            }
        }
    }

    /// Journals completed edits (they wait while a stroke is open).
    pub fn record_edits(&mut self, stroke_open: bool) {
        if let Some(study) = self.study.as_mut() {
            self.journal.record(study, stroke_open);
        }
    }

    /// Restores (or discards) the unsaved edits the journal offered.
    pub fn answer_restore_offer(&mut self, restore: bool) {
        if let Some(study) = self.study.as_mut() {
            self.journal.answer_offer(study, restore);
        }
    }

    pub fn unsaved_edits(&self) -> usize {
        self.journal.unsaved_edits()
    }
}

/// An error and its causes on one line, as the user should read it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::{Brush, GGO, paint_stroke};
    use crate::demo::DemoOptions;
    use crate::view::Plane;

    fn small_study() -> Study {
        Study::demo(&DemoOptions {
            dims: [48, 48, 24],
            spacing_mm: [7.0, 7.0, 12.0],
            ..Default::default()
        })
    }

    /// The session without a GUI: an edit is journaled (and survives as the restore
    /// offer of a second session), saving clears the unsaved count, the saved map opens
    /// again as one undoable step.
    #[test]
    fn edit_journal_save_and_reopen_without_a_gui() {
        let dir = tempfile::tempdir().unwrap();
        let journals = dir.path().join("journals");
        let mut session = Session::new(Some(journals.clone()), AiFactory::default());
        session.open(small_study());
        let study = session.study.as_mut().unwrap();
        let original = study.editor.labels().clone();
        let centre = study.ct.geometry.world_at_voxel([24.0, 24.0, 12.0].into());
        let brush = Brush::disc(Plane::Axial, 30.0, GGO);
        paint_stroke(&mut study.editor, &brush, None, &[centre]).unwrap();
        session.record_edits(true);
        assert_eq!(session.unsaved_edits(), 0, "waits while the stroke is open");
        session.record_edits(false);
        assert_eq!(session.unsaved_edits(), 1);
        let edited = session.study.as_ref().unwrap().editor.labels().clone();
        assert_ne!(edited.voxels, original.voxels);

        // A second session on the same study is offered the unsaved edit.
        let mut again = Session::new(Some(journals), AiFactory::default());
        again.open(small_study());
        let (_, offer) = again.journal.offer.as_ref().expect("an offer");
        assert_eq!(offer.deltas_since_save, 1);
        again.answer_restore_offer(true);
        assert_eq!(
            again.study.as_ref().unwrap().editor.labels().voxels,
            edited.voxels
        );
        assert_eq!(again.unsaved_edits(), 1);

        let path = dir.path().join("labels.nii.gz");
        assert!(session.save_labels(&path).unwrap().is_empty());
        assert_eq!(session.unsaved_edits(), 0);
        session.undo(false);
        session.record_edits(false);
        assert_eq!(
            session.study.as_ref().unwrap().editor.labels().voxels,
            original.voxels
        );
        assert!(
            session.open_labels(&path).unwrap(),
            "the description was read"
        );
        assert_eq!(
            session.study.as_ref().unwrap().editor.labels().voxels,
            edited.voxels
        );
        session.record_edits(false);
        assert_eq!(session.unsaved_edits(), 2, "the undo and the opened map");
    }
}
