//! Never lose work: the edit journal of the open study (restore after a crash), and the
//! questions before closing or opening another study with unsaved edits.

use std::path::PathBuf;

use egui::RichText;

use super::PulmoApp;
use crate::annotate::VoxelBox;
use crate::session::Recovered;
use crate::session::journal::{Journal, journal_path, recover};

/// What the user asked for while edits were unsaved.
#[derive(Debug, Clone)]
pub enum PendingOpen {
    Close,
    Demo,
    Path(PathBuf, Option<String>),
}

/// Journal state of the app.
#[derive(Default)]
pub struct JournalState {
    /// Where journals live (None: no journal, as in tests).
    pub dir: Option<PathBuf>,
    pub(super) journal: Option<Journal>,
    /// The new journal being written off the UI thread (its first record is the whole
    /// label map, which should not delay the first image).
    pub(super) creating:
        Option<crossbeam_channel::Receiver<Result<Journal, crate::session::JournalError>>>,
    /// Label changes not yet journaled (flushed when no stroke is in progress).
    pub(super) dirty: Option<VoxelBox>,
    /// Completed edits since the study was opened or saved (also without a journal).
    pub edits_since_save: usize,
    /// A journal of this study from an earlier session, waiting for the user's answer.
    pub offer: Option<(PathBuf, Recovered)>,
    /// An action waiting for "save or discard?".
    pub pending: Option<PendingOpen>,
    /// The user chose to close without saving.
    pub(super) close_confirmed: bool,
    pub error: Option<String>,
}

impl PulmoApp {
    /// After a study opens: offer an earlier session's unsaved edits, or start a journal.
    pub(super) fn open_journal(&mut self) {
        let j = &mut self.journal;
        j.journal = None;
        j.creating = None;
        j.dirty = None;
        j.edits_since_save = 0;
        j.offer = None;
        let (Some(dir), Some(study)) = (j.dir.clone(), self.study.as_ref()) else {
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
                    j.offer = Some((path, r));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    // Keep the unreadable file for inspection; start afresh.
                    let _ = std::fs::rename(&path, path.with_extension("journal.bad"));
                    j.error = Some(format!(
                        "An earlier edit journal could not be read and was set aside: {e}"
                    ));
                }
            }
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (key, labels) = (study.key.clone(), study.editor.labels().clone());
        std::thread::spawn(move || {
            let _ = tx.send(Journal::create(&path, &key, &labels));
        });
        j.creating = Some(rx);
    }

    /// Takes the journal once its background creation is done (waiting for it only when
    /// an edit has to be recorded).
    fn finish_journal_creation(&mut self) {
        let Some(rx) = &self.journal.creating else {
            return;
        };
        let done = if self.journal.dirty.is_some() {
            rx.recv().ok()
        } else {
            rx.try_recv().ok()
        };
        if let Some(result) = done {
            self.journal.creating = None;
            match result {
                Ok(j) => self.journal.journal = Some(j),
                Err(e) => {
                    self.journal.error = Some(format!(
                        "Edits cannot be journaled (they are kept in memory; save often): {e}"
                    ))
                }
            }
        }
    }

    /// Restores (or discards) the offered edits.
    fn answer_offer(&mut self, restore: bool) {
        let Some((path, r)) = self.journal.offer.take() else {
            return;
        };
        let Some(study) = self.study.as_mut() else {
            return;
        };
        if restore {
            let map = crate::volume::Volume {
                geometry: study.ct.geometry.clone(),
                voxels: r.voxels.clone(),
            };
            let changed = study.editor.apply_map(
                &format!("Restore {} unsaved edits", r.deltas_since_save),
                &map,
            );
            self.dirty_labels = VoxelBox::merge(self.dirty_labels, changed);
            match Journal::resume(&path, &r) {
                Ok(j) => self.journal.journal = Some(j),
                Err(e) => self.journal.error = Some(e.to_string()),
            }
            self.journal.edits_since_save = r.deltas_since_save;
        } else {
            match Journal::create(&path, &study.key, study.editor.labels()) {
                Ok(j) => self.journal.journal = Some(j),
                Err(e) => self.journal.error = Some(e.to_string()),
            }
        }
    }

    /// Journals the label changes of this frame once no stroke is in progress.
    pub(super) fn journal_edits(&mut self) {
        self.journal.dirty = VoxelBox::merge(self.journal.dirty, self.dirty_labels);
        if self.stroke.is_some() {
            return;
        }
        self.finish_journal_creation();
        let Some(b) = self.journal.dirty.take() else {
            return;
        };
        let Some(study) = self.study.as_ref() else {
            return;
        };
        match self.journal.journal.as_mut() {
            Some(j) => match j.record(study.editor.labels(), b) {
                Ok(0) => {}
                Ok(_) => self.journal.edits_since_save += 1,
                Err(e) => {
                    self.journal.error = Some(format!(
                        "The edit journal could not be written (your edits are still here; save them): {e}"
                    ))
                }
            },
            None => self.journal.edits_since_save += 1,
        }
    }

    /// The labels were saved: nothing is unsaved any more.
    pub(super) fn journal_saved(&mut self) {
        self.journal.edits_since_save = 0;
        if let Some(j) = self.journal.journal.as_mut()
            && let Err(e) = j.mark_saved()
        {
            self.journal.error = Some(e.to_string());
        }
    }

    /// Unsaved completed edits of the open study.
    pub fn unsaved_edits(&self) -> usize {
        self.journal.edits_since_save
    }

    /// Opens the demo or a path, asking first when edits are unsaved.
    pub fn request_open(&mut self, ctx: &egui::Context, what: PendingOpen) {
        if self.unsaved_edits() > 0 {
            self.journal.pending = Some(what);
            return;
        }
        self.do_open(ctx, what);
    }

    fn do_open(&mut self, ctx: &egui::Context, what: PendingOpen) {
        match what {
            PendingOpen::Close => {
                self.journal.close_confirmed = true;
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            PendingOpen::Demo => self.start_demo(ctx),
            PendingOpen::Path(p, s) => self.start_load(ctx, p, s),
        }
    }

    /// Handles the window's close button: asks when edits are unsaved.
    pub(super) fn handle_close_request(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested())
            && !self.journal.close_confirmed
            && self.unsaved_edits() > 0
        {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.journal.pending = Some(PendingOpen::Close);
        }
    }

    /// The restore offer, the save-or-discard question and journal errors.
    pub(super) fn journal_dialogs_ui(&mut self, ctx: &egui::Context) {
        if let Some((_, r)) = &self.journal.offer {
            let when = r
                .modified
                .and_then(|m| m.elapsed().ok())
                .map(|d| format!("{} min ago", d.as_secs() / 60))
                .unwrap_or_else(|| "earlier".into());
            let text = format!(
                "pulmo was closed without saving {} edit(s) to this study (last written {when}){}. Restore them?",
                r.deltas_since_save,
                if r.torn_tail {
                    "; an edit interrupted while being written is not included"
                } else {
                    ""
                }
            );
            let mut answer = None;
            egui::Window::new("Restore unsaved edits")
                .collapsible(false)
                .show(ctx, |ui| {
                    ui.label(text);
                    ui.horizontal(|ui| {
                        if ui.button("Restore edits").clicked() {
                            answer = Some(true);
                        }
                        if ui.button("Discard them").clicked() {
                            answer = Some(false);
                        }
                    });
                });
            if let Some(a) = answer {
                self.answer_offer(a);
            }
        }
        if let Some(what) = self.journal.pending.clone() {
            let n = self.unsaved_edits();
            let mut choice = 0;
            egui::Window::new("Unsaved edits")
                .collapsible(false)
                .show(ctx, |ui| {
                    ui.label(format!("{n} edit(s) to the labels are not saved."));
                    ui.horizontal(|ui| {
                        if ui.button("Save labels…").clicked() {
                            choice = 1;
                        }
                        let discard = match what {
                            PendingOpen::Close => "Close without saving",
                            _ => "Discard edits and open",
                        };
                        if ui.button(discard).clicked() {
                            choice = 2;
                        }
                        if ui.button("Cancel").clicked() {
                            choice = 3;
                        }
                    });
                });
            match choice {
                1 => {
                    self.save_labels();
                    if self.unsaved_edits() == 0 {
                        self.journal.pending = None;
                        self.do_open(ctx, what);
                    }
                }
                2 => {
                    self.journal.pending = None;
                    if let Some(j) = self.journal.journal.take() {
                        let _ = j.remove();
                    }
                    self.journal.edits_since_save = 0;
                    self.do_open(ctx, what);
                }
                3 => self.journal.pending = None,
                _ => {}
            }
        }
        if let Some(e) = self.journal.error.clone() {
            let mut ok = false;
            egui::Window::new("Edit journal")
                .collapsible(false)
                .show(ctx, |ui| {
                    ui.label(RichText::new(e));
                    ok = ui.button("OK").clicked();
                });
            if ok {
                self.journal.error = None;
            }
        }
    }
}
