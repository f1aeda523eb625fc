//! egui_kittest: start on the (small) demo study, step slices, switch presets, open the
//! help, and check what is shown; one snapshot where the picture is the point.

use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use pulmo::demo::DemoOptions;
use pulmo::ui::{AppOptions, PulmoApp};

#[path = "common/ui.rs"]
mod ui;

fn harness(wgpu: bool, size: egui::Vec2) -> Harness<'static, PulmoApp> {
    ui::harness_with(ui::options(), size, wgpu)
}

#[test]
fn demo_opens_steps_slices_switches_presets_and_shows_help() {
    let mut h = harness(false, egui::vec2(1000.0, 700.0));
    assert!(
        h.state()
            .session
            .study
            .as_ref()
            .is_some_and(|s| s.synthetic)
    );
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
    let before = ui::labels(&h);
    h.key_press(Key::B);
    h.run();
    assert_eq!(h.state().tool, pulmo::ui::app::Tool::Brush);
    // Drag across the axial view (left half of the window).
    ui::drag(&mut h, egui::pos2(150.0, 330.0), egui::pos2(260.0, 360.0));
    let study = ui::study(&h);
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
        ui::study(&h).editor.labels().voxels == before,
        "undo restores the map"
    );
    h.key_press_modifiers(egui::Modifiers::COMMAND | egui::Modifiers::SHIFT, Key::Z);
    h.run();
    assert!(
        ui::study(&h).editor.labels().voxels == after,
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
    let mut h = ui::harness_with(options, egui::vec2(1200.0, 1600.0), false);
    // The demo opens with its truth as labels: start from its lungs only, so the
    // lesions are what the annotator would still have to draw.
    {
        let study = ui::study_mut(&mut h);
        let lungs = study
            .editor
            .labels()
            .map(|v| if v == 3 || v == 4 { 1 } else { v });
        study.editor = pulmo::annotate::Editor::new(lungs, pulmo::annotate::LabelTable::default());
    }
    let before = ui::labels(&h);

    h.get_by_label("Propose lesions").click();
    let start = std::time::Instant::now();
    while h.state().session.proposals.review.is_none() {
        assert!(start.elapsed().as_secs() < 60, "no proposal after 60 s");
        assert!(
            h.state().session.proposals.error.is_none(),
            "{:?}",
            h.state().session.proposals.error
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run();
    }
    h.run();
    let rows = h.state().proposal_rows();
    assert!(rows.len() >= 2, "the demo has several lesions: {rows:?}");
    assert!(rows.iter().all(|r| r.1 == Decision::Pending));
    // Nothing enters the label map by proposing.
    assert!(ui::study(&h).editor.labels().voxels == before);
    h.get_by_label(&format!("oracle 0 on cpu: {} pending", rows.len()));

    h.get_by_label("Accept #1").click();
    h.run();
    h.get_by_label("Reject #2").click();
    h.run();
    let rows_after = h.state().proposal_rows();
    assert_eq!(rows_after[0].1, Decision::Accepted);
    assert_eq!(rows_after[1].1, Decision::Rejected);
    let study = ui::study(&h);
    let after = study.editor.labels().voxels.clone();
    let added = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let review = h.state().session.proposals.review.as_ref().unwrap();
    let inst = &review.instances[0];
    assert!(added > 0 && added <= inst.voxels.len());
    assert!(inst.voxels.iter().all(|&i| after[i as usize] == inst.label || study.editor.is_locked(before[i as usize])));
    let rejected = &review.instances[1];
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
        ui::study(&h).editor.labels().voxels == before,
        "undo removes the accepted instance"
    );
}

/// Steps frames until `done` holds (background jobs; the spinner keeps repainting, so
/// `step`, not `run`), failing after 120 s.
fn run_until(h: &mut Harness<'static, PulmoApp>, what: &str, done: impl Fn(&PulmoApp) -> bool) {
    let start = std::time::Instant::now();
    while !done(h.state()) {
        assert!(start.elapsed().as_secs() < 120, "no {what} after 120 s");
        let c = &h.state().compare;
        assert!(c.error.is_none(), "{:?}", c.error);
        assert!(c.quantify_error.is_none(), "{:?}", c.quantify_error);
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.step();
    }
    h.run();
}

#[test]
fn compare_truth_with_brushed_labels_and_quantify() {
    use pulmo::metrics::Target;
    use pulmo::ui::app::{ExportKind, MapSource};
    let mut h = harness(false, egui::vec2(1400.0, 1400.0));
    // A brush edit: a 3D GGO ball of 15 mm at the cursor (the volume's centre).
    {
        let app = h.state_mut();
        let centre = app.cursor_mm;
        let study = app.session.study.as_mut().unwrap();
        let mut stroke =
            pulmo::annotate::Stroke::new(pulmo::annotate::Brush::ball(15.0, pulmo::annotate::GGO));
        study.editor.begin("brush");
        let changed = stroke
            .add_point(&mut study.editor, Some(&study.ct), centre)
            .expect("paint");
        assert!(changed.is_some());
        study.editor.commit();
    }
    let (truth, labels) = {
        let study = ui::study(&h);
        (study.truth.clone().unwrap(), study.editor.labels().clone())
    };
    assert!(
        truth.voxels != labels.voxels,
        "the brush changed the labels"
    );

    // Tools > Compare label maps…: demo truth (reference) against the current labels.
    h.get_by_label("Tools").click();
    h.run();
    h.get_by_label("Compare label maps…").click();
    h.run();
    assert!(h.state().compare.compare_open);
    assert_eq!(h.state().compare.reference, MapSource::DemoTruth);
    assert_eq!(h.state().compare.test, MapSource::CurrentLabels);
    h.get_by_label("Run comparison").click();
    h.step();
    run_until(&mut h, "comparison", |a| a.compare.result.is_some());

    // The table shows the same Dice as the metrics, per label and for any foreground.
    let present: Vec<u8> = (1..=255u8)
        .filter(|v| truth.voxels.contains(v) || labels.voxels.contains(v))
        .collect();
    let expected = pulmo::metrics::compare(&truth, &labels, &present).unwrap();
    let ggo = expected
        .per_label
        .iter()
        .find(|c| c.target == Target::Label(3))
        .unwrap();
    assert!(ggo.overlap.dice < 1.0, "the brush lowered the GGO Dice");
    // (The target chooser shows the GGO name too.)
    assert!(h.get_all_by_label("3 ground-glass opacity").count() >= 2);
    h.get_by_label("any foreground");
    for c in expected.per_label.iter().chain([&expected.foreground]) {
        let text = format!("{:.4}", c.overlap.dice);
        assert!(
            h.query_all_by_label(&text).count() >= 1,
            "Dice {text} of {} is shown",
            c.target
        );
    }
    assert_eq!(h.get_all_by_label("HD95 mm").count(), 1);

    // The worst slices: the first button moves the cursor to that axial slice.
    let (k, _) = h.state().compare.result.as_ref().unwrap().detail.worst[0];
    let n = h
        .state()
        .compare
        .result
        .as_ref()
        .unwrap()
        .detail
        .slice_numbers[k];
    let x_before = h.state().cursor_mm.x;
    h.get_by_label_contains(&format!("Axial {n}/75: Dice"))
        .click();
    h.run();
    assert_eq!(h.state().slice_of(0).unwrap().0, n);
    assert_eq!(h.state().cursor_mm.x, x_before, "x is kept");

    // Exports: the CSV table and a PNG report, written whole.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cmp.csv");
    h.state().export_to(ExportKind::CompareCsv, &csv).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("label,dice,iou,"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("any,")));
    let bad = dir.path().join("missing").join("x.csv");
    let err = h
        .state()
        .export_to(ExportKind::CompareCsv, &bad)
        .unwrap_err();
    assert!(err.contains("nothing was lost"), "{err}");

    // Tools > Quantification…: runs on its own and shows the lung volumes.
    h.get_by_label("Tools").click();
    h.run();
    h.get_by_label("Quantification…").click();
    h.step();
    run_until(&mut h, "quantification", |a| {
        a.compare.quantification.is_some()
    });
    let q = pulmo::metrics::quantify::quantify(&ui::study(&h).ct, &labels, &Default::default())
        .unwrap();
    // Rows of the involvement and HU band tables.
    assert_eq!(h.get_all_by_label("left lung").count(), 2);
    assert_eq!(h.get_all_by_label("both lung").count(), 2);
    for lung in &q.lungs {
        let ml = format!("{:.1}", lung.whole.voxels as f64 * q.voxel_volume_ml);
        assert!(
            h.query_all_by_label(&ml).count() >= 1,
            "{} lung volume {ml} mL is shown",
            lung.name
        );
    }
    let png = dir.path().join("report.png");
    h.state().export_to(ExportKind::ReportPng, &png).unwrap();
    let img = image::open(&png).unwrap().to_rgba8();
    assert!(img.width() >= 512 && img.height() > 512);
    let json = dir.path().join("q.json");
    h.state()
        .export_to(ExportKind::QuantifyJson, &json)
        .unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.contains("\"lungs\": {"), "{text}");
}

/// A label map file on another grid is an error message in the window, not a panic,
/// and the previous result stays.
#[test]
fn compare_with_a_file_on_another_grid_shows_an_error() {
    use pulmo::ui::app::MapSource;
    let mut h = harness(false, egui::vec2(1400.0, 1000.0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other_grid.nii.gz");
    let g = pulmo::volume::Geometry::axis_aligned([64, 64, 75], [5.6, 5.6, 4.0], [0.0; 3]);
    let other = pulmo::volume::Volume::filled(g, 1u8).unwrap();
    pulmo::io::nifti::write_nifti(&path, &other).unwrap();
    h.state_mut().compare.compare_open = true;
    h.run();
    h.get_by_label("Run comparison").click();
    h.step();
    run_until(&mut h, "comparison", |a| a.compare.result.is_some());
    // Truth against itself-as-labels: Dice 1 everywhere.
    assert!(h.get_all_by_label("1.0000").count() >= 4);

    h.state_mut().compare.test = MapSource::File(path.clone());
    h.run();
    h.get_by_label("Run comparison").click();
    let start = std::time::Instant::now();
    while h.state().compare.error.is_none() {
        assert!(start.elapsed().as_secs() < 60, "no error after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.step();
    }
    h.run();
    let err = h.state().compare.error.clone().unwrap();
    assert!(err.contains("is not on the CT's grid"), "{err}");
    h.get_by_label_contains("is not on the CT's grid");
    assert!(
        h.state().compare.result.is_some(),
        "the previous result stays"
    );
}

/// On lavapipe: the agreement overlay replaces the proposal layer while the Compare
/// window shows it, and closing the window brings the proposals back unchanged.
#[test]
fn agreement_overlay_and_proposals_share_the_layer() {
    use pulmo::ui::app::MapSource;
    if std::env::var("CI").is_err() && pulmo::render::headless::Headless::new(true).is_err() {
        eprintln!("SKIP: no wgpu adapter");
        return;
    }
    let demo = DemoOptions {
        dims: [128, 128, 75],
        spacing_mm: [2.8, 2.8, 4.0],
        ..Default::default()
    };
    let truth = pulmo::demo::generate(&demo).truth;
    // The oracle proposes the truth's lesions, less one slab: FN voxels in the overlay.
    let proposed = {
        let mut t = truth.clone();
        let [nx, ny, _] = t.geometry.dims;
        for v in &mut t.voxels[nx * ny * 30..nx * ny * 45] {
            *v = 0;
        }
        t
    };
    let factory = pulmo::ui::AiFactory(std::sync::Arc::new(move || {
        let proposed = proposed.clone();
        Box::new(
            move |_| Ok(Box::new(Oracle(proposed.clone())) as Box<dyn pulmo::infer::Segmenter>),
        )
    }));
    let options = AppOptions {
        demo,
        recent_file: None,
        ai_factory: factory,
        ..Default::default()
    };
    let mut h = ui::harness_with(options, egui::vec2(1500.0, 800.0), true);
    h.get_by_label("Propose lesions").click();
    let start = std::time::Instant::now();
    while h.state().session.proposals.review.is_none() {
        assert!(start.elapsed().as_secs() < 60, "no proposal after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run();
    }
    h.run();
    let with_proposals = h.render().unwrap();

    {
        let c = &mut h.state_mut().compare;
        c.compare_open = true;
        c.reference = MapSource::DemoTruth;
        c.test = MapSource::Proposals;
        c.target = pulmo::metrics::Target::AnyForeground;
    }
    h.run();
    h.get_by_label("Run comparison").click();
    h.step();
    run_until(&mut h, "comparison", |a| a.compare.result.is_some());
    assert!(h.state().compare.overlay_active());
    let with_overlay = h.render().unwrap();
    // The inside of the axial view (left, below the menu; the window opens at the
    // right) changed: the overlay instead of labels and dashed proposals.
    let view = |img: &image::RgbaImage| -> Vec<u8> {
        (200..600)
            .flat_map(|y| (20..300).flat_map(move |x| img.get_pixel(x, y).0))
            .collect()
    };
    assert_ne!(view(&with_proposals), view(&with_overlay));

    // Closing the window gives the layer back to the proposals.
    h.state_mut().compare.compare_open = false;
    h.run();
    h.run();
    assert!(!h.state().compare.overlay_active());
    let restored = h.render().unwrap();
    assert!(
        view(&restored) == view(&with_proposals),
        "the proposal layer is back as it was"
    );
}

/// The lesion model chooser lists the built-in model and a fine-tuned version from the
/// user's library; choosing one is a click, and so is switching back.
#[test]
fn lesion_model_versions_are_chosen_and_switched_back_in_one_click() {
    use pulmo::infer::Task;
    use pulmo::infer::manifest::{Manifest, default_manifest_path};
    let dir = tempfile::tempdir().unwrap();
    let library = pulmo::session::models::ModelLibrary::new(dir.path().to_path_buf());
    let mut m = Manifest::read(&default_manifest_path(Task::Lesion)).unwrap();
    let builtin = format!("{} {} (built-in)", m.name, m.version);
    m.version = "9-ft-test".into();
    m.training = serde_json::json!({"parent": {"name": m.name, "version": "9"}});
    m.metrics = serde_json::Value::Null;
    let sub = dir.path().join("lesion-test");
    std::fs::create_dir_all(&sub).unwrap();
    m.write(&sub.join("lesion.json")).unwrap();
    let mut h = harness(false, egui::vec2(1200.0, 1600.0));
    h.state_mut().ai.library = library.clone();
    h.state_mut().ai.refresh_models(true);
    h.run();
    h.get_by_label("Lesion model").click();
    h.run();
    let tuned = format!("{} 9-ft-test", m.name);
    h.get_by_label(&tuned).click();
    h.run();
    assert_eq!(
        library.active(Task::Lesion),
        Some(sub.join("lesion.json")),
        "the fine-tuned model is chosen"
    );
    h.get_by_label("Lesion model").click();
    h.run();
    // The entry in the list carries the model's test figure after its name.
    h.get_by_label_contains(&format!("{builtin} — ")).click();
    h.run();
    assert_eq!(
        library.active(Task::Lesion),
        None,
        "back to the built-in model"
    );
}

/// On lavapipe: the Follow-up window registers a later time point (the demo shifted,
/// half its ground-glass turned consolidation) onto the open demo in the background,
/// lists the changes and lesions; a lesion click moves the cursor there; the change map
/// and the registered other time point change the picture at the same cursor.
#[test]
fn followup_window_registers_another_time_point_and_maps_changes() {
    use nalgebra::{Matrix4, Vector3};
    use pulmo::followup::Transform;
    use pulmo::session::followup::OtherIs;
    if std::env::var("CI").is_err() && pulmo::render::headless::Headless::new(true).is_err() {
        eprintln!("SKIP: no wgpu adapter");
        return;
    }
    let demo = ui::small_demo();
    let generated = pulmo::demo::generate(&demo);
    let g = generated.ct.geometry.clone();
    let shift = Transform::affine(Matrix4::new_translation(&Vector3::new(5.0, -4.0, 8.0)));
    let later_ct = shift.warp_ct(&generated.ct, &g, -1024);
    let mut later_labels = shift.warp_labels(&generated.truth, &g, 0);
    let ggo = later_labels
        .voxels
        .iter()
        .filter(|v| **v == pulmo::annotate::GGO)
        .count();
    let mut changed = 0;
    for v in later_labels.voxels.iter_mut() {
        if *v == pulmo::annotate::GGO && changed < ggo / 2 {
            *v = pulmo::annotate::CONSOLIDATION;
            changed += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (ct_path, labels_path) = (
        dir.path().join("later.nii.gz"),
        dir.path().join("later_labels.nii.gz"),
    );
    pulmo::io::nifti::write_nifti(&ct_path, &later_ct).unwrap();
    pulmo::io::nifti::write_nifti(&labels_path, &later_labels).unwrap();

    let mut h = harness(true, egui::vec2(1500.0, 1000.0));
    h.get_by_label("File").click();
    h.run();
    h.get_by_label("Open follow-up or baseline…").click();
    h.run();
    assert!(h.state().followup.open);
    {
        let f = &mut h.state_mut().followup;
        f.other_ct = Some(ct_path);
        f.other_labels = Some(labels_path);
        f.other_is = OtherIs::Followup;
        f.show_map = false;
    }
    h.run();
    h.get_by_label("Register and map changes").click();
    h.step();
    let start = std::time::Instant::now();
    while h.state().followup.result.is_none() {
        assert!(
            start.elapsed().as_secs() < 180,
            "no follow-up result after 180 s"
        );
        assert!(
            h.state().followup.error.is_none(),
            "{:?}",
            h.state().followup.error
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        h.step();
    }
    h.run();
    h.get_by_label_contains("ground-glass to consolidation");
    h.get_by_label_contains("Lesions over time");
    let r = h.state().followup.result.as_ref().unwrap();
    let both = r
        .volumes
        .regions
        .iter()
        .find(|x| x.region == "both")
        .unwrap();
    let made = changed as f64 * pulmo::metrics::voxel_volume_ml(&g);
    assert!(
        (both.ml[8] - made).abs() < 0.3 * made,
        "{} vs {made}",
        both.ml[8]
    );
    // A click on the largest lesion goes there.
    let before = h.state().cursor_mm;
    h.get_by_label_contains(" 1. ").click();
    h.run();
    assert_ne!(
        h.state().cursor_mm,
        before,
        "the cursor moved to the lesion"
    );
    let view = |img: &image::RgbaImage| -> Vec<u8> {
        (200..600)
            .flat_map(|y| (20..300).flat_map(move |x| img.get_pixel(x, y).0))
            .collect()
    };
    let plain = h.render().unwrap();
    h.state_mut().followup.show_map = true;
    h.run();
    h.run();
    let with_map = h.render().unwrap();
    assert_ne!(view(&plain), view(&with_map), "the change map shows");
    // The other time point in place of the open study, a checkerboard, the
    // difference: each changes the picture at the same cursor.
    use pulmo::ui::app::FollowupDisplay as Display;
    let mut seen = vec![view(&with_map)];
    for d in [Display::Other, Display::Checkerboard, Display::Difference] {
        h.state_mut().followup.display = d;
        h.run();
        h.run();
        let v = view(&h.render().unwrap());
        assert!(!seen.contains(&v), "{d:?} changes the picture");
        seen.push(v);
    }
    // Back to the open study: the picture is the one with the map again.
    h.state_mut().followup.display = Display::Open;
    h.run();
    h.run();
    assert!(view(&h.render().unwrap()) == view(&with_map));
    // Side by side: the other time point on its own grid at the right; a click there
    // moves the open study's cursor to the point the registration maps there (the
    // later scan samples the demo at x + (5, -4, 8) mm, so the open point p is the
    // later scan's p - (5, -4, 8), within the registration's error).
    h.get_by_label_contains("Side by side").click();
    h.run();
    h.run();
    assert!(h.state().followup.side_by_side_active());
    assert_ne!(
        view(&h.render().unwrap()),
        view(&with_map),
        "the views are laid out anew"
    );
    let before = h.state().cursor_mm;
    // In the right half's axial view (x 606..898 of 1500), off the cursor.
    let click = egui::pos2(700.0, 450.0);
    h.event(egui::Event::PointerMoved(click));
    h.event(egui::Event::PointerButton {
        pos: click,
        button: egui::PointerButton::Primary,
        pressed: true,
        modifiers: Default::default(),
    });
    h.event(egui::Event::PointerButton {
        pos: click,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: Default::default(),
    });
    h.run();
    let after = h.state().cursor_mm;
    assert_ne!(after, before, "a click in the other study moves the cursor");
    let r = h.state().followup.result.as_ref().unwrap();
    let mapped = r.transform.map(&after);
    let expected = after - Vector3::new(5.0, -4.0, 8.0);
    assert!(
        (mapped - expected).norm() < 3.0,
        "the open point {after:?} maps to {mapped:?}, the shift gives {expected:?}"
    );
    // The Quantification window carries the follow-up tables; their CSV export holds
    // both time points and the change made.
    h.state_mut().followup.open = false;
    h.state_mut().compare.quantify_open = true;
    h.step();
    let start = std::time::Instant::now();
    while h.state().compare.quantification.is_none() {
        assert!(
            start.elapsed().as_secs() < 60,
            "no quantification after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        h.step();
    }
    h.run();
    h.get_by_label("Save follow-up tables as CSV…");
    let csv_path = dir.path().join("progress.csv");
    h.state()
        .export_to(pulmo::ui::app::ExportKind::FollowupCsv, &csv_path)
        .unwrap();
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().starts_with("baseline,"),
        "{csv}"
    );
    assert!(
        csv.lines().nth(2).unwrap().starts_with("follow-up,"),
        "{csv}"
    );
    let both = csv.lines().find(|l| l.starts_with("both,")).unwrap();
    let to_consolidation: f64 = both.split(',').nth(7).unwrap().parse().unwrap();
    assert!((to_consolidation - made).abs() < 0.3 * made, "{both}");
    let png = h.state().report_png().unwrap();
    let page = image::load_from_memory(&png).unwrap().to_rgba8();
    assert!(
        page.pixels().filter(|p| p.0 == [230, 150, 20, 255]).count() > 50,
        "the report carries the lesion volume plot"
    );
}
