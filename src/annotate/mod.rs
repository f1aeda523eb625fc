//! Annotation: the label table (names, colours, visibility, locks), GUI-free editing
//! tools and compact undo.
//!
//! - [`history`]: the undo/redo store; every edit is a transaction stored as a
//!   run-length encoded delta of the changed voxels ([`History`]; boxes are [`crate::volume::VoxelBox`]).
//! - [`editor`]: [`Editor`] owns a label map, its [`LabelTable`] and its [`History`], and
//!   routes every write through the history, enforcing locks and the
//!   [`OverwritePolicy`].
//! - [`tools`]: brush/eraser strokes, HU-limited painting, region growing, polygon fill,
//!   morphology and slice interpolation, sized in millimetres, one undo step each.

pub mod editor;
pub mod history;
pub mod itksnap;
mod morph;
pub mod tools;

pub use editor::{Editor, OverwritePolicy};
pub use history::{DEFAULT_MEMORY_CAP_BYTES, History, StepInfo};
pub use morph::{interpolate_between, label_bbox};
pub use tools::{
    Brush, BrushExtent, BrushShape, Morphology, RegionGrow, Scope, Stroke, ToolError, flood_fill,
    interpolate_slices, morphology, paint_stroke, polygon_fill,
};

/// One label value's description.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub value: u8,
    pub name: String,
    /// sRGB 0..255.
    pub color: [u8; 3],
    pub visible: bool,
    /// Locked labels are never overwritten by edits.
    pub locked: bool,
}

/// The labels of a study (value 0 is background and not listed).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelTable {
    pub labels: Vec<Label>,
}

pub const LEFT_LUNG: u8 = 1;
pub const RIGHT_LUNG: u8 = 2;
pub const GGO: u8 = 3;
pub const CONSOLIDATION: u8 = 4;
pub const PLEURAL_EFFUSION: u8 = 5;
pub const OTHER_LESION: u8 = 6;

impl Default for LabelTable {
    fn default() -> Self {
        let l = |value, name: &str, color| Label {
            value,
            name: name.to_string(),
            color,
            visible: true,
            locked: false,
        };
        Self {
            labels: vec![
                l(LEFT_LUNG, "left lung", [64, 160, 255]),
                l(RIGHT_LUNG, "right lung", [80, 220, 140]),
                l(GGO, "ground-glass opacity", [255, 210, 60]),
                l(CONSOLIDATION, "consolidation", [255, 80, 60]),
                l(PLEURAL_EFFUSION, "pleural effusion", [180, 100, 255]),
                l(OTHER_LESION, "other lesion", [255, 120, 220]),
            ],
        }
    }
}

impl LabelTable {
    pub fn get(&self, value: u8) -> Option<&Label> {
        self.labels.iter().find(|l| l.value == value)
    }

    /// RGBA (0..1) per label value, alpha 1 when visible, for the shader's colour table.
    pub fn rgba_table(&self) -> [[f32; 4]; 256] {
        let mut t = [[0.0; 4]; 256];
        for l in &self.labels {
            let c = l.color.map(|v| v as f32 / 255.0);
            t[l.value as usize] = [c[0], c[1], c[2], if l.visible { 1.0 } else { 0.0 }];
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_and_visibility() {
        let mut t = LabelTable::default();
        assert_eq!(t.get(GGO).unwrap().name, "ground-glass opacity");
        assert_eq!(t.rgba_table()[CONSOLIDATION as usize][3], 1.0);
        t.labels[0].visible = false;
        assert_eq!(t.rgba_table()[LEFT_LUNG as usize][3], 0.0);
        assert_eq!(t.rgba_table()[0], [0.0; 4]);
    }
}
