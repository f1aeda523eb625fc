//! The side and status panels: the label table (names, colours, visibility, locks, the
//! active label and history) and the status bar (cursor position, HU, slice numbers).

use egui::{Color32, Sense, Vec2};

use super::{PulmoApp, Tool};

impl PulmoApp {
    pub(super) fn labels_ui(&mut self, ui: &mut egui::Ui) {
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
        for l in &mut self.session.label_table.labels {
            ui.horizontal(|ui| {
                let [r, g, b] = l.color;
                let (rect, _) = ui.allocate_exact_size(Vec2::splat(12.0), Sense::hover());
                ui.painter()
                    .rect_filled(rect, 2.0, Color32::from_rgb(r, g, b));
                changed |= ui
                    .checkbox(&mut l.visible, format!("{} {}", l.value, l.name))
                    .changed();
                ui.radio_value(&mut self.active_label, l.value, "paint");
                if let Some(study) = self.session.study.as_mut() {
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
                for l in &mut self.session.label_table.labels {
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
                        .find(|v| self.session.label_table.get(*v).is_none())
                        .unwrap_or(255);
                    let label = crate::annotate::Label {
                        value: next,
                        name: format!("label {next}"),
                        color: [200, 200, 200],
                        visible: true,
                        locked: false,
                    };
                    self.session.label_table.labels.push(label.clone());
                    if let Some(study) = self.session.study.as_mut() {
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
            let name = format!("{} {}", i + 1, self.presets[i].name());
            if ui.button(name).clicked() {
                self.apply_preset(i);
            }
        }
    }

    pub(super) fn status_ui(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let Some(study) = &self.session.study else {
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
                            self.session
                                .label_table
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
}
