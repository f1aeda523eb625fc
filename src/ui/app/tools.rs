//! The annotation tools panel beyond brush and eraser: HU-limited painting, the
//! overwrite policy, region growing, morphology on the active label and interpolation
//! between axial slices. Every edit goes through the study's editor (locks, policy) as
//! one undo step; the editor hands its changed box to the display and the journal.

use egui::{Color32, Pos2, Rect};
use nalgebra::Point3;

use super::{PulmoApp, Study, Tool};
use crate::annotate::tools::normal_axis;
use crate::annotate::{
    Editor, LEFT_LUNG, Morphology, OverwritePolicy, RIGHT_LUNG, RegionGrow, Scope, flood_fill,
    interpolate_between, interpolate_slices, label_bbox, morphology, polygon_fill,
};
use crate::view::Plane;
use crate::view::ViewFrame;
use crate::volume::VoxelBox;

/// Settings of the annotation tools panel.
#[derive(Debug, Clone)]
pub struct ToolsState {
    /// Limit brush strokes to `hu_lo..=hu_hi`.
    pub hu_limit: bool,
    pub hu_lo: i16,
    pub hu_hi: i16,
    /// The label `OverwritePolicy::OnlyLabel` paints over.
    pub policy_label: u8,
    /// Region growing: limit the region to the HU range.
    pub grow_hu: bool,
    /// Region growing in 3D (else in the clicked view's plane).
    pub grow_3d: bool,
    /// Region growing only inside the current lung labels.
    pub grow_in_lungs: bool,
    pub morph_radius_mm: f64,
    pub island_mm3: f64,
    /// Morphology in 3D (else slice by slice in the active view's plane).
    pub morph_3d: bool,
    /// Interpolate only between these axial slices (voxel index along the axial normal).
    pub interp_range: Option<(usize, usize)>,
    /// Vertices of the polygon being drawn, and its view.
    pub polygon: Vec<Point3<f64>>,
    pub polygon_view: usize,
    /// The result of the last tool, shown in the panel.
    pub message: Option<String>,
}

impl Default for ToolsState {
    fn default() -> Self {
        Self {
            hu_limit: false,
            hu_lo: -800,
            hu_hi: -300,
            policy_label: LEFT_LUNG,
            grow_hu: true,
            grow_3d: false,
            grow_in_lungs: false,
            morph_radius_mm: 3.0,
            island_mm3: 100.0,
            morph_3d: true,
            interp_range: None,
            polygon: Vec::new(),
            polygon_view: 0,
            message: None,
        }
    }
}

impl ToolsState {
    /// The HU range, ordered.
    pub fn hu_range(&self) -> (i16, i16) {
        (self.hu_lo.min(self.hu_hi), self.hu_lo.max(self.hu_hi))
    }

    /// The brush's HU limit when enabled.
    pub fn brush_hu_range(&self) -> Option<(i16, i16)> {
        self.hu_limit.then(|| self.hu_range())
    }
}

impl Tool {
    /// Tools acting on single clicks (not drags) in the views.
    pub fn is_click_tool(self) -> bool {
        matches!(self, Tool::RegionGrow | Tool::Polygon)
    }
}

/// Voxels changed by the newest undo step when it is the one just made.
fn last_step_voxels(editor: &Editor, changed: Option<VoxelBox>) -> usize {
    if changed.is_none() {
        return 0;
    }
    editor.history().undo_steps().next().map_or(0, |s| s.voxels)
}

impl PulmoApp {
    /// The tool panel's extra annotation tools (below brush and eraser), folded by
    /// default so the panels below stay in view.
    pub(super) fn annotation_tools_ui(&mut self, ui: &mut egui::Ui) {
        egui::CollapsingHeader::new("Annotation tools")
            .default_open(false)
            .show(ui, |ui| self.annotation_tools_body(ui));
    }

    fn annotation_tools_body(&mut self, ui: &mut egui::Ui) {
        let t = &mut self.tools;
        ui.checkbox(&mut t.hu_limit, "Limit brush to HU range");
        ui.horizontal(|ui| {
            ui.label("HU");
            ui.add(egui::DragValue::new(&mut t.hu_lo).range(-1024..=3071))
                .on_hover_text("lowest HU");
            ui.label("to");
            ui.add(egui::DragValue::new(&mut t.hu_hi).range(-1024..=3071))
                .on_hover_text("highest HU");
        });
        if let Some(study) = self.session.study.as_mut() {
            let policy = &mut study.editor.policy;
            let text = match *policy {
                OverwritePolicy::Everything => "Paint over everything".to_owned(),
                OverwritePolicy::OnlyBackground => "Paint only background".to_owned(),
                OverwritePolicy::OnlyLabel(l) => format!("Paint only over label {l}"),
            };
            egui::ComboBox::from_label("Overwrite")
                .selected_text(text)
                .show_ui(ui, |ui| {
                    ui.selectable_value(
                        policy,
                        OverwritePolicy::Everything,
                        "Paint over everything",
                    );
                    ui.selectable_value(
                        policy,
                        OverwritePolicy::OnlyBackground,
                        "Paint only background",
                    );
                    ui.selectable_value(
                        policy,
                        OverwritePolicy::OnlyLabel(t.policy_label),
                        "Paint only over the chosen label",
                    );
                });
            ui.horizontal(|ui| {
                let l = ui.label("chosen label");
                let r = ui
                    .add(egui::DragValue::new(&mut t.policy_label).range(1..=255))
                    .labelled_by(l.id);
                if r.changed() && matches!(*policy, OverwritePolicy::OnlyLabel(_)) {
                    *policy = OverwritePolicy::OnlyLabel(t.policy_label);
                }
            });
        }

        ui.separator();
        ui.heading("Region growing");
        ui.selectable_value(&mut self.tool, Tool::RegionGrow, "Region grow (G)");
        let t = &mut self.tools;
        ui.checkbox(&mut t.grow_hu, "Grow within HU range");
        ui.checkbox(&mut t.grow_3d, "Grow in 3D");
        ui.checkbox(&mut t.grow_in_lungs, "Only inside the lungs");

        ui.separator();
        ui.heading("Polygon");
        ui.selectable_value(&mut self.tool, Tool::Polygon, "Polygon (P)");
        let mut fill_polygon = false;
        ui.horizontal(|ui| {
            ui.label(format!("{} vertices", self.tools.polygon.len()));
            fill_polygon = ui.button("Fill polygon").clicked();
            if ui.button("Clear polygon").clicked() {
                self.tools.polygon.clear();
            }
        });
        let t = &mut self.tools;

        ui.separator();
        ui.heading("Active label");
        ui.horizontal(|ui| {
            let l = ui.label("radius mm");
            ui.add(
                egui::DragValue::new(&mut t.morph_radius_mm)
                    .range(0.1..=50.0)
                    .speed(0.1),
            )
            .labelled_by(l.id);
        });
        ui.checkbox(&mut t.morph_3d, "Morphology in 3D");
        let mut op = None;
        ui.horizontal(|ui| {
            if ui.button("Dilate").clicked() {
                op = Some(Morphology::Dilate {
                    radius_mm: t.morph_radius_mm,
                });
            }
            if ui.button("Erode").clicked() {
                op = Some(Morphology::Erode {
                    radius_mm: t.morph_radius_mm,
                });
            }
        });
        ui.horizontal(|ui| {
            if ui.button("Fill holes").clicked() {
                op = Some(Morphology::FillHoles);
            }
            if ui.button("Keep largest").clicked() {
                op = Some(Morphology::KeepLargest);
            }
        });
        ui.horizontal(|ui| {
            if ui.button("Remove islands").clicked() {
                op = Some(Morphology::RemoveIslands {
                    min_volume_mm3: t.island_mm3,
                });
            }
            ui.add(
                egui::DragValue::new(&mut t.island_mm3)
                    .range(0.0..=1.0e6)
                    .speed(10.0)
                    .prefix("< ")
                    .suffix(" mm³"),
            )
            .on_hover_text("smallest island kept");
        });

        let mut between = t.interp_range.is_some();
        let mut interpolate = false;
        ui.horizontal(|ui| {
            interpolate = ui.button("Interpolate slices").clicked();
            if ui.checkbox(&mut between, "between").changed() {
                t.interp_range = None;
                if between {
                    let range = self.session.study.as_ref().and_then(|s| {
                        let g = &s.editor.labels().geometry;
                        let ax = normal_axis(g, Plane::Axial);
                        label_bbox(s.editor.labels(), self.active_label)
                            .map(|b| (b.min[ax], b.max[ax]))
                    });
                    t.interp_range = Some(range.unwrap_or((0, 0)));
                }
            }
        });
        if let Some((from, to)) = t.interp_range.as_mut() {
            ui.horizontal(|ui| {
                let l = ui.label("axial k from");
                ui.add(egui::DragValue::new(from)).labelled_by(l.id);
                let l = ui.label("to");
                ui.add(egui::DragValue::new(to)).labelled_by(l.id);
            });
        }
        if let Some(msg) = &self.tools.message {
            ui.label(msg.clone());
        }
        if let Some(op) = op {
            self.apply_morphology(op);
        }
        if interpolate {
            self.interpolate_active_label();
        }
        if fill_polygon {
            self.fill_polygon();
        }
    }

    fn busy(&self) -> bool {
        self.stroke.is_some()
    }

    /// Region growing from a click at `world` in view `view`.
    pub(super) fn region_grow_at(&mut self, study: &mut Study, view: usize, world: Point3<f64>) {
        if self.busy() {
            return;
        }
        let g = &study.ct.geometry;
        let v = g.voxel_at_world(world);
        if !g.contains_voxel(v) {
            return;
        }
        let seed = [v.x, v.y, v.z].map(|x| x.round().max(0.0) as usize);
        let scope = if self.tools.grow_3d {
            Scope::Volume
        } else {
            Scope::Plane(self.views[view].plane)
        };
        let mut params = RegionGrow::new(seed, self.active_label, scope);
        if self.tools.grow_hu {
            params.hu_range = Some(self.tools.hu_range());
        }
        if self.tools.grow_in_lungs {
            params.within_labels = Some(vec![LEFT_LUNG, RIGHT_LUNG]);
        }
        match flood_fill(&mut study.editor, &params, Some(&study.ct)) {
            Ok(changed) => {
                let n = last_step_voxels(&study.editor, changed);
                self.tools.message = Some(format!("Region growing: {n} voxels filled"));
            }
            Err(e) => self.save_error = Some(e.to_string()),
        }
    }

    /// A click of a click tool at `world` in view `view`.
    pub(super) fn tool_click(&mut self, study: &mut Study, view: usize, world: Point3<f64>) {
        match self.tool {
            Tool::RegionGrow => self.region_grow_at(study, view, world),
            Tool::Polygon => {
                if self.tools.polygon_view != view {
                    self.tools.polygon.clear();
                    self.tools.polygon_view = view;
                }
                self.tools.polygon.push(world);
            }
            _ => {}
        }
    }

    /// The polygon being drawn, in its view.
    pub(super) fn polygon_overlay(
        &self,
        painter: &egui::Painter,
        frame: &ViewFrame,
        rect: Rect,
        view: usize,
    ) {
        if self.tools.polygon.is_empty() || self.tools.polygon_view != view {
            return;
        }
        let pts: Vec<Pos2> = self
            .tools
            .polygon
            .iter()
            .map(|&p| {
                let (px, _) = frame.px_at_world(p);
                Pos2::new(rect.min.x + px.x as f32, rect.min.y + px.y as f32)
            })
            .collect();
        let color = Color32::from_rgb(255, 200, 0);
        let mut closed = pts.clone();
        closed.push(pts[0]);
        painter.add(egui::Shape::line(closed, egui::Stroke::new(1.5, color)));
        for p in pts {
            painter.circle_filled(p, 3.0, color);
        }
    }

    /// Fills the drawn polygon with the active label (one undo step) and clears it.
    fn fill_polygon(&mut self) {
        if self.busy() {
            return;
        }
        let vertices = std::mem::take(&mut self.tools.polygon);
        let plane = self.views[self.tools.polygon_view].plane;
        let label = self.active_label;
        let Some(study) = self.session.study.as_mut() else {
            return;
        };
        match polygon_fill(&mut study.editor, plane, &vertices, label) {
            Ok(changed) => {
                let n = last_step_voxels(&study.editor, changed);
                self.tools.message = Some(format!("Polygon fill: {n} voxels filled"));
            }
            Err(e) => self.save_error = Some(e.to_string()),
        }
    }

    fn apply_morphology(&mut self, op: Morphology) {
        if self.busy() {
            return;
        }
        let label = self.active_label;
        let scope = if self.tools.morph_3d {
            Scope::Volume
        } else {
            Scope::Plane(self.views[self.active_view].plane)
        };
        let Some(study) = self.session.study.as_mut() else {
            return;
        };
        if study.editor.is_locked(label) {
            self.tools.message = Some(format!("Label {label} is locked"));
            return;
        }
        match morphology(&mut study.editor, label, op, scope) {
            Ok(changed) => {
                let n = last_step_voxels(&study.editor, changed);
                self.tools.message = Some(format!("{}: {n} voxels changed", op.name()));
            }
            Err(e) => self.save_error = Some(e.to_string()),
        }
    }

    /// Interpolates the active label along the axial axis, between the chosen slices
    /// when a range is set (else across all its gaps), as one undo step.
    fn interpolate_active_label(&mut self) {
        if self.busy() {
            return;
        }
        let label = self.active_label;
        let range = self.tools.interp_range;
        let Some(study) = self.session.study.as_mut() else {
            return;
        };
        if study.editor.is_locked(label) {
            self.tools.message = Some(format!("Label {label} is locked"));
            return;
        }
        let result = match range {
            None => interpolate_slices(&mut study.editor, label, Plane::Axial),
            Some((a, b)) => interpolate_between(&mut study.editor, label, a.min(b), a.max(b)),
        };
        match result {
            Ok(changed) => {
                let n = last_step_voxels(&study.editor, changed);
                self.tools.message = Some(format!("Interpolation: {n} voxels filled"));
            }
            Err(e) => self.save_error = Some(e.to_string()),
        }
    }
}
