//! A classical lung segmenter with no libtorch: air-density pixels (below -320 HU) not
//! connected to the air around the body, slice by slice, then the lung post-processing.
//! It is the segmenter the worker and UI tests use, and the fallback when no lung
//! weights are installed (its proposals are labelled as such).

use super::manifest::{InputSpec, PostprocessSpec};
use super::pipeline::{SliceModel, SlicePipeline};
use super::{InferError, LEFT_LUNG, ModelInfo, Task};

/// HU threshold for air-density tissue.
pub const AIR_BELOW_HU: f32 = -320.0;

/// The threshold model (see the module doc).
pub struct ThresholdLungs {
    spec: InputSpec,
}

impl ThresholdLungs {
    pub fn spec() -> InputSpec {
        InputSpec {
            spacing_mm: 1.5,
            context_slices: 0,
            hu_min: -1100.0,
            hu_max: 900.0,
            pad_multiple: 8,
            flip_average: false,
        }
    }

    /// The model inside the standard pipeline.
    pub fn pipeline() -> SlicePipeline<ThresholdLungs> {
        SlicePipeline {
            model: ThresholdLungs { spec: Self::spec() },
            task: Task::Lung,
            spec: Self::spec(),
            class_labels: vec![0, LEFT_LUNG],
            post: PostprocessSpec::default(),
        }
    }
}

impl SliceModel for ThresholdLungs {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "threshold-lungs".into(),
            version: "1".into(),
            device: "cpu".into(),
        }
    }

    fn predict(&mut self, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, InferError> {
        let [n, c, h, w] = shape;
        let t = self.spec.normalise(AIR_BELOW_HU);
        let mut out = vec![0f32; n * 2 * h * w];
        for s in 0..n {
            let img = &input[s * c * h * w..s * c * h * w + h * w];
            // Air reachable from the border is outside the body.
            let mut outside = vec![false; h * w];
            let mut stack: Vec<usize> = Vec::new();
            for p in 0..h * w {
                let (x, y) = (p % w, p / w);
                if (x == 0 || y == 0 || x + 1 == w || y + 1 == h) && img[p] < t {
                    outside[p] = true;
                    stack.push(p);
                }
            }
            while let Some(p) = stack.pop() {
                super::postprocess::for_each_neighbour4(p, w, h, &mut |q: usize| {
                    if !outside[q] && img[q] < t {
                        outside[q] = true;
                        stack.push(q);
                    }
                });
            }
            let o = &mut out[s * 2 * h * w..(s + 1) * 2 * h * w];
            for p in 0..h * w {
                let lung = if img[p] < t && !outside[p] { 1.0 } else { 0.0 };
                o[p] = 1.0 - lung;
                o[h * w + p] = lung;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::{RunContext, SegmentInput, Segmenter};

    #[test]
    fn finds_both_demo_lungs() {
        let demo = crate::demo::generate(&crate::demo::DemoOptions {
            dims: [96, 96, 60],
            spacing_mm: [358.4 / 96.0, 358.4 / 96.0, 5.0],
            ..Default::default()
        });
        let mut seg = ThresholdLungs::pipeline();
        let p = RunContext::detached(|ctx| seg.segment(&demo.ct, SegmentInput::default(), ctx))
            .unwrap();
        // Against the demo's exact lungs (labels 1, 2 plus lesions inside them).
        let truth = &demo.truth;
        let (mut inter, mut a, mut b) = (0u64, 0u64, 0u64);
        for (&t, &q) in truth.voxels.iter().zip(&p.labels.voxels) {
            let t = t != 0;
            let q = q != 0;
            inter += (t && q) as u64;
            a += t as u64;
            b += q as u64;
        }
        let dice = 2.0 * inter as f64 / (a + b) as f64;
        assert!(dice > 0.8, "threshold lungs Dice {dice}");
        // Sides: demo label 1 is the left lung.
        let mut agree = 0u64;
        let mut both = 0u64;
        for (&t, &q) in truth.voxels.iter().zip(&p.labels.voxels) {
            if (t == 1 || t == 2) && q != 0 {
                both += 1;
                agree += (t == q) as u64;
            }
        }
        assert!(agree as f64 > 0.95 * both as f64, "{agree}/{both}");
    }
}
