//! The slice-wise pipeline shared by every 2D model: resample, normalise, batch, run,
//! map back, arg-max, post-process.
//!
//! Each axial slice is resampled (bilinear) onto the model grid: an axis-aligned grid in
//! the patient frame with the model's pixel size, columns running to patient left (+x in
//! LPS) and rows to posterior (+y), covering the volume's x/y extent and padded
//! symmetrically to the model's multiple. Training uses the same [`SliceGrid`], so a
//! file's flips or axis order never reach the model. Probabilities are mapped back to each
//! CT voxel bilinearly, so the proposal lives on the CT grid exactly.

use std::time::Instant;

use rayon::prelude::*;

use super::manifest::InputSpec;
use super::postprocess;
use super::{InferError, ModelInfo, Proposal, RunContext, SegmentInput, Segmenter, Task};
use crate::volume::{CtVolume, Geometry, LabelVolume, Volume};

/// A 2D network: normalised slices in, class probabilities out.
pub trait SliceModel: Send {
    fn info(&self) -> ModelInfo;
    /// `input` is `[n, c, h, w]` (row-major); returns probabilities `[n, classes, h, w]`
    /// summing to 1 over the classes.
    fn predict(&mut self, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, InferError>;
    /// Slices per batch for an `h` x `w` input.
    fn batch_size(&self, h: usize, w: usize) -> usize {
        ((1 << 22) / (h * w).max(1)).clamp(1, 64)
    }
}

/// The model grid of a CT volume: pixel (u, v) of slice k is at patient
/// `(x0 + u s, y0 + v s, z_k)`.
#[derive(Debug, Clone)]
pub struct SliceGrid {
    pub width: usize,
    pub height: usize,
    pub spacing_mm: f64,
    pub x0_mm: f64,
    pub y0_mm: f64,
    /// Per CT slice k: CT voxel (i, j) = a · (u, v) + b_k, as [a00, a01, a10, a11].
    pub ct_from_model: [f64; 4],
    pub ct_offset: Vec<[f64; 2]>,
}

impl SliceGrid {
    /// The grid for `geometry` at `spacing_mm`, padded to a multiple of `pad`.
    /// Fails unless the third voxel axis is the patient's z axis within 30°.
    pub fn new(geometry: &Geometry, spacing_mm: f64, pad: usize) -> Result<SliceGrid, InferError> {
        SliceGrid::within(geometry, spacing_mm, pad, None)
    }

    /// [`SliceGrid::new`] covering only the part of the volume inside the patient x/y
    /// `bounds` (mm, `[lo, hi]` per axis) when given; the padding to `pad` may reach
    /// past them (real CT where there is some).
    pub fn within(
        geometry: &Geometry,
        spacing_mm: f64,
        pad: usize,
        bounds: Option<[[f64; 2]; 2]>,
    ) -> Result<SliceGrid, InferError> {
        let d = geometry.direction;
        let normal = d.column(2);
        if normal[2].abs() < 0.866 {
            return Err(InferError::Input(format!(
                "slices are not axial (slice normal {:.2}, {:.2}, {:.2}); the models work on axial slices",
                normal[0], normal[1], normal[2]
            )));
        }
        let dims = geometry.dims;
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for c in 0..8 {
            let v = nalgebra::Vector3::new(
                if c & 1 == 0 {
                    0.0
                } else {
                    dims[0] as f64 - 1.0
                },
                if c & 2 == 0 {
                    0.0
                } else {
                    dims[1] as f64 - 1.0
                },
                if c & 4 == 0 {
                    0.0
                } else {
                    dims[2] as f64 - 1.0
                },
            );
            let p = geometry.world_at_voxel(v);
            for a in 0..2 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
        if let Some(b) = bounds {
            for a in 0..2 {
                let (l, h) = (lo[a].max(b[a][0]), hi[a].min(b[a][1]));
                if l <= h {
                    (lo[a], hi[a]) = (l, h);
                }
            }
        }
        let pad = pad.max(1);
        let n = |a: usize| ((hi[a] - lo[a]) / spacing_mm + 1e-6).floor() as usize + 1;
        let round_up = |x: usize| x.div_ceil(pad) * pad;
        let (w0, h0) = (n(0), n(1));
        let (width, height) = (round_up(w0), round_up(h0));
        // Centre the content: padding split evenly.
        let x0 = lo[0] - (width - w0) as f64 / 2.0 * spacing_mm;
        let y0 = lo[1] - (height - h0) as f64 / 2.0 * spacing_mm;
        let vfw = geometry.voxel_from_world();
        let a = [
            vfw[(0, 0)] * spacing_mm,
            vfw[(0, 1)] * spacing_mm,
            vfw[(1, 0)] * spacing_mm,
            vfw[(1, 1)] * spacing_mm,
        ];
        let ct_offset = (0..dims[2])
            .map(|k| {
                // World z of slice k's centre column, then the (i, j) of (x0, y0, z).
                let centre = geometry.world_at_voxel(nalgebra::Vector3::new(
                    (dims[0] as f64 - 1.0) / 2.0,
                    (dims[1] as f64 - 1.0) / 2.0,
                    k as f64,
                ));
                let v = geometry.voxel_at_world(nalgebra::Point3::new(x0, y0, centre[2]));
                // Keep exactly in slice k (tilted planes: in-plane position of the slice).
                [v[0], v[1]]
            })
            .collect();
        Ok(SliceGrid {
            width,
            height,
            spacing_mm,
            x0_mm: x0,
            y0_mm: y0,
            ct_from_model: a,
            ct_offset,
        })
    }

    /// Bilinear samples of CT slice `k` on the model grid, normalised by `spec`, written
    /// to `out` (`height * width`). Outside the CT is `spec.hu_min`.
    pub fn sample_slice(&self, ct: &CtVolume, k: usize, spec: &InputSpec, out: &mut [f32]) {
        let [nx, ny, _] = ct.geometry.dims;
        let slice = ct.slice_k(k);
        let a = self.ct_from_model;
        let b = self.ct_offset[k];
        let outside = spec.normalise(spec.hu_min);
        out.par_chunks_mut(self.width)
            .enumerate()
            .for_each(|(v, row)| {
                for (u, o) in row.iter_mut().enumerate() {
                    let (uf, vf) = (u as f64, v as f64);
                    let i = a[0] * uf + a[1] * vf + b[0];
                    let j = a[2] * uf + a[3] * vf + b[1];
                    *o = match bilinear(slice, nx, ny, i, j) {
                        Some(hu) => spec.normalise(hu),
                        None => outside,
                    };
                }
            });
    }

    /// Bilinear samples of a label slice on the model grid as per-class indicator
    /// averages: returns the label of the nearest CT voxel (for training targets).
    pub fn sample_labels_nearest(&self, labels: &LabelVolume, k: usize, out: &mut [u8]) {
        let [nx, ny, _] = labels.geometry.dims;
        let slice = labels.slice_k(k);
        let a = self.ct_from_model;
        let b = self.ct_offset[k];
        out.par_chunks_mut(self.width)
            .enumerate()
            .for_each(|(v, row)| {
                for (u, o) in row.iter_mut().enumerate() {
                    let (uf, vf) = (u as f64, v as f64);
                    let i = (a[0] * uf + a[1] * vf + b[0]).round();
                    let j = (a[2] * uf + a[3] * vf + b[1]).round();
                    *o = if i >= 0.0 && j >= 0.0 && (i as usize) < nx && (j as usize) < ny {
                        slice[i as usize + nx * j as usize]
                    } else {
                        0
                    };
                }
            });
    }

    /// Model-grid coordinates (u, v) of CT voxel (i, j) in slice k.
    fn model_from_ct(&self) -> [f64; 4] {
        let [a, b, c, d] = self.ct_from_model;
        let det = a * d - b * c;
        [d / det, -b / det, -c / det, a / det]
    }
}

#[inline]
fn bilinear<T: Copy + Into<f32>>(slice: &[T], nx: usize, ny: usize, i: f64, j: f64) -> Option<f32> {
    if !(i > -0.5 && j > -0.5 && i < nx as f64 - 0.5 && j < ny as f64 - 0.5) {
        return None;
    }
    let i = i.clamp(0.0, (nx - 1) as f64);
    let j = j.clamp(0.0, (ny - 1) as f64);
    let (i0, j0) = (i.floor() as usize, j.floor() as usize);
    let (i1, j1) = ((i0 + 1).min(nx - 1), (j0 + 1).min(ny - 1));
    let (fi, fj) = ((i - i0 as f64) as f32, (j - j0 as f64) as f32);
    let at = |i: usize, j: usize| -> f32 { slice[i + nx * j].into() };
    let top = at(i0, j0) * (1.0 - fi) + at(i1, j0) * fi;
    let bottom = at(i0, j1) * (1.0 - fi) + at(i1, j1) * fi;
    Some(top * (1.0 - fj) + bottom * fj)
}

/// Builds the `[c, h, w]` input of slice `k` (with context slices) on `grid`.
pub fn slice_input(grid: &SliceGrid, ct: &CtVolume, k: usize, spec: &InputSpec, out: &mut [f32]) {
    let plane = grid.width * grid.height;
    let nz = ct.geometry.dims[2] as isize;
    let c = spec.context_slices as isize;
    for (ch, d) in (-c..=c).enumerate() {
        let kk = (k as isize + d).clamp(0, nz - 1) as usize;
        grid.sample_slice(ct, kk, spec, &mut out[ch * plane..(ch + 1) * plane]);
    }
}

/// In-plane context (mm) the lesion model gets around the lungs' box.
pub const ROI_CONTEXT_MM: f64 = 32.0;

/// The part of a volume a model runs on: a range of slices and a patient x/y box.
#[derive(Debug, Clone, PartialEq)]
pub struct Roi {
    pub slices: std::ops::Range<usize>,
    /// `[[x_lo, x_hi], [y_lo, y_hi]]` in mm (patient frame).
    pub bounds_mm: [[f64; 2]; 2],
}

impl Roi {
    /// The slices holding any non-zero voxel of `mask` and its x/y box grown by
    /// `margin_mm`; `None` for an empty mask.
    pub fn around(mask: &LabelVolume, margin_mm: f64) -> Option<Roi> {
        let [nx, ny, nz] = mask.geometry.dims;
        let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
        for k in 0..nz {
            let slice = mask.slice_k(k);
            for j in 0..ny {
                let row = &slice[j * nx..(j + 1) * nx];
                let (Some(a), Some(b)) = (
                    row.iter().position(|&v| v != 0),
                    row.iter().rposition(|&v| v != 0),
                ) else {
                    continue;
                };
                for (axis, (l, h)) in [(0, (a, b)), (1, (j, j)), (2, (k, k))] {
                    lo[axis] = lo[axis].min(l);
                    hi[axis] = hi[axis].max(h);
                }
            }
        }
        if lo[0] == usize::MAX {
            return None;
        }
        let mut b = [[f64::INFINITY, f64::NEG_INFINITY]; 2];
        for c in 0..8 {
            let v = nalgebra::Vector3::new(
                if c & 1 == 0 { lo[0] } else { hi[0] } as f64,
                if c & 2 == 0 { lo[1] } else { hi[1] } as f64,
                if c & 4 == 0 { lo[2] } else { hi[2] } as f64,
            );
            let p = mask.geometry.world_at_voxel(v);
            for a in 0..2 {
                b[a][0] = b[a][0].min(p[a] - margin_mm);
                b[a][1] = b[a][1].max(p[a] + margin_mm);
            }
        }
        Some(Roi {
            slices: lo[2]..hi[2] + 1,
            bounds_mm: b,
        })
    }
}

/// A [`SliceModel`] with its input spec, class labels and post-processing: a
/// [`Segmenter`].
pub struct SlicePipeline<M: SliceModel> {
    pub model: M,
    pub task: Task,
    pub spec: InputSpec,
    /// Label value of each output class (0 = background).
    pub class_labels: Vec<u8>,
    pub post: super::manifest::PostprocessSpec,
}

impl<M: SliceModel> SlicePipeline<M> {
    /// Class index and probability (0..=255) per CT voxel, before post-processing.
    /// With `roi`, only its slices and its in-plane box are run (elsewhere: background,
    /// probability 0).
    pub fn predict_volume(
        &mut self,
        ct: &CtVolume,
        roi: Option<&Roi>,
        ctx: &mut RunContext<'_>,
    ) -> Result<(LabelVolume, Volume<u8>, f64, String), InferError> {
        let g = &ct.geometry;
        let grid = SliceGrid::within(
            g,
            self.spec.spacing_mm,
            self.spec.pad_multiple,
            roi.map(|r| r.bounds_mm),
        )?;
        let [nx, ny, nz] = g.dims;
        let (k_first, k_end) =
            roi.map_or((0, nz), |r| (r.slices.start.min(nz), r.slices.end.min(nz)));
        let (w, h) = (grid.width, grid.height);
        let channels = self.spec.channels();
        let classes = self.class_labels.len();
        let batch = self.model.batch_size(h, w).max(1);
        let mut class_vol = crate::volume::zeroed_buffer::<u8>(nx * ny * nz);
        let mut conf_vol = crate::volume::zeroed_buffer::<u8>(nx * ny * nz);
        let inv = grid.model_from_ct();
        let mut model_seconds = 0.0;
        let (mut sample_seconds, mut stitch_seconds) = (0.0, 0.0);
        let mut input = vec![0f32; batch * channels * w * h];
        let mut flipped = Vec::new();
        let mut k0 = k_first;
        let todo = k_end - k_first;
        ctx.report(0, todo);
        while k0 < k_end {
            ctx.check()?;
            let n = batch.min(k_end - k0);
            let t = Instant::now();
            let plane = channels * w * h;
            input[..n * plane]
                .par_chunks_mut(plane)
                .enumerate()
                .for_each(|(s, out)| slice_input(&grid, ct, k0 + s, &self.spec, out));
            sample_seconds += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut probs = self
                .model
                .predict(&input[..n * channels * w * h], [n, channels, h, w])?;
            if self.spec.flip_average && probs.len() == n * classes * w * h {
                // Test-time augmentation: the left-right mirror image too, its
                // probabilities mirrored back and averaged with the first.
                flipped.clear();
                flipped.extend_from_slice(&input[..n * channels * w * h]);
                flipped.par_chunks_mut(w).for_each(|row| row.reverse());
                let mirrored = self.model.predict(&flipped, [n, channels, h, w])?;
                if mirrored.len() == probs.len() {
                    probs
                        .par_chunks_mut(w)
                        .zip(mirrored.par_chunks(w))
                        .for_each(|(a, b)| {
                            for (x, y) in a.iter_mut().zip(b.iter().rev()) {
                                *x = 0.5 * (*x + y);
                            }
                        });
                } else {
                    probs = mirrored;
                }
            }
            model_seconds += t.elapsed().as_secs_f64();
            if probs.len() != n * classes * w * h {
                return Err(InferError::Model {
                    model: self.model.info().name,
                    message: format!(
                        "returned {} values, expected {} ({} slices x {} classes x {}x{})",
                        probs.len(),
                        n * classes * w * h,
                        n,
                        classes,
                        h,
                        w
                    ),
                });
            }
            let t = Instant::now();
            let slab = nx * ny;
            let cls_chunks = class_vol[k0 * slab..(k0 + n) * slab].par_chunks_mut(nx);
            let conf_chunks = conf_vol[k0 * slab..(k0 + n) * slab].par_chunks_mut(nx);
            cls_chunks
                .zip(conf_chunks)
                .enumerate()
                .for_each(|(row_index, (cls_row, conf_row))| {
                    let s = row_index / ny;
                    let j = (row_index % ny) as f64;
                    let b = grid.ct_offset[k0 + s];
                    let p = &probs[s * classes * w * h..(s + 1) * classes * w * h];
                    for (i, (c_out, p_out)) in
                        cls_row.iter_mut().zip(conf_row.iter_mut()).enumerate()
                    {
                        let (di, dj) = (i as f64 - b[0], j - b[1]);
                        let u = inv[0] * di + inv[1] * dj;
                        let v = inv[2] * di + inv[3] * dj;
                        let (mut best, mut best_p) = (0usize, f32::NEG_INFINITY);
                        for c in 0..classes {
                            let plane = &p[c * w * h..(c + 1) * w * h];
                            let q = bilinear(plane, w, h, u, v).unwrap_or(if c == 0 {
                                1.0
                            } else {
                                0.0
                            });
                            if q > best_p {
                                best_p = q;
                                best = c;
                            }
                        }
                        *c_out = best as u8;
                        *p_out = (best_p.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                });
            stitch_seconds += t.elapsed().as_secs_f64();
            k0 += n;
            ctx.report(k0 - k_first, todo);
        }
        let class_map = Volume::new(g.clone(), class_vol).expect("same grid");
        let conf = Volume::new(g.clone(), conf_vol).expect("same grid");
        let detail = format!(
            "{h}x{w} model input at {} mm{}, batch {batch}, {todo} of {nz} slices; \
             sampling {sample_seconds:.2} s, model {model_seconds:.2} s, \
             back to the CT grid {stitch_seconds:.2} s",
            self.spec.spacing_mm,
            if self.spec.flip_average {
                " with its mirror image"
            } else {
                ""
            }
        );
        Ok((class_map, conf, model_seconds, detail))
    }
}

impl<M: SliceModel> Segmenter for SlicePipeline<M> {
    fn task(&self) -> Task {
        self.task
    }

    fn info(&self) -> ModelInfo {
        self.model.info()
    }

    fn segment(
        &mut self,
        ct: &CtVolume,
        input: SegmentInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<Proposal, InferError> {
        let t = Instant::now();
        // Lesions are only kept near the lungs: the model runs on the lungs' slices and
        // box (with context around them), not on the whole field of view.
        let roi = match (self.task, input.lungs) {
            (Task::Lesion, Some(lungs)) if lungs.geometry.dims == ct.geometry.dims => Roi::around(
                lungs,
                ROI_CONTEXT_MM + self.post.lung_margin_mm.unwrap_or(5.0),
            ),
            _ => None,
        };
        let (classes, mut confidence, model_seconds, mut detail) =
            self.predict_volume(ct, roi.as_ref(), ctx)?;
        ctx.check()?;
        let t_post = Instant::now();
        let table = self.class_labels.clone();
        let mut labels = classes.map(|c| table.get(c as usize).copied().unwrap_or(0));
        match self.task {
            Task::Lung => {
                labels = postprocess::lungs(&labels);
            }
            Task::Lesion => {
                let min = self.post.min_lesion_mm3.unwrap_or(20.0);
                let margin = self.post.lung_margin_mm.unwrap_or(5.0);
                postprocess::lesions(&mut labels, input.lungs, margin, min);
            }
        }
        confidence
            .voxels
            .par_iter_mut()
            .zip(labels.voxels.par_iter())
            .for_each(|(c, &l)| {
                if l == 0 {
                    *c = 0
                }
            });
        detail += &format!(", post-processing {:.2} s", t_post.elapsed().as_secs_f64());
        Ok(Proposal {
            task: self.task,
            labels,
            confidence,
            model: self.model.info(),
            model_seconds,
            total_seconds: t.elapsed().as_secs_f64(),
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;
    use nalgebra::Matrix3;

    fn spec(spacing: f64) -> InputSpec {
        InputSpec {
            spacing_mm: spacing,
            context_slices: 0,
            hu_min: -1000.0,
            hu_max: 1000.0,
            pad_multiple: 8,
            flip_average: false,
        }
    }

    #[test]
    fn grid_is_flip_invariant() {
        // The same patient content stored with i running to patient right (flipped x)
        // samples to the same model image.
        let dims = [12, 10, 2];
        let mut g = Geometry::axis_aligned(dims, [1.0, 1.0, 2.0], [0.0, 0.0, 0.0]);
        let ct = Volume::new(
            g.clone(),
            (0..dims[0] * dims[1] * dims[2])
                .map(|n| ((n % 12) * 10 + (n / 12 % 10)) as i16)
                .collect(),
        )
        .unwrap();
        let mut flipped_vox = vec![0i16; ct.voxels.len()];
        for k in 0..2 {
            for j in 0..10 {
                for i in 0..12 {
                    flipped_vox[(11 - i) + 12 * (j + 10 * k)] = ct.get(i, j, k);
                }
            }
        }
        g.direction = Matrix3::new(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0);
        g.origin_mm = nalgebra::Vector3::new(11.0, 0.0, 0.0);
        let flipped = Volume::new(g, flipped_vox).unwrap();
        let s = spec(1.0);
        let ga = SliceGrid::new(&ct.geometry, 1.0, 8).unwrap();
        let gb = SliceGrid::new(&flipped.geometry, 1.0, 8).unwrap();
        assert_eq!((ga.width, ga.height), (16, 16));
        let mut a = vec![0f32; 256];
        let mut b = vec![0f32; 256];
        ga.sample_slice(&ct, 1, &s, &mut a);
        gb.sample_slice(&flipped, 1, &s, &mut b);
        assert_eq!(a, b);
        // Content is centred: pad of 2 columns left, 3 rows top.
        assert_eq!(a[2 + 16 * 3], s.normalise(ct.get(0, 0, 1) as f32));
    }

    /// A model that returns "class 1" wherever the input exceeds 0.5.
    struct Threshold;
    impl SliceModel for Threshold {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                name: "threshold".into(),
                version: "0".into(),
                device: "cpu".into(),
            }
        }
        fn predict(&mut self, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, InferError> {
            let [n, _, h, w] = shape;
            let mut out = vec![0f32; n * 2 * h * w];
            for s in 0..n {
                for p in 0..h * w {
                    let fg = if input[s * h * w + p] > 0.5 { 1.0 } else { 0.0 };
                    out[s * 2 * h * w + p] = 1.0 - fg;
                    out[s * 2 * h * w + h * w + p] = fg;
                }
            }
            Ok(out)
        }
        fn batch_size(&self, _: usize, _: usize) -> usize {
            3
        }
    }

    #[test]
    fn anisotropic_round_trip_recovers_a_block() {
        // 0.7 mm CT, 1.4 mm model grid: a bright block comes back on the CT grid.
        let dims = [40, 36, 7];
        let g = Geometry::axis_aligned(dims, [0.7, 0.7, 2.5], [-5.0, 3.0, 10.0]);
        let mut ct = Volume::filled(g, -900i16).unwrap();
        for k in 0..7 {
            for j in 10..26 {
                for i in 8..30 {
                    ct.set(i, j, k, 800);
                }
            }
        }
        let mut p = SlicePipeline {
            model: Threshold,
            task: Task::Lesion,
            spec: spec(1.4),
            class_labels: vec![0, 3],
            post: Default::default(),
        };
        let (cls, conf, _, _) =
            RunContext::detached(|ctx| p.predict_volume(&ct, None, ctx)).unwrap();
        let mut wrong = 0;
        for k in 0..7 {
            for j in 0..36 {
                for i in 0..40 {
                    let truth = (8..30).contains(&i) && (10..26).contains(&j);
                    // Allow the one-voxel band at the edge where bilinear mixing decides.
                    let edge = [7, 8, 29, 30].contains(&i) || [9, 10, 25, 26].contains(&j);
                    if !edge && (cls.get(i, j, k) == 1) != truth {
                        wrong += 1;
                    }
                }
            }
        }
        assert_eq!(wrong, 0);
        assert!(conf.voxels.iter().all(|&c| c >= 128));
    }

    /// Probability of class 1 rises from the left edge of the model image to the right.
    struct Ramp;
    impl SliceModel for Ramp {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                name: "ramp".into(),
                version: "0".into(),
                device: "cpu".into(),
            }
        }
        fn predict(&mut self, _: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, InferError> {
            let [n, _, h, w] = shape;
            let mut out = vec![0f32; n * 2 * h * w];
            for s in 0..n {
                for p in 0..h * w {
                    let fg = (p % w) as f32 / (w - 1) as f32;
                    out[s * 2 * h * w + p] = 1.0 - fg;
                    out[s * 2 * h * w + h * w + p] = fg;
                }
            }
            Ok(out)
        }
    }

    #[test]
    fn flip_averaging_mirrors_the_second_pass_back() {
        // A ramp averaged with its mirror image is 0.5 everywhere; without averaging
        // the left half is background and the right half class 1.
        let g = Geometry::axis_aligned([16, 8, 2], [1.0; 3], [0.0; 3]);
        let ct = Volume::filled(g, 0i16).unwrap();
        let mut p = SlicePipeline {
            model: Ramp,
            task: Task::Lesion,
            spec: spec(1.0),
            class_labels: vec![0, 3],
            post: Default::default(),
        };
        let (cls, _, _, _) = RunContext::detached(|ctx| p.predict_volume(&ct, None, ctx)).unwrap();
        assert_eq!((cls.get(1, 3, 0), cls.get(14, 3, 0)), (0, 1));
        p.spec.flip_average = true;
        let (_, conf, _, detail) =
            RunContext::detached(|ctx| p.predict_volume(&ct, None, ctx)).unwrap();
        assert!(
            conf.voxels.iter().all(|&c| c == 128),
            "{:?}",
            &conf.voxels[..16]
        );
        assert!(detail.contains("mirror"), "{detail}");
    }

    #[test]
    fn roi_limits_the_slices_and_box_the_model_runs_on() {
        let g = Geometry::axis_aligned([40, 30, 10], [0.5, 0.5, 2.0], [-10.0, 5.0, 0.0]);
        let mut mask = LabelVolume::filled(g.clone(), 0).unwrap();
        for k in 3..6 {
            for j in 10..20 {
                for i in 12..22 {
                    mask.set(i, j, k, 1);
                }
            }
        }
        let roi = Roi::around(&mask, 2.0).unwrap();
        assert_eq!(roi.slices, 3..6);
        // Voxels 12..=21 at 0.5 mm from -10: x -4.0..0.5, grown by 2 mm.
        assert_eq!(roi.bounds_mm, [[-6.0, 2.5], [8.0, 16.5]]);
        assert!(Roi::around(&LabelVolume::filled(g.clone(), 0).unwrap(), 2.0).is_none());
        // Everything bright: the model marks all it sees, which is the ROI's slices and
        // (up to the padding) its box.
        let ct = Volume::filled(g, 900i16).unwrap();
        let mut p = SlicePipeline {
            model: Threshold,
            task: Task::Lesion,
            spec: spec(0.5),
            class_labels: vec![0, 3],
            post: Default::default(),
        };
        let (cls, _, _, detail) =
            RunContext::detached(|ctx| p.predict_volume(&ct, Some(&roi), ctx)).unwrap();
        assert!(detail.contains("3 of 10 slices"), "{detail}");
        for k in 0..10 {
            let marked = cls.slice_k(k).iter().filter(|&&c| c == 1).count();
            if (3..6).contains(&k) {
                // The 18 x 18 px box, padded to 24 x 24 (multiple of 8).
                assert_eq!(marked, 24 * 24, "slice {k}");
            } else {
                assert_eq!(marked, 0, "slice {k}");
            }
        }
    }

    #[test]
    fn cancellation_stops_between_batches() {
        let g = Geometry::axis_aligned([8, 8, 9], [1.0; 3], [0.0; 3]);
        let ct = Volume::filled(g, 0i16).unwrap();
        let mut p = SlicePipeline {
            model: Threshold,
            task: Task::Lesion,
            spec: spec(1.0),
            class_labels: vec![0, 3],
            post: Default::default(),
        };
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |d: usize, t: usize| {
            seen.lock().unwrap().push((d, t));
            if d >= 3 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let mut ctx = RunContext {
            cancel: &cancel,
            progress: &progress,
        };
        assert!(matches!(
            p.predict_volume(&ct, None, &mut ctx),
            Err(InferError::Cancelled)
        ));
        assert_eq!(*seen.lock().unwrap(), vec![(0, 9), (3, 9)]);
    }

    #[test]
    fn sagittal_volumes_are_refused_with_a_reason() {
        let mut g = Geometry::axis_aligned([4, 4, 4], [1.0; 3], [0.0; 3]);
        g.direction = Matrix3::new(0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0);
        let e = SliceGrid::new(&g, 1.0, 8).unwrap_err().to_string();
        assert!(e.contains("not axial"), "{e}");
    }
}
