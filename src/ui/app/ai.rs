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
use crate::session::finetune::{
    FinetuneJob, FinetuneOutcome, FinetuneRequest, STAGES, start_finetune, training_set,
};
use crate::session::jobs::{JobControl, take_finished};
use crate::session::models::{ModelEntry, ModelLibrary};

/// The viewer's settings of the AI panel (the proposals themselves are the session's).
pub struct AiState {
    /// Show the pending proposals (dashed).
    pub show: bool,
    /// The confidence of "Accept all ≥ min conf.".
    pub accept_threshold: f64,
    pub sort: Option<(SortKey, bool)>,
    /// Brush and eraser edit the pending proposals instead of the labels.
    pub edit_proposals: bool,
    /// The user's models (built-in and fine-tuned) and which lesion model is chosen.
    pub library: ModelLibrary,
    /// The library as last read (re-read every few seconds while the panel shows).
    pub lesion_models: Vec<ModelEntry>,
    pub active_lesion: Option<std::path::PathBuf>,
    models_read: Option<std::time::Instant>,
    pub model_error: Option<String>,
    /// "Improve the model from my labels": the running job, its training minutes,
    /// whether the open study joins the training set, the last outcome.
    pub finetune: Option<FinetuneJob>,
    pub finetune_minutes: f64,
    pub finetune_add_study: bool,
    pub finetune_result: Option<Result<FinetuneOutcome, String>>,
    pub training_set: Vec<std::path::PathBuf>,
}

impl Default for AiState {
    fn default() -> Self {
        AiState {
            show: true,
            accept_threshold: 0.8,
            sort: None,
            edit_proposals: false,
            library: ModelLibrary::default(),
            lesion_models: Vec::new(),
            active_lesion: None,
            models_read: None,
            model_error: None,
            finetune: None,
            finetune_minutes: 10.0,
            finetune_add_study: true,
            finetune_result: None,
            training_set: Vec::new(),
        }
    }
}

impl AiState {
    /// Re-reads the model library when it was last read over 3 s ago (or `now`).
    pub fn refresh_models(&mut self, now: bool) {
        if now
            || self
                .models_read
                .is_none_or(|t| t.elapsed().as_secs_f64() > 3.0)
        {
            self.lesion_models = self.library.list(Task::Lesion);
            self.active_lesion = self.library.active(Task::Lesion);
            self.training_set = training_set(&self.library);
            self.models_read = Some(std::time::Instant::now());
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

    /// Makes `manifest` (None: the built-in model) the lesion model of the next proposals.
    pub fn choose_lesion_model(&mut self, manifest: Option<&std::path::Path>) {
        match self.ai.library.set_active(Task::Lesion, manifest) {
            Ok(()) => {
                self.ai.model_error = None;
                self.session.proposals.restart_worker();
            }
            Err(e) => {
                self.ai.model_error = Some(format!(
                    "Could not choose the model ({}): {e}",
                    self.ai.library.dir.display()
                ))
            }
        }
        self.ai.refresh_models(true);
    }

    /// Starts "Improve the model from my labels" from the chosen lesion model.
    pub fn start_finetune(&mut self, ctx: &egui::Context) {
        let program = match crate::infer::remote::program() {
            Ok(p) => p,
            Err(e) => {
                self.ai.finetune_result = Some(Err(e.to_string()));
                return;
            }
        };
        let parent = self
            .ai
            .active_lesion
            .clone()
            .unwrap_or_else(|| crate::infer::manifest::default_manifest_path(Task::Lesion));
        let add = self
            .session
            .study
            .as_ref()
            .filter(|_| self.ai.finetune_add_study)
            .map(|s| {
                (
                    s.key.clone(),
                    s.name.clone(),
                    s.ct.clone(),
                    s.editor.labels().clone(),
                )
            });
        let data = crate::infer::data_root();
        let req = FinetuneRequest {
            library: self.ai.library.clone(),
            parent,
            time_budget_min: self.ai.finetune_minutes,
            data: data.join("covid-semiseg").is_dir().then_some(data),
            add,
        };
        let control = JobControl::default();
        control.set_waker(super::repaint_waker(ctx));
        self.ai.finetune_result = None;
        self.ai.finetune = Some(start_finetune(program, req, control));
    }

    /// "Improve the model from my labels": training set, minutes, progress, Cancel,
    /// before/after figures and "Use the new model".
    fn finetune_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(r) = take_finished(&mut self.ai.finetune) {
            self.ai.finetune_result = Some(r.unwrap_or_else(|f| Err(f.message("fine-tuning"))));
            self.ai.refresh_models(true);
        }
        let ctx = ui.ctx().clone();
        ui.collapsing("Improve the model from my labels", |ui| {
            let has_study = self.session.study.is_some();
            ui.label(format!(
                "Training set: {} studies in {}",
                self.ai.training_set.len(),
                crate::session::finetune::studies_dir(&self.ai.library).display()
            ));
            ui.add_enabled(
                has_study,
                egui::Checkbox::new(
                    &mut self.ai.finetune_add_study,
                    "Add this study's labels to the training set",
                ),
            );
            ui.add(
                egui::Slider::new(&mut self.ai.finetune_minutes, 1.0..=120.0)
                    .logarithmic(true)
                    .text("minutes of training"),
            );
            let running = self.ai.finetune.is_some();
            let can_start = !running
                && ((has_study && self.ai.finetune_add_study) || !self.ai.training_set.is_empty());
            if ui
                .add_enabled(can_start, egui::Button::new("Improve the model"))
                .on_hover_text(
                    "Fine-tunes a copy of the chosen lesion model on your labelled studies \
                     (slices held out to measure it), on the GPU when there is one; \
                     the chosen model is not changed",
                )
                .clicked()
            {
                self.start_finetune(&ctx);
            }
            if let Some(job) = &self.ai.finetune {
                let p = job.control().progress();
                let stage = STAGES.get(p.stage).copied().unwrap_or("");
                let frac = if p.stage == 2 {
                    p.done as f32 / p.total.max(1) as f32
                } else {
                    0.0
                };
                let text = if p.stage == 2 {
                    format!("{stage}: {} of {} s", p.done, p.total)
                } else {
                    stage.to_string()
                };
                ui.add(egui::ProgressBar::new(frac).text(text));
                if ui.button("Cancel fine-tuning").clicked() {
                    job.control().cancel();
                }
            }
            let mut use_model = None;
            match &self.ai.finetune_result {
                Some(Ok(out)) => {
                    ui.label(format!("New model: {}", out.manifest.display()));
                    for line in &out.figures {
                        ui.label(RichText::new(line).small());
                    }
                    if ui.button("Use the new model").clicked() {
                        use_model = Some(out.manifest.clone());
                    }
                }
                Some(Err(e)) => {
                    ui.label(
                        RichText::new(format!("Fine-tuning: {e}"))
                            .color(Color32::from_rgb(255, 120, 100)),
                    );
                }
                None => {}
            }
            if let Some(m) = use_model {
                self.choose_lesion_model(Some(&m));
            }
        });
    }

    /// The lesion model chooser: the built-in model and every fine-tuned version.
    fn lesion_model_ui(&mut self, ui: &mut egui::Ui) {
        self.ai.refresh_models(false);
        let label = |e: &ModelEntry| {
            let mut t = format!("{} {}", e.name, e.version);
            if e.built_in {
                t.push_str(" (built-in)");
            }
            t
        };
        let current = self
            .ai
            .lesion_models
            .iter()
            .find(|e| match &self.ai.active_lesion {
                Some(p) => &e.manifest == p,
                None => e.built_in,
            })
            .map_or_else(|| "none".to_string(), label);
        let mut chosen: Option<Option<std::path::PathBuf>> = None;
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("Lesion model")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    for e in &self.ai.lesion_models {
                        let selected = match &self.ai.active_lesion {
                            Some(p) => &e.manifest == p,
                            None => e.built_in,
                        };
                        let text = if e.summary.is_empty() {
                            label(e)
                        } else {
                            format!("{} — {}", label(e), e.summary)
                        };
                        if ui.selectable_label(selected, text).clicked() && !selected {
                            chosen = Some((!e.built_in).then(|| e.manifest.clone()));
                        }
                    }
                });
        });
        if let Some(choice) = chosen {
            self.choose_lesion_model(choice.as_deref());
        }
        if let Some(e) = &self.ai.model_error {
            ui.label(RichText::new(e).color(Color32::from_rgb(255, 120, 100)));
        }
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
        self.lesion_model_ui(ui);
        self.finetune_ui(ui);
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
