//! Window/level presets over Hounsfield units: a window shows `center_hu ± width_hu / 2`
//! from black to white. One type for the standard presets and for the windows a DICOM
//! series carries (Window Center / Width / Center & Width Explanation).

/// A window (VOI) preset.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPreset {
    pub center_hu: f64,
    pub width_hu: f64,
    /// Its name (DICOM's Window Center & Width Explanation; may be absent in files).
    pub explanation: Option<String>,
}

impl WindowPreset {
    pub fn named(name: &str, center_hu: f64, width_hu: f64) -> Self {
        WindowPreset {
            center_hu,
            width_hu,
            explanation: Some(name.into()),
        }
    }

    /// The lung window, the viewer's default: -600 / 1500 HU.
    pub fn lung() -> Self {
        Self::named("Lung", -600.0, 1500.0)
    }

    /// The name shown to the user ("" when the file gave none).
    pub fn name(&self) -> &str {
        self.explanation.as_deref().unwrap_or_default()
    }
}

/// Lung, mediastinum and bone.
pub fn standard_presets() -> Vec<WindowPreset> {
    vec![
        WindowPreset::lung(),
        WindowPreset::named("Mediastinum", 40.0, 350.0),
        WindowPreset::named("Bone", 500.0, 2000.0),
    ]
}

/// The standard presets followed by a series' own windows, each named (unnamed ones as
/// "DICOM window N").
pub fn presets_with_series(series: &[WindowPreset]) -> Vec<WindowPreset> {
    let mut presets = standard_presets();
    presets.extend(series.iter().enumerate().map(|(i, w)| {
        WindowPreset {
            explanation: Some(
                w.explanation
                    .clone()
                    .unwrap_or_else(|| format!("DICOM window {}", i + 1)),
            ),
            ..w.clone()
        }
    }));
    presets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_windows_follow_the_standard_ones_named() {
        let series = [
            WindowPreset {
                center_hu: 40.0,
                width_hu: 400.0,
                explanation: None,
            },
            WindowPreset::named("WINDOW2", -500.0, 1400.0),
        ];
        let p = presets_with_series(&series);
        let names: Vec<_> = p.iter().map(WindowPreset::name).collect();
        assert_eq!(
            names,
            ["Lung", "Mediastinum", "Bone", "DICOM window 1", "WINDOW2"]
        );
        assert_eq!((p[0].center_hu, p[0].width_hu), (-600.0, 1500.0));
        assert_eq!((p[3].center_hu, p[3].width_hu), (40.0, 400.0));
    }
}
