//! egui_kittest: the annotation tools of the tool panel (HU-limited brush, region
//! growing, morphology, interpolation), each one undo step.

use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use pulmo::ui::PulmoApp;

#[path = "common/ui.rs"]
mod ui;
use ui::{drag, labels};

fn harness(wgpu: bool, size: egui::Vec2) -> Harness<'static, PulmoApp> {
    ui::harness_with(ui::options(), size, wgpu)
}

/// Tall enough that the whole tool panel is on screen, with the tools unfolded.
fn tall() -> Harness<'static, PulmoApp> {
    let mut h = harness(false, egui::vec2(1000.0, 1300.0));
    h.get_by_label("Annotation tools").click();
    h.run();
    h
}

fn undo_steps(h: &Harness<'static, PulmoApp>) -> usize {
    ui::study(h).editor.history().undo_steps().count()
}

fn press(pressed: bool, pos: egui::Pos2) -> egui::Event {
    egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed,
        modifiers: Default::default(),
    }
}

fn click(h: &mut Harness<'static, PulmoApp>, p: egui::Pos2) {
    h.event(egui::Event::PointerMoved(p));
    h.run();
    h.event(press(true, p));
    h.run();
    h.event(press(false, p));
    h.run();
}

/// The HU the status bar shows with the pointer at `p`.
fn hovered_hu(h: &mut Harness<'static, PulmoApp>, p: egui::Pos2) -> Option<i32> {
    h.event(egui::Event::PointerMoved(p));
    h.run();
    h.query_all_by_label_contains("HU ").find_map(|n| {
        let text = format!("{n:?}");
        let start = text.find("value: \"HU ")? + "value: \"HU ".len();
        let rest = &text[start..];
        rest[..rest.find('"')?].parse().ok()
    })
}

/// Indices where the maps differ.
fn changed(before: &[u8], after: &[u8]) -> Vec<usize> {
    (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect()
}

#[test]
fn hu_limited_brush_paints_only_voxels_in_range() {
    let mut h = tall();
    h.get_by_label("Limit brush to HU range").click();
    h.run();
    assert!(h.state().tools.hu_limit);
    assert_eq!(h.state().tools.brush_hu_range(), Some((-800, -300)));
    // A big brush so the stroke covers voxels both in and out of range.
    h.state_mut().brush_radius_mm = 20.0;
    let before = labels(&h);
    h.key_press(Key::B);
    h.run();
    drag(&mut h, egui::pos2(150.0, 600.0), egui::pos2(300.0, 650.0));
    let after = labels(&h);
    let diff = changed(&before, &after);
    assert!(!diff.is_empty(), "the HU-limited brush painted nothing");
    let study = ui::study(&h);
    let ct = &study.ct.voxels;
    assert!(
        diff.iter().all(|&i| (-800..=-300).contains(&ct[i])),
        "a voxel outside -800..-300 HU was painted"
    );
    assert!(diff.iter().all(|&i| after[i] == pulmo::annotate::GGO));
    // The same stroke without the limit paints more: the limit really excluded voxels.
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(labels(&h), before);
    h.state_mut().tools.hu_limit = false;
    drag(&mut h, egui::pos2(150.0, 600.0), egui::pos2(300.0, 650.0));
    let unlimited = changed(&before, &labels(&h));
    assert!(
        unlimited.len() > diff.len(),
        "unlimited {} vs limited {}",
        unlimited.len(),
        diff.len()
    );
}

#[test]
fn region_grow_click_fills_a_connected_region_in_one_undo_step() {
    let mut h = tall();
    // Lung parenchyma: air-like HU.
    {
        let s = h.state_mut();
        s.tools.hu_lo = -1024;
        s.tools.hu_hi = -500;
        s.active_label = pulmo::annotate::OTHER_LESION;
    }
    h.key_press(Key::G);
    h.run();
    assert_eq!(h.state().tool, pulmo::ui::app::Tool::RegionGrow);
    let before = labels(&h);
    let steps = undo_steps(&h);
    // Find a lung voxel along a row of the axial view by hovering (status bar HU).
    let seed = (20..80)
        .map(|x| egui::pos2(x as f32 * 5.0, 620.0))
        .find(|&p| hovered_hu(&mut h, p).is_some_and(|hu| (-950..=-650).contains(&hu)))
        .expect("no lung voxel along the row");
    click(&mut h, seed);
    let after = labels(&h);
    let diff = changed(&before, &after);
    assert!(
        diff.len() > 50,
        "region growing filled {} voxels",
        diff.len()
    );
    let study = ui::study(&h);
    let g = &study.ct.geometry;
    let ct = &study.ct.voxels;
    assert!(
        diff.iter()
            .all(|&i| after[i] == pulmo::annotate::OTHER_LESION)
    );
    assert!(diff.iter().all(|&i| (-1024..=-500).contains(&ct[i])));
    // 2D in the axial view: a single slice k.
    let slice = |i: usize| i / (g.dims[0] * g.dims[1]);
    assert!(diff.iter().all(|&i| slice(i) == slice(diff[0])));
    // 4-connected: every filled voxel reaches the others through filled voxels.
    let filled: std::collections::HashSet<usize> = diff.iter().copied().collect();
    let mut seen = std::collections::HashSet::from([diff[0]]);
    let mut stack = vec![diff[0]];
    while let Some(i) = stack.pop() {
        let nx = g.dims[0];
        let cands = [i.wrapping_sub(1), i + 1, i.wrapping_sub(nx), i + nx];
        for n in cands {
            if filled.contains(&n) && seen.insert(n) {
                stack.push(n);
            }
        }
    }
    assert_eq!(seen.len(), diff.len(), "the filled region is not connected");
    assert_eq!(undo_steps(&h), steps + 1, "one click = one undo step");
    h.get_by_label(&format!("Region growing: {} voxels filled", diff.len()));

    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(labels(&h) == before, "undo restores the map");
}

#[test]
fn dilate_grows_the_active_label_in_one_undo_step() {
    let mut h = tall();
    let ggo = pulmo::annotate::GGO;
    // A small block of label 3 to dilate.
    {
        let s = h.state_mut();
        s.active_label = ggo;
        let ed = &mut s.session.study.as_mut().unwrap().editor;
        ed.begin("seed");
        for k in 35..38 {
            for j in 60..64 {
                for i in 60..64 {
                    ed.set([i, j, k], ggo);
                }
            }
        }
        ed.commit();
    }
    h.run();
    let before = labels(&h);
    let count = |v: &[u8]| v.iter().filter(|&&x| x == ggo).count();
    let steps = undo_steps(&h);
    assert_eq!(h.state().tools.morph_radius_mm, 3.0);
    h.get_by_label("Dilate").click();
    h.run();
    let after = labels(&h);
    assert!(
        count(&after) > count(&before),
        "dilate did not grow the label: {} -> {}",
        count(&before),
        count(&after)
    );
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(&b, &a)| b != ggo || a == ggo),
        "dilation removed label voxels"
    );
    assert_eq!(undo_steps(&h), steps + 1, "one click = one undo step");
    h.get_by_label_contains("Dilate: ");

    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(labels(&h) == before, "undo restores the map");

    // Erode by the same radius removes the whole 4x4x3 block... of 11 x 11 mm in plane.
    h.get_by_label("Erode").click();
    h.run();
    assert!(count(&labels(&h)) < count(&before));
    assert_eq!(undo_steps(&h), steps + 1);
}

#[test]
fn locked_label_is_not_changed_by_morphology() {
    let mut h = tall();
    let ggo = pulmo::annotate::GGO;
    {
        let s = h.state_mut();
        s.active_label = ggo;
        let ed = &mut s.session.study.as_mut().unwrap().editor;
        ed.begin("seed");
        for i in 60..64 {
            ed.set([i, 60, 36], ggo);
        }
        ed.commit();
        ed.set_locked(ggo, true);
    }
    h.run();
    let before = labels(&h);
    h.get_by_label("Dilate").click();
    h.run();
    assert!(labels(&h) == before);
    h.get_by_label("Label 3 is locked");
}

#[test]
fn interpolate_fills_the_slices_between_two_annotated_ones() {
    let mut h = tall();
    // A label the demo's map does not hold yet (the editor starts on the demo truth).
    let initial = labels(&h);
    let ggo = (1..=20u8).rev().find(|l| !initial.contains(l)).unwrap();
    {
        let s = h.state_mut();
        s.active_label = ggo;
        let ed = &mut s.session.study.as_mut().unwrap().editor;
        ed.begin("seed");
        for k in [30, 36, 42] {
            for j in 60..66 {
                for i in 60..66 {
                    ed.set([i, j, k], ggo);
                }
            }
        }
        ed.commit();
    }
    h.run();
    let before = labels(&h);
    let steps = undo_steps(&h);
    h.get_by_label("Interpolate slices").click();
    h.run();
    let after = labels(&h);
    let g = ui::study(&h).ct.geometry.clone();
    for k in (31..36).chain(37..42) {
        assert_eq!(after[g.index(62, 62, k)], ggo, "slice {k} not filled");
    }
    assert_eq!(after[g.index(62, 62, 43)], before[g.index(62, 62, 43)]);
    assert_eq!(undo_steps(&h), steps + 1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(labels(&h) == before);

    // Only between two chosen slices: the default range is the label's extent.
    h.get_by_label("between").click();
    h.run();
    assert_eq!(h.state().tools.interp_range, Some((30, 42)));
    h.state_mut().tools.interp_range = Some((30, 36));
    h.get_by_label("Interpolate slices").click();
    h.run();
    let after = labels(&h);
    for k in 31..36 {
        assert_eq!(after[g.index(62, 62, k)], ggo, "slice {k} not filled");
    }
    for k in 37..42 {
        assert_eq!(
            after[g.index(62, 62, k)],
            before[g.index(62, 62, k)],
            "slice {k}"
        );
    }
    assert_eq!(undo_steps(&h), steps + 1);
}

#[test]
fn polygon_clicks_then_fill_is_one_undo_step_in_one_slice() {
    let mut h = tall();
    let initial = labels(&h);
    let value = (1..=20u8).rev().find(|l| !initial.contains(l)).unwrap();
    h.state_mut().active_label = value;
    h.key_press(Key::P);
    h.run();
    assert_eq!(h.state().tool, pulmo::ui::app::Tool::Polygon);
    for p in [
        (150.0, 560.0),
        (280.0, 560.0),
        (280.0, 680.0),
        (150.0, 680.0),
    ] {
        click(&mut h, egui::pos2(p.0, p.1));
    }
    assert_eq!(h.state().tools.polygon.len(), 4);
    h.get_by_label("4 vertices");
    let before = labels(&h);
    let steps = undo_steps(&h);
    h.get_by_label("Fill polygon").click();
    h.run();
    let after = labels(&h);
    let diff = changed(&before, &after);
    assert!(diff.len() > 50, "the polygon filled {} voxels", diff.len());
    assert!(diff.iter().all(|&i| after[i] == value));
    let g = ui::study(&h).ct.geometry.clone();
    let slice = |i: usize| i / (g.dims[0] * g.dims[1]);
    assert!(diff.iter().all(|&i| slice(i) == slice(diff[0])));
    assert_eq!(undo_steps(&h), steps + 1);
    assert!(h.state().tools.polygon.is_empty());
    h.get_by_label(&format!("Polygon fill: {} voxels filled", diff.len()));
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(labels(&h) == before);
}

#[test]
fn only_background_policy_keeps_labelled_voxels() {
    let mut h = tall();
    h.get_by_label("Overwrite").click();
    h.run();
    h.get_by_label("Paint only background").click();
    h.run();
    assert_eq!(
        ui::study(&h).editor.policy,
        pulmo::annotate::OverwritePolicy::OnlyBackground
    );
    h.state_mut().brush_radius_mm = 20.0;
    let before = labels(&h);
    h.key_press(Key::B);
    h.run();
    drag(&mut h, egui::pos2(150.0, 600.0), egui::pos2(300.0, 650.0));
    let after = labels(&h);
    let diff = changed(&before, &after);
    assert!(!diff.is_empty());
    assert!(
        diff.iter().all(|&i| before[i] == 0),
        "a labelled voxel was painted over"
    );
}

#[test]
fn region_grow_in_3d_inside_the_lungs_stays_in_the_lungs() {
    let mut h = tall();
    h.get_by_label("Grow in 3D").click();
    h.get_by_label("Only inside the lungs").click();
    h.run();
    {
        let s = h.state_mut();
        s.tools.hu_lo = -1024;
        s.tools.hu_hi = -500;
        s.active_label = pulmo::annotate::OTHER_LESION;
    }
    h.key_press(Key::G);
    h.run();
    let seed = (20..80)
        .map(|x| egui::pos2(x as f32 * 5.0, 620.0))
        .find(|&p| hovered_hu(&mut h, p).is_some_and(|hu| (-950..=-650).contains(&hu)))
        .expect("no lung voxel along the row");
    let before = labels(&h);
    click(&mut h, seed);
    let after = labels(&h);
    let diff = changed(&before, &after);
    assert!(
        diff.len() > 50,
        "region growing filled {} voxels",
        diff.len()
    );
    let lungs = [pulmo::annotate::LEFT_LUNG, pulmo::annotate::RIGHT_LUNG];
    assert!(diff.iter().all(|&i| lungs.contains(&before[i])));
    let g = ui::study(&h).ct.geometry.clone();
    let slice = |i: usize| i / (g.dims[0] * g.dims[1]);
    assert!(
        diff.iter().any(|&i| slice(i) != slice(diff[0])),
        "3D growth stayed in one slice"
    );
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(labels(&h) == before);
}

#[test]
fn labels_can_be_added_renamed_and_locked() {
    let mut h = tall();
    h.get_by_label("Edit labels").click();
    h.run();
    h.get_by_label("Add label").click();
    h.run();
    assert_eq!(h.state().active_label, 7);
    assert!(h.state().session.label_table.get(7).is_some());
    let study = ui::study(&h);
    assert!(
        study.editor.table().get(7).is_some(),
        "the editor knows the new label"
    );
    h.state_mut().session.label_table.labels[6].name = "nodule".into();
    h.run();
    h.get_by_label("7 nodule");
    // The new label can be locked like the built-in ones.
    let locked = ui::study_mut(&mut h).editor.set_locked(7, true);
    assert!(locked);
}
