//! Menus, keys and dialogs: the menu bar, keyboard shortcuts, file dialogs for opening
//! and saving labels and DICOM SEG (the work itself is the session's), the series choice,
//! warnings and help windows, and the loading window with progress and Cancel.

use std::path::Path;

use egui::Key;

use super::{PendingOpen, PulmoApp, Tool};
use crate::session::jobs::take_finished;
use crate::session::load;
use crate::view::ViewState;

impl PulmoApp {
    pub(super) fn menu_ui(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open file…").clicked() {
                    if let Some(p) = rfd::FileDialog::new()
                        .add_filter(
                            "CT volume",
                            &["dcm", "nii", "gz", "nrrd", "nhdr", "DICOMDIR"],
                        )
                        .pick_file()
                    {
                        self.request_open(ui.ctx(), PendingOpen::Path(p, None));
                    }
                    ui.close();
                }
                if ui.button("Open DICOM folder…").clicked() {
                    if let Some(p) = rfd::FileDialog::new().pick_folder() {
                        self.request_open(ui.ctx(), PendingOpen::Path(p, None));
                    }
                    ui.close();
                }
                ui.menu_button("Recent", |ui| {
                    if self.recent.is_empty() {
                        ui.label("(none)");
                    }
                    for p in self.recent.clone() {
                        if ui.button(p.display().to_string()).clicked() {
                            self.request_open(ui.ctx(), PendingOpen::Path(p, None));
                            ui.close();
                        }
                    }
                });
                if ui.button("Open synthetic demo").clicked() {
                    self.request_open(ui.ctx(), PendingOpen::Demo);
                    ui.close();
                }
                if ui
                    .add_enabled(
                        self.session.study.is_some(),
                        egui::Button::new("Open follow-up or baseline…"),
                    )
                    .on_hover_text(
                        "another time point of this patient, registered onto the open study",
                    )
                    .clicked()
                {
                    self.followup.open = true;
                    ui.close();
                }
                ui.separator();
                if ui
                    .add_enabled(
                        self.session.study.is_some(),
                        egui::Button::new("Save labels as NIfTI…"),
                    )
                    .clicked()
                {
                    self.save_labels();
                    ui.close();
                }
                if ui
                    .add_enabled(
                        self.session.study.is_some(),
                        egui::Button::new("Open labels…"),
                    )
                    .clicked()
                {
                    self.open_labels();
                    ui.close();
                }
                let dicom = self
                    .session
                    .study
                    .as_ref()
                    .is_some_and(|s| s.meta.is_some());
                if ui
                    .add_enabled(dicom, egui::Button::new("Export labels as DICOM SEG…"))
                    .on_disabled_hover_text("needs a study loaded from DICOM")
                    .clicked()
                {
                    self.export_seg();
                    ui.close();
                }
            });
            ui.menu_button("Edit", |ui| {
                let (can_undo, can_redo) =
                    self.session.study.as_ref().map_or((false, false), |s| {
                        (s.editor.history().can_undo(), s.editor.history().can_redo())
                    });
                // The named history entries: what the next undo / redo would change.
                let (undo_name, redo_name) =
                    self.session.study.as_ref().map_or((None, None), |s| {
                        let h = s.editor.history();
                        (
                            h.undo_name().map(str::to_string),
                            h.redo_name().map(str::to_string),
                        )
                    });
                let undo_text = match undo_name {
                    Some(n) => format!("Undo {n} (Ctrl+Z)"),
                    None => "Undo (Ctrl+Z)".to_string(),
                };
                let redo_text = match redo_name {
                    Some(n) => format!("Redo {n} (Ctrl+Shift+Z)"),
                    None => "Redo (Ctrl+Shift+Z)".to_string(),
                };
                if ui
                    .add_enabled(can_undo, egui::Button::new(undo_text))
                    .clicked()
                {
                    self.undo(false);
                    ui.close();
                }
                if ui
                    .add_enabled(can_redo, egui::Button::new(redo_text))
                    .clicked()
                {
                    self.undo(true);
                    ui.close();
                }
                if let Some(study) = &self.session.study {
                    let h = study.editor.history();
                    ui.separator();
                    ui.label(format!(
                        "History: {} steps, {:.1} MB of {:.0} MB",
                        h.undo_steps().count(),
                        h.memory_bytes() as f64 / 1e6,
                        h.memory_cap() as f64 / 1e6
                    ));
                    for step in h.undo_steps().take(10) {
                        ui.label(format!("• {} ({} voxels)", step.name, step.voxels));
                    }
                }
            });
            ui.menu_button("Tools", |ui| {
                if ui.button("Compare label maps…").clicked() {
                    self.compare.compare_open = true;
                    ui.close();
                }
                if ui.button("Quantification…").clicked() {
                    self.compare.quantify_open = true;
                    ui.close();
                }
            });
            ui.menu_button("View", |ui| {
                for i in 0..self.presets.len() {
                    let p = &self.presets[i];
                    let label = format!(
                        "{}: {} (W {} / L {})",
                        i + 1,
                        p.name(),
                        p.width_hu,
                        p.center_hu
                    );
                    if ui.button(label).clicked() {
                        self.apply_preset(i);
                        ui.close();
                    }
                }
                ui.separator();
                ui.checkbox(&mut self.linear, "Linear interpolation");
                ui.checkbox(&mut self.show_labels, "Show labels");
                ui.checkbox(&mut self.outline, "Labels as outlines");
                ui.add(egui::Slider::new(&mut self.label_opacity, 0.0..=1.0).text("Label opacity"));
                if ui.button("Reset views (R)").clicked() {
                    self.views.iter_mut().for_each(ViewState::reset);
                    self.maximized = None;
                    ui.close();
                }
                if ui.button("Load warnings…").clicked() {
                    self.warnings_open = true;
                    ui.close();
                }
            });
            if ui.button("Help").clicked() {
                self.help_open = !self.help_open;
            }
            if let Some(study) = &self.session.study {
                ui.separator();
                ui.label(&study.name);
            }
        });
    }

    /// Opens a label map (NIfTI or NRRD on the CT's grid, e.g. from ITK-SNAP or Slicer)
    /// into the editor as one undoable step, with its ITK-SNAP label description if any.
    pub(super) fn open_labels(&mut self) {
        if self.session.study.is_none() {
            return;
        }
        let Some(path) = rfd::FileDialog::new()
            .add_filter("label map", &["gz", "nii", "nrrd", "nhdr"])
            .pick_file()
        else {
            return;
        };
        self.open_labels_from(&path);
    }

    /// [`Self::open_labels`] without the dialog.
    pub fn open_labels_from(&mut self, path: &Path) {
        match self.session.open_labels(path) {
            Ok(table_changed) => self.labels_dirty |= table_changed,
            Err(e) => self.save_error = Some(e.to_string()),
        }
    }

    /// Writes the label map as a DICOM Segmentation referencing the open series.
    pub(super) fn export_seg(&mut self) {
        let Some(study) = &self.session.study else {
            return;
        };
        let Some(meta) = &study.meta else { return };
        let Some(path) = rfd::FileDialog::new()
            .add_filter("DICOM SEG", &["dcm"])
            .set_file_name("labels-seg.dcm")
            .save_file()
        else {
            return;
        };
        let options = crate::io::dicom::seg::SegWriteOptions::default();
        if let Err(e) = crate::io::dicom::seg::write_seg(
            &path,
            study.editor.labels(),
            &self.session.label_table,
            meta,
            &options,
        ) {
            self.save_error = Some(format!("The DICOM SEG was NOT written: {e}"));
        }
    }

    pub(super) fn save_labels(&mut self) {
        if self.session.study.is_none() {
            return;
        }
        let Some(path) = rfd::FileDialog::new()
            .add_filter("NIfTI label map", &["nii.gz", "nii"])
            .set_file_name("labels.nii.gz")
            .save_file()
        else {
            return;
        };
        self.save_labels_to(&path);
    }

    /// Saves the label map, its ITK-SNAP label description and, when AI proposals were
    /// accepted, their provenance, each atomically. Errors are shown; nothing is lost.
    pub fn save_labels_to(&mut self, path: &Path) {
        match self.session.save_labels(path) {
            Err(e) => self.save_error = Some(e.to_string()),
            Ok(sidecar_errors) => {
                if let Some(e) = sidecar_errors.last() {
                    self.save_error = Some(e.to_string());
                }
            }
        }
    }

    pub(super) fn keys(&mut self, ctx: &egui::Context) {
        let wants_text = ctx.egui_wants_keyboard_input();
        if wants_text {
            return;
        }
        let view = self.active_view;
        // Shortcuts are read from the key events themselves (with their modifiers), so a
        // quick Ctrl+Z whose Ctrl is released within the same frame still counts.
        let (undo, redo) = ctx.input_mut(|i| {
            use egui::{KeyboardShortcut, Modifiers};
            let redo = i.consume_shortcut(&KeyboardShortcut::new(
                Modifiers::COMMAND | Modifiers::SHIFT,
                Key::Z,
            )) || i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Y));
            let undo = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Z));
            (undo, redo)
        });
        if undo || redo {
            self.undo(redo);
            return;
        }
        ctx.input(|i| {
            if i.key_pressed(Key::B) {
                self.tool = Tool::Brush;
            }
            if i.key_pressed(Key::E) {
                self.tool = Tool::Eraser;
            }
            if i.key_pressed(Key::N) {
                self.tool = Tool::Navigate;
            }
            if i.key_pressed(Key::G) {
                self.tool = Tool::RegionGrow;
            }
            if i.key_pressed(Key::P) {
                self.tool = Tool::Polygon;
            }
            if i.key_pressed(Key::OpenBracket) {
                self.brush_radius_mm = (self.brush_radius_mm / 1.25).max(0.5);
            }
            if i.key_pressed(Key::CloseBracket) {
                self.brush_radius_mm = (self.brush_radius_mm * 1.25).min(100.0);
            }
            let mut steps = 0.0;
            if i.key_pressed(Key::PageUp) || i.key_pressed(Key::ArrowUp) {
                steps += 1.0;
            }
            if i.key_pressed(Key::PageDown) || i.key_pressed(Key::ArrowDown) {
                steps -= 1.0;
            }
            if steps != 0.0 {
                self.step_slice(view, steps);
            }
            let numbers = [
                Key::Num1,
                Key::Num2,
                Key::Num3,
                Key::Num4,
                Key::Num5,
                Key::Num6,
                Key::Num7,
                Key::Num8,
                Key::Num9,
            ];
            for (n, k) in numbers.iter().enumerate() {
                if i.key_pressed(*k) {
                    self.apply_preset(n);
                }
            }
            if i.key_pressed(Key::F1) || i.key_pressed(Key::H) {
                self.help_open = !self.help_open;
            }
            if i.key_pressed(Key::R) {
                self.views.iter_mut().for_each(ViewState::reset);
                self.maximized = None;
            }
            if i.key_pressed(Key::L) {
                self.show_labels = !self.show_labels;
            }
            if i.key_pressed(Key::O) && !i.modifiers.ctrl {
                self.outline = !self.outline;
            }
            if i.key_pressed(Key::Escape) {
                self.help_open = false;
                self.maximized = None;
            }
        });
    }

    pub(super) fn dialogs_ui(&mut self, ctx: &egui::Context) {
        if self.help_open {
            egui::Window::new("Help")
                .collapsible(false)
                .open(&mut self.help_open)
                .show(ctx, |ui| {
                    egui::Grid::new("help-grid").striped(true).show(ui, |ui| {
                        for (what, how) in HELP {
                            ui.label(*what);
                            ui.label(*how);
                            ui.end_row();
                        }
                    });
                });
        }
        if let Some(msg) = self.save_error.clone() {
            egui::Window::new("Editing problem")
                .collapsible(false)
                .show(ctx, |ui| {
                    ui.label(msg);
                    if ui.button("OK").clicked() {
                        self.save_error = None;
                    }
                });
        }
        if let Some(msg) = self.error.clone() {
            egui::Window::new("Could not open")
                .collapsible(false)
                .show(ctx, |ui| {
                    ui.label(msg);
                    if ui.button("OK").clicked() {
                        self.error = None;
                    }
                });
        }
        if self.warnings_open
            && let Some(study) = &self.session.study
        {
            let mut open = true;
            egui::Window::new("Load warnings")
                .open(&mut open)
                .show(ctx, |ui| {
                    if study.warnings.is_empty() {
                        ui.label("No warnings: the series loaded cleanly.");
                    }
                    egui::ScrollArea::vertical()
                        .max_height(300.0)
                        .show(ui, |ui| {
                            for w in &study.warnings {
                                ui.label(format!("• {w}"));
                            }
                        });
                });
            self.warnings_open = open;
        }
        if let Some((path, series)) = self.series_choice.clone() {
            let mut chosen = None;
            let mut close = false;
            egui::Window::new("Choose a series")
                .collapsible(false)
                .show(ctx, |ui| {
                    ui.label(format!("{} holds {} series:", path.display(), series.len()));
                    for s in &series {
                        if ui.button(s.to_string()).clicked() {
                            chosen = Some(s.uid.clone());
                        }
                    }
                    if ui.button("Cancel").clicked() {
                        close = true;
                    }
                });
            if let Some(uid) = chosen {
                self.series_choice = None;
                self.start_load(ctx, path, Some(uid));
            } else if close {
                self.series_choice = None;
            }
        }
    }

    pub(super) fn loading_ui(&mut self, ctx: &egui::Context) {
        if let Some(result) = take_finished(&mut self.loading) {
            self.finish_load(ctx, result.into());
            return;
        }
        let Some(job) = &self.loading else { return };
        let progress = job.control().progress();
        let (done, total) = (progress.done, progress.total);
        let stage = load::stage_name(progress.stage);
        let mut cancel = false;
        egui::Window::new("Loading")
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                ui.label(&job.what);
                if total > 0 {
                    ui.add(
                        egui::ProgressBar::new(done as f32 / total as f32)
                            .text(format!("{stage} {done}/{total}")),
                    );
                } else {
                    ui.spinner();
                }
                cancel = ui.button("Cancel").clicked();
            });
        if cancel {
            job.control().cancel();
        }
        // Four updates a second: each frame costs CPU the decoder could use (much of it
        // on a software renderer; 10 a second made decoding ~15 % slower on lavapipe).
        ctx.request_repaint_after(std::time::Duration::from_millis(250));
    }
}

const HELP: &[(&str, &str)] = &[
    ("Move the cursor (all views)", "Left click / drag"),
    (
        "Next / previous slice",
        "Mouse wheel, PgUp/PgDn, Up/Down arrows",
    ),
    ("Zoom about the mouse", "Ctrl + wheel (or pinch)"),
    ("Pan", "Middle drag, or Space + left drag"),
    (
        "Window / level",
        "Right drag: horizontal = width, vertical = level",
    ),
    (
        "Presets",
        "1 lung, 2 mediastinum, 3 bone, 4.. the series' own windows",
    ),
    (
        "Maximise a view",
        "Double click (again, or Esc, to restore)",
    ),
    ("Reset views", "R"),
    ("Labels on/off, outlines", "L, O"),
    (
        "Brush / eraser / navigate",
        "B / E / N; [ and ] change the radius",
    ),
    (
        "Region grow / polygon",
        "G: click a seed; P: click vertices, then Fill polygon",
    ),
    ("Undo / redo an edit", "Ctrl+Z / Ctrl+Shift+Z (or Ctrl+Y)"),
    ("Open", "File menu, or drop a file/folder on the window"),
    ("This help", "H or F1"),
];
