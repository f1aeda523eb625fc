//! The viewer application: three linked slice views, window/level, loading, help.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, TryRecvError};
use eframe::egui_wgpu;
use egui::{Color32, Key, Pos2, Rect, Sense, Stroke, Vec2};
use nalgebra::{Point3, Vector2, Vector3};

mod ai;
mod compare;
mod journal;
mod tools;
pub use ai::{AiFactory, AiState};
pub use compare::{CompareResult, CompareState, ExportKind, MapSource, QuantResult, TargetDetail};
pub use journal::{JournalState, PendingOpen};
pub use tools::ToolsState;

use crate::annotate::{
    Brush, BrushExtent, BrushShape, Editor, LabelTable, Stroke as PaintStroke, VoxelBox,
};
use crate::io::dicom::{self, DicomError, LoadStage, SeriesMeta, SeriesSummary};
use crate::io::{IoError, LoadedCt, load_ct};
use crate::session::startup;
use crate::render::{
    FLAG_LINEAR, FLAG_OUTLINE, FLAG_SHOW_LABELS, FLAG_SHOW_PROPOSALS, LabelColors, SliceRenderer,
    SliceUniforms,
};
use crate::view::{Plane, ViewFrame, ViewState, slice_index, slice_step_mm, world_bounds};
use crate::volume::{CtVolume, LabelVolume, Volume};

/// A window/level preset.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: String,
    pub center_hu: f64,
    pub width_hu: f64,
}

pub fn default_presets() -> Vec<Preset> {
    let p = |name: &str, c, w| Preset {
        name: name.into(),
        center_hu: c,
        width_hu: w,
    };
    vec![
        p("Lung", -600.0, 1500.0),
        p("Mediastinum", 40.0, 350.0),
        p("Bone", 500.0, 2000.0),
    ]
}

/// An open study.
pub struct Study {
    pub name: String,
    pub ct: CtVolume,
    /// The label map with its undo history (every edit goes through it).
    pub editor: Editor,
    /// The demo's exact ground truth (synthetic studies only).
    pub truth: Option<LabelVolume>,
    pub meta: Option<SeriesMeta>,
    pub warnings: Vec<String>,
    pub synthetic: bool,
    /// Identity of the study for its edit journal (file and series, or demo options).
    pub key: String,
    uploaded: bool,
}

/// What a background load sends back.
enum LoadOutcome {
    Loaded(Box<Study>),
    ChooseSeries(PathBuf, Vec<SeriesSummary>),
    Failed(String),
}

#[derive(Clone)]
struct LoadJob {
    what: String,
    rx: Receiver<LoadOutcome>,
    cancel: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    stage: Arc<AtomicUsize>,
}

/// Options for starting the app (tests use a small demo).
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub path: Option<PathBuf>,
    pub series: Option<String>,
    pub demo: crate::demo::DemoOptions,
    /// Where the recent-files list is kept (None: not persisted).
    pub recent_file: Option<PathBuf>,
    /// The AI worker's models (default: built-in weights).
    pub ai_factory: AiFactory,
    /// Folder of the edit journals (None: edits are not journaled; the viewer passes
    /// `session::journal::default_dir()`).
    pub journal_dir: Option<PathBuf>,
    /// A load of `path` already started (takes the place of `path`).
    pub preload: Option<PreparedLoad>,
}

impl Default for AppOptions {
    fn default() -> Self {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        Self {
            path: None,
            series: None,
            demo: Default::default(),
            recent_file: config.map(|c| c.join("pulmo").join("recent.txt")),
            ai_factory: AiFactory::default(),
            journal_dir: None,
            preload: None,
        }
    }
}

/// What the left mouse button does in the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Navigate,
    Brush,
    Eraser,
    /// A click grows a region of the active label from the clicked voxel.
    RegionGrow,
    /// Clicks add the vertices of a polygon, filled from the panel.
    Polygon,
}

/// Hover readout for the status bar.
#[derive(Debug, Clone, Copy)]
struct Hover {
    view: usize,
    world: Point3<f64>,
}

pub struct PulmoApp {
    pub study: Option<Study>,
    pub views: [ViewState; 3],
    pub cursor_mm: Point3<f64>,
    pub window_center_hu: f64,
    pub window_width_hu: f64,
    pub presets: Vec<Preset>,
    pub linear: bool,
    pub show_labels: bool,
    pub outline: bool,
    pub label_opacity: f32,
    pub label_table: LabelTable,
    pub maximized: Option<usize>,
    pub help_open: bool,
    pub warnings_open: bool,
    pub error: Option<String>,
    pub recent: Vec<PathBuf>,
    series_choice: Option<(PathBuf, Vec<SeriesSummary>)>,
    loading: Option<LoadJob>,
    hover: Option<Hover>,
    active_view: usize,
    demo: crate::demo::DemoOptions,
    recent_file: Option<PathBuf>,
    labels_dirty: bool,
    has_gpu: bool,
    /// The editing tool of the left mouse button.
    pub tool: Tool,
    pub brush_radius_mm: f64,
    /// Paint a 3D sphere instead of a disc in the view's plane.
    pub brush_3d: bool,
    /// Square (cube) brush instead of round.
    pub brush_square: bool,
    /// The label the brush paints.
    pub active_label: u8,
    stroke: Option<PaintStroke>,
    /// Label voxels changed since the last upload to the GPU.
    dirty_labels: Option<VoxelBox>,
    pub save_error: Option<String>,
    /// Set by PULMO_BENCH_FIRST_IMAGE=1: print the time to the first painted image and quit.
    bench_first_image: bool,
    painted_frames: u32,
    /// AI proposals: worker, running job, the proposal under review.
    pub ai: AiState,
    /// The Compare and Quantification panels.
    pub compare: CompareState,
    /// The edit journal and the unsaved-edits questions.
    pub journal: JournalState,
    /// Settings of the annotation tools panel.
    pub tools: ToolsState,
}

const MAX_RECENT: usize = 10;

impl PulmoApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        startup::mark("window and GPU device created (app starts)");
        let has_gpu = if let Some(rs) = cc.wgpu_render_state.as_ref() {
            let renderer = SliceRenderer::new(&rs.device, rs.target_format);
            rs.renderer.write().callback_resources.insert(renderer);
            true
        } else {
            false
        };
        let recent = options
            .recent_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| {
                s.lines()
                    .filter(|l| !l.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let mut app = Self {
            study: None,
            views: Plane::ALL.map(ViewState::new),
            cursor_mm: Point3::origin(),
            window_center_hu: -600.0,
            window_width_hu: 1500.0,
            presets: default_presets(),
            linear: true,
            show_labels: true,
            outline: false,
            label_opacity: 0.35,
            label_table: LabelTable::default(),
            maximized: None,
            help_open: false,
            warnings_open: false,
            error: None,
            recent,
            series_choice: None,
            loading: None,
            hover: None,
            active_view: 0,
            demo: options.demo.clone(),
            recent_file: options.recent_file.clone(),
            labels_dirty: true,
            has_gpu,
            bench_first_image: std::env::var("PULMO_BENCH_FIRST_IMAGE").is_ok_and(|v| v == "1"),
            painted_frames: 0,
            tool: Tool::Navigate,
            brush_radius_mm: 5.0,
            brush_3d: false,
            brush_square: false,
            active_label: crate::annotate::GGO,
            stroke: None,
            dirty_labels: None,
            save_error: None,
            ai: AiState::new(options.ai_factory.clone()),
            compare: CompareState::default(),
            journal: JournalState {
                dir: options.journal_dir.clone(),
                ..Default::default()
            },
            tools: ToolsState::default(),
        };
        match (options.preload, options.path) {
            (Some(pre), _) => {
                app.remember(&pre.path);
                let _ = pre.waker.set(cc.egui_ctx.clone());
                app.loading = Some(pre.job);
                cc.egui_ctx.request_repaint();
            }
            (None, Some(p)) => app.start_load(&cc.egui_ctx, p, options.series),
            (None, None) => app.start_demo(&cc.egui_ctx),
        }
        app
    }

    /// Whether a load is running.
    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// Blocks until a running load finishes (tests).
    pub fn wait_for_load(&mut self, ctx: &egui::Context) {
        if let Some(job) = self.loading.take()
            && let Ok(outcome) = job.rx.recv()
        {
            self.finish_load(ctx, outcome);
        }
    }

    fn spawn(
        &mut self,
        ctx: &egui::Context,
        what: String,
        work: impl FnOnce(&LoadCtl) -> LoadOutcome + Send + 'static,
    ) {
        if let Some(job) = self.loading.take() {
            job.cancel.store(true, Ordering::Relaxed);
        }
        self.loading = Some(spawn_load_job(
            Arc::new(OnceLock::from(ctx.clone())),
            what,
            work,
        ));
    }

    pub fn start_demo(&mut self, ctx: &egui::Context) {
        let opts = self.demo.clone();
        self.spawn(
            ctx,
            "generating the synthetic demo study".into(),
            move |_| {
                let demo = crate::demo::generate(&opts);
                LoadOutcome::Loaded(Box::new(Study {
                    name: "SYNTHETIC DEMO (not patient data)".into(),
                    editor: Editor::new(demo.truth.clone(), LabelTable::default()),
                    truth: Some(demo.truth),
                    ct: demo.ct,
                    meta: None,
                    warnings: Vec::new(),
                    synthetic: true,
                    key: format!("demo:{}:{:?}:{:?}", opts.seed, opts.dims, opts.spacing_mm),
                    uploaded: false,
                }))
            },
        );
    }

    pub fn start_load(&mut self, ctx: &egui::Context, path: PathBuf, series: Option<String>) {
        self.remember(&path);
        let what = format!("loading {}", path.display());
        self.spawn(ctx, what, load_work(path, series));
    }

    fn remember(&mut self, path: &Path) {
        self.recent.retain(|p| p != path);
        self.recent.insert(0, path.to_path_buf());
        self.recent.truncate(MAX_RECENT);
        if let Some(f) = &self.recent_file {
            let text: String = self
                .recent
                .iter()
                .map(|p| format!("{}\n", p.display()))
                .collect();
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(f, text);
        }
    }

    fn finish_load(&mut self, ctx: &egui::Context, outcome: LoadOutcome) {
        startup::mark("study received by the UI");
        match outcome {
            LoadOutcome::Loaded(study) => self.set_study(ctx, *study),
            LoadOutcome::ChooseSeries(path, series) => self.series_choice = Some((path, series)),
            LoadOutcome::Failed(msg) => self.error = Some(msg),
        }
    }

    /// Makes `study` the open study: centres the cursor, resets views, applies the
    /// series' own window as a preset.
    pub fn set_study(&mut self, ctx: &egui::Context, study: Study) {
        let (lo, hi) = world_bounds(&study.ct.geometry);
        self.cursor_mm = Point3::from((lo.coords + hi.coords) / 2.0);
        for v in &mut self.views {
            v.reset();
        }
        self.presets = default_presets();
        if let Some(meta) = &study.meta {
            for (i, w) in meta.windows.iter().enumerate() {
                self.presets.push(Preset {
                    name: w
                        .explanation
                        .clone()
                        .unwrap_or_else(|| format!("DICOM window {}", i + 1)),
                    center_hu: w.center_hu,
                    width_hu: w.width_hu,
                });
            }
        }
        self.warnings_open = !study.warnings.is_empty();
        self.error = None;
        let title = format!("pulmo — {}", study.name);
        ctx.send_viewport_cmd(egui::ViewportCommand::Title(title));
        self.study = Some(study);
        self.labels_dirty = true;
        self.ai.reset();
        self.compare.reset();
        self.open_journal();
    }

    pub fn apply_preset(&mut self, index: usize) {
        if let Some(p) = self.presets.get(index) {
            self.window_center_hu = p.center_hu;
            self.window_width_hu = p.width_hu;
        }
    }

    /// Moves the cursor `steps` slices along the normal of view `view`.
    pub fn step_slice(&mut self, view: usize, steps: f64) {
        let Some(study) = &self.study else { return };
        let g = &study.ct.geometry;
        let plane = self.views[view].plane;
        let normal = plane.screen_axes()[2];
        let step = slice_step_mm(g, plane);
        let (lo, hi) = world_bounds(g);
        let mut c = self.cursor_mm + normal * (steps * step);
        // Stay inside the volume (on the first/last slice centre).
        let lo_n = lo.coords.dot(&normal).min(hi.coords.dot(&normal)) + step / 2.0;
        let hi_n = lo.coords.dot(&normal).max(hi.coords.dot(&normal)) - step / 2.0;
        let d = c.coords.dot(&normal);
        c += normal * (d.clamp(lo_n, hi_n) - d);
        self.cursor_mm = c;
    }

    /// 1-based slice number and count of view `view` at the cursor.
    pub fn slice_of(&self, view: usize) -> Option<(usize, usize)> {
        let s = self.study.as_ref()?;
        Some(slice_index(
            &s.ct.geometry,
            self.views[view].plane,
            self.cursor_mm,
        ))
    }

    fn upload_if_needed(&mut self, frame: &eframe::Frame) {
        let Some(rs) = frame.wgpu_render_state() else {
            return;
        };
        let mut guard = rs.renderer.write();
        let Some(renderer) = guard.callback_resources.get_mut::<SliceRenderer>() else {
            return;
        };
        if let Some(study) = self.study.as_mut()
            && !study.uploaded
        {
            renderer.upload_volume(
                &rs.device,
                &rs.queue,
                study.ct.geometry.dims,
                &study.ct.voxels,
                &study.editor.labels().voxels,
            );
            study.uploaded = true;
            startup::mark("volume textures uploaded");
        }
        if let (Some(study), Some(b)) = (self.study.as_ref(), self.dirty_labels.take())
            && study.uploaded
        {
            let labels = study.editor.labels();
            let size = b.size();
            let mut data = Vec::with_capacity(size[0] * size[1] * size[2]);
            for k in b.min[2]..=b.max[2] {
                for j in b.min[1]..=b.max[1] {
                    let row = labels.geometry.index(b.min[0], j, k);
                    data.extend_from_slice(&labels.voxels[row..row + size[0]]);
                }
            }
            renderer.update_labels(&rs.queue, b.min, size, &data);
        }
        if let Some(study) = self.study.as_ref()
            && study.uploaded
        {
            if let Some(overlay) = self.compare.pending_overlay() {
                // The Compare window's agreement overlay takes the layer while shown.
                renderer.set_proposals(&rs.device, &rs.queue, Some(overlay));
                self.compare.overlay_uploaded();
            } else if self.compare.overlay_active() {
                // Proposal changes wait: the layer is re-uploaded whole when it is hidden.
            } else if self.ai.layer_replaced {
                let layer = self.ai.review.as_ref().map(|r| r.layer.voxels.as_slice());
                renderer.set_proposals(&rs.device, &rs.queue, layer);
                self.ai.layer_replaced = false;
                self.ai.layer_dirty = None;
            } else if let (Some(b), Some(review)) =
                (self.ai.layer_dirty.take(), self.ai.review.as_ref())
            {
                let layer = &review.layer;
                let size = b.size();
                let mut data = Vec::with_capacity(size[0] * size[1] * size[2]);
                for k in b.min[2]..=b.max[2] {
                    for j in b.min[1]..=b.max[1] {
                        let row = layer.geometry.index(b.min[0], j, k);
                        data.extend_from_slice(&layer.voxels[row..row + size[0]]);
                    }
                }
                renderer.update_proposals(&rs.queue, b.min, size, &data);
            }
        }
        if self.labels_dirty {
            renderer.set_label_colors(
                &rs.queue,
                &LabelColors::with_agreement(self.label_table.rgba_table()),
            );
            self.labels_dirty = false;
        }
    }

    fn uniforms(&self, frame: &ViewFrame, study: &Study) -> SliceUniforms {
        let g = &study.ct.geometry;
        let mut flags = 0;
        if self.linear {
            flags |= FLAG_LINEAR;
        }
        if self.show_labels {
            flags |= FLAG_SHOW_LABELS;
        }
        if self.outline {
            flags |= FLAG_OUTLINE;
        }
        if let Some(f) = self.compare.overlay_flags(flags) {
            flags = f;
        } else if self.ai.show && self.ai.review.is_some() {
            flags |= FLAG_SHOW_PROPOSALS;
        }
        SliceUniforms::for_view(
            frame,
            g,
            self.window_center_hu as f32,
            self.window_width_hu as f32,
            self.label_opacity,
            flags,
        )
    }

    fn menu_ui(&mut self, ui: &mut egui::Ui) {
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
                ui.separator();
                if ui
                    .add_enabled(
                        self.study.is_some(),
                        egui::Button::new("Save labels as NIfTI…"),
                    )
                    .clicked()
                {
                    self.save_labels();
                    ui.close();
                }
                if ui
                    .add_enabled(self.study.is_some(), egui::Button::new("Open labels…"))
                    .clicked()
                {
                    self.open_labels();
                    ui.close();
                }
                let dicom = self.study.as_ref().is_some_and(|s| s.meta.is_some());
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
                let (can_undo, can_redo) = self.study.as_ref().map_or((false, false), |s| {
                    (s.editor.history().can_undo(), s.editor.history().can_redo())
                });
                // The named history entries: what the next undo / redo would change.
                let (undo_name, redo_name) = self.study.as_ref().map_or((None, None), |s| {
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
                if let Some(study) = &self.study {
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
                        p.name,
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
            if let Some(study) = &self.study {
                ui.separator();
                ui.label(&study.name);
            }
        });
    }

    fn labels_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Tool");
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tool, Tool::Navigate, "Navigate (N)");
            ui.selectable_value(&mut self.tool, Tool::Brush, "Brush (B)");
            ui.selectable_value(&mut self.tool, Tool::Eraser, "Eraser (E)");
        });
        ui.add(
            egui::Slider::new(&mut self.brush_radius_mm, 0.5..=50.0)
                .text("radius mm")
                .logarithmic(true),
        );
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.brush_3d, "3D sphere");
            ui.checkbox(&mut self.brush_square, "square");
        });
        self.annotation_tools_ui(ui);
        ui.separator();
        ui.heading("Labels");
        let mut changed = false;
        for l in &mut self.label_table.labels {
            ui.horizontal(|ui| {
                let [r, g, b] = l.color;
                let (rect, _) = ui.allocate_exact_size(Vec2::splat(12.0), Sense::hover());
                ui.painter()
                    .rect_filled(rect, 2.0, Color32::from_rgb(r, g, b));
                changed |= ui
                    .checkbox(&mut l.visible, format!("{} {}", l.value, l.name))
                    .changed();
                ui.radio_value(&mut self.active_label, l.value, "paint");
                if let Some(study) = self.study.as_mut() {
                    let mut locked = study.editor.is_locked(l.value);
                    if ui.checkbox(&mut locked, "lock").changed() {
                        study.editor.set_locked(l.value, locked);
                    }
                }
            });
        }
        egui::CollapsingHeader::new("Edit labels")
            .default_open(false)
            .show(ui, |ui| {
                for l in &mut self.label_table.labels {
                    ui.horizontal(|ui| {
                        let value = ui.label(format!("Label {} name", l.value));
                        changed |= ui.color_edit_button_srgb(&mut l.color).changed();
                        let name = ui
                            .add(egui::TextEdit::singleline(&mut l.name).desired_width(140.0))
                            .labelled_by(value.id);
                        changed |= name.changed();
                    });
                }
                if ui.button("Add label").clicked() {
                    let next = (1..=255u8)
                        .find(|v| self.label_table.get(*v).is_none())
                        .unwrap_or(255);
                    let label = crate::annotate::Label {
                        value: next,
                        name: format!("label {next}"),
                        color: [200, 200, 200],
                        visible: true,
                        locked: false,
                    };
                    self.label_table.labels.push(label.clone());
                    if let Some(study) = self.study.as_mut() {
                        study.editor.update_table(|t| {
                            if t.get(next).is_none() {
                                t.labels.push(label);
                            }
                        });
                    }
                    self.active_label = next;
                    changed = true;
                }
            });
        self.labels_dirty |= changed;
        ui.separator();
        ui.heading("Window");
        ui.label(format!(
            "W {:.0} / L {:.0}",
            self.window_width_hu, self.window_center_hu
        ));
        for i in 0..self.presets.len() {
            let name = format!("{} {}", i + 1, self.presets[i].name);
            if ui.button(name).clicked() {
                self.apply_preset(i);
            }
        }
    }

    fn status_ui(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let Some(study) = &self.study else {
                ui.label("No study open");
                return;
            };
            let g = &study.ct.geometry;
            let view = self.hover.map_or(self.active_view, |h| h.view);
            if let Some(h) = self.hover {
                let v = g.voxel_at_world(h.world);
                let ijk = [v.x.round(), v.y.round(), v.z.round()];
                if g.contains_voxel(v) {
                    let (i, j, k) = (ijk[0] as usize, ijk[1] as usize, ijk[2] as usize);
                    ui.label(format!("HU {}", study.ct.get(i, j, k)));
                    ui.separator();
                    ui.label(format!("voxel ({i}, {j}, {k})"));
                    let label = study.editor.labels().get(i, j, k);
                    if label != 0 {
                        ui.separator();
                        ui.label(
                            self.label_table
                                .get(label)
                                .map_or(format!("label {label}"), |l| l.name.clone()),
                        );
                    }
                } else {
                    ui.label("outside the volume");
                }
                ui.separator();
                ui.label(format!(
                    "({:.1}, {:.1}, {:.1}) mm LPS",
                    h.world.x, h.world.y, h.world.z
                ));
            }
            ui.separator();
            if let Some((i, n)) = self.slice_of(view) {
                ui.label(format!("{} slice {i} / {n}", self.views[view].plane.name()));
            }
            ui.separator();
            ui.label(format!(
                "W {:.0} / L {:.0}",
                self.window_width_hu, self.window_center_hu
            ));
        });
    }

    fn views_ui(&mut self, ui: &mut egui::Ui) {
        let Some(mut study) = self.study.take() else {
            ui.centered_and_justified(|ui| {
                ui.label("Open a DICOM folder, NIfTI or NRRD file (File menu, or drop it here)");
            });
            return;
        };
        let full = ui.available_rect_before_wrap();
        let gap = 2.0;
        let rects: Vec<(usize, Rect)> = match self.maximized {
            Some(i) => vec![(i, full)],
            None => {
                // Axial large on the left, coronal and sagittal stacked on the right.
                let left =
                    Rect::from_min_max(full.min, Pos2::new(full.center().x - gap, full.max.y));
                let right_top = Rect::from_min_max(
                    Pos2::new(full.center().x + gap, full.min.y),
                    Pos2::new(full.max.x, full.center().y - gap),
                );
                let right_bottom = Rect::from_min_max(
                    Pos2::new(full.center().x + gap, full.center().y + gap),
                    full.max,
                );
                vec![(0, left), (1, right_top), (2, right_bottom)]
            }
        };
        self.hover = None;
        for (index, rect) in rects {
            self.view_ui(ui, &mut study, index, rect);
        }
        self.study = Some(study);
    }

    fn view_ui(&mut self, ui: &mut egui::Ui, study: &mut Study, index: usize, rect: Rect) {
        let id = ui.make_persistent_id(("slice-view", index));
        let response = ui.interact(rect, id, Sense::click_and_drag());
        let geometry = study.ct.geometry.clone();
        let g = &geometry;
        let size = Vector2::new(rect.width() as f64, rect.height() as f64);
        let frame = ViewFrame::new(g, &self.views[index], size, self.cursor_mm);
        let to_local = |p: Pos2| Vector2::new((p.x - rect.min.x) as f64, (p.y - rect.min.y) as f64);

        // Interaction.
        let (space, zoom_delta, scroll_y) = ui.input(|i| {
            // One wheel event = one slice (smoothing would skip or repeat slices).
            let wheel: f32 = i
                .events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::MouseWheel {
                        delta, modifiers, ..
                    } if !modifiers.command && !modifiers.ctrl => Some(delta.y.signum()),
                    _ => None,
                })
                .sum();
            (i.key_down(Key::Space), i.zoom_delta(), wheel)
        });
        if let Some(pos) = response.hover_pos() {
            self.hover = Some(Hover {
                view: index,
                world: frame.world_at_px(to_local(pos)),
            });
            if zoom_delta != 1.0 {
                self.views[index] =
                    frame.zoom_about(&self.views[index], to_local(pos), zoom_delta as f64);
            } else if scroll_y != 0.0 {
                self.step_slice(index, scroll_y as f64);
            }
        }
        if response.double_clicked() {
            self.maximized = if self.maximized.is_some() {
                None
            } else {
                Some(index)
            };
        } else if response.dragged_by(egui::PointerButton::Middle)
            || (space && response.dragged_by(egui::PointerButton::Primary))
        {
            let d = response.drag_delta();
            self.views[index] =
                frame.pan_by(&self.views[index], Vector2::new(d.x as f64, d.y as f64));
        } else if response.dragged_by(egui::PointerButton::Secondary) {
            let d = response.drag_delta();
            self.window_width_hu = (self.window_width_hu + d.x as f64 * 4.0).max(1.0);
            self.window_center_hu += d.y as f64 * 2.0;
        } else if self.tool.is_click_tool() {
            if response.clicked()
                && let Some(pos) = response.interact_pointer_pos()
            {
                self.tool_click(study, index, frame.world_at_px(to_local(pos)));
                self.active_view = index;
            }
        } else if self.tool != Tool::Navigate
            && (response.clicked() || response.dragged_by(egui::PointerButton::Primary))
            && let Some(pos) = response.interact_pointer_pos()
        {
            self.paint_at(study, index, frame.world_at_px(to_local(pos)));
            self.active_view = index;
        } else if (response.clicked() || response.dragged_by(egui::PointerButton::Primary))
            && let Some(pos) = response.interact_pointer_pos()
        {
            self.cursor_mm = frame.world_at_px(to_local(pos));
            self.active_view = index;
        }
        // A drag (or click) ends: the whole stroke becomes one undo step.
        if self.stroke.is_some() && !ui.input(|i| i.pointer.primary_down()) {
            self.stroke = None;
            if !self.finish_proposal_stroke(study) {
                let changed = study.editor.commit();
                self.dirty_labels = VoxelBox::merge(self.dirty_labels, changed);
            }
        }
        if response.hovered() || response.clicked() {
            self.active_view = index;
        }

        // Drawing: the GPU slice, then overlays.
        let frame = ViewFrame::new(g, &self.views[index], size, self.cursor_mm);
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 0.0, Color32::BLACK);
        if self.has_gpu {
            let uniforms = self.uniforms(&frame, study);
            painter.add(egui_wgpu::Callback::new_paint_callback(
                rect,
                SliceCallback { index, uniforms },
            ));
        }
        let (cpx, _) = frame.px_at_world(self.cursor_mm);
        let c = Pos2::new(rect.min.x + cpx.x as f32, rect.min.y + cpx.y as f32);
        let cross = Stroke::new(1.0, Color32::from_rgba_unmultiplied(80, 255, 80, 140));
        painter.line_segment(
            [Pos2::new(rect.min.x, c.y), Pos2::new(rect.max.x, c.y)],
            cross,
        );
        painter.line_segment(
            [Pos2::new(c.x, rect.min.y), Pos2::new(c.x, rect.max.y)],
            cross,
        );
        self.polygon_overlay(&painter, &frame, rect, index);
        // Brush / eraser cursor preview: the brush's footprint in this view.
        if matches!(self.tool, Tool::Brush | Tool::Eraser)
            && let Some(p) = ui.input(|i| i.pointer.hover_pos())
            && rect.contains(p)
        {
            let r = (self.brush_radius_mm / frame.mm_per_px) as f32;
            let color = if self.tool == Tool::Eraser {
                Color32::from_rgb(255, 255, 255)
            } else {
                self.label_table
                    .get(self.active_label)
                    .map_or(Color32::WHITE, |l| {
                        Color32::from_rgb(l.color[0], l.color[1], l.color[2])
                    })
            };
            let stroke = Stroke::new(1.5, color);
            if self.brush_square {
                painter.rect_stroke(
                    Rect::from_center_size(p, Vec2::splat(2.0 * r)),
                    0.0,
                    stroke,
                    egui::StrokeKind::Middle,
                );
            } else {
                painter.circle_stroke(p, r, stroke);
            }
        }
        let [l, r, t, b] = self.views[index].plane.edge_letters();
        let font = egui::FontId::proportional(16.0);
        let yellow = Color32::from_rgb(255, 220, 80);
        painter.text(
            Pos2::new(rect.min.x + 6.0, rect.center().y),
            egui::Align2::LEFT_CENTER,
            l,
            font.clone(),
            yellow,
        );
        painter.text(
            Pos2::new(rect.max.x - 6.0, rect.center().y),
            egui::Align2::RIGHT_CENTER,
            r,
            font.clone(),
            yellow,
        );
        painter.text(
            Pos2::new(rect.center().x, rect.min.y + 4.0),
            egui::Align2::CENTER_TOP,
            t,
            font.clone(),
            yellow,
        );
        painter.text(
            Pos2::new(rect.center().x, rect.max.y - 4.0),
            egui::Align2::CENTER_BOTTOM,
            b,
            font.clone(),
            yellow,
        );
        let (i, n) = slice_index(g, self.views[index].plane, self.cursor_mm);
        painter.text(
            rect.min + Vec2::new(6.0, 4.0),
            egui::Align2::LEFT_TOP,
            format!("{} {i}/{n}", self.views[index].plane.name()),
            egui::FontId::proportional(14.0),
            Color32::WHITE,
        );
        if index == self.active_view && self.maximized.is_none() {
            painter.rect_stroke(
                rect,
                0.0,
                Stroke::new(1.0, Color32::from_gray(120)),
                egui::StrokeKind::Inside,
            );
        }
        if study.synthetic {
            painter.text(
                rect.max - Vec2::new(6.0, 22.0),
                egui::Align2::RIGHT_BOTTOM,
                "SYNTHETIC",
                egui::FontId::proportional(12.0),
                Color32::from_rgb(255, 140, 0),
            );
        }
    }

    /// Paints (or erases) at a world position with the current brush, continuing the
    /// stroke of the current drag.
    fn paint_at(&mut self, study: &mut Study, view: usize, world: Point3<f64>) {
        if self.stroke.is_none() {
            let value = if self.tool == Tool::Eraser {
                0
            } else {
                self.active_label
            };
            let extent = if self.brush_3d {
                BrushExtent::Ball
            } else {
                BrushExtent::Disc(self.views[view].plane)
            };
            let brush = Brush {
                radius_mm: self.brush_radius_mm,
                shape: if self.brush_square {
                    BrushShape::Square
                } else {
                    BrushShape::Round
                },
                extent,
                value,
                hu_range: self.tools.brush_hu_range(),
            };
            if self.ai.edit_proposals && self.ai.review.is_some() {
                self.paint_proposal_at(study, brush, world);
                return;
            }
            study.editor.begin(brush.name());
            self.stroke = Some(PaintStroke::new(brush));
        }
        if self.ai.layer_editor.is_some() {
            if let Some(stroke) = self.stroke.as_ref() {
                let brush = stroke.brush;
                self.paint_proposal_at(study, brush, world);
            }
            return;
        }
        if let Some(stroke) = &mut self.stroke {
            match stroke.add_point(&mut study.editor, Some(&study.ct), world) {
                Ok(changed) => self.dirty_labels = VoxelBox::merge(self.dirty_labels, changed),
                Err(e) => self.save_error = Some(e.to_string()),
            }
        }
    }

    /// Undoes (or redoes) the last edit of the open study.
    pub fn undo(&mut self, redo: bool) {
        if self.stroke.is_some() {
            return;
        }
        if let Some(study) = self.study.as_mut() {
            let changed = if redo {
                study.editor.redo()
            } else {
                study.editor.undo()
            };
            self.dirty_labels = VoxelBox::merge(self.dirty_labels, changed);
        }
    }

    /// Opens a label map (NIfTI or NRRD on the CT's grid, e.g. from ITK-SNAP or Slicer)
    /// into the editor as one undoable step, with its ITK-SNAP label description if any.
    fn open_labels(&mut self) {
        if self.study.is_none() {
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
        let Some(study) = self.study.as_mut() else {
            return;
        };
        let read = match crate::io::Format::of_path(path) {
            crate::io::Format::Nrrd => {
                crate::io::nrrd::read_nrrd_labels(path).map_err(|e| e.to_string())
            }
            _ => crate::io::nifti::read_nifti_labels(path).map_err(|e| e.to_string()),
        };
        let labels = match read {
            Ok(r) => r.volume,
            Err(e) => {
                self.save_error = Some(format!("Could not open the label map: {e}"));
                return;
            }
        };
        if let Err(e) =
            crate::metrics::check_same_grid("CT", &study.ct.geometry, "label map", &labels.geometry)
        {
            self.save_error = Some(format!(
                "{} does not fit this CT ({e}); nothing was changed.",
                path.display()
            ));
            return;
        }
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let changed = study
            .editor
            .apply_map(&format!("Open labels {name}"), &labels);
        self.dirty_labels = VoxelBox::merge(self.dirty_labels, changed);
        let label_file = crate::annotate::itksnap::label_file_for(path);
        if label_file.is_file() {
            match std::fs::read_to_string(&label_file)
                .map_err(|e| e.to_string())
                .and_then(|t| LabelTable::from_itksnap(&t).map_err(|e| e.to_string()))
            {
                Ok(t) => {
                    self.label_table = t;
                    self.labels_dirty = true;
                }
                Err(e) => {
                    self.save_error = Some(format!(
                        "The labels were opened, but their description {} was not: {e}",
                        label_file.display()
                    ))
                }
            }
        }
    }

    /// Writes the label map as a DICOM Segmentation referencing the open series.
    fn export_seg(&mut self) {
        let Some(study) = &self.study else { return };
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
            &self.label_table,
            meta,
            &options,
        ) {
            self.save_error = Some(format!("The DICOM SEG was NOT written: {e}"));
        }
    }

    fn save_labels(&mut self) {
        if self.study.is_none() {
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

    /// Saves the label map (atomically), its ITK-SNAP label description and, when AI
    /// proposals were accepted, their provenance. Errors are shown; nothing is lost.
    pub fn save_labels_to(&mut self, path: &Path) {
        let path = path.to_path_buf();
        let Some(study) = &self.study else { return };
        if let Err(e) = crate::io::nifti::write_nifti(&path, study.editor.labels()) {
            self.save_error = Some(format!(
                "The labels were NOT saved (they are still here): {e}"
            ));
            return;
        }
        self.journal_saved();
        // The ITK-SNAP label description beside it (names and colours for ITK-SNAP/Slicer).
        let label_file = crate::annotate::itksnap::label_file_for(&path);
        if let Err(e) = std::fs::write(&label_file, self.label_table.to_itksnap()) {
            self.save_error = Some(format!(
                "The labels were saved, but not their label description {}: {e}",
                label_file.display()
            ));
        }
        if !self.ai.accepted.is_empty() {
            // Which models contributed (name, version, what was accepted).
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().to_string());
            let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
            let sidecar = path.with_file_name(format!("{stem}.provenance.json"));
            let doc = serde_json::json!({ "labels": name, "accepted_proposals": self.ai.accepted });
            if let Err(e) = std::fs::write(
                &sidecar,
                serde_json::to_string_pretty(&doc).unwrap_or_default(),
            ) {
                self.save_error = Some(format!(
                    "The labels were saved, but not their provenance file {}: {e}",
                    sidecar.display()
                ));
            }
        }
    }

    fn keys(&mut self, ctx: &egui::Context) {
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

    fn dialogs_ui(&mut self, ctx: &egui::Context) {
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
            && let Some(study) = &self.study
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

    fn loading_ui(&mut self, ctx: &egui::Context) {
        let Some(job) = &self.loading else { return };
        match job.rx.try_recv() {
            Ok(outcome) => {
                self.loading = None;
                self.finish_load(ctx, outcome);
                return;
            }
            Err(TryRecvError::Disconnected) => {
                self.loading = None;
                self.error = Some("the loader stopped unexpectedly".into());
                return;
            }
            Err(TryRecvError::Empty) => {}
        }
        let (done, total) = (
            job.done.load(Ordering::Relaxed),
            job.total.load(Ordering::Relaxed),
        );
        let stage = match job.stage.load(Ordering::Relaxed) {
            x if x == LoadStage::Decoding as usize => "decoding",
            x if x == LoadStage::Resampling as usize => "resampling",
            _ => "reading headers",
        };
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
            job.cancel.store(true, Ordering::Relaxed);
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

/// What the loader thread shares with the UI.
struct LoadCtl {
    cancel: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    stage: Arc<AtomicUsize>,
    /// The UI to wake; empty while a load started before the window exists.
    waker: Arc<OnceLock<egui::Context>>,
}

impl LoadCtl {
    fn repaint(&self) {
        if let Some(ctx) = self.waker.get() {
            ctx.request_repaint();
        }
    }
}

/// Runs `work` on a loader thread; its outcome arrives on the job's channel.
fn spawn_load_job(
    waker: Arc<OnceLock<egui::Context>>,
    what: String,
    work: impl FnOnce(&LoadCtl) -> LoadOutcome + Send + 'static,
) -> LoadJob {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let ctl = LoadCtl {
        cancel: Arc::new(AtomicBool::new(false)),
        done: Arc::new(AtomicUsize::new(0)),
        total: Arc::new(AtomicUsize::new(0)),
        stage: Arc::new(AtomicUsize::new(0)),
        waker,
    };
    let job = LoadJob {
        what,
        rx,
        cancel: ctl.cancel.clone(),
        done: ctl.done.clone(),
        total: ctl.total.clone(),
        stage: ctl.stage.clone(),
    };
    std::thread::Builder::new()
        .name("pulmo-load".into())
        .spawn(move || {
            // A panic in a loader must not take the UI down.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&ctl)))
                .unwrap_or_else(|_| {
                    LoadOutcome::Failed("the loader crashed (internal error)".into())
                });
            startup::mark("study read and decoded (loader thread)");
            let _ = tx.send(outcome);
            ctl.repaint();
        })
        .ok();
    job
}

/// Loading `path` (a file or folder; `series` picks one of several).
fn load_work(
    path: PathBuf,
    series: Option<String>,
) -> impl FnOnce(&LoadCtl) -> LoadOutcome + Send + 'static {
    move |ctl| {
        // No wake-up per slice: the loading window polls these four times a second, and
        // a repaint per slice would render frames as fast as the GPU allows while the
        // decoder needs the CPU.
        let progress = |stage: LoadStage, done: usize, total: usize| {
            ctl.stage.store(stage as usize, Ordering::Relaxed);
            ctl.done.store(done, Ordering::Relaxed);
            ctl.total.store(total, Ordering::Relaxed);
        };
        let options = dicom::LoadOptions {
            progress: Some(&progress),
            cancel: Some(&ctl.cancel),
        };
        match load_ct(&path, series.as_deref(), &options) {
            Ok(loaded) => LoadOutcome::Loaded(Box::new(study_from(&path, loaded))),
            Err(IoError::Dicom(DicomError::MultipleSeries { series, .. })) => {
                LoadOutcome::ChooseSeries(path.clone(), series)
            }
            Err(IoError::Dicom(DicomError::Cancelled)) => {
                LoadOutcome::Failed("loading was cancelled".into())
            }
            Err(e) => LoadOutcome::Failed(error_chain(&e)),
        }
    }
}

/// A load started before the window opens (`pulmo PATH`), so decoding overlaps the
/// window's creation; the app adopts it in [`PulmoApp::new`].
#[derive(Clone)]
pub struct PreparedLoad {
    path: PathBuf,
    job: LoadJob,
    waker: Arc<OnceLock<egui::Context>>,
}

impl std::fmt::Debug for PreparedLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedLoad({})", self.path.display())
    }
}

impl PreparedLoad {
    /// Starts loading `path` now, on a loader thread.
    pub fn start(path: PathBuf, series: Option<String>) -> Self {
        let waker = Arc::new(OnceLock::new());
        let job = spawn_load_job(
            waker.clone(),
            format!("loading {}", path.display()),
            load_work(path.clone(), series),
        );
        PreparedLoad { path, job, waker }
    }
}

/// An error and its causes on one line, as the user should read it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn study_from(path: &Path, loaded: LoadedCt) -> Study {
    let name = loaded
        .dicom_meta
        .as_ref()
        .and_then(|m| m.series_description.clone())
        .map(|d| format!("{d} — {}", path.display()))
        .unwrap_or_else(|| path.display().to_string());
    let key = format!(
        "{}#{}#{:?}",
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display(),
        loaded
            .dicom_meta
            .as_ref()
            .map_or("", |m| m.series_uid.as_str()),
        loaded.volume.geometry.dims
    );
    let labels: LabelVolume = Volume {
        geometry: loaded.volume.geometry.clone(),
        voxels: vec![0u8; loaded.volume.voxels.len()],
    };
    Study {
        name,
        ct: loaded.volume,
        editor: Editor::new(labels, LabelTable::default()),
        truth: None,
        meta: loaded.dicom_meta,
        warnings: loaded.warnings,
        synthetic: false,
        key,
        uploaded: false,
    }
}

/// The egui_wgpu paint callback of one view.
struct SliceCallback {
    index: usize,
    uniforms: SliceUniforms,
}

impl egui_wgpu::CallbackTrait for SliceCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(r) = resources.get_mut::<SliceRenderer>() {
            r.prepare_view(device, queue, self.index, &self.uniforms);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        if let Some(r) = resources.get::<SliceRenderer>() {
            r.paint_view(pass, self.index);
        }
    }
}

impl eframe::App for PulmoApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.loading_ui(&ctx);
        self.handle_close_request(&ctx);
        self.poll_ai();
        // Drag and drop.
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if let Some(p) = dropped.into_iter().next() {
            self.request_open(&ctx, PendingOpen::Path(p, None));
        }
        self.keys(&ctx);
        egui::Panel::top("menu").show(ui, |ui| self.menu_ui(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_ui(ui));
        egui::Panel::right("labels")
            .default_size(200.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    self.labels_ui(ui);
                    ui.separator();
                    self.ai_ui(ui);
                })
            });
        egui::CentralPanel::default()
            .frame(egui::Frame::NONE.fill(Color32::BLACK))
            .show(ui, |ui| self.views_ui(ui));
        if self.bench_first_image && self.study.as_ref().is_some_and(|s| s.uploaded) {
            // The frame after the first one with the study: its image has been presented.
            self.painted_frames += 1;
            if self.painted_frames == 1 {
                startup::mark("the frame after the first image starts");
            }
            if self.painted_frames == 2 {
                let since = startup::seconds_since_start();
                startup::mark("first image presented");
                println!("first image after {since:.3} s from process start");
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            ctx.request_repaint();
        }
        self.dialogs_ui(&ctx);
        self.compare_windows_ui(&ctx);
        self.journal_dialogs_ui(&ctx);
        // Completed edits reach the journal (synced) before the frame is drawn.
        self.journal_edits();
        // Last, so edits made while handling this frame's input (strokes, undo) reach
        // the GPU before this frame is rendered.
        self.upload_if_needed(frame);
    }
}

/// The unit vector of a view's normal (for tests and overlays).
pub fn view_normal(plane: Plane) -> Vector3<f64> {
    plane.screen_axes()[2]
}
