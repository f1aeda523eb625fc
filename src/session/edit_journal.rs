//! [`EditJournal`]: the crash journal of the open study as the session uses it — the
//! journal created off the UI thread when a study opens (its first record is the whole
//! label map), an earlier session's unsaved edits offered for restoring, every completed
//! edit recorded (the editor hands out its box), and the count of unsaved edits that the
//! questions before closing or opening another study rely on.

use std::path::PathBuf;

use super::Study;
use super::jobs::{Job, JobControl};
use super::journal::{Journal, JournalError, Recovered, journal_path, recover};
use crate::volume::VoxelBox;

/// The edit journal of the open study.
#[derive(Default)]
pub struct EditJournal {
    /// Where journals live (None: no journal, as in tests).
    pub dir: Option<PathBuf>,
    journal: Option<Journal>,
    /// The new journal being written off the UI thread.
    creating: Option<Job<Result<Journal, JournalError>>>,
    /// Completed changes not yet journaled (recorded once no stroke is open).
    pending: Option<VoxelBox>,
    /// Completed edits since the study was opened or saved (also without a journal).
    edits_since_save: usize,
    /// A journal of this study from an earlier session, waiting for the user's answer.
    pub offer: Option<(PathBuf, Recovered)>,
    /// The last problem with the journal, for the user (edits are never lost by it).
    pub error: Option<String>,
}

impl EditJournal {
    pub fn new(dir: Option<PathBuf>) -> Self {
        EditJournal {
            dir,
            ..Default::default()
        }
    }

    /// After `study` opens: offers an earlier session's unsaved edits, or starts a new
    /// journal off the calling thread.
    pub fn open(&mut self, study: &Study) {
        self.journal = None;
        self.creating = None;
        self.pending = None;
        self.edits_since_save = 0;
        self.offer = None;
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let path = journal_path(&dir, &study.key);
        if path.is_file() {
            match recover(&path) {
                Ok(r)
                    if r.dims == study.ct.geometry.dims
                        && r.key == study.key
                        && r.deltas_since_save > 0 =>
                {
                    self.offer = Some((path, r));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    // Keep the unreadable file for inspection; start afresh.
                    let _ = std::fs::rename(&path, path.with_extension("journal.bad"));
                    self.error = Some(format!(
                        "An earlier edit journal could not be read and was set aside: {e}"
                    ));
                }
            }
        }
        let (key, labels) = (study.key.clone(), study.editor.labels().clone());
        let what = "writing the edit journal";
        self.creating = Some(Job::spawn(
            "pulmo-journal",
            what,
            JobControl::default(),
            move |_| Journal::create(&path, &key, &labels),
        ));
    }

    /// Takes the journal once its background creation is done (waiting for it only when
    /// an edit has to be recorded).
    fn finish_creation(&mut self) {
        let Some(job) = &self.creating else {
            return;
        };
        let done = if self.pending.is_some() {
            Some(job.wait())
        } else {
            job.try_take()
        };
        let Some(result) = done else {
            return;
        };
        self.creating = None;
        let error = match result {
            Ok(Ok(j)) => {
                self.journal = Some(j);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(failure) => failure.message("the journal writer"),
        };
        self.error = Some(format!(
            "Edits cannot be journaled (they are kept in memory; save often): {error}"
        ));
    }

    /// Restores (or discards) the offered edits into `study`'s labels (one undo step).
    pub fn answer_offer(&mut self, study: &mut Study, restore: bool) {
        let Some((path, r)) = self.offer.take() else {
            return;
        };
        if restore {
            let map = crate::volume::Volume {
                geometry: study.ct.geometry.clone(),
                voxels: r.voxels.clone(),
            };
            study.editor.apply_map(
                &format!("Restore {} unsaved edits", r.deltas_since_save),
                &map,
            );
            match Journal::resume(&path, &r) {
                Ok(j) => self.journal = Some(j),
                Err(e) => self.error = Some(e.to_string()),
            }
            self.edits_since_save = r.deltas_since_save;
        } else {
            match Journal::create(&path, &study.key, study.editor.labels()) {
                Ok(j) => self.journal = Some(j),
                Err(e) => self.error = Some(e.to_string()),
            }
        }
    }

    /// Records the study's completed edits; while a stroke is still open they wait.
    pub fn record(&mut self, study: &mut Study, stroke_open: bool) {
        let completed = study.editor.take_completed_changes();
        self.pending = VoxelBox::merge(self.pending, completed);
        if stroke_open {
            return;
        }
        self.finish_creation();
        let Some(b) = self.pending.take() else {
            return;
        };
        match self.journal.as_mut() {
            Some(j) => match j.record(study.editor.labels(), b) {
                Ok(0) => {}
                Ok(_) => self.edits_since_save += 1,
                Err(e) => {
                    self.error = Some(format!(
                        "The edit journal could not be written (your edits are still here; save them): {e}"
                    ))
                }
            },
            None => self.edits_since_save += 1,
        }
    }

    /// The labels were saved: nothing is unsaved any more.
    pub fn saved(&mut self) {
        self.edits_since_save = 0;
        if let Some(j) = self.journal.as_mut()
            && let Err(e) = j.mark_saved()
        {
            self.error = Some(e.to_string());
        }
    }

    /// The user discarded the unsaved edits: the journal goes with them.
    pub fn discard(&mut self) {
        if let Some(j) = self.journal.take() {
            let _ = j.remove();
        }
        self.edits_since_save = 0;
    }

    /// Completed edits of the open study not saved yet.
    pub fn unsaved_edits(&self) -> usize {
        self.edits_since_save
    }
}
