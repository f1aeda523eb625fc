//! Never lose work: the edit journal of the open study (restore after a crash), and the
//! questions before closing or opening another study with unsaved edits.

use std::path::PathBuf;

use egui::RichText;

use super::PulmoApp;

/// What the user asked for while edits were unsaved.
#[derive(Debug, Clone)]
pub enum PendingOpen {
    Close,
    Demo,
    Path(PathBuf, Option<String>),
}

/// The questions around unsaved edits (the journal itself is the session's).
#[derive(Default)]
pub struct JournalState {
    /// An action waiting for "save or discard?".
    pub pending: Option<PendingOpen>,
    /// The user chose to close without saving.
    pub(super) close_confirmed: bool,
}

impl PulmoApp {
    /// Unsaved completed edits of the open study.
    pub fn unsaved_edits(&self) -> usize {
        self.session.unsaved_edits()
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
        if let Some((_, r)) = &self.session.journal.offer {
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
                self.session.answer_restore_offer(a);
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
                    self.session.journal.discard();
                    self.do_open(ctx, what);
                }
                3 => self.journal.pending = None,
                _ => {}
            }
        }
        if let Some(e) = self.session.journal.error.clone() {
            let mut ok = false;
            egui::Window::new("Edit journal")
                .collapsible(false)
                .show(ctx, |ui| {
                    ui.label(RichText::new(e));
                    ok = ui.button("OK").clicked();
                });
            if ok {
                self.session.journal.error = None;
            }
        }
    }
}
