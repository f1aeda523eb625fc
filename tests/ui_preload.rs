//! `pulmo PATH` starts decoding before the window exists (`PreparedLoad`); the app adopts
//! that load: the study opens, the path enters the recent list, and a bad file is
//! reported in the window like any other load.

#[path = "common/ui.rs"]
mod ui;

use pulmo::ui::{AppOptions, PreparedLoad};

#[test]
fn a_load_started_before_the_window_opens_the_study() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ct.nii.gz");
    let demo = pulmo::demo::generate(&ui::small_demo());
    pulmo::io::nifti::write_nifti(&path, &demo.ct).unwrap();

    let pre = PreparedLoad::start(path.clone(), None);
    // Let the loader finish before the window exists (it then cannot wake the UI; the
    // app must still pick the result up).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let options = AppOptions {
        preload: Some(pre),
        ..ui::options()
    };
    // Frames as the window runs them (no blocking wait): the result is picked up.
    let mut h = egui_kittest::Harness::builder()
        .with_size(egui::vec2(1200.0, 800.0))
        .build_eframe(move |cc| pulmo::ui::PulmoApp::new(cc, options));
    let start = std::time::Instant::now();
    while h.state().session.study.is_none() && h.state().error.is_none() {
        assert!(
            start.elapsed().as_secs() < 30,
            "the preloaded study never opened"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run();
    }
    let app = h.state();
    assert!(app.error.is_none(), "{:?}", app.error);
    let study = app
        .session
        .study
        .as_ref()
        .expect("the preloaded study is open");
    assert_eq!(study.name, path.display().to_string());
    assert_eq!(study.ct.voxels, demo.ct.voxels);
    assert_eq!(app.recent.first(), Some(&path));
}

#[test]
fn a_bad_file_loaded_before_the_window_is_reported_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.nii");
    std::fs::write(&path, b"not a NIfTI file").unwrap();
    let options = AppOptions {
        preload: Some(PreparedLoad::start(path.clone(), None)),
        ..ui::options()
    };
    let h = ui::harness_with(options, egui::vec2(1200.0, 800.0), false);
    let app = h.state();
    assert!(app.session.study.is_none());
    let error = app.error.as_deref().expect("an error is shown");
    assert!(error.contains("broken.nii"), "{error}");
}
