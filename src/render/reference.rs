//! CPU reference of `shaders/slice.wgsl`, for tests and for CPU-side snapshots.

use nalgebra::{Matrix4, Point3};

use super::{
    COMPARE_CHECKERBOARD, COMPARE_OFF, COMPARE_OTHER, DASH_PX, DIFFERENCE_DENSER,
    DIFFERENCE_LIGHTER, FLAG_LAYER_FILLED, FLAG_LINEAR, FLAG_OUTLINE, FLAG_SHOW_LABELS,
    FLAG_SHOW_PROPOSALS, LabelColors, PROPOSAL_FILL, SliceUniforms,
};

/// DICOM PS3.3 C.11.2.1.2.1 LINEAR VOI function, output in 0..1 (the shader's
/// `window_level`).
pub fn window_level_unit(hu: f64, center_hu: f64, width_hu: f64) -> f64 {
    if width_hu <= 1.0 {
        return if hu <= center_hu - 0.5 { 0.0 } else { 1.0 };
    }
    ((hu - (center_hu - 0.5)) / (width_hu - 1.0) + 0.5).clamp(0.0, 1.0)
}

/// Renders what the shader draws for a view of `width` x `height` pixels (pixel centres),
/// as RGBA bytes. `hu` and `labels` are volumes of `dims`, i fastest.
pub fn render_slice(
    u: &SliceUniforms,
    lut: &LabelColors,
    dims: [usize; 3],
    hu: &[i16],
    labels: &[u8],
    width: usize,
    height: usize,
) -> Vec<u8> {
    render_slice_with_proposals(u, lut, dims, hu, labels, None, width, height)
}

/// [`render_slice`] with a proposal layer (`proposals` of `dims`, i fastest).
#[allow(clippy::too_many_arguments)]
pub fn render_slice_with_proposals(
    u: &SliceUniforms,
    lut: &LabelColors,
    dims: [usize; 3],
    hu: &[i16],
    labels: &[u8],
    proposals: Option<&[u8]>,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let volumes = SliceVolumes {
        dims,
        hu,
        labels,
        proposals,
        other_hu: None,
    };
    render_volumes(u, lut, &volumes, width, height)
}

/// The volumes a view samples (all of `dims`, i fastest): the shader's textures.
#[derive(Debug, Clone, Copy)]
pub struct SliceVolumes<'a> {
    pub dims: [usize; 3],
    pub hu: &'a [i16],
    pub labels: &'a [u8],
    /// The proposal layer.
    pub proposals: Option<&'a [u8]>,
    /// Another time point on this grid (the comparison modes).
    pub other_hu: Option<&'a [i16]>,
}

/// Renders what the shader draws with every texture: [`render_slice`] with the proposal
/// layer and the other time point of `volumes`.
pub fn render_volumes(
    u: &SliceUniforms,
    lut: &LabelColors,
    volumes: &SliceVolumes<'_>,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let SliceVolumes {
        dims,
        hu,
        labels,
        proposals,
        other_hu,
    } = *volumes;
    let n = dims[0] * dims[1] * dims[2];
    let other_hu = other_hu.filter(|o| o.len() == n && u.compare_mode != COMPARE_OFF);
    let m = Matrix4::from_fn(|r, c| u.voxel_from_ndc[c][r] as f64);
    let d = [dims[0] as f64, dims[1] as f64, dims[2] as f64];
    let inside = |v: [f64; 3]| (0..3).all(|a| v[a] >= -0.5 && v[a] < d[a] - 0.5);
    let idx = |i: usize, j: usize, k: usize| i + dims[0] * (j + dims[1] * k);
    let load = |vol: &[i16], i: i64, j: i64, k: i64| {
        let c = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
        vol[idx(c(i, dims[0]), c(j, dims[1]), c(k, dims[2]))] as f64
    };
    let sample = |vol: &[i16], v: [f64; 3]| {
        if u.flags & FLAG_LINEAR == 0 {
            load(
                vol,
                (v[0] + 0.5).floor() as i64,
                (v[1] + 0.5).floor() as i64,
                (v[2] + 0.5).floor() as i64,
            )
        } else {
            let b = [v[0].floor(), v[1].floor(), v[2].floor()];
            let f = [v[0] - b[0], v[1] - b[1], v[2] - b[2]];
            let (i, j, k) = (b[0] as i64, b[1] as i64, b[2] as i64);
            let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
            let x00 = lerp(load(vol, i, j, k), load(vol, i + 1, j, k), f[0]);
            let x10 = lerp(load(vol, i, j + 1, k), load(vol, i + 1, j + 1, k), f[0]);
            let x01 = lerp(load(vol, i, j, k + 1), load(vol, i + 1, j, k + 1), f[0]);
            let x11 = lerp(
                load(vol, i, j + 1, k + 1),
                load(vol, i + 1, j + 1, k + 1),
                f[0],
            );
            lerp(lerp(x00, x10, f[1]), lerp(x01, x11, f[1]), f[2])
        }
    };
    let (c_hu, w_hu) = (u.window_center_hu as f64, u.window_width_hu as f64);
    let label_at = |v: [f64; 3]| -> u8 {
        if !inside(v) {
            return 0;
        }
        let r = |x: f64, n: usize| ((x + 0.5).floor() as i64).clamp(0, n as i64 - 1) as usize;
        labels[idx(r(v[0], dims[0]), r(v[1], dims[1]), r(v[2], dims[2]))]
    };
    let proposal_at = |v: [f64; 3]| -> u8 {
        match proposals {
            Some(p) if inside(v) => {
                let r =
                    |x: f64, n: usize| ((x + 0.5).floor() as i64).clamp(0, n as i64 - 1) as usize;
                p[idx(r(v[0], dims[0]), r(v[1], dims[1]), r(v[2], dims[2]))]
            }
            _ => 0,
        }
    };
    let off = |v: [f64; 3], s: f64, e: [f32; 4]| {
        [
            v[0] + s * e[0] as f64,
            v[1] + s * e[1] as f64,
            v[2] + s * e[2] as f64,
        ]
    };
    let mut out = vec![0u8; width * height * 4];
    for py in 0..height {
        for px in 0..width {
            let ndc_x = (px as f64 + 0.5) / width as f64 * 2.0 - 1.0;
            let ndc_y = 1.0 - (py as f64 + 0.5) / height as f64 * 2.0;
            let p = m.transform_point(&Point3::new(ndc_x, ndc_y, 0.0));
            let v = [p.x, p.y, p.z];
            let o = (py * width + px) * 4;
            if !inside(v) {
                out[o..o + 4].copy_from_slice(&[0, 0, 0, 255]);
                continue;
            }
            let ct = sample(hu, v);
            let grey = window_level_unit(ct, c_hu, w_hu);
            let mut rgb = [grey; 3];
            if let Some(other_hu) = other_hu {
                let other = sample(other_hu, v);
                let other_grey = window_level_unit(other, c_hu, w_hu);
                if u.compare_mode == COMPARE_OTHER {
                    rgb = [other_grey; 3];
                } else if u.compare_mode == COMPARE_CHECKERBOARD {
                    let c = u.checker_voxels;
                    let t = (0..3)
                        .map(|a| ((v[a] as f32 + 0.5) / c[a]).floor() as i32)
                        .sum::<i32>();
                    if t & 1 == 1 {
                        rgb = [other_grey; 3];
                    }
                } else {
                    let d = u.difference_sign * (ct - other) as f32 / u.difference_range_hu;
                    let t = d.clamp(-1.0, 1.0) as f64;
                    let hot = if t > 0.0 {
                        DIFFERENCE_DENSER
                    } else {
                        DIFFERENCE_LIGHTER
                    };
                    for ch in 0..3 {
                        rgb[ch] += (hot[ch] as f64 - rgb[ch]) * t.abs();
                    }
                }
            }
            if u.flags & FLAG_SHOW_LABELS != 0 {
                let l = label_at(v);
                let c = lut.colors[l as usize];
                if l != 0 && c[3] > 0.0 {
                    if u.flags & FLAG_OUTLINE != 0 {
                        let dx = u.voxel_per_px_x;
                        let dy = u.voxel_per_px_y;
                        let off = |s: f64, e: [f32; 4]| {
                            [
                                v[0] + s * e[0] as f64,
                                v[1] + s * e[1] as f64,
                                v[2] + s * e[2] as f64,
                            ]
                        };
                        let edge = label_at(off(1.0, dx)) != l
                            || label_at(off(-1.0, dx)) != l
                            || label_at(off(1.0, dy)) != l
                            || label_at(off(-1.0, dy)) != l;
                        if edge {
                            rgb = [c[0] as f64, c[1] as f64, c[2] as f64];
                        }
                    } else {
                        let a = u.label_opacity as f64;
                        for ch in 0..3 {
                            rgb[ch] += (c[ch] as f64 - rgb[ch]) * a;
                        }
                    }
                }
            }
            if u.flags & FLAG_SHOW_PROPOSALS != 0 {
                let p = proposal_at(v);
                if p != 0 && u.flags & FLAG_LAYER_FILLED != 0 {
                    let c = lut.colors[p as usize];
                    let a = u.label_opacity as f64;
                    for ch in 0..3 {
                        rgb[ch] += (c[ch] as f64 - rgb[ch]) * a;
                    }
                } else if p != 0 {
                    let c = lut.colors[p as usize];
                    let (dx, dy) = (u.voxel_per_px_x, u.voxel_per_px_y);
                    let edge = proposal_at(off(v, 1.0, dx)) != p
                        || proposal_at(off(v, -1.0, dx)) != p
                        || proposal_at(off(v, 1.0, dy)) != p
                        || proposal_at(off(v, -1.0, dy)) != p;
                    if edge {
                        let on = ((px + py) as i32 / DASH_PX) % 2 == 0;
                        rgb = if on {
                            [c[0] as f64, c[1] as f64, c[2] as f64]
                        } else {
                            [0.0; 3]
                        };
                    } else {
                        let a = PROPOSAL_FILL as f64;
                        for ch in 0..3 {
                            rgb[ch] += (c[ch] as f64 - rgb[ch]) * a;
                        }
                    }
                }
            }
            for ch in 0..3 {
                out[o + ch] = (rgb[ch].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
            out[o + 3] = 255;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_voi_matches_the_standard() {
        // Lung window C -600 / W 1500.
        assert_eq!(window_level_unit(-1350.5, -600.0, 1500.0), 0.0);
        assert!((window_level_unit(-600.0, -600.0, 1500.0) - 0.5 - 0.5 / 1499.0).abs() < 1e-12);
        assert_eq!(window_level_unit(200.0, -600.0, 1500.0), 1.0);
        // Width 1: a threshold at c - 0.5.
        assert_eq!(window_level_unit(39.5, 40.0, 1.0), 0.0);
        assert_eq!(window_level_unit(39.6, 40.0, 1.0), 1.0);
    }
}
