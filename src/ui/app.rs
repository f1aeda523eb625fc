//! The viewer application: three linked slice views, window/level, loading, help.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use egui::Color32;
use nalgebra::Point3;

mod ai;
mod compare;
mod followup;
mod journal;
mod menus;
mod panels;
mod tools;
mod views;
pub use ai::{AiFactory, AiState};
pub use compare::{CompareResult, CompareState, ExportKind, MapSource, QuantResult, TargetDetail};
pub use followup::{Display as FollowupDisplay, FollowupState};
pub use journal::{JournalState, PendingOpen};
pub use tools::ToolsState;
use views::Hover;
pub use views::view_normal;

use crate::annotate::Stroke as PaintStroke;
use crate::io::dicom::SeriesSummary;
use crate::render::SliceRenderer;
use crate::session::error_chain;
use crate::session::jobs::JobControl;
use crate::session::load::{self, LoadJob, LoadOutcome};
use crate::session::startup;
pub use crate::session::{PreparedLoad, Session, Study};
use crate::view::{Plane, ViewState, world_bounds};
use crate::volume::WindowPreset;
use crate::volume::window::{presets_with_series, standard_presets};

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
    /// A label map to open onto the study once it is loaded.
    pub labels: Option<PathBuf>,
    /// A later time point (CT, optional labels) to register onto the study once it is
    /// loaded (`pulmo BASELINE FOLLOWUP`).
    pub followup: Option<(PathBuf, Option<PathBuf>)>,
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
            labels: None,
            followup: None,
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

/// The viewer: draws the [`Session`] and turns input into changes of it; the view,
/// tool and panel settings are its own.
pub struct PulmoApp {
    /// The open study, its labels, journal and AI proposals.
    pub session: Session,
    pub views: [ViewState; 3],
    pub cursor_mm: Point3<f64>,
    pub window_center_hu: f64,
    pub window_width_hu: f64,
    pub presets: Vec<WindowPreset>,
    pub linear: bool,
    pub show_labels: bool,
    pub outline: bool,
    pub label_opacity: f32,
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
    /// The open study's CT and labels are on the GPU.
    study_uploaded: bool,
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
    pub save_error: Option<String>,
    /// Set by PULMO_BENCH_FIRST_IMAGE=1: print the time to the first painted image and quit.
    bench_first_image: bool,
    painted_frames: u32,
    /// AI proposals: worker, running job, the proposal under review.
    pub ai: AiState,
    /// The Compare and Quantification panels.
    pub compare: CompareState,
    /// The Follow-up window: another time point registered onto the open study.
    pub followup: FollowupState,
    /// The unsaved-edits questions.
    pub journal: JournalState,
    /// Settings of the annotation tools panel.
    pub tools: ToolsState,
    /// Labels and a follow-up to open once the first study is loaded.
    after_load: Option<AfterLoad>,
}

const MAX_RECENT: usize = 10;

/// What the command line asked to open onto the first study.
struct AfterLoad {
    labels: Option<PathBuf>,
    /// A later CT and its optional labels.
    followup: Option<(PathBuf, Option<PathBuf>)>,
}

impl PulmoApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        startup::mark("window and GPU device created (app starts)");
        let has_gpu = if let Some(rs) = cc.wgpu_render_state.as_ref() {
            let renderer = SliceRenderer::new(&rs.device, rs.target_format);
            let other = views::OtherStudyRenderer(SliceRenderer::new(&rs.device, rs.target_format));
            let mut guard = rs.renderer.write();
            guard.callback_resources.insert(renderer);
            guard.callback_resources.insert(other);
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
        let lung = WindowPreset::lung();
        let mut app = Self {
            session: Session::new(options.journal_dir.clone(), options.ai_factory.clone()),
            views: Plane::ALL.map(ViewState::new),
            cursor_mm: Point3::origin(),
            window_center_hu: lung.center_hu,
            window_width_hu: lung.width_hu,
            presets: standard_presets(),
            linear: true,
            show_labels: true,
            outline: false,
            label_opacity: 0.35,
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
            study_uploaded: false,
            bench_first_image: std::env::var("PULMO_BENCH_FIRST_IMAGE").is_ok_and(|v| v == "1"),
            painted_frames: 0,
            tool: Tool::Navigate,
            brush_radius_mm: 5.0,
            brush_3d: false,
            brush_square: false,
            active_label: crate::annotate::GGO,
            stroke: None,
            save_error: None,
            ai: AiState::default(),
            compare: CompareState::default(),
            followup: FollowupState::default(),
            journal: JournalState::default(),
            tools: ToolsState::default(),
            after_load: (options.labels.is_some() || options.followup.is_some()).then(|| {
                AfterLoad {
                    labels: options.labels.clone(),
                    followup: options.followup.clone(),
                }
            }),
        };
        match (options.preload, options.path) {
            (Some(pre), _) => {
                app.remember(&pre.path);
                pre.job.control().set_waker(repaint_waker(&cc.egui_ctx));
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
        if let Some(job) = self.loading.take() {
            self.finish_load(ctx, job.wait().into());
        }
    }

    /// Makes `job` the running load, cancelling the one it replaces.
    fn replace_load(&mut self, job: LoadJob) {
        if let Some(old) = self.loading.replace(job) {
            old.control().cancel();
        }
    }

    pub fn start_demo(&mut self, ctx: &egui::Context) {
        let job = load::start_demo(self.demo.clone(), job_control(ctx));
        self.replace_load(job);
    }

    pub fn start_load(&mut self, ctx: &egui::Context, path: PathBuf, series: Option<String>) {
        self.remember(&path);
        let job = load::start_load(path, series, job_control(ctx));
        self.replace_load(job);
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
            LoadOutcome::Loaded(study) => {
                self.set_study(ctx, *study);
                if let Some(AfterLoad { labels, followup }) = self.after_load.take() {
                    if let Some(l) = labels {
                        self.open_labels_from(&l);
                    }
                    if let Some((ct, other_labels)) = followup {
                        self.followup.open = true;
                        self.followup.other_ct = Some(ct);
                        self.followup.other_labels = other_labels;
                        self.followup.other_is = crate::session::followup::OtherIs::Followup;
                        self.start_followup(ctx);
                    }
                }
            }
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
        self.presets = match &study.meta {
            Some(meta) => presets_with_series(&meta.windows),
            None => standard_presets(),
        };
        self.warnings_open = !study.warnings.is_empty();
        self.error = None;
        let title = format!("pulmo — {}", study.name);
        ctx.send_viewport_cmd(egui::ViewportCommand::Title(title));
        self.session.open(study);
        self.study_uploaded = false;
        self.labels_dirty = true;
        self.compare.reset();
        self.followup.reset();
    }

    /// Undoes (or redoes) the last edit of the open study.
    pub fn undo(&mut self, redo: bool) {
        if self.stroke.is_some() {
            return;
        }
        self.session.undo(redo);
    }
}

/// A job control whose waker repaints the UI.
fn job_control(ctx: &egui::Context) -> JobControl {
    let control = JobControl::default();
    control.set_waker(repaint_waker(ctx));
    control
}

fn repaint_waker(ctx: &egui::Context) -> crate::session::jobs::Waker {
    let ctx = ctx.clone();
    Arc::new(move || ctx.request_repaint())
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
        if self.bench_first_image && self.session.study.is_some() && self.study_uploaded {
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
        self.followup_window_ui(&ctx);
        self.journal_dialogs_ui(&ctx);
        // Completed edits reach the journal (synced) before the frame is drawn.
        self.session.record_edits(self.stroke.is_some());
        // Last, so edits made while handling this frame's input (strokes, undo) reach
        // the GPU before this frame is rendered.
        self.upload_if_needed(frame);
    }
}
