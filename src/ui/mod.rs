//! The egui/eframe application (being written).

use std::path::PathBuf;

pub fn run_viewer(_path: Option<PathBuf>, _series: Option<String>) -> anyhow::Result<()> {
    anyhow::bail!("the viewer is not built yet")
}
