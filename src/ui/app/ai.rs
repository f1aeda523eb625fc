//! The AI proposals panel: propose lungs / lesions on the open study through the worker,
//! review the instances, accept or reject them (accepting is one undo step).

use egui::{Color32, RichText};
use nalgebra::{Point3, Vector3};

use super::PulmoApp;
use crate::annotate::{Brush, Stroke};
use crate::infer::review::{Decision, SortKey};
use crate::infer::{ModelInfo, Task};
pub use crate::session::AiFactory;
use crate::session::Study;

/// The viewer's settings of the AI panel (the proposals themselves are the session's).
pub struct AiState {
    /// Show the pending proposals (dashed).
    pub show: bool,
    /// The confidence of "Accept all ≥ min conf.".
    pub accept_threshold: f64,
    pub sort: Option<(SortKey, bool)>,
    /// Brush and eraser edit the pending proposals instead of the labels.
    pub edit_proposals: bool,
}

impl Default for AiState {
    fn default() -> Self {
        AiState {
            show: true,
            accept_threshold: 0.8,
            sort: None,
            edit_proposals: false,
        }
    }
}

fn class_name(v: u8) -> &'static str {
    match v {
        1 => "Left lung",
        2 => "Right lung",
        3 => "GGO",
        4 => "Consolidation",
        _ => "Other",
    }
}

impl PulmoApp {
    /// Starts a proposal job on the open study.
    pub fn propose(&mut self, ctx: &egui::Context, task: Task) {
        let Some(study) = &self.session.study else {
            return;
        };
        let wake = super::repaint_waker(ctx);
        self.session.proposals.propose(study, task, wake);
    }

    /// Cancels the running job.
    pub fn cancel_proposal(&mut self) {
        self.session.proposals.cancel();
    }

    /// Takes the worker's events; a new proposal is shown.
    pub fn poll_ai(&mut self) {
        if self.session.proposals.poll(self.session.study.as_ref()) {
            self.ai.show = true;
        }
    }

    fn accept_instance(&mut self, index: usize) {
        if let Some(study) = self.session.study.as_mut() {
            self.session.proposals.accept(index, study);
        }
    }

    fn reject_instance(&mut self, index: usize) {
        self.session.proposals.reject(index);
    }

    /// Centres every view on instance `index`.
    fn go_to_instance(&mut self, index: usize) {
        let (Some(study), Some(review)) = (&self.session.study, &self.session.proposals.review)
        else {
            return;
        };
        if let Some(inst) = review.instances.get(index) {
            let c = inst.centroid_voxel;
            self.cursor_mm = study
                .ct
                .geometry
                .world_at_voxel(Vector3::new(c[0], c[1], c[2]));
        }
    }

    /// The AI section of the side panel.
    pub(super) fn ai_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("AI proposals");
        let ctx = ui.ctx().clone();
        let has_study = self.session.study.is_some();
        ui.horizontal(|ui| {
            let idle = !self.session.proposals.is_running();
            if ui
                .add_enabled(has_study && idle, egui::Button::new("Propose lungs"))
                .clicked()
            {
                self.propose(&ctx, Task::Lung);
            }
            if ui
                .add_enabled(has_study && idle, egui::Button::new("Propose lesions"))
                .clicked()
            {
                self.propose(&ctx, Task::Lesion);
            }
        });
        if let Some(job) = &self.session.proposals.job {
            let frac = job.done as f32 / job.total.max(1) as f32;
            ui.add(egui::ProgressBar::new(frac).text(format!(
                "{} {}: {}/{} slices",
                job.task.name(),
                job.model,
                job.done,
                job.total
            )));
            if ui.button("Cancel proposal").clicked() {
                self.cancel_proposal();
            }
        }
        if let Some(e) = &self.session.proposals.error {
            ui.label(
                RichText::new(format!("Proposal failed: {e}"))
                    .color(Color32::from_rgb(255, 120, 100)),
            );
        }
        let Some(review) = &self.session.proposals.review else {
            return;
        };
        let ModelInfo {
            name,
            version,
            device,
        } = review.model.clone();
        ui.label(format!(
            "{name} {version} on {device}: {} pending",
            review.pending()
        ));
        if ui
            .checkbox(&mut self.ai.show, "Show proposals (dashed)")
            .changed()
        {
            ctx.request_repaint();
        }
        ui.checkbox(
            &mut self.ai.edit_proposals,
            "Brush/eraser edit the proposals (B / E)",
        );
        for (label, dice) in &self.session.proposals.truth_dice {
            ui.label(format!(
                "vs demo truth: {} Dice {:.3}",
                class_name(*label),
                dice
            ));
        }
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut self.ai.accept_threshold, 0.0..=1.0).text("min conf."));
        });
        let mut action: Option<(usize, u8)> = None; // (index, 0 go / 1 accept / 2 reject)
        let mut bulk = 0u8;
        ui.horizontal(|ui| {
            if ui.button("Accept all ≥ min conf.").clicked() {
                bulk = 1;
            }
            if ui.button("Reject all").clicked() {
                bulk = 2;
            }
        });
        let mut sort_by = None;
        egui::ScrollArea::vertical()
            .max_height(260.0)
            .id_salt("proposal-table")
            .show(ui, |ui| {
                egui::Grid::new("proposals-grid")
                    .striped(true)
                    .show(ui, |ui| {
                        for (title, key) in [
                            ("Class", SortKey::Class),
                            ("mL", SortKey::Volume),
                            ("HU", SortKey::MeanHu),
                            ("Conf.", SortKey::Confidence),
                            ("Slices", SortKey::FirstSlice),
                        ] {
                            if ui.small_button(title).clicked() {
                                sort_by = Some(key);
                            }
                        }
                        ui.label("");
                        ui.end_row();
                        for (i, inst) in review.instances.iter().enumerate() {
                            if inst.decision == Decision::Rejected {
                                continue;
                            }
                            ui.label(class_name(inst.label));
                            ui.label(format!("{:.2}", inst.volume_ml));
                            ui.label(format!("{:.0}", inst.mean_hu));
                            ui.label(format!("{:.2}", inst.confidence));
                            ui.label(format!("{}–{}", inst.slices.0 + 1, inst.slices.1 + 1));
                            ui.horizontal(|ui| {
                                if ui.small_button(format!("Go #{}", i + 1)).clicked() {
                                    action = Some((i, 0));
                                }
                                if inst.decision == Decision::Pending {
                                    if ui.small_button(format!("Accept #{}", i + 1)).clicked() {
                                        action = Some((i, 1));
                                    }
                                    if ui.small_button(format!("Reject #{}", i + 1)).clicked() {
                                        action = Some((i, 2));
                                    }
                                } else {
                                    ui.label("accepted");
                                }
                            });
                            ui.end_row();
                        }
                    });
            });
        if let Some(key) = sort_by {
            let desc = match self.ai.sort {
                Some((k, d)) if k == key => !d,
                _ => true,
            };
            self.ai.sort = Some((key, desc));
            self.session.proposals.sort(key, desc);
        }
        match action {
            Some((i, 0)) => self.go_to_instance(i),
            Some((i, 1)) => self.accept_instance(i),
            Some((i, 2)) => self.reject_instance(i),
            _ => {}
        }
        if bulk == 1
            && let Some(study) = self.session.study.as_mut()
        {
            let threshold = self.ai.accept_threshold;
            self.session.proposals.accept_above(threshold, study);
        }
        if bulk == 2 {
            self.session.proposals.reject_all();
        }
    }

    /// One brush / eraser step on the proposal layer (the stroke is the app's).
    pub(super) fn paint_proposal_at(&mut self, study: &Study, brush: Brush, world: Point3<f64>) {
        let stroke = self.stroke.get_or_insert_with(|| Stroke::new(brush));
        if let Err(e) = self.session.proposals.paint_layer(stroke, &study.ct, world) {
            self.save_error = Some(e.to_string());
        }
    }

    /// Ends a stroke on the proposal layer (false when no such stroke ran).
    pub(super) fn finish_proposal_stroke(&mut self, study: &Study) -> bool {
        self.session.proposals.finish_layer_stroke(&study.ct)
    }

    /// Instance table rows for tests: (class, decision) in table order.
    pub fn proposal_rows(&self) -> Vec<(u8, Decision)> {
        self.session
            .proposals
            .review
            .as_ref()
            .map(|r| r.instances.iter().map(|i| (i.label, i.decision)).collect())
            .unwrap_or_default()
    }
}
