//! The egui/eframe application. Depends on everything below it; functions that draw into
//! an `egui::Ui` end in `_ui`.

pub mod app;

use std::path::PathBuf;

pub use app::{AiFactory, AppOptions, PreparedLoad, PulmoApp};

/// Opens the viewer window (demo study when `path` is None).
/// Opens the viewer on `path` (the demo without it); `labels` opens onto it, and
/// `followup` (a later CT and its optional labels) is registered onto it.
pub fn run_viewer(
    path: Option<PathBuf>,
    series: Option<String>,
    labels: Option<PathBuf>,
    followup: Option<(PathBuf, Option<PathBuf>)>,
) -> anyhow::Result<()> {
    crate::session::startup::mark("viewer starts (main)");
    // Decoding starts now, while the window and the GPU device are being created.
    let preload = path
        .clone()
        .map(|p| app::PreparedLoad::start(p, series.clone()));
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1400.0, 900.0])
            .with_title("pulmo")
            .with_drag_and_drop(true),
        ..Default::default()
    };
    let app_options = AppOptions {
        path,
        series,
        journal_dir: crate::session::journal::default_dir(),
        preload,
        labels,
        followup,
        ..Default::default()
    };
    eframe::run_native(
        "pulmo",
        options,
        Box::new(move |cc| Ok(Box::new(PulmoApp::new(cc, app_options)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the viewer window: {e}"))
}
