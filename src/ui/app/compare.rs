//! The Compare and Quantification panels (issue: quantification and comparison).

use super::PulmoApp;

/// State of the Compare and Quantification windows.
#[derive(Default)]
pub struct CompareState {
    pub compare_open: bool,
    pub quantify_open: bool,
}

impl PulmoApp {
    /// Draws the Compare and Quantification windows when open.
    pub(super) fn compare_windows_ui(&mut self, ctx: &egui::Context) {
        let _ = ctx;
    }
}
