//! AI proposals of the open study: the inference worker (started on first use), the
//! running job with its progress, the proposal under review (instances to accept or
//! reject, each accept one undo step of the study's editor; the pending layer, which the
//! brush can edit), and where accepted labels came from (saved as provenance).

use std::sync::Arc;

use nalgebra::Point3;

use super::Study;
use super::jobs::Waker;
use crate::annotate::{Editor, LabelTable, Stroke, ToolError};
use crate::infer::review::{AcceptRecord, Review, SortKey};
use crate::infer::worker::{Factory, Job, JobEvent, JobId, Worker};
use crate::infer::{DeviceChoice, Task, default_factory};
use crate::metrics::Target;
use crate::metrics::overlap::{JointHistogram, OverlapMetrics};
use crate::volume::{CtVolume, Geometry, LabelVolume, Volume, VoxelBox};

/// Makes the worker's model factory (tests inject their own segmenters).
#[derive(Clone)]
pub struct AiFactory(pub Arc<dyn Fn() -> Factory + Send + Sync>);

impl std::fmt::Debug for AiFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AiFactory")
    }
}

impl Default for AiFactory {
    /// The models chosen in the user's model library ([`super::models`]), else the
    /// built-in ones from `weights/` (threshold lungs without them), device auto; read
    /// each time a worker starts.
    fn default() -> Self {
        AiFactory(Arc::new(|| {
            let library = super::models::ModelLibrary::default();
            default_factory(
                DeviceChoice::Auto,
                library.active(Task::Lung),
                library.active(Task::Lesion),
            )
        }))
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

/// What the display must refresh of the proposal layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerUpdate {
    /// The whole layer (a new proposal, a bulk decision, or none any more).
    Whole,
    /// The voxels in this box.
    Part(VoxelBox),
}

/// The proposals of the open study.
#[derive(Default)]
pub struct Proposals {
    pub factory: AiFactory,
    worker: Option<Worker>,
    pub job: Option<RunningJob>,
    pub review: Option<Review>,
    pub error: Option<String>,
    /// Where accepted labels came from (saved beside the labels).
    pub accepted: Vec<AcceptRecord>,
    /// Dice of the proposal against the demo's truth, per label.
    pub truth_dice: Vec<(u8, f64)>,
    /// The layer while a brush stroke edits it.
    layer_editor: Option<Editor>,
    layer_replaced: bool,
    layer_changed: Option<VoxelBox>,
}

impl Proposals {
    pub fn new(factory: AiFactory) -> Self {
        Proposals {
            factory,
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

    /// Starts a proposal job on `study` (cancelling a running one); `wake` is called when
    /// the worker has news.
    pub fn propose(&mut self, study: &Study, task: Task, wake: Waker) {
        if self.worker.is_none() {
            self.worker = Some(Worker::spawn((self.factory.0)(), wake, 2));
        }
        let worker = self.worker.as_mut().expect("spawned");
        if let Some(j) = self.job.take() {
            worker.cancel(j.id);
        }
        let labels = study.editor.labels();
        let is_lung = |v: u8| v == crate::infer::LEFT_LUNG || v == crate::infer::RIGHT_LUNG;
        let has_lungs = labels.voxels.iter().any(|&v| is_lung(v));
        let lungs = (task == Task::Lesion && has_lungs)
            .then(|| Arc::new(labels.map(|v| if is_lung(v) { v } else { 0 })));
        // The worker needs its own copy of the CT (the study keeps editing on its own).
        let ct = Arc::new(study.ct.clone());
        match worker.submit(Job { task, ct, lungs }) {
            Ok(id) => {
                self.error = None;
                self.job = Some(RunningJob {
                    id,
                    task,
                    model: String::new(),
                    done: 0,
                    total: study.ct.geometry.dims[2],
                });
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    /// Ends the worker (cancelling its job), so the next proposal starts one with the
    /// models chosen now.
    pub fn restart_worker(&mut self) {
        self.cancel();
        self.worker = None;
    }

    /// Cancels the running job.
    pub fn cancel(&mut self) {
        if let (Some(w), Some(j)) = (self.worker.as_mut(), self.job.take()) {
            w.cancel(j.id);
        }
    }

    /// Takes the worker's events (dropping those of jobs no longer wanted); returns true
    /// when a new proposal for `study` arrived for review.
    pub fn poll(&mut self, study: Option<&Study>) -> bool {
        let Some(worker) = self.worker.as_mut() else {
            return false;
        };
        let mut arrived = false;
        for (id, event) in worker.poll() {
            let Some(job) = self.job.as_mut().filter(|j| j.id == id) else {
                continue; // stale: cancelled, superseded, or another study
            };
            match event {
                JobEvent::Started { model } => job.model = model,
                JobEvent::Progress { done, total } => {
                    job.done = done;
                    job.total = total;
                }
                JobEvent::Done(p) => {
                    self.job = None;
                    if let Some(study) = study
                        && study.ct.geometry.dims == p.labels.geometry.dims
                    {
                        self.truth_dice = study
                            .truth
                            .as_ref()
                            .map(|t| truth_dice(t, &p.labels, p.task))
                            .unwrap_or_default();
                        self.review = Some(Review::new(&p, &study.ct));
                        self.layer_replaced = true;
                        arrived = true;
                    }
                }
                JobEvent::Failed(msg) => {
                    self.job = None;
                    self.error = Some(msg);
                }
                JobEvent::Cancelled => self.job = None,
            }
        }
        arrived
    }

    /// Accepts instance `index` into the study's labels (one undo step).
    pub fn accept(&mut self, index: usize, study: &mut Study) {
        let Some(review) = self.review.as_mut() else {
            return;
        };
        let layer_box = review.instance_box(index);
        let (_, record) = review.accept(index, &mut study.editor);
        self.layer_changed = VoxelBox::merge(self.layer_changed, layer_box);
        self.accepted.extend(record);
    }

    pub fn reject(&mut self, index: usize) {
        if let Some(review) = self.review.as_mut() {
            let b = review.instance_box(index);
            review.reject(index);
            self.layer_changed = VoxelBox::merge(self.layer_changed, b);
        }
    }

    /// Accepts every pending instance of at least `threshold` confidence (one undo step).
    pub fn accept_above(&mut self, threshold: f64, study: &mut Study) {
        if let Some(review) = self.review.as_mut() {
            let (_, records) = review.accept_above(threshold, &mut study.editor);
            self.accepted.extend(records);
            self.layer_replaced = true;
        }
    }

    pub fn reject_all(&mut self) {
        if let Some(review) = self.review.as_mut() {
            review.reject_all();
            self.layer_replaced = true;
        }
    }

    pub fn sort(&mut self, key: SortKey, desc: bool) {
        if let Some(r) = self.review.as_mut() {
            r.sort(key, desc);
        }
    }

    /// Whether a brush stroke is editing the layer.
    pub fn editing_layer(&self) -> bool {
        self.layer_editor.is_some()
    }

    /// One brush step on the pending layer: the first step takes the layer out of the
    /// review into an editor of its own for the stroke.
    pub fn paint_layer(
        &mut self,
        stroke: &mut Stroke,
        ct: &CtVolume,
        world: Point3<f64>,
    ) -> Result<(), ToolError> {
        let Some(review) = self.review.as_mut() else {
            return Ok(());
        };
        if self.layer_editor.is_none() {
            let placeholder = Volume::filled(Geometry::axis_aligned([1; 3], [1.0; 3], [0.0; 3]), 0)
                .expect("1 voxel");
            let layer = std::mem::replace(&mut review.layer, placeholder);
            let mut ed = Editor::new(layer, LabelTable::default());
            ed.begin("edit proposal");
            self.layer_editor = Some(ed);
        }
        if let Some(ed) = self.layer_editor.as_mut() {
            let changed = stroke.add_point(ed, Some(ct), world)?;
            self.layer_changed = VoxelBox::merge(self.layer_changed, changed);
        }
        Ok(())
    }

    /// Ends a stroke on the layer: the layer goes back to the review, whose pending
    /// instances are re-derived from it. Returns false when no such stroke ran.
    pub fn finish_layer_stroke(&mut self, ct: &CtVolume) -> bool {
        let Some(mut ed) = self.layer_editor.take() else {
            return false;
        };
        ed.commit();
        let (layer, _, _) = ed.into_parts();
        if let Some(review) = self.review.as_mut() {
            review.layer = layer;
            review.refresh(ct);
        }
        true
    }

    /// The pending layer as it is now (while a stroke edits it, the stroke's copy).
    pub fn layer(&self) -> Option<&LabelVolume> {
        match &self.layer_editor {
            Some(ed) => Some(ed.labels()),
            None => self.review.as_ref().map(|r| &r.layer),
        }
    }

    /// Marks the whole layer for the display again (after another layer was shown).
    pub fn show_whole_layer(&mut self) {
        self.layer_replaced = true;
    }

    /// What the display must refresh of the layer since the last call.
    pub fn take_layer_update(&mut self) -> Option<LayerUpdate> {
        if std::mem::take(&mut self.layer_replaced) {
            self.layer_changed = None;
            return Some(LayerUpdate::Whole);
        }
        self.layer_changed.take().map(LayerUpdate::Part)
    }
}

/// Dice of the proposal against the demo's truth for each label of the task.
fn truth_dice(truth: &LabelVolume, proposal: &LabelVolume, task: Task) -> Vec<(u8, f64)> {
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
