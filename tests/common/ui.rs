//! Shared egui_kittest helpers (included by the UI test files with
//! `#[path = "common/ui.rs"] mod ui;`).
#![allow(dead_code)]

use egui_kittest::Harness;
use pulmo::demo::DemoOptions;
use pulmo::ui::{AppOptions, PulmoApp};

/// The small demo study the UI tests use (fast in debug builds).
pub fn small_demo() -> DemoOptions {
    DemoOptions {
        dims: [128, 128, 75],
        spacing_mm: [2.8, 2.8, 4.0],
        ..Default::default()
    }
}

/// App options on the small demo, no recent-files list, no journal.
pub fn options() -> AppOptions {
    AppOptions {
        demo: small_demo(),
        recent_file: None,
        ..Default::default()
    }
}

/// A harness of `size` (on wgpu when `wgpu`), the study loaded and one frame run.
pub fn harness_with(
    options: AppOptions,
    size: egui::Vec2,
    wgpu: bool,
) -> Harness<'static, PulmoApp> {
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

/// A left-button drag from `a` to `b` in five moves, one frame per event.
pub fn drag(h: &mut Harness<'static, PulmoApp>, a: egui::Pos2, b: egui::Pos2) {
    let press = |pressed: bool, pos: egui::Pos2| egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed,
        modifiers: Default::default(),
    };
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
}

/// The open study.
pub fn study<'a>(h: &'a Harness<'static, PulmoApp>) -> &'a pulmo::session::Study {
    h.state().session.study.as_ref().expect("a study")
}

/// The open study, to change it.
pub fn study_mut<'a>(h: &'a mut Harness<'static, PulmoApp>) -> &'a mut pulmo::session::Study {
    h.state_mut().session.study.as_mut().expect("a study")
}

/// The labels of the open study.
pub fn labels(h: &Harness<'static, PulmoApp>) -> Vec<u8> {
    study(h).editor.labels().voxels.clone()
}
