//! Builds one axial slice: analytic tissues, then capsules and lesions painted in
//! order, then noise and the in-plane part of the blur.

use super::anatomy::{RowCtx, SliceCtx, classify, code, fissure_coverage, hu};
use super::lesion::LesionKind;
use super::math::{dot, gauss_hash, mix, sub};
use super::model::{Anatomy, Capsule, Kind};

/// Voxel grid in reference millimetres: the field of view is always
/// [`super::REF_FOV_MM`], sampled with `n` voxels per axis.
#[derive(Debug, Clone)]
pub(super) struct Grid {
    pub n: [usize; 3],
    pub step: [f32; 3],
    pub first: [f32; 3],
}

impl Grid {
    pub(super) fn new(n: [usize; 3]) -> Self {
        let step: [f32; 3] = std::array::from_fn(|a| super::REF_FOV_MM[a] / n[a] as f32);
        let first = std::array::from_fn(|a| -0.5 * (n[a] as f32 - 1.0) * step[a]);
        Grid { n, step, first }
    }

    #[inline]
    pub(super) fn coord(&self, axis: usize, i: usize) -> f32 {
        self.first[axis] + i as f32 * self.step[axis]
    }

    /// Voxel index range [lo, hi] (inclusive, clamped) of coordinates in [a, b].
    #[inline]
    fn range(&self, axis: usize, a: f32, b: f32) -> Option<(usize, usize)> {
        let lo = ((a - self.first[axis]) / self.step[axis]).ceil().max(0.0);
        let hi = ((b - self.first[axis]) / self.step[axis])
            .floor()
            .min(self.n[axis] as f32 - 1.0);
        (lo <= hi).then_some((lo as usize, hi as usize))
    }

    /// In-plane voxel size: the width of partial-volume edges.
    pub(super) fn pv(&self) -> f32 {
        self.step[0].max(self.step[1])
    }
}

/// Fat margin kept around mediastinal structures, mm.
const MEDIASTINAL_MARGIN: f32 = 2.5;

/// Slices of the volume (z) each capsule can touch, as capsule indices per slice.
pub(super) fn buckets(anatomy: &Anatomy, grid: &Grid) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); grid.n[2]];
    let slack = MEDIASTINAL_MARGIN + grid.pv() + grid.step[2];
    for (idx, c) in anatomy.capsules.iter().enumerate() {
        let reach = c.r + slack;
        let lo = c.a[2].min(c.b[2]) - reach;
        let hi = c.a[2].max(c.b[2]) + reach;
        if let Some((k0, k1)) = grid.range(2, lo, hi) {
            for bucket in &mut out[k0..=k1] {
                bucket.push(idx as u32);
            }
        }
    }
    out
}

/// Partial-volume coverage of a voxel at distance `d` from the axis of a tube of radius
/// `r`, with edges a voxel (`pv`) wide. The profile conserves the tube's cross-section
/// (its integral is pi r²), so that coarse grids do not fatten thin vessels: thick tubes
/// get a linear edge ramp around a slightly reduced radius, tubes thinner than a voxel
/// a fainter cone one voxel wide.
#[inline]
fn coverage(d: f32, r: f32, pv: f32) -> f32 {
    if r >= 0.5 * pv {
        let r_eff = (r * r - pv * pv * (1.0 / 12.0)).sqrt();
        ((r_eff - d) / pv + 0.5).clamp(0.0, 1.0)
    } else {
        let w = 0.866 * pv;
        let peak = 3.0 * r * r / (w * w);
        (peak * (1.0 - d / w)).clamp(0.0, 1.0)
    }
}

/// Calls `f(pixel, distance)` for every pixel of slice `z` within `reach` of the axis.
#[inline]
fn splat(grid: &Grid, c: &Capsule, reach: f32, z: f32, mut f: impl FnMut(usize, f32)) {
    let ab = sub(c.b, c.a);
    let (mut t0, mut t1) = (0.0f32, 1.0f32);
    if ab[2].abs() > 1e-6 {
        let ta = (z - reach - c.a[2]) / ab[2];
        let tb = (z + reach - c.a[2]) / ab[2];
        t0 = ta.min(tb).max(0.0);
        t1 = ta.max(tb).min(1.0);
        if t0 > t1 {
            return;
        }
    } else if (z - c.a[2]).abs() > reach {
        return;
    }
    let x0 = c.a[0] + ab[0] * t0;
    let x1 = c.a[0] + ab[0] * t1;
    let y0 = c.a[1] + ab[1] * t0;
    let y1 = c.a[1] + ab[1] * t1;
    let Some((i0, i1)) = grid.range(0, x0.min(x1) - reach, x0.max(x1) + reach) else {
        return;
    };
    let Some((j0, j1)) = grid.range(1, y0.min(y1) - reach, y0.max(y1) + reach) else {
        return;
    };
    let inv = 1.0 / dot(ab, ab).max(1e-12);
    let reach2 = reach * reach;
    let nx = grid.n[0];
    let rz = z - c.a[2];
    for j in j0..=j1 {
        let ry = grid.coord(1, j) - c.a[1];
        let base = (ry * ab[1] + rz * ab[2]) * inv;
        let slope = ab[0] * inv;
        for i in i0..=i1 {
            let rx = grid.coord(0, i) - c.a[0];
            let t = (base + rx * slope).clamp(0.0, 1.0);
            let dx = rx - t * ab[0];
            let dy = ry - t * ab[1];
            let dz = rz - t * ab[2];
            let d2 = dx * dx + dy * dy + dz * dz;
            if d2 < reach2 {
                f(j * nx + i, d2.sqrt());
            }
        }
    }
}

/// Per-thread buffers.
pub(super) struct Scratch {
    hu: Vec<f32>,
    tmp: Vec<f32>,
}

impl Scratch {
    pub(super) fn new(n: usize) -> Self {
        Scratch {
            hu: vec![0.0; n],
            tmp: vec![0.0; n],
        }
    }
}

/// Settings shared by every slice.
pub(super) struct Render<'a> {
    pub grid: &'a Grid,
    pub anatomy: &'a Anatomy,
    pub buckets: &'a [Vec<u32>],
    pub noise_key: u64,
    /// Noise added before the blur (so that it ends up correlated like CT noise).
    pub noise_sigma: f32,
    /// Half of a symmetric in-plane blur kernel per axis (x, y), centre first.
    pub kernel_x: Vec<f32>,
    pub kernel_y: Vec<f32>,
    /// Output range: the final CT range, or i16 when a z blur follows.
    pub out_range: (f32, f32),
}

impl Render<'_> {
    /// Renders slice `k` into `ct` (HU) and `labels` (truth).
    pub(super) fn slice(&self, k: usize, scratch: &mut Scratch, ct: &mut [i16], labels: &mut [u8]) {
        let g = self.grid;
        let [nx, ny, _] = g.n;
        let z = g.coord(2, k);
        let s = SliceCtx::new(z);
        let hu_buf = &mut scratch.hu[..];
        let codes = labels;

        // 1. Analytic tissues.
        let pv = g.pv();
        for j in 0..ny {
            let y = g.coord(1, j);
            let row = RowCtx::new(&s, y);
            let hrow = &mut hu_buf[j * nx..(j + 1) * nx];
            let crow = &mut codes[j * nx..(j + 1) * nx];
            let body = if row.body_half > 0.0 {
                g.range(0, -row.body_half, row.body_half)
            } else {
                None
            };
            let (i0, i1) = body.unwrap_or((nx, nx));
            for i in 0..nx {
                if i < i0 || i > i1 || i1 == nx {
                    hrow[i] = hu::AIR;
                    crow[i] = code::AIR;
                } else {
                    let x = g.coord(0, i);
                    let (mut h, c) = classify(&s, &row, x);
                    if c == code::LEFT || c == code::RIGHT {
                        h = mix(h, hu::FISSURE, fissure_coverage(x, y, z, pv, g.step[2]));
                    }
                    hrow[i] = h;
                    crow[i] = c;
                }
            }
        }

        // 2. Capsules and lesions, in painting order.
        let caps = &self.anatomy.capsules;
        let bucket = &self.buckets[k];
        let of_kind = |kind: Kind| {
            bucket
                .iter()
                .map(|&i| &caps[i as usize])
                .filter(move |c| c.kind == kind)
        };

        for c in of_kind(Kind::Bone) {
            splat(g, c, c.r + pv, z, |p, d| {
                if code::is_lung(codes[p]) || codes[p] == code::AIR {
                    return;
                }
                let outer = coverage(d, c.r, pv);
                let inner = coverage(d, c.inner, pv);
                hu_buf[p] = mix(mix(hu_buf[p], hu::CORTEX, outer), hu::MARROW, inner);
                if outer > 0.5 {
                    codes[p] = code::BONE;
                }
            });
        }
        for c in of_kind(Kind::Mediastinal) {
            let r = c.r + MEDIASTINAL_MARGIN;
            splat(g, c, r + pv, z, |p, d| {
                let cd = codes[p];
                if code::is_lung(cd) || cd == code::MEDFAT || cd == code::NECK {
                    let w = coverage(d, r, pv);
                    hu_buf[p] = mix(hu_buf[p], hu::MED_FAT, w);
                    if w > 0.5 && code::is_lung(cd) {
                        codes[p] = code::MEDFAT;
                    }
                }
            });
        }
        for c in of_kind(Kind::Mediastinal) {
            splat(g, c, c.r + pv, z, |p, d| {
                let cd = codes[p];
                if cd != code::AIR && cd != code::BONE {
                    let w = coverage(d, c.r, pv);
                    hu_buf[p] = mix(hu_buf[p], c.hu, w);
                    if w > 0.5 && code::is_lung(cd) {
                        codes[p] = code::MEDFAT;
                    }
                }
            });
        }
        self.lesions(LesionKind::GroundGlass, z, hu_buf, codes);
        for c in of_kind(Kind::Vessel) {
            splat(g, c, c.r + pv, z, |p, d| {
                let cd = codes[p];
                if code::is_lung(cd) || cd == code::MEDFAT {
                    hu_buf[p] = mix(hu_buf[p], c.hu, coverage(d, c.r, pv));
                }
            });
        }
        for c in of_kind(Kind::Airway) {
            splat(g, c, c.r + pv, z, |p, d| {
                let cd = codes[p];
                if code::is_lung(cd) || cd == code::MEDFAT || cd == code::NECK {
                    let w = coverage(d, c.r, pv);
                    hu_buf[p] = mix(hu_buf[p], c.hu, w);
                    if c.central && w > 0.5 && code::is_lung(cd) {
                        codes[p] = code::MEDFAT;
                    }
                }
            });
        }
        self.lesions(LesionKind::Consolidation, z, hu_buf, codes);
        for c in of_kind(Kind::Airway) {
            splat(g, c, c.inner + pv, z, |p, d| {
                let cd = codes[p];
                if code::is_lung(cd) || cd == code::MEDFAT || cd == code::NECK {
                    hu_buf[p] = mix(hu_buf[p], hu::AIR, coverage(d, c.inner, pv));
                }
            });
        }
        for c in of_kind(Kind::Bronchogram) {
            splat(g, c, c.r + pv, z, |p, d| {
                if codes[p] == code::CONSOLIDATION {
                    hu_buf[p] = mix(hu_buf[p], -990.0, coverage(d, c.r, pv));
                }
            });
        }

        // 3. Labels: region codes of lung tissue are the labels; the rest is background.
        for c in codes.iter_mut() {
            if *c >= 10 {
                *c = 0;
            }
        }

        // 4. Noise, then blur (so the noise is spatially correlated), then store.
        let base = (k * nx * ny) as u64;
        for (i, v) in hu_buf.iter_mut().enumerate() {
            *v += self.noise_sigma * gauss_hash(self.noise_key, base + i as u64);
        }
        let tmp = &mut scratch.tmp[..];
        blur_rows(hu_buf, tmp, nx, ny, &self.kernel_x);
        let (lo, hi) = self.out_range;
        blur_columns(tmp, nx, ny, &self.kernel_y, |j, row| {
            for (o, v) in ct[j * nx..(j + 1) * nx].iter_mut().zip(row) {
                *o = v.round().clamp(lo, hi) as i16;
            }
        });
    }

    fn lesions(&self, kind: LesionKind, z: f32, hu_buf: &mut [f32], codes: &mut [u8]) {
        let g = self.grid;
        let pv = g.pv();
        let nx = g.n[0];
        for l in self.anatomy.lesions.iter().filter(|l| l.kind == kind) {
            if z < l.lo[2] || z > l.hi[2] {
                continue;
            }
            let (Some((i0, i1)), Some((j0, j1))) =
                (g.range(0, l.lo[0], l.hi[0]), g.range(1, l.lo[1], l.hi[1]))
            else {
                continue;
            };
            for j in j0..=j1 {
                let y = g.coord(1, j);
                for i in i0..=i1 {
                    let p = j * nx + i;
                    let cd = codes[p];
                    let eligible = match kind {
                        LesionKind::GroundGlass => cd == code::LEFT || cd == code::RIGHT,
                        LesionKind::Consolidation => (code::LEFT..=code::GGO).contains(&cd),
                    };
                    if !eligible {
                        continue;
                    }
                    let w = l.weight([g.coord(0, i), y, z], pv);
                    if w <= 0.0 {
                        continue;
                    }
                    hu_buf[p] = mix(hu_buf[p], l.target_hu, w);
                    if w > 0.5 {
                        codes[p] = match kind {
                            LesionKind::GroundGlass => code::GGO,
                            LesionKind::Consolidation => code::CONSOLIDATION,
                        };
                    }
                }
            }
        }
    }
}

/// Half of a normalised symmetric Gaussian kernel (centre first) for `sigma` voxels;
/// `[1.0]` (no blur) below 0.3 voxel.
pub(super) fn gaussian_half_kernel(sigma: f32) -> Vec<f32> {
    if sigma.is_nan() || sigma < 0.3 {
        return vec![1.0];
    }
    let radius = ((2.5 * sigma).ceil() as usize).clamp(1, 4);
    let mut w: Vec<f32> = (0..=radius)
        .map(|t| (-((t * t) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    while w.len() > 2 && w[w.len() - 1] < 0.01 * w[0] {
        w.pop();
    }
    let sum: f32 = w[0] + 2.0 * w[1..].iter().sum::<f32>();
    w.iter_mut().for_each(|v| *v /= sum);
    w
}

/// Factor by which a kernel scales the standard deviation of white noise.
pub(super) fn noise_gain(half: &[f32]) -> f32 {
    (half[0] * half[0] + 2.0 * half[1..].iter().map(|w| w * w).sum::<f32>()).sqrt()
}

/// Blurs along x (clamping at the edges).
fn blur_rows(src: &[f32], dst: &mut [f32], nx: usize, ny: usize, w: &[f32]) {
    let r = w.len() - 1;
    if r == 0 {
        dst.copy_from_slice(src);
        return;
    }
    for j in 0..ny {
        let s = &src[j * nx..(j + 1) * nx];
        let d = &mut dst[j * nx..(j + 1) * nx];
        let at = |i: isize| s[i.clamp(0, nx as isize - 1) as usize];
        let edge = |i: usize| {
            let mut acc = w[0] * s[i];
            for (t, wt) in w.iter().enumerate().skip(1) {
                acc += wt * (at(i as isize - t as isize) + at(i as isize + t as isize));
            }
            acc
        };
        if nx <= 2 * r {
            for (i, v) in d.iter_mut().enumerate() {
                *v = edge(i);
            }
            continue;
        }
        for i in 0..r {
            d[i] = edge(i);
            d[nx - 1 - i] = edge(nx - 1 - i);
        }
        for i in r..nx - r {
            let mut acc = w[0] * s[i];
            for t in 1..=r {
                acc += w[t] * (s[i - t] + s[i + t]);
            }
            d[i] = acc;
        }
    }
}

/// Blurs along y and hands each finished row to `out`.
fn blur_columns(src: &[f32], nx: usize, ny: usize, w: &[f32], mut out: impl FnMut(usize, &[f32])) {
    let mut acc = vec![0.0f32; nx];
    for j in 0..ny {
        let row = |jj: isize| {
            let jj = jj.clamp(0, ny as isize - 1) as usize;
            &src[jj * nx..(jj + 1) * nx]
        };
        let c = row(j as isize);
        for (a, v) in acc.iter_mut().zip(c) {
            *a = w[0] * v;
        }
        for (t, &wt) in w.iter().enumerate().skip(1) {
            let (m, p) = (row(j as isize - t as isize), row(j as isize + t as isize));
            for ((a, u), v) in acc.iter_mut().zip(m).zip(p) {
                *a += wt * (u + v);
            }
        }
        out(j, &acc);
    }
}
