//! Case level: how much of the lungs a lesion mask involves.
//!
//! % involved = lesion voxels inside the lungs / lung voxels × 100, where lung voxels
//! are the voxels of `lungs` whose value is in `lung_labels` and lesion voxels those of
//! `lesions` whose value is in `lesion_labels`. Lungs and lesions may be the same label
//! map: when lesions are painted over the lung labels, list the lesion labels among the
//! lung labels too (otherwise no lesion voxel lies inside the lungs). A case is
//! positive when the percentage is at least the threshold (default
//! [`DEFAULT_INVOLVEMENT_THRESHOLD_PCT`]).

use rayon::prelude::*;

use super::{MetricsError, check_same_grid, voxel_volume_ml};
use crate::volume::LabelVolume;

/// The default positivity threshold: 0.4 % of the lungs involved.
pub const DEFAULT_INVOLVEMENT_THRESHOLD_PCT: f64 = 0.4;

/// Lung involvement of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct LungInvolvement {
    pub lung_voxels: u64,
    pub lesion_in_lung_voxels: u64,
    pub lung_volume_ml: f64,
    pub lesion_in_lung_volume_ml: f64,
    /// `None` when there are no lung voxels.
    pub percent_involved: Option<f64>,
    pub threshold_pct: f64,
    /// `percent_involved >= threshold_pct` (false without lungs).
    pub positive: bool,
}

/// Lung involvement; see the module doc.
pub fn lung_involvement(
    lungs: &LabelVolume,
    lung_labels: &[u8],
    lesions: &LabelVolume,
    lesion_labels: &[u8],
    threshold_pct: f64,
) -> Result<LungInvolvement, MetricsError> {
    check_same_grid("lungs", &lungs.geometry, "lesions", &lesions.geometry)?;
    let mut is_lung = [false; 256];
    lung_labels.iter().for_each(|&l| is_lung[l as usize] = true);
    let mut is_lesion = [false; 256];
    lesion_labels
        .iter()
        .for_each(|&l| is_lesion[l as usize] = true);
    let (lung, lesion) = lungs
        .voxels
        .par_chunks(1 << 16)
        .zip(lesions.voxels.par_chunks(1 << 16))
        .map(|(a, b)| {
            let (mut n, mut m) = (0u64, 0u64);
            for (&x, &y) in a.iter().zip(b) {
                let l = is_lung[x as usize];
                n += l as u64;
                m += (l && is_lesion[y as usize]) as u64;
            }
            (n, m)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let ml = voxel_volume_ml(&lungs.geometry);
    let percent_involved = (lung > 0).then(|| lesion as f64 / lung as f64 * 100.0);
    Ok(LungInvolvement {
        lung_voxels: lung,
        lesion_in_lung_voxels: lesion,
        lung_volume_ml: lung as f64 * ml,
        lesion_in_lung_volume_ml: lesion as f64 * ml,
        percent_involved,
        threshold_pct,
        positive: percent_involved.is_some_and(|p| p >= threshold_pct),
    })
}
