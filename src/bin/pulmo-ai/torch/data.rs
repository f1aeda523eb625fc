//! Training data: real CT volumes with lung masks (LCTSC layout), sliced onto the same
//! model grid the inference pipeline uses.

use pulmo::infer::InferError;
use pulmo::infer::evaluate::Case;
use pulmo::infer::manifest::InputSpec;
use pulmo::infer::pipeline::{SliceGrid, slice_input};

/// One training slice: `[c, h, w]` input and `[h, w]` class targets.
#[derive(Clone)]
pub struct Sample {
    pub input: Vec<f32>,
    pub target: Vec<u8>,
    pub h: usize,
    pub w: usize,
}

/// Every axial slice of `case` on the model grid; mask values are mapped through
/// `class_of` (label value → class index).
pub fn case_samples(
    case: &Case,
    spec: &InputSpec,
    class_of: &dyn Fn(u8) -> u8,
) -> Result<Vec<Sample>, InferError> {
    let grid =
        SliceGrid::new(&case.ct.geometry, spec.spacing_mm, spec.pad_multiple).map_err(|e| {
            InferError::Data {
                path: case.ct_path.clone(),
                message: e.to_string(),
            }
        })?;
    let (w, h) = (grid.width, grid.height);
    let c = spec.channels();
    let mut out = Vec::with_capacity(case.ct.geometry.dims[2]);
    for k in 0..case.ct.geometry.dims[2] {
        let mut input = vec![0f32; c * h * w];
        slice_input(&grid, &case.ct, k, spec, &mut input);
        let mut target = vec![0u8; h * w];
        grid.sample_labels_nearest(&case.mask, k, &mut target);
        for t in &mut target {
            *t = class_of(*t);
        }
        out.push(Sample {
            input,
            target,
            h,
            w,
        });
    }
    Ok(out)
}

/// SplitMix64: a small seeded generator for shuffles and augmentation parameters.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Copies a `crop` x `crop` window of `s` (top-left `(x0, y0)`, may extend past the
/// sample: outside is input 0 and class 0) into `input` (`[c, crop, crop]`) and
/// `target` (`[crop, crop]`).
pub fn crop_into(
    s: &Sample,
    channels: usize,
    crop: usize,
    x0: isize,
    y0: isize,
    input: &mut [f32],
    target: &mut [i64],
) {
    for y in 0..crop {
        let sy = y0 + y as isize;
        for x in 0..crop {
            let sx = x0 + x as isize;
            let inside = sx >= 0 && sy >= 0 && (sx as usize) < s.w && (sy as usize) < s.h;
            let p = if inside {
                sx as usize + s.w * sy as usize
            } else {
                0
            };
            target[x + crop * y] = if inside { s.target[p] as i64 } else { 0 };
            for c in 0..channels {
                input[c * crop * crop + x + crop * y] = if inside {
                    s.input[c * s.w * s.h + p]
                } else {
                    0.0
                };
            }
        }
    }
}
