//! The three slice views: drawing each view (the GPU slice through a paint callback,
//! then cursor lines, labels and overlays), mouse input in a view (navigate, window/level,
//! zoom, pan, painting and click tools), keeping the GPU textures in step with the
//! session (the volume once, then the boxes the editor hands out) and the window presets.

use eframe::egui_wgpu;
use egui::{Color32, Key, Pos2, Rect, Sense, Stroke, Vec2};
use nalgebra::{Point3, Vector2, Vector3};

use super::{PulmoApp, Tool};
use crate::annotate::{Brush, BrushExtent, BrushShape, Stroke as PaintStroke};
use crate::render::{
    FLAG_LINEAR, FLAG_OUTLINE, FLAG_SHOW_LABELS, FLAG_SHOW_PROPOSALS, LabelColors, SliceRenderer,
    SliceUniforms,
};
use crate::session::proposals::LayerUpdate;
use crate::session::{Study, startup};
use crate::view::{Plane, ViewFrame, slice_index, slice_step_mm, world_bounds};

impl PulmoApp {
    pub fn apply_preset(&mut self, index: usize) {
        if let Some(p) = self.presets.get(index) {
            self.window_center_hu = p.center_hu;
            self.window_width_hu = p.width_hu;
        }
    }

    /// Moves the cursor `steps` slices along the normal of view `view`.
    pub fn step_slice(&mut self, view: usize, steps: f64) {
        let Some(study) = &self.session.study else {
            return;
        };
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
        let s = self.session.study.as_ref()?;
        Some(slice_index(
            &s.ct.geometry,
            self.views[view].plane,
            self.cursor_mm,
        ))
    }

    pub(super) fn upload_if_needed(&mut self, frame: &eframe::Frame) {
        let Some(rs) = frame.wgpu_render_state() else {
            return;
        };
        let mut guard = rs.renderer.write();
        if self.followup.side_by_side_active()
            && !self.followup.native_uploaded
            && let Some(OtherStudyRenderer(other)) =
                guard.callback_resources.get_mut::<OtherStudyRenderer>()
            && let Some(r) = self.followup.result.as_ref()
        {
            // The other time point on its own grid, with its labels.
            let ct = &r.other_native_ct;
            other.upload_volume(
                &rs.device,
                &rs.queue,
                ct.geometry.dims,
                &ct.voxels,
                &r.other_native_labels.voxels,
            );
            other.set_label_colors(
                &rs.queue,
                &LabelColors::with_overlays(self.session.label_table.rgba_table()),
            );
            self.followup.native_uploaded = true;
        }
        let Some(renderer) = guard.callback_resources.get_mut::<SliceRenderer>() else {
            return;
        };
        if let Some(study) = self.session.study.as_ref()
            && !self.study_uploaded
        {
            renderer.upload_volume(
                &rs.device,
                &rs.queue,
                study.ct.geometry.dims,
                &study.ct.voxels,
                &study.editor.labels().voxels,
            );
            self.study_uploaded = true;
            self.followup.volume_uploaded();
            startup::mark("volume textures uploaded");
        }
        if let Some(study) = self.session.study.as_mut()
            && self.study_uploaded
            && let Some(b) = study.editor.take_display_changes()
        {
            let data = study.editor.labels().box_voxels(b);
            renderer.update_labels(&rs.queue, b.min, b.size(), &data);
        }
        if let Some(study) = self.session.study.as_ref()
            && self.study_uploaded
            && let Some(other) = self.followup.pending_other_ct()
            && other.is_none_or(|o| o.len() == study.ct.voxels.len())
        {
            // The other time point registered onto this grid (comparison modes).
            renderer.set_other_ct(&rs.device, &rs.queue, other);
            self.followup.other_ct_uploaded(other.is_some());
        }
        if self.session.study.is_some() && self.study_uploaded {
            if let Some(overlay) = self.compare.pending_overlay() {
                // The Compare window's agreement overlay takes the layer while shown.
                renderer.set_proposals(&rs.device, &rs.queue, Some(overlay));
                self.compare.overlay_uploaded();
                self.followup.layer_taken();
            } else if self.compare.overlay_active() {
                // Proposal changes wait: the layer is re-uploaded whole when it is hidden.
            } else if let Some(map) = self.followup.pending_map() {
                // The Follow-up window's change map takes the layer while shown.
                renderer.set_proposals(&rs.device, &rs.queue, Some(&map));
                self.followup.map_uploaded();
            } else if self.followup.map_active() {
                // Proposal changes wait: the layer is re-uploaded whole when it is hidden.
            } else if let Some(update) = self.session.proposals.take_layer_update() {
                let layer = self.session.proposals.layer();
                match (update, layer) {
                    (LayerUpdate::Part(b), Some(layer)) => {
                        let data = layer.box_voxels(b);
                        renderer.update_proposals(&rs.queue, b.min, b.size(), &data);
                    }
                    (_, layer) => {
                        let layer = layer.map(|l| l.voxels.as_slice());
                        renderer.set_proposals(&rs.device, &rs.queue, layer);
                    }
                }
            }
        }
        if self.labels_dirty {
            let colors = LabelColors::with_overlays(self.session.label_table.rgba_table());
            renderer.set_label_colors(&rs.queue, &colors);
            if let Some(OtherStudyRenderer(other)) =
                guard.callback_resources.get_mut::<OtherStudyRenderer>()
            {
                other.set_label_colors(&rs.queue, &colors);
            }
            self.labels_dirty = false;
        }
    }

    /// The view flags of the View menu's settings (sampling, labels, outline).
    fn display_flags(&self) -> u32 {
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
        flags
    }

    pub(super) fn uniforms(&self, frame: &ViewFrame, study: &Study) -> SliceUniforms {
        let g = &study.ct.geometry;
        let mut flags = self.display_flags();
        if let Some(f) = self.compare.overlay_flags(flags) {
            flags = f;
        } else if let Some(f) = self.followup.map_flags(flags) {
            flags = f;
        } else if self.ai.show && self.session.proposals.review.is_some() {
            flags |= FLAG_SHOW_PROPOSALS;
        }
        let u = SliceUniforms::for_view(
            frame,
            g,
            self.window_center_hu as f32,
            self.window_width_hu as f32,
            self.label_opacity,
            flags,
        );
        self.followup.comparison(u, g)
    }

    pub(super) fn views_ui(&mut self, ui: &mut egui::Ui) {
        let Some(mut study) = self.session.study.take() else {
            ui.centered_and_justified(|ui| {
                ui.label("Open a DICOM folder, NIfTI or NRRD file (File menu, or drop it here)");
            });
            return;
        };
        let full = ui.available_rect_before_wrap();
        let gap = 2.0;
        let maximized = self.maximized;
        let layout = |full: Rect| -> Vec<(usize, Rect)> {
            match maximized {
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
            }
        };
        self.hover = None;
        if self.followup.side_by_side_active() {
            // The open study on the left, the other time point on its own grid right.
            let mid = full.center().x;
            let left = Rect::from_min_max(full.min, Pos2::new(mid - 3.0 * gap, full.max.y));
            let right = Rect::from_min_max(Pos2::new(mid + 3.0 * gap, full.min.y), full.max);
            for (index, rect) in layout(left) {
                self.view_ui(ui, &mut study, index, rect);
            }
            for (index, rect) in layout(right) {
                self.other_view_ui(ui, index, rect);
            }
        } else {
            for (index, rect) in layout(full) {
                self.view_ui(ui, &mut study, index, rect);
            }
        }
        self.session.study = Some(study);
    }

    /// View `index` of the other time point on its own grid (side by side): the slice
    /// through the point the registration maps the cursor to, its labels, the cursor
    /// there; a click or drag moves the open study's cursor to the point that maps there,
    /// so the two sides always show the same anatomy.
    pub(super) fn other_view_ui(&mut self, ui: &mut egui::Ui, index: usize, rect: Rect) {
        let Some(r) = self.followup.result.as_ref() else {
            return;
        };
        let id = ui.make_persistent_id(("other-view", index));
        let response = ui.interact(rect, id, Sense::click_and_drag());
        let g = r.other_native_ct.geometry.clone();
        let size = Vector2::new(rect.width() as f64, rect.height() as f64);
        let mapped = r.transform.map(&self.cursor_mm);
        let frame = ViewFrame::new(&g, &self.views[index], size, mapped);
        let to_local = |p: Pos2| Vector2::new((p.x - rect.min.x) as f64, (p.y - rect.min.y) as f64);
        let mut new_cursor = None;
        if (response.clicked() || response.dragged_by(egui::PointerButton::Primary))
            && let Some(pos) = response.interact_pointer_pos()
        {
            new_cursor = r
                .transform
                .fixed_point_of(&frame.world_at_px(to_local(pos)));
        }
        let name = r
            .request
            .other_ct
            .file_name()
            .map_or("other".into(), |n| n.to_string_lossy().to_string());
        let when = match r.request.other_is {
            crate::session::followup::OtherIs::Baseline => "baseline",
            crate::session::followup::OtherIs::Followup => "follow-up",
        };
        let (i, n) = slice_index(&g, self.views[index].plane, mapped);
        let scroll_y = ui.input(|i| {
            i.events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::MouseWheel { delta, .. } => Some(delta.y.signum()),
                    _ => None,
                })
                .sum::<f32>()
        });
        if let Some(c) = new_cursor {
            self.cursor_mm = c;
            self.active_view = index;
        }
        if response.hovered() && scroll_y != 0.0 {
            self.step_slice(index, scroll_y as f64);
        }
        if response.dragged_by(egui::PointerButton::Secondary) {
            let d = response.drag_delta();
            self.window_width_hu = (self.window_width_hu + d.x as f64 * 4.0).max(1.0);
            self.window_center_hu += d.y as f64 * 2.0;
        }
        let Some(r) = self.followup.result.as_ref() else {
            return;
        };
        let mapped = r.transform.map(&self.cursor_mm);
        let frame = ViewFrame::new(&g, &self.views[index], size, mapped);
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 0.0, Color32::BLACK);
        if self.has_gpu {
            let uniforms = SliceUniforms::for_view(
                &frame,
                &g,
                self.window_center_hu as f32,
                self.window_width_hu as f32,
                self.label_opacity,
                self.display_flags(),
            );
            painter.add(egui_wgpu::Callback::new_paint_callback(
                rect,
                SliceCallback {
                    index,
                    uniforms,
                    other_study: true,
                },
            ));
        }
        crosshair(
            &painter,
            rect,
            &frame,
            mapped,
            Color32::from_rgba_unmultiplied(80, 200, 255, 160),
        );
        painter.text(
            rect.min + Vec2::new(6.0, 4.0),
            egui::Align2::LEFT_TOP,
            format!(
                "{} {i}/{n} - {when}: {name} (own grid)",
                self.views[index].plane.name()
            ),
            egui::FontId::proportional(14.0),
            Color32::from_rgb(120, 210, 255),
        );
        painter.rect_stroke(
            rect,
            0.0,
            Stroke::new(1.0, Color32::from_rgb(60, 120, 160)),
            egui::StrokeKind::Inside,
        );
    }

    pub(super) fn view_ui(
        &mut self,
        ui: &mut egui::Ui,
        study: &mut Study,
        index: usize,
        rect: Rect,
    ) {
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
                study.editor.commit();
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
                SliceCallback {
                    index,
                    uniforms,
                    other_study: false,
                },
            ));
        }
        crosshair(
            &painter,
            rect,
            &frame,
            self.cursor_mm,
            Color32::from_rgba_unmultiplied(80, 255, 80, 140),
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
                self.session
                    .label_table
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
    pub(super) fn paint_at(&mut self, study: &mut Study, view: usize, world: Point3<f64>) {
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
            if self.ai.edit_proposals && self.session.proposals.review.is_some() {
                self.paint_proposal_at(study, brush, world);
                return;
            }
            study.editor.begin(brush.name());
            self.stroke = Some(PaintStroke::new(brush));
        }
        if self.session.proposals.editing_layer() {
            if let Some(stroke) = self.stroke.as_ref() {
                let brush = stroke.brush;
                self.paint_proposal_at(study, brush, world);
            }
            return;
        }
        if let Some(stroke) = &mut self.stroke
            && let Err(e) = stroke.add_point(&mut study.editor, Some(&study.ct), world)
        {
            self.save_error = Some(e.to_string());
        }
    }
}

/// The cursor lines through `world` across a view.
fn crosshair(
    painter: &egui::Painter,
    rect: Rect,
    frame: &ViewFrame,
    world: Point3<f64>,
    color: Color32,
) {
    let (px, _) = frame.px_at_world(world);
    let c = Pos2::new(rect.min.x + px.x as f32, rect.min.y + px.y as f32);
    let stroke = Stroke::new(1.0, color);
    painter.line_segment(
        [Pos2::new(rect.min.x, c.y), Pos2::new(rect.max.x, c.y)],
        stroke,
    );
    painter.line_segment(
        [Pos2::new(c.x, rect.min.y), Pos2::new(c.x, rect.max.y)],
        stroke,
    );
}

/// The renderer of the other time point on its own grid (side by side); a type of its
/// own so egui_wgpu's callback resources hold it beside the open study's.
pub struct OtherStudyRenderer(pub SliceRenderer);

/// The egui_wgpu paint callback of one view.
struct SliceCallback {
    index: usize,
    uniforms: SliceUniforms,
    /// Drawn by [`OtherStudyRenderer`].
    other_study: bool,
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
        let r = if self.other_study {
            resources.get_mut::<OtherStudyRenderer>().map(|r| &mut r.0)
        } else {
            resources.get_mut::<SliceRenderer>()
        };
        if let Some(r) = r {
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
        let r = if self.other_study {
            resources.get::<OtherStudyRenderer>().map(|r| &r.0)
        } else {
            resources.get::<SliceRenderer>()
        };
        if let Some(r) = r {
            r.paint_view(pass, self.index);
        }
    }
}

/// The unit vector of a view's normal (for tests and overlays).
pub fn view_normal(plane: Plane) -> Vector3<f64> {
    plane.screen_axes()[2]
}

/// Hover readout for the status bar.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hover {
    pub(super) view: usize,
    pub(super) world: Point3<f64>,
}
