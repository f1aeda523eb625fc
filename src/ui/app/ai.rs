//! The AI proposals panel: propose lungs / lesions on the open study through the worker,
//! review the instances, accept or reject them (accepting is one undo step).

use std::sync::Arc;

use egui::{Color32, RichText};
use nalgebra::Vector3;

use super::PulmoApp;
use crate::infer::review::{AcceptRecord, Decision, Review, SortKey};
use crate::infer::worker::{Factory, Job, JobEvent, JobId, Worker};
use crate::infer::{DeviceChoice, ModelInfo, Task, default_factory};
use crate::metrics::Target;
use crate::metrics::overlap::{JointHistogram, OverlapMetrics};
use crate::volume::VoxelBox;

/// Makes the worker's model factory (tests inject their own segmenters).
#[derive(Clone)]
pub struct AiFactory(pub Arc<dyn Fn() -> Factory + Send + Sync>);

impl std::fmt::Debug for AiFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AiFactory")
    }
}

impl Default for AiFactory {
    /// The built-in models from `weights/` (threshold lungs without them), device auto.
    fn default() -> Self {
        AiFactory(Arc::new(|| default_factory(DeviceChoice::Auto, None, None)))
    }
}

/// A running job.
pub struct RunningJob {
    pub id: JobId,
    pub task: Task,
    pub model: String,
    pub done: usize,
    pub total: usize,
}

/// State of the AI panel.
#[derive(Default)]
pub struct AiState {
    pub factory: AiFactory,
    worker: Option<Worker>,
    pub job: Option<RunningJob>,
    pub review: Option<Review>,
    pub error: Option<String>,
    pub show: bool,
    pub accept_threshold: f64,
    pub sort: Option<(SortKey, bool)>,
    /// Where accepted labels came from (saved beside the labels).
    pub accepted: Vec<AcceptRecord>,
    /// Dice of the proposal against the demo's truth, per label.
    pub truth_dice: Vec<(u8, f64)>,
    /// Brush and eraser edit the pending proposals instead of the labels.
    pub edit_proposals: bool,
    /// The layer while a brush stroke edits it.
    pub(super) layer_editor: Option<crate::annotate::Editor>,
    /// The layer must be re-uploaded whole / in this box.
    pub(super) layer_replaced: bool,
    pub(super) layer_dirty: Option<VoxelBox>,
}

impl AiState {
    pub fn new(factory: AiFactory) -> Self {
        AiState {
            factory,
            show: true,
            accept_threshold: 0.8,
            ..Default::default()
        }
    }

    /// Forgets the proposal and cancels the job (a new study was opened).
    pub fn reset(&mut self) {
        if let (Some(w), Some(j)) = (self.worker.as_mut(), self.job.as_ref()) {
            w.cancel(j.id);
        }
        self.job = None;
        self.review = None;
        self.error = None;
        self.accepted.clear();
        self.truth_dice.clear();
        self.layer_replaced = true;
    }

    pub fn is_running(&self) -> bool {
        self.job.is_some()
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
        let Some(study) = &self.study else { return };
        let ai = &mut self.ai;
        if ai.worker.is_none() {
            let ctx2 = ctx.clone();
            ai.worker = Some(Worker::spawn(
                (ai.factory.0)(),
                Arc::new(move || ctx2.request_repaint()),
                2,
            ));
        }
        let worker = ai.worker.as_mut().expect("spawned");
        if let Some(j) = ai.job.take() {
            worker.cancel(j.id);
        }
        let labels = study.editor.labels();
        let has_lungs = labels
            .voxels
            .iter()
            .any(|&v| v == crate::infer::LEFT_LUNG || v == crate::infer::RIGHT_LUNG);
        let lungs = (task == Task::Lesion && has_lungs).then(|| {
            Arc::new(labels.map(|v| {
                if v == crate::infer::LEFT_LUNG || v == crate::infer::RIGHT_LUNG {
                    v
                } else {
                    0
                }
            }))
        });
        // The worker needs its own copy of the CT (the study keeps editing on its own).
        let ct = Arc::new(study.ct.clone());
        match worker.submit(Job { task, ct, lungs }) {
            Ok(id) => {
                ai.error = None;
                ai.job = Some(RunningJob {
                    id,
                    task,
                    model: String::new(),
                    done: 0,
                    total: study.ct.geometry.dims[2],
                });
            }
            Err(e) => ai.error = Some(e.to_string()),
        }
    }

    /// Cancels the running job.
    pub fn cancel_proposal(&mut self) {
        if let (Some(w), Some(j)) = (self.ai.worker.as_mut(), self.ai.job.take()) {
            w.cancel(j.id);
        }
    }

    /// Takes the worker's events; drops those of jobs no longer wanted.
    pub fn poll_ai(&mut self) {
        let Some(worker) = self.ai.worker.as_mut() else {
            return;
        };
        for (id, event) in worker.poll() {
            let Some(job) = self.ai.job.as_mut().filter(|j| j.id == id) else {
                continue; // stale: cancelled, superseded, or another study
            };
            match event {
                JobEvent::Started { model } => job.model = model,
                JobEvent::Progress { done, total } => {
                    job.done = done;
                    job.total = total;
                }
                JobEvent::Done(p) => {
                    self.ai.job = None;
                    if let Some(study) = &self.study
                        && study.ct.geometry.dims == p.labels.geometry.dims
                    {
                        let review = Review::new(&p, &study.ct);
                        self.ai.truth_dice = study
                            .truth
                            .as_ref()
                            .map(|t| truth_dice(t, &p.labels, p.task))
                            .unwrap_or_default();
                        self.ai.review = Some(review);
                        self.ai.layer_replaced = true;
                        self.ai.show = true;
                    }
                }
                JobEvent::Failed(msg) => {
                    self.ai.job = None;
                    self.ai.error = Some(msg);
                }
                JobEvent::Cancelled => self.ai.job = None,
            }
        }
    }

    fn accept_instance(&mut self, index: usize) {
        let (Some(study), Some(review)) = (self.study.as_mut(), self.ai.review.as_mut()) else {
            return;
        };
        let layer_box = review.instance_box(index);
        let (_, record) = review.accept(index, &mut study.editor);
        self.ai.layer_dirty = VoxelBox::merge(self.ai.layer_dirty, layer_box);
        self.ai.accepted.extend(record);
    }

    fn reject_instance(&mut self, index: usize) {
        if let Some(review) = self.ai.review.as_mut() {
            let b = review.instance_box(index);
            review.reject(index);
            self.ai.layer_dirty = VoxelBox::merge(self.ai.layer_dirty, b);
        }
    }

    /// Centres every view on instance `index`.
    fn go_to_instance(&mut self, index: usize) {
        let (Some(study), Some(review)) = (&self.study, &self.ai.review) else {
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
        let has_study = self.study.is_some();
        ui.horizontal(|ui| {
            let idle = !self.ai.is_running();
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
        if let Some(job) = &self.ai.job {
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
        if let Some(e) = &self.ai.error {
            ui.label(
                RichText::new(format!("Proposal failed: {e}"))
                    .color(Color32::from_rgb(255, 120, 100)),
            );
        }
        let Some(review) = &self.ai.review else {
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
        for (label, dice) in &self.ai.truth_dice {
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
            if let Some(r) = self.ai.review.as_mut() {
                r.sort(key, desc);
            }
        }
        match action {
            Some((i, 0)) => self.go_to_instance(i),
            Some((i, 1)) => self.accept_instance(i),
            Some((i, 2)) => self.reject_instance(i),
            _ => {}
        }
        if bulk == 1
            && let (Some(study), Some(review)) = (self.study.as_mut(), self.ai.review.as_mut())
        {
            let (_, records) = review.accept_above(self.ai.accept_threshold, &mut study.editor);
            self.ai.accepted.extend(records);
            self.ai.layer_replaced = true;
        }
        if bulk == 2
            && let Some(review) = self.ai.review.as_mut()
        {
            review.reject_all();
            self.ai.layer_replaced = true;
        }
    }

    /// One brush / eraser step on the proposal layer (the stroke is the app's).
    pub(super) fn paint_proposal_at(
        &mut self,
        study: &super::Study,
        brush: crate::annotate::Brush,
        world: nalgebra::Point3<f64>,
    ) {
        let Some(review) = self.ai.review.as_mut() else {
            return;
        };
        if self.ai.layer_editor.is_none() {
            let placeholder = crate::volume::Volume::filled(
                crate::volume::Geometry::axis_aligned([1, 1, 1], [1.0; 3], [0.0; 3]),
                0u8,
            )
            .expect("1 voxel");
            let layer = std::mem::replace(&mut review.layer, placeholder);
            let mut ed =
                crate::annotate::Editor::new(layer, crate::annotate::LabelTable::default());
            ed.begin("edit proposal");
            self.ai.layer_editor = Some(ed);
            self.stroke = Some(crate::annotate::Stroke::new(brush));
        }
        if let (Some(stroke), Some(ed)) = (self.stroke.as_mut(), self.ai.layer_editor.as_mut()) {
            match stroke.add_point(ed, Some(&study.ct), world) {
                Ok(changed) => self.ai.layer_dirty = VoxelBox::merge(self.ai.layer_dirty, changed),
                Err(e) => self.save_error = Some(e.to_string()),
            }
        }
    }

    /// Ends a stroke on the proposal layer: the layer goes back to the review, whose
    /// pending instances are re-derived from it. Returns false when no such stroke ran.
    pub(super) fn finish_proposal_stroke(&mut self, study: &super::Study) -> bool {
        let Some(mut ed) = self.ai.layer_editor.take() else {
            return false;
        };
        ed.commit();
        let (layer, _, _) = ed.into_parts();
        if let Some(review) = self.ai.review.as_mut() {
            review.layer = layer;
            review.refresh(&study.ct);
        }
        true
    }

    /// Instance table rows for tests: (class, decision) in table order.
    pub fn proposal_rows(&self) -> Vec<(u8, Decision)> {
        self.ai
            .review
            .as_ref()
            .map(|r| r.instances.iter().map(|i| (i.label, i.decision)).collect())
            .unwrap_or_default()
    }
}

/// Dice of the proposal against the demo's truth for each label of the task.
fn truth_dice(
    truth: &crate::volume::LabelVolume,
    proposal: &crate::volume::LabelVolume,
    task: Task,
) -> Vec<(u8, f64)> {
    let Ok(hist) = JointHistogram::new(truth, proposal) else {
        return Vec::new();
    };
    let labels: &[u8] = match task {
        Task::Lung => &[1, 2],
        Task::Lesion => &[3, 4],
    };
    labels
        .iter()
        .map(|&l| {
            let ml = crate::metrics::voxel_volume_ml(&truth.geometry);
            let d = OverlapMetrics::from_counts(hist.confusion(Target::Label(l)), ml).dice;
            (l, d)
        })
        .collect()
}
