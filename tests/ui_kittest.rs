//! egui_kittest: start on the (small) demo study, step slices, switch presets, open the
//! help, and check what is shown; one snapshot where the picture is the point.

use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use pulmo::demo::DemoOptions;
use pulmo::ui::{AppOptions, PulmoApp};

fn harness(wgpu: bool, size: egui::Vec2) -> Harness<'static, PulmoApp> {
    let options = AppOptions {
        demo: DemoOptions {
            dims: [128, 128, 75],
            spacing_mm: [2.8, 2.8, 4.0],
            ..Default::default()
        },
        recent_file: None,
        ..Default::default()
    };
    let mut builder = Harness::builder().with_size(size);
    if wgpu {
        builder = builder.wgpu();
    }
    let mut h = builder.build_eframe(move |cc| PulmoApp::new(cc, options));
    let ctx = h.ctx.clone();
    h.state_mut().wait_for_load(&ctx);
    h.run();
    h
}

#[test]
fn demo_opens_steps_slices_switches_presets_and_shows_help() {
    let mut h = harness(false, egui::vec2(1000.0, 700.0));
    assert!(h.state().study.as_ref().is_some_and(|s| s.synthetic));
    h.get_by_label("SYNTHETIC DEMO (not patient data)");
    let (first, total) = h.state().slice_of(0).unwrap();
    assert_eq!(total, 75);
    h.get_by_label(&format!("Axial slice {first} / 75"));

    h.key_press(Key::PageUp);
    h.run();
    assert_eq!(h.state().slice_of(0).unwrap().0, first + 1);
    h.key_press(Key::ArrowDown);
    h.key_press(Key::ArrowDown);
    h.run();
    assert_eq!(h.state().slice_of(0).unwrap().0, first - 1);
    h.get_by_label(&format!("Axial slice {} / 75", first - 1));

    // Presets by number key: 2 = mediastinum, 3 = bone, 1 = lung.
    h.key_press(Key::Num2);
    h.run();
    assert_eq!(
        (h.state().window_width_hu, h.state().window_center_hu),
        (350.0, 40.0)
    );
    assert!(h.get_all_by_label("W 350 / L 40").count() >= 1);
    h.key_press(Key::Num3);
    h.run();
    assert!(h.get_all_by_label("W 2000 / L 500").count() >= 1);
    h.key_press(Key::Num1);
    h.run();
    assert!(h.get_all_by_label("W 1500 / L -600").count() >= 1);

    // Help overlay.
    assert!(
        h.query_by_label("Right drag: horizontal = width, vertical = level")
            .is_none()
    );
    h.key_press(Key::H);
    h.run();
    h.get_by_label("Right drag: horizontal = width, vertical = level");
    h.get_by_label("Ctrl + wheel (or pinch)");
}

#[test]
fn slices_stop_at_the_volume_edges() {
    let mut h = harness(false, egui::vec2(1000.0, 700.0));
    for _ in 0..100 {
        h.key_press(Key::PageUp);
    }
    h.run();
    assert_eq!(h.state().slice_of(0), Some((75, 75)));
    for _ in 0..100 {
        h.key_press(Key::PageDown);
    }
    h.run();
    assert_eq!(h.state().slice_of(0), Some((1, 75)));
}

#[test]
fn demo_snapshot_on_lavapipe() {
    if std::env::var("CI").is_err() && pulmo::render::headless::Headless::new(true).is_err() {
        eprintln!("SKIP: no wgpu adapter");
        return;
    }
    let mut h = harness(true, egui::vec2(640.0, 400.0));
    h.run();
    h.snapshot("demo_three_views");
}

#[test]
fn brush_paints_one_undo_step_and_undo_restores() {
    let mut h = harness(false, egui::vec2(1000.0, 700.0));
    let before = h
        .state()
        .study
        .as_ref()
        .unwrap()
        .editor
        .labels()
        .voxels
        .clone();
    h.key_press(Key::B);
    h.run();
    assert_eq!(h.state().tool, pulmo::ui::app::Tool::Brush);
    // Drag across the axial view (left half of the window).
    let press = |pressed: bool, pos: egui::Pos2| egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed,
        modifiers: Default::default(),
    };
    let (a, b) = (egui::pos2(150.0, 330.0), egui::pos2(260.0, 360.0));
    h.event(egui::Event::PointerMoved(a));
    h.run();
    h.event(press(true, a));
    h.run();
    for t in 1..=5 {
        h.event(egui::Event::PointerMoved(a + (b - a) * (t as f32 / 5.0)));
        h.run();
    }
    h.event(press(false, b));
    h.run();
    let study = h.state().study.as_ref().unwrap();
    let after = study.editor.labels().voxels.clone();
    let changed = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    assert!(changed > 20, "the brush changed {changed} voxels");
    assert!(
        after
            .iter()
            .zip(&before)
            .all(|(n, o)| n == o || *n == pulmo::annotate::GGO)
    );
    assert_eq!(
        study.editor.history().undo_steps().count(),
        1,
        "one drag = one undo step"
    );

    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(
        h.state().study.as_ref().unwrap().editor.labels().voxels == before,
        "undo restores the map"
    );
    h.key_press_modifiers(egui::Modifiers::COMMAND | egui::Modifiers::SHIFT, Key::Z);
    h.run();
    assert!(
        h.state().study.as_ref().unwrap().editor.labels().voxels == after,
        "redo re-applies it"
    );
}

/// Proposes the demo's own lesions (an oracle): GGO with confidence 0.9, consolidation
/// 0.6; lungs by the classic threshold model.
struct Oracle(pulmo::volume::LabelVolume);

impl pulmo::infer::Segmenter for Oracle {
    fn task(&self) -> pulmo::infer::Task {
        pulmo::infer::Task::Lesion
    }
    fn info(&self) -> pulmo::infer::ModelInfo {
        pulmo::infer::ModelInfo {
            name: "oracle".into(),
            version: "0".into(),
            device: "cpu".into(),
        }
    }
    fn segment(
        &mut self,
        ct: &pulmo::volume::CtVolume,
        _: pulmo::infer::SegmentInput<'_>,
        ctx: &mut pulmo::infer::RunContext<'_>,
    ) -> Result<pulmo::infer::Proposal, pulmo::infer::InferError> {
        ctx.report(ct.geometry.dims[2], ct.geometry.dims[2]);
        let labels = self.0.map(|v| if v == 3 || v == 4 { v } else { 0 });
        Ok(pulmo::infer::Proposal {
            task: pulmo::infer::Task::Lesion,
            confidence: labels.map(|v| match v {
                3 => 230,
                4 => 153,
                _ => 0,
            }),
            labels,
            model: self.info(),
            model_seconds: 0.0,
            total_seconds: 0.0,
            detail: String::new(),
        })
    }
}

#[test]
fn propose_accept_one_reject_one_and_undo_the_accept() {
    use pulmo::infer::review::Decision;
    let demo = DemoOptions {
        dims: [128, 128, 75],
        spacing_mm: [2.8, 2.8, 4.0],
        ..Default::default()
    };
    let truth = pulmo::demo::generate(&demo).truth;
    let factory = pulmo::ui::AiFactory(std::sync::Arc::new(move || {
        let truth = truth.clone();
        Box::new(move |task| match task {
            pulmo::infer::Task::Lesion => {
                Ok(Box::new(Oracle(truth.clone())) as Box<dyn pulmo::infer::Segmenter>)
            }
            pulmo::infer::Task::Lung => {
                Ok(Box::new(pulmo::infer::classic::ThresholdLungs::pipeline())
                    as Box<dyn pulmo::infer::Segmenter>)
            }
        })
    }));
    let options = AppOptions {
        demo,
        recent_file: None,
        ai_factory: factory,
        ..Default::default()
    };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1200.0, 1600.0))
        .build_eframe(move |cc| PulmoApp::new(cc, options));
    let ctx = h.ctx.clone();
    h.state_mut().wait_for_load(&ctx);
    h.run();
    // The demo opens with its truth as labels: start from its lungs only, so the
    // lesions are what the annotator would still have to draw.
    {
        let study = h.state_mut().study.as_mut().unwrap();
        let lungs = study
            .editor
            .labels()
            .map(|v| if v == 3 || v == 4 { 1 } else { v });
        study.editor = pulmo::annotate::Editor::new(lungs, pulmo::annotate::LabelTable::default());
    }
    let before = h
        .state()
        .study
        .as_ref()
        .unwrap()
        .editor
        .labels()
        .voxels
        .clone();

    h.get_by_label("Propose lesions").click();
    let start = std::time::Instant::now();
    while h.state().ai.review.is_none() {
        assert!(start.elapsed().as_secs() < 60, "no proposal after 60 s");
        assert!(h.state().ai.error.is_none(), "{:?}", h.state().ai.error);
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run();
    }
    h.run();
    let rows = h.state().proposal_rows();
    assert!(rows.len() >= 2, "the demo has several lesions: {rows:?}");
    assert!(rows.iter().all(|r| r.1 == Decision::Pending));
    // Nothing enters the label map by proposing.
    assert!(h.state().study.as_ref().unwrap().editor.labels().voxels == before);
    h.get_by_label(&format!("oracle 0 on cpu: {} pending", rows.len()));

    h.get_by_label("Accept #1").click();
    h.run();
    h.get_by_label("Reject #2").click();
    h.run();
    let rows_after = h.state().proposal_rows();
    assert_eq!(rows_after[0].1, Decision::Accepted);
    assert_eq!(rows_after[1].1, Decision::Rejected);
    let study = h.state().study.as_ref().unwrap();
    let after = study.editor.labels().voxels.clone();
    let added = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let inst = &h.state().ai.review.as_ref().unwrap().instances[0];
    assert!(added > 0 && added <= inst.voxels.len());
    assert!(inst.voxels.iter().all(|&i| after[i as usize] == inst.label || study.editor.is_locked(before[i as usize])));
    let rejected = &h.state().ai.review.as_ref().unwrap().instances[1];
    assert!(
        rejected
            .voxels
            .iter()
            .all(|&i| after[i as usize] == before[i as usize]),
        "a rejected instance is not written"
    );
    assert_eq!(
        study.editor.history().undo_steps().count(),
        1,
        "accepting is one undo step"
    );

    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(
        h.state().study.as_ref().unwrap().editor.labels().voxels == before,
        "undo removes the accepted instance"
    );
}
