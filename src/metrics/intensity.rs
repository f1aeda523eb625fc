//! Intensity agreement of two masks on a CT (Hounsfield units).
//!
//! Definitions (the lung-segmentation seed's, made precise): let `Ip = CT * pred` and
//! `Ir = CT * ref` be the CT multiplied by the binary predicted (test) and reference
//! masks (so they are 0 outside their mask), and `U = pred ∪ ref` the union region.
//!
//! - ME (mean error) = mean over the voxels of `U` of `Ip - Ir`
//!   = (Σ_{pred∖ref} CT − Σ_{ref∖pred} CT) / |U|.
//! - MAE (mean absolute error) = mean over `U` of `|Ip - Ir|`
//!   = (Σ_{pred∖ref} |CT| + Σ_{ref∖pred} |CT|) / |U|.
//!   Voxels in both masks contribute 0; voxels outside both are not counted (otherwise
//!   the value would depend on the field of view).
//! - Relative mean HU difference = (mean HU inside pred − mean HU inside ref) / |mean HU
//!   inside ref| × 100 (%).
//!
//! Both masks empty: ME = MAE = 0 (the masked images are identical). The means and the
//! relative difference are `None` when a mask is empty (or the reference mean is 0).

use rayon::prelude::*;

use super::{MetricsError, Target, check_same_grid};
use crate::volume::{CtVolume, LabelVolume};

/// Intensity agreement; see the module doc for the definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct IntensityMetrics {
    /// Mean of `Ip - Ir` over the union of the masks (HU).
    pub mean_error_hu: f64,
    /// Mean of `|Ip - Ir|` over the union of the masks (HU).
    pub mean_absolute_error_hu: f64,
    /// Mean HU inside the test (predicted) mask.
    pub mean_hu_test: Option<f64>,
    /// Mean HU inside the reference mask.
    pub mean_hu_reference: Option<f64>,
    /// (mean_hu_test − mean_hu_reference) / |mean_hu_reference| × 100.
    pub relative_mean_hu_difference_pct: Option<f64>,
    /// Voxels in the union of the masks.
    pub union_voxels: u64,
}

#[derive(Default, Clone, Copy)]
struct Sums {
    n_test: u64,
    sum_test: i64,
    n_ref: u64,
    sum_ref: i64,
    n_union: u64,
    sum_diff: i64,
    sum_abs_diff: i64,
}

impl Sums {
    fn add(mut self, o: Sums) -> Sums {
        self.n_test += o.n_test;
        self.sum_test += o.sum_test;
        self.n_ref += o.n_ref;
        self.sum_ref += o.sum_ref;
        self.n_union += o.n_union;
        self.sum_diff += o.sum_diff;
        self.sum_abs_diff += o.sum_abs_diff;
        self
    }
}

/// ME, MAE and mean HU of `target` in `test` (predicted) against `reference` on `ct`.
/// Sums are exact (64-bit integers).
pub fn intensity_metrics(
    ct: &CtVolume,
    reference: &LabelVolume,
    test: &LabelVolume,
    target: Target,
) -> Result<IntensityMetrics, MetricsError> {
    check_same_grid("reference", &reference.geometry, "test", &test.geometry)?;
    check_same_grid("CT", &ct.geometry, "reference", &reference.geometry)?;
    const CHUNK: usize = 1 << 16;
    let s = ct
        .voxels
        .par_chunks(CHUNK)
        .zip(reference.voxels.par_chunks(CHUNK))
        .zip(test.voxels.par_chunks(CHUNK))
        .map(|((c, r), t)| {
            let mut s = Sums::default();
            for ((&hu, &rv), &tv) in c.iter().zip(r).zip(t) {
                let (inr, int) = (target.hit(rv), target.hit(tv));
                if !(inr || int) {
                    continue;
                }
                let hu = hu as i64;
                s.n_union += 1;
                if int {
                    s.n_test += 1;
                    s.sum_test += hu;
                }
                if inr {
                    s.n_ref += 1;
                    s.sum_ref += hu;
                }
                let diff = if int { hu } else { 0 } - if inr { hu } else { 0 };
                s.sum_diff += diff;
                s.sum_abs_diff += diff.abs();
            }
            s
        })
        .reduce(Sums::default, Sums::add);
    let mean = |sum: i64, n: u64| (n > 0).then(|| sum as f64 / n as f64);
    let mean_hu_test = mean(s.sum_test, s.n_test);
    let mean_hu_reference = mean(s.sum_ref, s.n_ref);
    let relative_mean_hu_difference_pct = match (mean_hu_test, mean_hu_reference) {
        (Some(t), Some(r)) if r != 0.0 => Some((t - r) / r.abs() * 100.0),
        _ => None,
    };
    Ok(IntensityMetrics {
        mean_error_hu: mean(s.sum_diff, s.n_union).unwrap_or(0.0),
        mean_absolute_error_hu: mean(s.sum_abs_diff, s.n_union).unwrap_or(0.0),
        mean_hu_test,
        mean_hu_reference,
        relative_mean_hu_difference_pct,
        union_voxels: s.n_union,
    })
}
