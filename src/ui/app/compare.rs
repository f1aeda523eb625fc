//! The Compare and Quantification windows (issue: quantification and comparison).
//!
//! - **Compare**: two label maps (current labels, demo truth, pending AI proposals, or a
//!   NIfTI / NRRD file) are compared on a background thread; the window shows the
//!   metrics table per label and for any foreground, the agreement overlay of one
//!   target in the three views (TP / FP / FN as a filled layer, in place of the proposal
//!   layer while shown), the five worst axial slices, per-slice Dice and the slice ROC.
//! - **Quantification** of the current labels (background thread too): label table,
//!   involvement per lung and third, Lung CT Analyzer HU bands and HU histograms.
//! - Exports: CSV and JSON of both tables (atomic writes) and a one-page PNG report.
//!
//! Both work on snapshots of the maps taken when the job starts; later edits do not
//! change a result until it is run again. The computations and the report documents
//! (CSV, JSON, the PNG report's text) are `session::compare`'s; this file draws them,
//! runs them on background threads and writes the exports.

use std::path::{Path, PathBuf};

use egui::{Color32, RichText};
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints, Points, VLine};
use nalgebra::Vector2;

use super::{PulmoApp, error_chain};
use crate::annotate::LabelTable;
use crate::metrics::agreement::AgreementCodes;
use crate::metrics::quantify::{HU_BAND_NAMES, THIRD_NAMES};
use crate::metrics::report::{CompareRow, HD95_NOTE};
// Re-exported for `ui::app`'s users (the window state holds them).
use crate::metrics::{Target, fmt_opt};
use crate::render::report::{KeyImage, append_below, compose_report, encode_png, lesion_plot};
use crate::render::{
    AGREEMENT_COLORS, AGREEMENT_FN, AGREEMENT_FP, AGREEMENT_TP, FLAG_LAYER_FILLED,
    FLAG_SHOW_LABELS, FLAG_SHOW_PROPOSALS, LabelColors,
};
pub use crate::session::compare::{CompareResult, QuantResult, TargetDetail};
use crate::session::compare::{MapInput, report_lines, target_detail};
use crate::session::jobs::{Job, take_finished};
use crate::view::{Plane, ViewFrame, ViewState, slice_index};

/// The agreement overlay's values (reserved colour-table entries).
const CODES: AgreementCodes = AgreementCodes {
    true_positive: AGREEMENT_TP,
    false_positive: AGREEMENT_FP,
    false_negative: AGREEMENT_FN,
};
/// Side of the key image of the PNG report (pixels).
const KEY_IMAGE_PX: usize = 512;

/// Where a label map to compare comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MapSource {
    /// The study's labels as they are now.
    CurrentLabels,
    /// The synthetic demo's exact ground truth.
    DemoTruth,
    /// The pending AI proposals (the proposal layer).
    Proposals,
    /// A NIfTI or NRRD label map on the CT's grid.
    File(PathBuf),
}

impl MapSource {
    /// How the source is named in the window and in reports.
    pub fn name(&self) -> String {
        match self {
            MapSource::CurrentLabels => "current labels".into(),
            MapSource::DemoTruth => "demo ground truth".into(),
            MapSource::Proposals => "AI proposals (pending)".into(),
            MapSource::File(p) => p.display().to_string(),
        }
    }
}

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    CompareCsv,
    CompareJson,
    QuantifyCsv,
    QuantifyJson,
    /// The follow-up tables: time points, change volumes, lesions over time.
    FollowupCsv,
    FollowupJson,
    ReportPng,
}

impl ExportKind {
    fn extension(self) -> &'static str {
        match self {
            ExportKind::CompareCsv | ExportKind::QuantifyCsv | ExportKind::FollowupCsv => "csv",
            ExportKind::CompareJson | ExportKind::QuantifyJson | ExportKind::FollowupJson => "json",
            ExportKind::ReportPng => "png",
        }
    }

    fn default_name(self) -> &'static str {
        match self {
            ExportKind::CompareCsv => "comparison.csv",
            ExportKind::CompareJson => "comparison.json",
            ExportKind::QuantifyCsv => "quantification.csv",
            ExportKind::QuantifyJson => "quantification.json",
            ExportKind::FollowupCsv => "progress.csv",
            ExportKind::FollowupJson => "progress.json",
            ExportKind::ReportPng => "report.png",
        }
    }
}

/// A computation of the windows: its result, or the error to show.
type ComputeJob<T> = Job<Result<Box<T>, String>>;

/// State of the Compare and Quantification windows.
pub struct CompareState {
    pub compare_open: bool,
    pub quantify_open: bool,
    pub reference: MapSource,
    pub test: MapSource,
    /// The target of the overlay, the worst slices and the plots.
    pub target: Target,
    /// Show the agreement overlay in the views (while the Compare window is open).
    pub show_overlay: bool,
    /// Hide the label layer under the overlay (its colours would mix with TP/FP/FN).
    pub hide_labels_under_overlay: bool,
    pub result: Option<CompareResult>,
    pub error: Option<String>,
    pub quantification: Option<QuantResult>,
    pub quantify_error: Option<String>,
    /// The last export's outcome: Ok(message) or Err(message).
    pub export_status: Option<Result<String, String>>,
    compare_job: Option<ComputeJob<CompareResult>>,
    detail_job: Option<ComputeJob<TargetDetail>>,
    quantify_job: Option<ComputeJob<QuantResult>>,
    overlay_uploaded: bool,
    overlay_was_active: bool,
}

impl Default for CompareState {
    fn default() -> Self {
        Self {
            compare_open: false,
            quantify_open: false,
            reference: MapSource::DemoTruth,
            test: MapSource::CurrentLabels,
            target: Target::Label(crate::annotate::GGO),
            show_overlay: true,
            hide_labels_under_overlay: true,
            result: None,
            error: None,
            quantification: None,
            quantify_error: None,
            export_status: None,
            compare_job: None,
            detail_job: None,
            quantify_job: None,
            overlay_uploaded: false,
            overlay_was_active: false,
        }
    }
}

impl CompareState {
    /// Forgets results and running jobs (a new study was opened); keeps the choices.
    pub fn reset(&mut self) {
        self.result = None;
        self.error = None;
        self.quantification = None;
        self.quantify_error = None;
        self.export_status = None;
        self.compare_job = None;
        self.detail_job = None;
        self.quantify_job = None;
        self.overlay_uploaded = false;
    }

    /// Whether a comparison (or its detail) is being computed.
    pub fn is_comparing(&self) -> bool {
        self.compare_job.is_some() || self.detail_job.is_some()
    }

    pub fn is_quantifying(&self) -> bool {
        self.quantify_job.is_some()
    }

    /// Whether the agreement overlay replaces the proposal layer now.
    pub fn overlay_active(&self) -> bool {
        self.compare_open && self.show_overlay && self.result.is_some()
    }

    /// The view flags with the overlay shown (`None` when it is not).
    pub(super) fn overlay_flags(&self, flags: u32) -> Option<u32> {
        if !self.overlay_active() {
            return None;
        }
        let mut f = flags | FLAG_SHOW_PROPOSALS | FLAG_LAYER_FILLED;
        if self.hide_labels_under_overlay {
            f &= !FLAG_SHOW_LABELS;
        }
        Some(f)
    }

    /// The agreement map when it must be uploaded as the layer (then call
    /// [`CompareState::overlay_uploaded`]).
    pub(super) fn pending_overlay(&self) -> Option<&[u8]> {
        if !self.overlay_active() || self.overlay_uploaded {
            return None;
        }
        self.result
            .as_ref()
            .map(|r| r.detail.agreement.voxels.as_slice())
    }

    pub(super) fn overlay_uploaded(&mut self) {
        self.overlay_uploaded = true;
    }
}

/// Runs `work` as a background job named `name` that wakes the UI when it ends.
fn spawn_job<T: Send + 'static>(
    ctx: &egui::Context,
    name: &str,
    work: impl FnOnce() -> Result<Box<T>, String> + Send + 'static,
) -> ComputeJob<T> {
    Job::spawn(name, name, super::job_control(ctx), move |_| work())
}

/// Takes a finished job's result, if any (a crash or a lost job as its error).
fn poll<T>(slot: &mut Option<ComputeJob<T>>) -> Option<Result<Box<T>, String>> {
    let result = take_finished(slot)?;
    Some(result.unwrap_or_else(|failure| Err(failure.message("the computation"))))
}

/// A target as the windows name it, with the names of `table`.
fn target_name(table: &LabelTable, target: Target) -> String {
    crate::session::compare::target_name(target, &|v| table.get(v).map(|l| l.name.clone()))
}

fn label_color(table: &LabelTable, label: u8) -> Color32 {
    table.get(label).map_or(Color32::GRAY, |l| {
        Color32::from_rgb(l.color[0], l.color[1], l.color[2])
    })
}

fn agreement_color(index: usize) -> Color32 {
    let c = AGREEMENT_COLORS[index].map(|v| (v * 255.0).round() as u8);
    Color32::from_rgb(c[0], c[1], c[2])
}

fn error_text(ui: &mut egui::Ui, text: impl Into<String>) {
    ui.label(RichText::new(text.into()).color(Color32::from_rgb(255, 120, 100)));
}

impl PulmoApp {
    /// Draws the Compare and Quantification windows when open.
    pub(super) fn compare_windows_ui(&mut self, ctx: &egui::Context) {
        self.poll_compare_jobs();
        // First placed at the right, so the axial view (left) stays visible.
        let top_right = ctx.content_rect().right_top() + egui::vec2(-12.0, 40.0);
        if self.compare.compare_open {
            let mut open = true;
            egui::Window::new("Compare label maps")
                .open(&mut open)
                .pivot(egui::Align2::RIGHT_TOP)
                .default_pos(top_right)
                .default_width(780.0)
                .default_height(640.0)
                .vscroll(true)
                .show(ctx, |ui| self.compare_ui(ui));
            self.compare.compare_open &= open;
        }
        if self.compare.quantify_open {
            if self.compare.quantification.is_none()
                && !self.compare.is_quantifying()
                && self.compare.quantify_error.is_none()
            {
                self.start_quantify(ctx);
            }
            let mut open = true;
            egui::Window::new("Quantification")
                .open(&mut open)
                .pivot(egui::Align2::RIGHT_TOP)
                .default_pos(top_right + egui::vec2(-30.0, 30.0))
                .default_width(720.0)
                .default_height(600.0)
                .vscroll(true)
                .show(ctx, |ui| self.quantify_ui(ui));
            self.compare.quantify_open &= open;
        }
        // Hiding the overlay gives the layer back to the proposals.
        let active = self.compare.overlay_active();
        if self.compare.overlay_was_active && !active {
            self.session.proposals.show_whole_layer();
        }
        if !active {
            self.compare.overlay_uploaded = false;
        }
        self.compare.overlay_was_active = active;
    }

    fn poll_compare_jobs(&mut self) {
        let c = &mut self.compare;
        match poll(&mut c.compare_job) {
            Some(Ok(r)) => {
                c.target = r.detail.target;
                c.result = Some(*r);
                c.error = None;
                c.overlay_uploaded = false;
            }
            Some(Err(e)) => c.error = Some(e),
            None => {}
        }
        match poll(&mut c.detail_job) {
            Some(Ok(d)) => {
                if let Some(r) = c.result.as_mut() {
                    r.detail = *d;
                    c.overlay_uploaded = false;
                }
            }
            Some(Err(e)) => c.error = Some(e),
            None => {}
        }
        match poll(&mut c.quantify_job) {
            Some(Ok(q)) => {
                c.quantification = Some(*q);
                c.quantify_error = None;
            }
            Some(Err(e)) => c.quantify_error = Some(e),
            None => {}
        }
    }

    /// A snapshot of a source (files are read later, on the job's thread).
    fn map_input(&self, source: &MapSource) -> Result<MapInput, String> {
        let study = self.session.study.as_ref().ok_or("no study is open")?;
        match source {
            MapSource::CurrentLabels => Ok(MapInput::Ready(study.editor.labels().clone())),
            MapSource::DemoTruth => study
                .truth
                .clone()
                .map(MapInput::Ready)
                .ok_or_else(|| "this study has no demo ground truth".into()),
            MapSource::Proposals => {
                if self.session.proposals.editing_layer() {
                    return Err("a brush stroke is editing the proposals; finish it first".into());
                }
                self.session
                    .proposals
                    .review
                    .as_ref()
                    .map(|r| MapInput::Ready(r.layer.clone()))
                    .ok_or_else(|| "there are no pending AI proposals".into())
            }
            MapSource::File(p) => Ok(MapInput::File(p.clone())),
        }
    }

    /// Starts comparing the chosen maps on a background thread.
    pub fn start_compare(&mut self, ctx: &egui::Context) {
        let Some(study) = &self.session.study else {
            return;
        };
        let ct_geometry = study.ct.geometry.clone();
        let inputs = self
            .map_input(&self.compare.reference)
            .and_then(|r| Ok((r, self.map_input(&self.compare.test)?)));
        let (reference, test) = match inputs {
            Ok(x) => x,
            Err(e) => {
                self.compare.error = Some(e);
                return;
            }
        };
        let target = self.compare.target;
        let reference_name = self.compare.reference.name();
        let test_name = self.compare.test.name();
        self.compare.error = None;
        self.compare.detail_job = None;
        self.compare.compare_job = Some(spawn_job(ctx, "pulmo-compare", move || {
            CompareResult::run(
                (reference, reference_name),
                (test, test_name),
                &ct_geometry,
                target,
                CODES,
            )
            .map(Box::new)
            .map_err(|e| error_chain(&e))
        }));
    }

    /// Recomputes the slice detail and overlay of the comparison for `target`.
    fn start_detail(&mut self, ctx: &egui::Context, target: Target) {
        let Some(r) = &self.compare.result else {
            return;
        };
        let (reference, test) = r.maps();
        self.compare.detail_job = Some(spawn_job(ctx, "pulmo-compare-detail", move || {
            target_detail(&reference, &test, target, CODES)
                .map(Box::new)
                .map_err(|e| e.to_string())
        }));
    }

    /// Starts quantifying the current labels on a background thread.
    pub fn start_quantify(&mut self, ctx: &egui::Context) {
        let Some(study) = &self.session.study else {
            return;
        };
        let ct = study.ct.clone();
        let labels = study.editor.labels().clone();
        self.compare.quantify_error = None;
        self.compare.quantify_job = Some(spawn_job(ctx, "pulmo-quantify", move || {
            QuantResult::compute(&ct, &labels)
                .map(Box::new)
                .map_err(|e| e.to_string())
        }));
    }

    /// Moves the cursor to axial slice `k` (voxel index), keeping its x and y.
    pub fn go_to_axial_slice(&mut self, k: usize) {
        let Some(study) = &self.session.study else {
            return;
        };
        let g = &study.ct.geometry;
        let mut v = g.voxel_at_world(self.cursor_mm);
        v.z = k as f64;
        self.cursor_mm.z = g.world_at_voxel(v).z;
    }

    fn source_ui(&mut self, ui: &mut egui::Ui, reference: bool) {
        let has_truth = self
            .session
            .study
            .as_ref()
            .is_some_and(|s| s.truth.is_some());
        let has_proposals = self.session.proposals.review.is_some();
        let (title, salt) = if reference {
            ("Reference", "compare-reference")
        } else {
            ("Test", "compare-test")
        };
        let current = if reference {
            self.compare.reference.clone()
        } else {
            self.compare.test.clone()
        };
        let mut chosen = current.clone();
        let mut pick_file = false;
        ui.horizontal(|ui| {
            let label = ui.label(title);
            egui::ComboBox::from_id_salt(salt)
                .selected_text(current.name())
                .width(260.0)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut chosen, MapSource::CurrentLabels, "current labels");
                    ui.add_enabled_ui(has_truth, |ui| {
                        ui.selectable_value(&mut chosen, MapSource::DemoTruth, "demo ground truth");
                    });
                    ui.add_enabled_ui(has_proposals, |ui| {
                        ui.selectable_value(
                            &mut chosen,
                            MapSource::Proposals,
                            "AI proposals (pending)",
                        );
                    });
                    if ui.button("NIfTI / NRRD file…").clicked() {
                        pick_file = true;
                    }
                })
                .response
                .labelled_by(label.id);
        });
        if pick_file
            && let Some(p) = rfd::FileDialog::new()
                .add_filter("Label map", &["nii", "gz", "nrrd", "nhdr"])
                .pick_file()
        {
            chosen = MapSource::File(p);
        }
        if reference {
            self.compare.reference = chosen;
        } else {
            self.compare.test = chosen;
        }
    }

    fn compare_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        if self.session.study.is_none() {
            ui.label("Open a study first.");
            return;
        }
        // Sources the study does not have fall back to the current labels.
        if self.compare.reference == MapSource::DemoTruth
            && self
                .session
                .study
                .as_ref()
                .is_some_and(|s| s.truth.is_none())
        {
            self.compare.reference = MapSource::CurrentLabels;
        }
        self.source_ui(ui, true);
        self.source_ui(ui, false);
        let table = self.session.label_table.clone();
        ui.horizontal(|ui| {
            // One job at a time: a detail computed from an older comparison must not
            // land on a newer one.
            let busy = self.compare.is_comparing();
            let label = ui.label("Detail for");
            let mut target = self.compare.target;
            ui.add_enabled_ui(!busy, |ui| {
                egui::ComboBox::from_id_salt("compare-target")
                    .selected_text(target_name(&table, target))
                    .show_ui(ui, |ui| {
                        for l in &table.labels {
                            let t = Target::Label(l.value);
                            ui.selectable_value(&mut target, t, target_name(&table, t));
                        }
                        ui.selectable_value(&mut target, Target::AnyForeground, "any foreground");
                    })
                    .response
                    .labelled_by(label.id);
            });
            if target != self.compare.target {
                self.compare.target = target;
                self.start_detail(&ctx, target);
            }
            if ui
                .add_enabled(!busy, egui::Button::new("Run comparison"))
                .clicked()
            {
                self.start_compare(&ctx);
            }
            if busy {
                ui.spinner();
                ui.label("comparing…");
            }
        });
        if let Some(e) = &self.compare.error {
            error_text(ui, e.clone());
        }
        let Some(result) = &self.compare.result else {
            ui.label("Choose two maps and press Run comparison.");
            return;
        };
        ui.label(format!(
            "Reference: {}   Test: {}   ({:.2} s; snapshots taken when the comparison started)",
            result.reference_name, result.test_name, result.seconds
        ));
        let mut go_to = None;
        compare_table_ui(ui, &table, &result.rows);
        ui.separator();
        ui.horizontal(|ui| {
            ui.checkbox(
                &mut self.compare.show_overlay,
                "Agreement overlay in the views",
            );
            ui.checkbox(
                &mut self.compare.hide_labels_under_overlay,
                "hide labels under it",
            );
        });
        ui.horizontal(|ui| {
            for (n, what) in ["TP (in both)", "FP (test only)", "FN (reference only)"]
                .iter()
                .enumerate()
            {
                let (rect, _) =
                    ui.allocate_exact_size(egui::Vec2::splat(12.0), egui::Sense::hover());
                ui.painter().rect_filled(rect, 2.0, agreement_color(n));
                ui.label(*what);
            }
        });
        let d = &result.detail;
        let s = &d.slices;
        ui.label(format!(
            "{}: slices with it in both {}, test only {}, reference only {}; slice sensitivity {}, specificity {}; mean Dice over reference slices {}",
            target_name(&table, d.target),
            s.true_positive_slices,
            s.false_positive_slices,
            s.false_negative_slices,
            fmt_opt(s.sensitivity, 3),
            fmt_opt(s.specificity, 3),
            fmt_opt(s.mean_dice_reference_positive, 3),
        ));
        ui.label("Worst axial slices (lowest Dice where either map has it):");
        if d.worst.is_empty() {
            ui.label("(neither map holds it)");
        }
        let total = d.slice_numbers.len();
        ui.horizontal_wrapped(|ui| {
            for &(k, dice) in &d.worst {
                let n = d.slice_numbers.get(k).copied().unwrap_or(k + 1);
                if ui
                    .button(format!("Axial {n}/{total}: Dice {dice:.3}"))
                    .clicked()
                {
                    go_to = Some(k);
                }
            }
        });
        let cursor_slice = self.slice_of(0).map(|(i, _)| i as f64);
        ui.columns(2, |cols| {
            let dice: Vec<[f64; 2]> = {
                let mut v: Vec<[f64; 2]> = s
                    .per_slice
                    .iter()
                    .filter(|x| x.reference_positive() || x.test_positive())
                    .map(|x| [d.slice_numbers[x.k] as f64, x.dice])
                    .collect();
                v.sort_by(|a, b| a[0].total_cmp(&b[0]));
                v
            };
            cols[0].label("Per-slice Dice");
            Plot::new("per-slice-dice")
                .height(180.0)
                .include_y(0.0)
                .include_y(1.0)
                .x_axis_label("axial slice")
                .y_axis_label("Dice")
                .allow_scroll(false)
                .show(&mut cols[0], |p| {
                    p.line(Line::new("Dice", PlotPoints::from(dice.clone())).allow_band(false));
                    p.points(Points::new("slices", PlotPoints::from(dice)).radius(2.0));
                    if let Some(c) = cursor_slice {
                        p.vline(VLine::new("cursor", c).color(Color32::from_gray(140)));
                    }
                });
            cols[1].label("Slice ROC (score = test voxels / max)");
            let auc = format!("ROC, AUC {}", fmt_opt(d.auc, 3));
            Plot::new("slice-roc")
                .height(180.0)
                .data_aspect(1.0)
                .include_x(0.0)
                .include_x(1.0)
                .include_y(0.0)
                .include_y(1.0)
                .x_axis_label("false positive rate")
                .y_axis_label("true positive rate")
                .allow_scroll(false)
                .legend(Legend::default().position(egui_plot::Corner::RightBottom))
                .show(&mut cols[1], |p| {
                    p.line(
                        Line::new("chance", PlotPoints::from(vec![[0.0, 0.0], [1.0, 1.0]]))
                            .color(Color32::from_gray(120))
                            .style(LineStyle::dashed_loose()),
                    );
                    // Vertical steps are part of the curve: no band aggregation.
                    p.line(Line::new(auc, PlotPoints::from(d.roc.clone())).allow_band(false));
                });
        });
        if d.roc.is_empty() {
            ui.label("ROC needs slices with and without the reference target.");
        }
        ui.separator();
        self.export_buttons_ui(
            ui,
            &[
                (ExportKind::CompareCsv, "Save table as CSV…"),
                (ExportKind::CompareJson, "Save as JSON…"),
                (ExportKind::ReportPng, "Save PNG report…"),
            ],
        );
        if let Some(k) = go_to {
            self.go_to_axial_slice(k);
        }
    }

    fn quantify_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        if self.session.study.is_none() {
            ui.label("Open a study first.");
            return;
        }
        ui.horizontal(|ui| {
            let busy = self.compare.is_quantifying();
            if ui
                .add_enabled(!busy, egui::Button::new("Quantify current labels"))
                .clicked()
            {
                self.start_quantify(&ctx);
            }
            if busy {
                ui.spinner();
                ui.label("quantifying…");
            }
        });
        if let Some(e) = &self.compare.quantify_error {
            error_text(ui, e.clone());
        }
        // The follow-up first: with a second time point it is what the reader came for.
        if let Some(r) = &self.followup.result {
            ui.heading("Follow-up");
            super::followup::time_points_ui(ui, r);
            ui.label(format!(
                "Consolidation progression {:.2} mL, recovery {:.2} mL; {} lesions over \
                 time (the Follow-up window lists them and the changes per lung).",
                r.volumes.progression_ml,
                r.volumes.recovery_ml,
                r.lesions.len()
            ));
            self.export_buttons_ui(
                ui,
                &[
                    (ExportKind::FollowupCsv, "Save follow-up tables as CSV…"),
                    (ExportKind::FollowupJson, "Save follow-up as JSON…"),
                ],
            );
        }
        let table = self.session.label_table.clone();
        let Some(res) = &self.compare.quantification else {
            return;
        };
        let q = &res.quantification;
        let ml = q.voxel_volume_ml;
        ui.label(format!(
            "Current labels, {:.2} s (a snapshot: press the button again after editing)",
            res.seconds
        ));
        ui.heading("Labels");
        egui::Grid::new("quant-labels")
            .striped(true)
            .show(ui, |ui| {
                for h in ["Label", "Volume mL", "Mean HU", "SD HU", "Min HU", "Max HU"] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                for s in &q.labels {
                    ui.label(target_name(&table, Target::Label(s.label)));
                    ui.label(format!("{:.1}", s.volume_ml));
                    ui.label(format!("{:.1}", s.mean_hu));
                    ui.label(format!("{:.1}", s.std_hu));
                    ui.label(s.min_hu.to_string());
                    ui.label(s.max_hu.to_string());
                    ui.end_row();
                }
            });
        let lesions: Vec<(usize, u8)> = q
            .lesion_labels
            .iter()
            .copied()
            .enumerate()
            .filter(|(n, _)| q.lungs[2].whole.lesion_voxels[*n] > 0)
            .collect();
        ui.heading("Lung involvement");
        egui::Grid::new("quant-lungs").striped(true).show(ui, |ui| {
            let mut header = vec![
                "Lung".to_string(),
                "Volume mL".into(),
                "Lesion mL".into(),
                "Involved %".into(),
            ];
            header.extend(THIRD_NAMES.iter().map(|t| format!("{t} third %")));
            header.extend(lesions.iter().map(|(_, l)| {
                format!(
                    "{} %",
                    table
                        .get(*l)
                        .map_or_else(|| l.to_string(), |x| x.name.clone())
                )
            }));
            for h in header {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for l in &q.lungs {
                let w = &l.whole;
                ui.label(format!("{} lung", l.name));
                ui.label(format!("{:.1}", w.voxels as f64 * ml));
                ui.label(format!("{:.1}", w.total_lesion_voxels() as f64 * ml));
                ui.label(fmt_opt(w.involvement_pct(), 2));
                for t in &l.thirds {
                    ui.label(fmt_opt(t.involvement_pct(), 2));
                }
                for (n, _) in &lesions {
                    ui.label(fmt_opt(w.lesion_pct(*n), 2));
                }
                ui.end_row();
            }
        });
        ui.heading("HU bands (Lung CT Analyzer), % of the region");
        egui::Grid::new("quant-bands").striped(true).show(ui, |ui| {
            ui.label(RichText::new("Lung").strong());
            let ranges = [
                "< -1050 HU",
                "[-1050, -950) HU",
                "[-950, -750) HU",
                "[-750, -400) HU",
                ">= -400 HU",
            ];
            for (name, range) in HU_BAND_NAMES.iter().zip(ranges) {
                ui.label(RichText::new(name.replace('_', " ")).strong())
                    .on_hover_text(range);
            }
            ui.end_row();
            for l in &q.lungs {
                ui.label(format!("{} lung", l.name));
                for b in 0..HU_BAND_NAMES.len() {
                    ui.label(fmt_opt(l.whole.band_pct(b), 2));
                }
                ui.end_row();
            }
        });
        ui.heading("HU histogram");
        let h = &res.histogram;
        Plot::new("hu-histogram")
            .height(200.0)
            .x_axis_label("HU (bins of 10)")
            .y_axis_label("% of the label's voxels")
            .allow_scroll(false)
            .legend(Legend::default())
            .show(ui, |p| {
                for (label, counts, total) in &h.per_label {
                    let points: Vec<[f64; 2]> = counts
                        .iter()
                        .enumerate()
                        .map(|(b, &c)| [h.bin_center_hu(b), c as f64 * 100.0 / *total as f64])
                        .collect();
                    p.line(
                        Line::new(target_name(&table, Target::Label(*label)), points)
                            .color(label_color(&table, *label)),
                    );
                }
            });
        ui.separator();
        self.export_buttons_ui(
            ui,
            &[
                (ExportKind::QuantifyCsv, "Save tables as CSV…"),
                (ExportKind::QuantifyJson, "Save as JSON…"),
                (ExportKind::ReportPng, "Save PNG report…"),
            ],
        );
    }

    fn export_buttons_ui(&mut self, ui: &mut egui::Ui, buttons: &[(ExportKind, &str)]) {
        let mut chosen = None;
        ui.horizontal(|ui| {
            for (kind, text) in buttons {
                if ui.button(*text).clicked() {
                    chosen = Some(*kind);
                }
            }
        });
        match &self.compare.export_status {
            Some(Ok(msg)) => {
                ui.label(msg.clone());
            }
            Some(Err(msg)) => error_text(ui, msg.clone()),
            None => {}
        }
        if let Some(kind) = chosen {
            self.export_with_dialog(kind);
        }
    }

    fn export_with_dialog(&mut self, kind: ExportKind) {
        let ext = kind.extension();
        let Some(path) = rfd::FileDialog::new()
            .add_filter(ext.to_uppercase(), &[ext])
            .set_file_name(kind.default_name())
            .save_file()
        else {
            return;
        };
        self.compare.export_status = Some(
            self.export_to(kind, &path)
                .map(|()| format!("Saved {}", path.display())),
        );
    }

    /// Writes an export to `path` atomically. On failure nothing is lost: the results
    /// stay in the window and an existing file is left as it was.
    pub fn export_to(&self, kind: ExportKind, path: &Path) -> Result<(), String> {
        let bytes = self.export_bytes(kind)?;
        crate::io::atomic::write_bytes(path, &bytes).map_err(|e| {
            format!(
                "Could not save {} ({e}); nothing was lost, the results are still here.",
                path.display()
            )
        })
    }

    fn export_bytes(&self, kind: ExportKind) -> Result<Vec<u8>, String> {
        let study = self.session.study.as_ref().ok_or("no study is open")?;
        let table = &self.session.label_table;
        let name = |v: u8| table.get(v).map(|l| l.name.clone());
        let no_comparison = "run a comparison first";
        let no_quantification = "quantify first";
        let no_followup = "register a follow-up first (File > Open follow-up or baseline…)";
        Ok(match kind {
            ExportKind::CompareCsv => self
                .compare
                .result
                .as_ref()
                .ok_or(no_comparison)?
                .to_csv()
                .into_bytes(),
            ExportKind::CompareJson => self
                .compare
                .result
                .as_ref()
                .ok_or(no_comparison)?
                .to_json(&study.name)
                .into_bytes(),
            ExportKind::QuantifyCsv => self
                .compare
                .quantification
                .as_ref()
                .ok_or(no_quantification)?
                .to_csv(&name)
                .into_bytes(),
            ExportKind::QuantifyJson => self
                .compare
                .quantification
                .as_ref()
                .ok_or(no_quantification)?
                .to_json(&study.name, "current labels (viewer)", &name)
                .into_bytes(),
            ExportKind::FollowupCsv => self
                .followup
                .result
                .as_ref()
                .ok_or(no_followup)?
                .progression()
                .to_csv()
                .into_bytes(),
            ExportKind::FollowupJson => {
                let r = self.followup.result.as_ref().ok_or(no_followup)?;
                let registration = serde_json::to_value(&r.report).unwrap_or_default();
                crate::metrics::report::to_json_text(&r.progression().to_json(registration))
                    .into_bytes()
            }
            ExportKind::ReportPng => self.report_png()?,
        })
    }

    /// The one-page PNG report: the axial slice at the cursor (CPU-rendered, with the
    /// overlay or labels as shown) and the quantification and comparison tables.
    pub fn report_png(&self) -> Result<Vec<u8>, String> {
        let study = self.session.study.as_ref().ok_or("no study is open")?;
        let g = &study.ct.geometry;
        let px = KEY_IMAGE_PX;
        let frame = ViewFrame::new(
            g,
            &ViewState::new(Plane::Axial),
            Vector2::new(px as f64, px as f64),
            self.cursor_mm,
        );
        let u = self.uniforms(&frame, study);
        let followup_map = self.followup.pending_map_values();
        let layer: Option<&[u8]> = if self.compare.overlay_active() {
            self.compare
                .result
                .as_ref()
                .map(|r| r.detail.agreement.voxels.as_slice())
        } else if let Some(map) = followup_map.as_deref() {
            Some(map)
        } else if u.flags & FLAG_SHOW_PROPOSALS != 0 {
            self.session
                .proposals
                .review
                .as_ref()
                .map(|r| r.layer.voxels.as_slice())
        } else {
            None
        };
        let layer = layer.filter(|l| l.len() == study.ct.voxels.len());
        let lut = LabelColors::with_overlays(self.session.label_table.rgba_table());
        let other_hu = self
            .followup
            .result
            .as_ref()
            .map(|r| r.other_ct.voxels.as_slice());
        let rgba = crate::render::reference::render_volumes(
            &u,
            &lut,
            &crate::render::reference::SliceVolumes {
                dims: g.dims,
                hu: &study.ct.voxels,
                labels: &study.editor.labels().voxels,
                proposals: layer,
                other_hu,
            },
            px,
            px,
        );
        let (i, n) = slice_index(g, Plane::Axial, self.cursor_mm);
        let overlay = if self.compare.overlay_active() {
            "; agreement overlay: green TP, red FP, blue FN"
        } else if followup_map.is_some() {
            "; change map: red/orange progression, green recovery"
        } else {
            ""
        };
        let caption = format!(
            "Axial {i}/{n}, W {:.0} / L {:.0}{overlay}",
            self.window_width_hu, self.window_center_hu
        );
        let table = &self.session.label_table;
        let mut lines = report_lines(
            study.synthetic,
            self.compare.quantification.as_ref(),
            self.compare.result.as_ref(),
            &|v| table.get(v).map(|l| l.name.clone()),
        );
        let followup = self.followup.result.as_ref();
        if let Some(r) = followup {
            lines.push(String::new());
            lines.extend(r.progression().text_lines(10));
        }
        let page = compose_report(
            &format!("pulmo report: {}", study.name),
            Some(KeyImage {
                rgba: &rgba,
                width: px,
                height: px,
                caption: &caption,
            }),
            &lines,
        );
        let page = match followup {
            Some(r) => {
                let (names, ggo, cons) =
                    crate::followup::report::TimePoint::lesion_series(&r.time_points);
                append_below(&page, &lesion_plot(&names, &ggo, &cons))
            }
            None => page,
        };
        encode_png(&page).map_err(|e| format!("cannot encode the PNG: {e}"))
    }
}

/// The metrics table: one row per label and one for any foreground.
fn compare_table_ui(ui: &mut egui::Ui, table: &LabelTable, rows: &[CompareRow]) {
    egui::ScrollArea::horizontal()
        .id_salt("compare-table-scroll")
        .show(ui, |ui| {
            egui::Grid::new("compare-table")
                .striped(true)
                .show(ui, |ui| {
                    let headers: [(&str, &str); 12] = [
                        (
                            "Target",
                            "a label value, or every non-zero value as one mask",
                        ),
                        ("Dice", "2|R∩T| / (|R| + |T|)"),
                        ("IoU", "|R∩T| / |R∪T|"),
                        ("VS", "volume similarity 1 - ||R| - |T|| / (|R| + |T|)"),
                        ("RVD %", "(test - reference) / reference volume x 100"),
                        ("Sens.", "sensitivity |R∩T| / |R|"),
                        (
                            "Spec.",
                            "specificity, over the voxels outside the reference",
                        ),
                        ("HD mm", "Hausdorff distance between the boundary voxels"),
                        ("HD95 mm", HD95_NOTE),
                        ("ASSD mm", "average symmetric surface distance"),
                        ("Ref. mL", "reference volume"),
                        ("Test mL", "test volume"),
                    ];
                    for (h, tip) in headers {
                        ui.label(RichText::new(h).strong()).on_hover_text(tip);
                    }
                    ui.end_row();
                    for row in rows {
                        let o = &row.target.overlap;
                        let s = &row.target.surface;
                        ui.label(target_name(table, row.target.target));
                        ui.label(format!("{:.4}", o.dice));
                        ui.label(format!("{:.4}", o.jaccard));
                        ui.label(format!("{:.4}", o.volume_similarity));
                        ui.label(fmt_opt(o.relative_volume_difference_pct, 2));
                        ui.label(fmt_opt(o.sensitivity, 4));
                        ui.label(fmt_opt(o.specificity, 4));
                        ui.label(fmt_opt(s.hausdorff_mm, 2));
                        ui.label(fmt_opt(s.hd95_mm, 2)).on_hover_text(HD95_NOTE);
                        ui.label(fmt_opt(s.assd_mm, 2));
                        ui.label(format!("{:.2}", o.reference_volume_ml));
                        ui.label(format!("{:.2}", o.test_volume_ml));
                        ui.end_row();
                    }
                });
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::FLAG_LINEAR;

    fn result() -> CompareResult {
        let (g, r, t) = crate::session::compare::tests::maps();
        CompareResult::run(
            (MapInput::Ready(r), "r".into()),
            (MapInput::Ready(t), "t".into()),
            &g,
            Target::Label(3),
            CODES,
        )
        .expect("same grid")
    }

    #[test]
    fn overlay_takes_the_layer_only_while_shown() {
        let mut c = CompareState::default();
        let flags = FLAG_SHOW_LABELS | FLAG_LINEAR;
        assert!(c.overlay_flags(flags).is_none());
        c.result = Some(result());
        // The window is closed: no overlay.
        assert!(!c.overlay_active() && c.pending_overlay().is_none());
        c.compare_open = true;
        let f = c.overlay_flags(flags).expect("shown");
        assert_eq!(f, FLAG_SHOW_PROPOSALS | FLAG_LAYER_FILLED | FLAG_LINEAR);
        c.hide_labels_under_overlay = false;
        assert_eq!(c.overlay_flags(flags), Some(f | FLAG_SHOW_LABELS));
        assert_eq!(c.pending_overlay().map(<[u8]>::len), Some(24));
        c.overlay_uploaded();
        assert!(c.pending_overlay().is_none(), "uploaded once");
        c.show_overlay = false;
        assert!(c.overlay_flags(flags).is_none());
        c.reset();
        assert!(c.result.is_none() && !c.overlay_active());
    }
}
