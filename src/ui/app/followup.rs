//! The Follow-up window: another time point of the open study's patient (its CT and
//! optionally its labels), registered onto the open study in the background with
//! progress and Cancel; then the change map as a filled colour layer with its legend,
//! the volumes of each change per lung, the lesions matched over time (a click goes to
//! the lesion), the time points' table and their lesion volumes over time; the other
//! time point shown in the views, registered onto the open study's grid: in place of
//! it, as a checkerboard with it, or as their difference; and side by side on its own
//! grid, the cursors linked through the registration (a click in either view moves both
//! to the same anatomical point).

use std::path::PathBuf;
use std::sync::Arc;

use egui::{Color32, RichText};
use nalgebra::Vector3;

use super::PulmoApp;
use crate::followup::progress::TRANSITIONS;
use crate::followup::report::TimePoint;
use crate::render::{
    COMPARE_CHECKERBOARD, COMPARE_DIFFERENCE, COMPARE_OFF, COMPARE_OTHER, FLAG_LAYER_FILLED,
    FLAG_SHOW_PROPOSALS, SliceUniforms, TRANSITION_BASE, TRANSITION_COLORS,
};
use crate::session::followup::{self, FollowupRequest, FollowupResult, OtherIs, STAGES};
use crate::session::jobs::{Job, take_finished};
use crate::volume::Geometry;

type FollowupJob = Job<Result<Box<FollowupResult>, String>>;

/// State of the Follow-up window.
pub struct FollowupState {
    pub open: bool,
    pub other_ct: Option<PathBuf>,
    pub other_labels: Option<PathBuf>,
    pub other_is: OtherIs,
    job: Option<FollowupJob>,
    pub result: Option<Box<FollowupResult>>,
    pub error: Option<String>,
    /// Show the change map (it takes the proposal layer while shown).
    pub show_map: bool,
    /// How the views show the other time point (registered onto the open grid).
    pub display: Display,
    /// Checkerboard tile (mm) and the difference at full colour (HU).
    pub checker_mm: f32,
    pub difference_range_hu: f32,
    /// The other time point on its own grid beside the open study.
    pub side_by_side: bool,
    map_uploaded: bool,
    map_was_active: bool,
    /// The registered other time point is in the renderer's comparison texture.
    other_uploaded: bool,
    /// The other time point's own volume is in the side-by-side renderer.
    pub(super) native_uploaded: bool,
}

/// How the views show the other time point registered onto the open study's grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// The open study alone.
    Open,
    /// The other time point in its place.
    Other,
    /// Tiles of one and the other: misalignment shows at the tile edges.
    Checkerboard,
    /// Later minus earlier in colour over the open study.
    Difference,
}

impl Display {
    pub const ALL: [(Display, &'static str); 4] = [
        (Display::Open, "open study"),
        (Display::Other, "other time point"),
        (Display::Checkerboard, "checkerboard"),
        (Display::Difference, "difference"),
    ];

    fn compare_mode(self) -> u32 {
        match self {
            Display::Open => COMPARE_OFF,
            Display::Other => COMPARE_OTHER,
            Display::Checkerboard => COMPARE_CHECKERBOARD,
            Display::Difference => COMPARE_DIFFERENCE,
        }
    }
}

impl Default for FollowupState {
    fn default() -> Self {
        Self {
            open: false,
            other_ct: None,
            other_labels: None,
            other_is: OtherIs::Baseline,
            job: None,
            result: None,
            error: None,
            show_map: true,
            display: Display::Open,
            checker_mm: 20.0,
            difference_range_hu: 300.0,
            side_by_side: false,
            map_uploaded: false,
            map_was_active: false,
            other_uploaded: false,
            native_uploaded: false,
        }
    }
}

impl FollowupState {
    /// Forgets the other time point (a new study was opened).
    pub fn reset(&mut self) {
        if let Some(job) = self.job.take() {
            job.control().cancel();
        }
        self.result = None;
        self.error = None;
        self.display = Display::Open;
        self.map_uploaded = false;
        self.native_uploaded = false;
    }

    /// A new volume was uploaded: the comparison texture is empty again.
    pub(super) fn volume_uploaded(&mut self) {
        self.other_uploaded = false;
    }

    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Whether the change map takes the proposal layer now.
    pub fn map_active(&self) -> bool {
        self.open && self.show_map && self.result.is_some()
    }

    /// The view flags with the change map shown (`None` when it is not).
    pub(super) fn map_flags(&self, flags: u32) -> Option<u32> {
        self.map_active()
            .then_some(flags | FLAG_SHOW_PROPOSALS | FLAG_LAYER_FILLED)
    }

    /// The change map as layer values when it must be uploaded (then call
    /// [`FollowupState::map_uploaded`]).
    pub(super) fn pending_map(&self) -> Option<Vec<u8>> {
        if self.map_uploaded {
            return None;
        }
        self.pending_map_values()
    }

    /// The change map as layer values while it is shown.
    pub(super) fn pending_map_values(&self) -> Option<Vec<u8>> {
        if !self.map_active() {
            return None;
        }
        self.result.as_ref().map(|r| {
            r.transitions
                .voxels
                .iter()
                .map(|&c| if c >= 2 { TRANSITION_BASE + c } else { 0 })
                .collect()
        })
    }

    pub(super) fn map_uploaded(&mut self) {
        self.map_uploaded = true;
    }

    /// Another overlay took the layer: the map is uploaded again when it shows next.
    pub(super) fn layer_taken(&mut self) {
        self.map_uploaded = false;
    }

    /// The registered other time point to upload into the comparison texture
    /// (`Some(Some(hu))`), or `Some(None)` to empty it; `None` when it is as it should be.
    pub(super) fn pending_other_ct(&self) -> Option<Option<&[i16]>> {
        match (&self.result, self.other_uploaded) {
            (Some(r), false) => Some(Some(r.other_ct.voxels.as_slice())),
            (None, true) => Some(None),
            _ => None,
        }
    }

    pub(super) fn other_ct_uploaded(&mut self, present: bool) {
        self.other_uploaded = present;
    }

    /// The uniforms `u` of a view of the open study with the comparison display.
    pub(super) fn comparison(&self, u: SliceUniforms, geometry: &Geometry) -> SliceUniforms {
        if !self.open || self.result.is_none() || !self.other_uploaded {
            return u;
        }
        u.with_comparison(
            self.display.compare_mode(),
            geometry,
            self.checker_mm as f64,
            self.difference_range_hu as f64,
            self.other_is == OtherIs::Baseline,
        )
    }

    /// Whether the views show the other time point on its own grid beside the open one.
    pub fn side_by_side_active(&self) -> bool {
        self.open && self.side_by_side && self.result.is_some()
    }
}

/// The time points' table (each on its own grid) and their lesion volumes over time.
pub(super) fn time_points_ui(ui: &mut egui::Ui, r: &FollowupResult) {
    use egui_plot::{Legend, Line, Plot, Points};
    egui::Grid::new("followup time points")
        .striped(true)
        .show(ui, |ui| {
            for h in [
                "time point",
                "lungs mL",
                "ground-glass mL",
                "consolidation mL",
                "% involved",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for t in &r.time_points {
                ui.label(&t.name).on_hover_text(&t.ct);
                ui.label(format!("{:.1}", t.lungs_ml));
                ui.label(format!("{:.2}", t.ggo_ml));
                ui.label(format!("{:.2}", t.consolidation_ml));
                ui.label(crate::metrics::fmt_opt(t.involvement_pct, 2));
                ui.end_row();
            }
        });
    type Of = fn(&TimePoint) -> f64;
    let series = |f: Of| -> Vec<[f64; 2]> {
        r.time_points
            .iter()
            .enumerate()
            .map(|(n, t)| [n as f64, f(t)])
            .collect()
    };
    Plot::new("followup volume over time")
        .height(160.0)
        .x_axis_label("time point (0 = baseline)")
        .y_axis_label("mL")
        .allow_scroll(false)
        .legend(Legend::default())
        .show(ui, |p| {
            for (name, color, f) in [
                (
                    "ground-glass",
                    Color32::from_rgb(230, 150, 20),
                    (|t| t.ggo_ml) as Of,
                ),
                ("consolidation", Color32::from_rgb(210, 30, 30), |t| {
                    t.consolidation_ml
                }),
                ("all lesions", Color32::from_gray(200), TimePoint::lesion_ml),
            ] {
                let points = series(f);
                p.line(Line::new(name, points.clone()).color(color));
                p.points(Points::new(name, points).color(color).radius(4.0));
            }
        });
}

fn transition_color(code: u8) -> Color32 {
    let c = TRANSITION_COLORS[(code - 2) as usize].map(|v| (v * 255.0).round() as u8);
    Color32::from_rgb(c[0], c[1], c[2])
}

impl PulmoApp {
    /// Starts registering the other time point onto the open study.
    pub fn start_followup(&mut self, ctx: &egui::Context) {
        let (Some(study), Some(other)) = (&self.session.study, &self.followup.other_ct) else {
            return;
        };
        let request = FollowupRequest {
            other_ct: other.clone(),
            other_labels: self.followup.other_labels.clone(),
            other_is: self.followup.other_is,
            open_name: study.name.clone(),
        };
        let ct = Arc::new(study.ct.clone());
        let labels = study.editor.labels().clone();
        let patient = study.meta.as_ref().and_then(|m| m.patient_id.clone());
        let f = &mut self.followup;
        f.reset();
        f.job = Some(Job::spawn(
            "follow-up",
            "the follow-up registration",
            super::job_control(ctx),
            move |control| followup::run(ct, labels, patient, request, control),
        ));
    }

    /// Blocks until a running follow-up job ends (tests).
    pub fn wait_for_followup(&mut self) {
        if let Some(job) = self.followup.job.take() {
            match job.wait() {
                Ok(Ok(r)) => self.followup.result = Some(r),
                Ok(Err(e)) => self.followup.error = Some(e),
                Err(f) => self.followup.error = Some(f.message("the follow-up registration")),
            }
        }
    }

    fn poll_followup(&mut self) {
        let f = &mut self.followup;
        match take_finished(&mut f.job) {
            Some(Ok(Ok(r))) => {
                f.result = Some(r);
                f.error = None;
                f.map_uploaded = false;
            }
            Some(Ok(Err(e))) => f.error = Some(e),
            Some(Err(failure)) => f.error = Some(failure.message("the follow-up registration")),
            None => {}
        }
    }

    /// Draws the Follow-up window when open.
    pub(super) fn followup_window_ui(&mut self, ctx: &egui::Context) {
        self.poll_followup();
        if self.followup.open {
            let mut open = true;
            // At the right, like the Compare window, so the axial view stays visible.
            let top_right = ctx.content_rect().right_top() + egui::vec2(-12.0, 40.0);
            egui::Window::new("Follow-up")
                .open(&mut open)
                .pivot(egui::Align2::RIGHT_TOP)
                .default_pos(top_right)
                .default_width(560.0)
                .default_height(760.0)
                .vscroll(true)
                .show(ctx, |ui| self.followup_ui(ui));
            self.followup.open &= open;
        }
        let active = self.followup.map_active();
        if self.followup.map_was_active && !active {
            self.session.proposals.show_whole_layer();
        }
        if !active {
            self.followup.map_uploaded = false;
        }
        self.followup.map_was_active = active;
    }

    fn followup_ui(&mut self, ui: &mut egui::Ui) {
        if self.session.study.is_none() {
            ui.label("Open a study first: the other time point is registered onto it.");
            return;
        }
        ui.label(
            "The open study stays as it is; the other time point of the same patient is \
             registered onto it (rigid, affine, then deformable inside the lungs).",
        );
        ui.horizontal(|ui| {
            ui.label("Other time point:");
            let text = self
                .followup
                .other_ct
                .as_ref()
                .map_or("(none)".to_string(), |p| p.display().to_string());
            ui.monospace(text);
        });
        ui.horizontal(|ui| {
            if ui.button("Choose CT file…").clicked()
                && let Some(p) = rfd::FileDialog::new()
                    .add_filter(
                        "CT volume",
                        &["dcm", "nii", "gz", "nrrd", "nhdr", "DICOMDIR"],
                    )
                    .pick_file()
            {
                self.followup.other_ct = Some(p);
            }
            if ui.button("Choose DICOM folder…").clicked()
                && let Some(p) = rfd::FileDialog::new().pick_folder()
            {
                self.followup.other_ct = Some(p);
            }
        });
        ui.horizontal(|ui| {
            ui.label("Its labels:");
            let text = self
                .followup
                .other_labels
                .as_ref()
                .map_or("(none: the lesion model proposes them)".to_string(), |p| {
                    p.display().to_string()
                });
            ui.monospace(text);
            if ui.button("Choose…").clicked()
                && let Some(p) = rfd::FileDialog::new()
                    .add_filter("label map", &["gz", "nii", "nrrd", "nhdr"])
                    .pick_file()
            {
                self.followup.other_labels = Some(p);
            }
            if self.followup.other_labels.is_some() && ui.small_button("×").clicked() {
                self.followup.other_labels = None;
            }
        });
        ui.horizontal(|ui| {
            ui.label("It is the");
            ui.radio_value(
                &mut self.followup.other_is,
                OtherIs::Baseline,
                "baseline (earlier)",
            );
            ui.radio_value(
                &mut self.followup.other_is,
                OtherIs::Followup,
                "follow-up (later)",
            );
        });
        let running = self.followup.is_running();
        ui.horizontal(|ui| {
            if ui
                .add_enabled(
                    self.followup.other_ct.is_some() && !running,
                    egui::Button::new("Register and map changes"),
                )
                .clicked()
            {
                let ctx = ui.ctx().clone();
                self.start_followup(&ctx);
            }
            if let Some(job) = &self.followup.job {
                let p = job.control().progress();
                let stage = STAGES.get(p.stage).copied().unwrap_or("");
                ui.spinner();
                let pct = (p.done * 100)
                    .checked_div(p.total)
                    .map_or(String::new(), |v| format!(" {v} %"));
                ui.label(format!("{stage}{pct}"));
                if ui.button("Cancel").clicked() {
                    job.control().cancel();
                }
            }
        });
        if let Some(e) = &self.followup.error {
            ui.label(RichText::new(e).color(Color32::from_rgb(255, 120, 100)));
        }
        let Some(r) = &self.followup.result else {
            return;
        };
        ui.separator();
        for n in &r.notes {
            ui.label(RichText::new(format!("Note: {n}")).color(Color32::YELLOW));
        }
        let rep = &r.report;
        ui.label(format!(
            "Registered in {:.1} s; lung overlap (Dice) {} after affine, {} final; \
             largest deformation {:.1} mm{}",
            r.seconds,
            rep.lung_dice_affine
                .map_or("-".into(), |d| format!("{d:.3}")),
            rep.lung_dice_final
                .map_or("-".into(), |d| format!("{d:.3}")),
            rep.largest_displacement_mm,
            rep.jacobian.map_or(String::new(), |j| format!(
                "; Jacobian {:.2}..{:.2}, folded {:.3} %",
                j.min, j.max, j.folded_pct
            )),
        ));
        ui.checkbox(&mut self.followup.show_map, "Show change map");
        ui.horizontal(|ui| {
            ui.label("Views show:");
            for (d, name) in Display::ALL {
                ui.radio_value(&mut self.followup.display, d, name);
            }
        });
        match self.followup.display {
            Display::Checkerboard => {
                ui.add(
                    egui::Slider::new(&mut self.followup.checker_mm, 4.0..=80.0).text("tile (mm)"),
                );
            }
            Display::Difference => {
                ui.add(
                    egui::Slider::new(&mut self.followup.difference_range_hu, 50.0..=1500.0)
                        .text("HU at full colour"),
                );
                ui.label(
                    "Later minus earlier: red where the later scan is denser, blue where it \
                     is less dense.",
                );
            }
            _ => {}
        }
        ui.checkbox(
            &mut self.followup.side_by_side,
            "Side by side: the other time point on its own grid, cursors linked through \
             the registration",
        );
        ui.label("Volumes of each change (mL):");
        let regions: Vec<_> = ["both", "left", "right"]
            .iter()
            .filter_map(|n| r.volumes.regions.iter().find(|x| x.region == *n))
            .collect();
        egui::Grid::new("followup volumes")
            .striped(true)
            .show(ui, |ui| {
                ui.label("");
                ui.label("change");
                for reg in &regions {
                    ui.label(match reg.region.as_str() {
                        "both" => "both lungs",
                        "left" => "left lung",
                        _ => "right lung",
                    });
                }
                ui.end_row();
                for (code, name) in TRANSITIONS.iter().skip(2) {
                    let (rect, _) =
                        ui.allocate_exact_size(egui::Vec2::splat(12.0), egui::Sense::hover());
                    ui.painter().rect_filled(rect, 2.0, transition_color(*code));
                    ui.label(*name);
                    for reg in &regions {
                        ui.label(format!("{:.2}", reg.ml[*code as usize]));
                    }
                    ui.end_row();
                }
            });
        ui.label(format!(
            "Consolidation progression {:.2} mL (red: new consolidation, ground-glass -> \
             consolidation), recovery {:.2} mL (green: resolved consolidation, consolidation \
             -> ground-glass).",
            r.volumes.progression_ml, r.volumes.recovery_ml
        ));
        ui.collapsing("By lung third", |ui| {
            egui::Grid::new("followup thirds")
                .striped(true)
                .show(ui, |ui| {
                    ui.label("region");
                    for (_, name) in TRANSITIONS.iter().skip(2) {
                        ui.label(*name);
                    }
                    ui.end_row();
                    for reg in r.volumes.regions.iter().filter(|x| x.region.contains(' ')) {
                        ui.label(&reg.region);
                        for code in 2..10 {
                            ui.label(format!("{:.2}", reg.ml[code]));
                        }
                        ui.end_row();
                    }
                });
        });
        ui.separator();
        ui.label(format!("Lesions over time: {}", r.lesions.len()));
        let g = r.transitions.geometry.clone();
        let mut go_to = None;
        for (n, m) in r.lesions.iter().enumerate().take(50) {
            let text = format!("{:>2}. {}", n + 1, m.summary());
            if ui.button(RichText::new(text).monospace()).clicked() {
                let centre = Vector3::from_fn(|a, _| {
                    m.box_start[a] as f64 + (m.box_size[a] as f64 - 1.0) / 2.0
                });
                go_to = Some(g.world_at_voxel(centre));
            }
        }
        ui.separator();
        egui::CollapsingHeader::new("Time points and lesion volume over time")
            .default_open(true)
            .show(ui, |ui| time_points_ui(ui, r));
        if let Some(p) = go_to {
            self.cursor_mm = p;
        }
    }
}
