//! Lesion training and test data without libtorch:
//!
//! - [`read_semiseg`]: COVID-SemiSeg slices (8-bit JPEG already windowed by the
//!   publisher; PNG palette masks 0 background, 1 GGO, 2 consolidation) as one-slice CT
//!   volumes at an assumed 0.75 mm pixel size (the images are cropped from 512² CT slices
//!   of a ~380 mm field of view). Labels become 3 (GGO) and 4 (consolidation). Grey
//!   values become HU by [`calibrate_windowed`], per image: the images were windowed by
//!   different people with different windows (their aerated-lung peak lies anywhere from
//!   grey 24 to 104, their soft-tissue peak from 184 to 231, 5-95 % of the images), so one
//!   fixed window cannot put them on the HU scale a real CT has. Until model v3 a fixed
//!   lung window
//!   W 1500 / L -600 was assumed; it put the typical image's aerated lung at -1085 HU and
//!   its ground glass at -809 HU, about 200 HU darker than in real CT, and the model
//!   missed ground glass in real volumes (see `weights/README.md`).
//! - [`insert_lesions`]: synthetic GGO and consolidation inserted into a real CT slice's
//!   lungs, with exact labels: smooth blobs with noisy borders (partial-volume edges),
//!   preferring the periphery (centres drawn near the lung boundary), sizes from a few mm
//!   to most of a lung; GGO raises HU to -750..-350 while keeping vessels visible
//!   (blending), consolidation reaches -100..+40 HU with air bronchograms (dark
//!   branching lines inside).

use std::path::{Path, PathBuf};

use super::InferError;
use crate::volume::{Geometry, LabelVolume, Volume};

/// The HU window the lesion model sees (from model v3; v1 used the lung window
/// -1350..150): aerated lung to soft tissue, with room below for air and above for
/// dense consolidation.
pub const LESION_INPUT_WINDOW_HU: (f32, f32) = (-1150.0, 250.0);

/// HU of the aerated-lung peak of a chest CT in inspiration (the peaks of the three
/// covid-ct-md volumes lie at -875..-905 HU, LCTSC's exhale scans a little higher).
pub const AERATED_LUNG_HU: f32 = -880.0;
/// HU of the soft-tissue peak (muscle, mediastinum: 35..45 HU in covid-ct-md; the
/// windowed images merge it with fat, hence a little lower).
pub const SOFT_TISSUE_HU: f32 = 20.0;
/// HU per grey level when only the lung peak can be found: the two pooled peaks of all
/// 98 COVID-SemiSeg images (grey 45 and 211) set to the two HU above.
pub const DEFAULT_HU_PER_LEVEL: f32 = (SOFT_TISSUE_HU - AERATED_LUNG_HU) / (211.0 - 45.0);

/// How the grey values of one windowed 8-bit image map to HU: `hu = hu_at_0 + v · hu_per_level`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GreyToHu {
    pub hu_at_0: f32,
    pub hu_per_level: f32,
    /// Which peaks were found: "lung+soft", "lung" or "default".
    pub method: &'static str,
}

impl GreyToHu {
    pub fn hu(&self, v: u8) -> f32 {
        self.hu_at_0 + self.hu_per_level * v as f32
    }
}

/// Finds the aerated-lung and soft-tissue peaks of a windowed 8-bit chest image
/// (ignoring pixels where `lesions` is non-zero) and maps them to
/// [`AERATED_LUNG_HU`] and [`SOFT_TISSUE_HU`]. A peak counts when at least 5 % of the
/// pixels lie within 12 grey levels of it; a soft-tissue peak at the white end is
/// clipped by the window and not used; without a lung peak the pooled mapping is used.
/// Two peaks at least 50 levels apart set the scale, 4..16 HU per level: the narrow
/// lung windows of COVID-SemiSeg (4.4..7.9 HU per level) and the wide -2048..~1000 HU
/// mapping of the MosMed slices (about 12 HU per level, peaks 76 levels apart). No
/// COVID-SemiSeg image maps differently from model v3's rule (100 levels, 4..8 HU).
pub fn calibrate_windowed(grey: &[u8], lesions: Option<&[u8]>) -> GreyToHu {
    let mut hist = [0f64; 256];
    let mut n = 0f64;
    for (i, &v) in grey.iter().enumerate() {
        if lesions.is_none_or(|m| m[i] == 0) {
            hist[v as usize] += 1.0;
            n += 1.0;
        }
    }
    // Gaussian smoothing, sigma 3 levels.
    let kernel: Vec<f64> = (-9i32..=9)
        .map(|d| (-0.5 * (d as f64 / 3.0).powi(2)).exp())
        .collect();
    let ksum: f64 = kernel.iter().sum();
    let smooth: Vec<f64> = (0..256i32)
        .map(|i| {
            kernel
                .iter()
                .enumerate()
                .map(|(j, w)| {
                    let k = i + j as i32 - 9;
                    if (0..256).contains(&k) {
                        hist[k as usize] * w
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
                / ksum
        })
        .collect();
    let peak_in = |lo: usize, hi: usize| -> Option<usize> {
        let p = (lo..hi).max_by(|&a, &b| smooth[a].total_cmp(&smooth[b]))?;
        let near: f64 = hist[p.saturating_sub(12)..(p + 13).min(256)].iter().sum();
        (n > 0.0 && near >= 0.05 * n).then_some(p)
    };
    let lung = peak_in(8, 110);
    let soft = peak_in(140, 256).filter(|&p| p < 245);
    match (lung, soft) {
        (Some(l), Some(s)) if s >= l + 50 => {
            let per = ((SOFT_TISSUE_HU - AERATED_LUNG_HU) / (s - l) as f32).clamp(4.0, 16.0);
            GreyToHu {
                hu_at_0: AERATED_LUNG_HU - per * l as f32,
                hu_per_level: per,
                method: "lung+soft",
            }
        }
        (Some(l), _) => GreyToHu {
            hu_at_0: AERATED_LUNG_HU - DEFAULT_HU_PER_LEVEL * l as f32,
            hu_per_level: DEFAULT_HU_PER_LEVEL,
            method: "lung",
        },
        _ => GreyToHu {
            hu_at_0: AERATED_LUNG_HU - DEFAULT_HU_PER_LEVEL * 45.0,
            hu_per_level: DEFAULT_HU_PER_LEVEL,
            method: "default",
        },
    }
}
/// Assumed pixel size of the COVID-SemiSeg images (mm).
pub const SEMISEG_PIXEL_MM: f64 = 0.75;

/// One 2D slice as a one-slice volume with its labels.
pub struct Slice2d {
    pub name: String,
    pub ct: Volume<i16>,
    pub labels: LabelVolume,
}

fn err(path: &Path, message: impl Into<String>) -> InferError {
    InferError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads the palette indices of an 8-bit colour-mapped (or grey) PNG.
pub fn read_png_indices(path: &Path) -> Result<(usize, usize, Vec<u8>), InferError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e.to_string()))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec
        .read_info()
        .map_err(|e| err(path, format!("not a PNG: {e}")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err(path, "PNG too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| err(path, format!("PNG decode: {e}")))?;
    if info.bit_depth != png::BitDepth::Eight
        || !matches!(
            info.color_type,
            png::ColorType::Indexed | png::ColorType::Grayscale
        )
    {
        return Err(err(
            path,
            format!(
                "expected an 8-bit palette or grey mask, found {:?} {:?}",
                info.color_type, info.bit_depth
            ),
        ));
    }
    let (w, h) = (info.width as usize, info.height as usize);
    let mut out = Vec::with_capacity(w * h);
    for row in buf.chunks(info.line_size).take(h) {
        out.extend_from_slice(&row[..w]);
    }
    Ok((w, h, out))
}

/// The one-slice volume of a windowed 8-bit image at `pixel_mm`, grey mapped by `map`.
pub fn volume_from_windowed(
    w: usize,
    h: usize,
    grey: &[u8],
    pixel_mm: f64,
    map: &GreyToHu,
) -> Volume<i16> {
    let g = Geometry::axis_aligned([w, h, 1], [pixel_mm, pixel_mm, 1.0], [0.0; 3]);
    Volume::new(g, grey.iter().map(|&v| map.hu(v).round() as i16).collect()).expect("dims match")
}

/// Every `img/N.jpg` + `mask/N.png` pair of a COVID-SemiSeg split folder, by N.
pub fn read_semiseg(dir: &Path) -> Result<Vec<Slice2d>, InferError> {
    let img_dir = dir.join("img");
    let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&img_dir)
        .map_err(|e| err(&img_dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(err(&img_dir, "no N.jpg images"));
    }
    let mut out = Vec::new();
    for (n, img_path) in names {
        let img = image::open(&img_path)
            .map_err(|e| err(&img_path, format!("not a readable image: {e}")))?
            .to_luma8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mask_path = dir.join("mask").join(format!("{n}.png"));
        let (mw, mh, idx) = read_png_indices(&mask_path)?;
        if (mw, mh) != (w, h) {
            return Err(err(
                &mask_path,
                format!("mask is {mw}x{mh}, the image {}x{}", w, h),
            ));
        }
        if let Some(bad) = idx.iter().find(|&&v| v > 2) {
            return Err(err(
                &mask_path,
                format!("palette index {bad} (expected 0, 1, 2)"),
            ));
        }
        // Calibrated from the image alone: test images must not see their masks, and
        // training images are read the same way.
        let map = calibrate_windowed(img.as_raw(), None);
        let ct = volume_from_windowed(w, h, img.as_raw(), SEMISEG_PIXEL_MM, &map);
        let labels = Volume::new(
            ct.geometry.clone(),
            idx.iter()
                .map(|&v| match v {
                    1 => super::GGO,
                    2 => super::CONSOLIDATION,
                    _ => 0,
                })
                .collect(),
        )
        .expect("dims match");
        out.push(Slice2d {
            name: format!("{n}"),
            ct,
            labels,
        });
    }
    Ok(out)
}

/// Which MosMed CT-0 slices (`CT-0/imgN.jpg`) the lesion model may learn "no lesion"
/// from: even N. Odd N are never shown to it, so they measure its false positives on
/// unseen normal lungs, and the classifier (issue #15) must leave the even ones out of
/// its normal-vs-COVID measurements.
pub fn mosmed_normal_for_lesion_training(n: u64) -> bool {
    n.is_multiple_of(2)
}

/// The number N of an image called `N.jpg` or `imgN.jpg`.
pub fn image_number(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    stem.strip_prefix("img").unwrap_or(stem).parse().ok()
}

/// Radiologist-graded normal chest slices (8-bit windowed JPEGs, e.g. MosMed `CT-0/`)
/// whose number passes `select`, as one-slice CT volumes with no lesion labels, cropped
/// to the body (pixels above -400 HU, with a 16-pixel margin). Images whose windowing
/// cannot be calibrated from both peaks ([`calibrate_windowed`] method other than
/// "lung+soft") are left out and returned by name: a guessed mapping could turn normal
/// lung into ground glass.
pub fn read_normal_slices(
    dir: &Path,
    pixel_mm: f64,
    select: impl Fn(u64) -> bool,
) -> Result<(Vec<Slice2d>, Vec<String>), InferError> {
    let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .filter_map(|p| Some((image_number(&p)?, p)))
        .filter(|(n, _)| select(*n))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(err(dir, "no N.jpg or imgN.jpg images selected"));
    }
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for (_, path) in names {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let img = image::open(&path)
            .map_err(|e| err(&path, format!("not a readable image: {e}")))?
            .to_luma8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let map = calibrate_windowed(img.as_raw(), None);
        if map.method != "lung+soft" {
            skipped.push(name);
            continue;
        }
        let body = |x: usize, y: usize| map.hu(img.as_raw()[x + w * y]) > -400.0;
        let rows: Vec<usize> = (0..h)
            .filter(|&y| (0..w).filter(|&x| body(x, y)).count() >= 8)
            .collect();
        let cols: Vec<usize> = (0..w)
            .filter(|&x| (0..h).filter(|&y| body(x, y)).count() >= 8)
            .collect();
        let (Some(&y0), Some(&y1), Some(&x0), Some(&x1)) =
            (rows.first(), rows.last(), cols.first(), cols.last())
        else {
            skipped.push(name);
            continue;
        };
        let (x0, y0) = (x0.saturating_sub(16), y0.saturating_sub(16));
        let (x1, y1) = ((x1 + 16).min(w - 1), (y1 + 16).min(h - 1));
        let (cw, ch) = (x1 - x0 + 1, y1 - y0 + 1);
        let grey: Vec<u8> = (y0..=y1)
            .flat_map(|y| (x0..=x1).map(move |x| (x, y)))
            .map(|(x, y)| img.as_raw()[x + w * y])
            .collect();
        let ct = volume_from_windowed(cw, ch, &grey, pixel_mm, &map);
        let labels = ct.map(|_| 0u8);
        out.push(Slice2d { name, ct, labels });
    }
    Ok((out, skipped))
}

/// A tiny deterministic value-noise field on a slice (for textures and borders).
struct Noise {
    w: usize,
    cell: f64,
    grid: Vec<f32>,
    gw: usize,
}

impl Noise {
    fn new(w: usize, h: usize, cell_px: f64, rng: &mut impl FnMut() -> f64) -> Noise {
        let gw = (w as f64 / cell_px) as usize + 2;
        let gh = (h as f64 / cell_px) as usize + 2;
        Noise {
            w,
            cell: cell_px,
            grid: (0..gw * gh).map(|_| rng() as f32 * 2.0 - 1.0).collect(),
            gw,
        }
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        let (fx, fy) = (x as f64 / self.cell, y as f64 / self.cell);
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = ((fx - ix as f64) as f32, (fy - iy as f64) as f32);
        let s = |t: f32| t * t * (3.0 - 2.0 * t);
        let (tx, ty) = (s(tx), s(ty));
        let g = |i: usize, j: usize| self.grid[i + self.gw * j];
        let a = g(ix, iy) * (1.0 - tx) + g(ix + 1, iy) * tx;
        let b = g(ix, iy + 1) * (1.0 - tx) + g(ix + 1, iy + 1) * tx;
        let _ = self.w;
        a * (1.0 - ty) + b * ty
    }
}

/// Inserts 1..=4 synthetic lesions into slice `k` of `ct` inside `lungs` (non-zero) and
/// returns the modified one-slice CT and its labels (3 GGO, 4 consolidation).
/// `uniform` returns numbers in [0, 1).
pub fn insert_lesions(
    ct: &Volume<i16>,
    lungs: &LabelVolume,
    k: usize,
    uniform: &mut impl FnMut() -> f64,
) -> Slice2d {
    let [w, h, _] = ct.geometry.dims;
    let s = ct.geometry.spacing_mm;
    let g = Geometry {
        dims: [w, h, 1],
        ..ct.geometry
            .sub_grid([0, 0, k], [w, h, 1])
            .expect("slice in range")
    };
    let mut hu: Vec<f32> = ct.slice_k(k).iter().map(|&v| v as f32).collect();
    let lung = lungs.slice_k(k);
    let mut labels = vec![0u8; w * h];
    let lung_px: Vec<usize> = (0..w * h).filter(|&p| lung[p] != 0).collect();
    if lung_px.len() < 50 {
        return Slice2d {
            name: format!("slice {k} (no lung)"),
            ct: Volume::new(g.clone(), hu.iter().map(|&v| v as i16).collect()).expect("dims"),
            labels: Volume::new(g, labels).expect("dims"),
        };
    }
    // Boundary pixels of the lung (for peripheral placement).
    let boundary: Vec<usize> = lung_px
        .iter()
        .copied()
        .filter(|&p| {
            let (x, y) = (p % w, p / w);
            x == 0
                || y == 0
                || x + 1 == w
                || y + 1 == h
                || [p - 1, p + 1, p - w, p + w].iter().any(|&q| lung[q] == 0)
        })
        .collect();
    let lesions = 1 + (uniform() * 4.0) as usize;
    let mut alpha_ggo = vec![0f32; w * h];
    let mut alpha_con = vec![0f32; w * h];
    for _ in 0..lesions {
        // Peripheral (70 %): a boundary pixel moved a little inwards; else anywhere.
        let c = if uniform() < 0.7 && !boundary.is_empty() {
            boundary[(uniform() * boundary.len() as f64) as usize % boundary.len()]
        } else {
            lung_px[(uniform() * lung_px.len() as f64) as usize % lung_px.len()]
        };
        let (cx, cy) = ((c % w) as f64, (c / w) as f64);
        // Radius 3..60 mm, log-uniform; an ellipse at a random angle.
        let r_mm = (3f64.ln() + uniform() * (60f64.ln() - 3f64.ln())).exp();
        let (rx, ry) = (
            r_mm / s[0] * (0.7 + 0.6 * uniform()),
            r_mm / s[1] * (0.7 + 0.6 * uniform()),
        );
        let ang = uniform() * std::f64::consts::PI;
        let (ca, sa) = (ang.cos(), ang.sin());
        let border = Noise::new(w, h, (r_mm / s[0] / 2.0).max(2.0), uniform);
        let consolidation = uniform() < 0.35;
        let edge_px = 0.8 + 2.0 * uniform(); // partial-volume softness
        let target = if consolidation {
            &mut alpha_con
        } else {
            &mut alpha_ggo
        };
        let reach = rx.max(ry) * 1.6 + 4.0;
        let (x0, x1) = (
            (cx - reach).max(0.0) as usize,
            ((cx + reach) as usize).min(w - 1),
        );
        let (y0, y1) = (
            (cy - reach).max(0.0) as usize,
            ((cy + reach) as usize).min(h - 1),
        );
        for y in y0..=y1 {
            for x in x0..=x1 {
                let p = x + w * y;
                if lung[p] == 0 {
                    continue;
                }
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let (u, v) = ((dx * ca + dy * sa) / rx, (-dx * sa + dy * ca) / ry);
                let d = (u * u + v * v).sqrt() + 0.35 * border.at(x, y) as f64;
                // Signed distance to the border in pixels (approx.), soft step.
                let sd = (1.0 - d) * rx.min(ry);
                let a = (0.5 + sd / (2.0 * edge_px)).clamp(0.0, 1.0) as f32;
                target[p] = target[p].max(a);
            }
        }
    }
    let texture = Noise::new(w, h, 3.0, uniform);
    let ggo_hu = -750.0 + 400.0 * uniform() as f32;
    let con_hu = -100.0 + 140.0 * uniform() as f32;
    // Air bronchograms: a few random dark line segments through consolidation.
    let mut bronchus = vec![false; w * h];
    if alpha_con.iter().any(|&a| a > 0.5) {
        for _ in 0..3 {
            let seeds: Vec<usize> = (0..w * h).filter(|&p| alpha_con[p] > 0.9).collect();
            if seeds.is_empty() {
                break;
            }
            let start = seeds[(uniform() * seeds.len() as f64) as usize % seeds.len()];
            let (mut x, mut y) = ((start % w) as f64, (start / w) as f64);
            let ang = uniform() * std::f64::consts::TAU;
            let len = 5.0 + 20.0 * uniform();
            for _ in 0..len as usize * 2 {
                let (xi, yi) = (x.round() as isize, y.round() as isize);
                if xi < 0 || yi < 0 || xi as usize >= w || yi as usize >= h {
                    break;
                }
                bronchus[xi as usize + w * yi as usize] = true;
                x += 0.5 * ang.cos();
                y += 0.5 * ang.sin();
            }
        }
    }
    for p in 0..w * h {
        let (x, y) = (p % w, p / w);
        let t = texture.at(x, y) * 40.0;
        let ag = alpha_ggo[p];
        if ag > 0.0 {
            // GGO: hazy increase; vessels (above the target) stay visible.
            let v = hu[p];
            hu[p] = v + ag * ((ggo_hu + t).max(v) - v);
        }
        let ac = alpha_con[p];
        if ac > 0.0 {
            let dense = if bronchus[p] && ac > 0.8 {
                -900.0
            } else {
                con_hu + t * 0.5
            };
            hu[p] = hu[p] * (1.0 - ac) + dense * ac;
        }
        labels[p] = if ac >= 0.5 {
            super::CONSOLIDATION
        } else if ag >= 0.5 {
            super::GGO
        } else {
            0
        };
    }
    Slice2d {
        name: format!("slice {k} + {lesions} synthetic lesions"),
        ct: Volume::new(
            g.clone(),
            hu.iter()
                .map(|&v| v.round().clamp(-1024.0, 3071.0) as i16)
                .collect(),
        )
        .expect("dims"),
        labels: Volume::new(g, labels).expect("dims"),
    }
}

/// Per-slice Dice of `target` (any lesion when `None`), 1 when both are empty (the
/// Inf-Net evaluation averages this over slices).
pub fn slice_dice(reference: &[u8], predicted: &[u8], target: Option<u8>) -> f64 {
    let hit = |v: u8| match target {
        Some(t) => v == t,
        None => v == super::GGO || v == super::CONSOLIDATION,
    };
    let (mut tp, mut a, mut b) = (0u64, 0u64, 0u64);
    for (&r, &p) in reference.iter().zip(predicted) {
        let (r, p) = (hit(r), hit(p));
        tp += (r && p) as u64;
        a += r as u64;
        b += p as u64;
    }
    if a + b == 0 {
        1.0
    } else {
        2.0 * tp as f64 / (a + b) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_lesions_stay_in_the_lungs_with_plausible_hu() {
        let g = Geometry::axis_aligned([64, 64, 2], [1.5, 1.5, 3.0], [0.0; 3]);
        let mut ct = Volume::filled(g.clone(), 40i16).unwrap();
        let mut lungs = Volume::filled(g, 0u8).unwrap();
        for k in 0..2 {
            for j in 10..54 {
                for i in 8..30 {
                    ct.set(i, j, k, -860);
                    lungs.set(i, j, k, 1);
                }
            }
        }
        let mut state = 12345u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut seen = 0;
        for _ in 0..20 {
            let s = insert_lesions(&ct, &lungs, 1, &mut uniform);
            for p in 0..64 * 64 {
                let l = s.labels.voxels[p];
                if l != 0 {
                    seen += 1;
                    assert_ne!(lungs.voxels[64 * 64 + p], 0, "lesion outside the lung");
                    let hu = s.ct.voxels[p];
                    match l {
                        3 => assert!((-860..=0).contains(&hu), "GGO at {hu} HU"),
                        4 => assert!((-1024..=100).contains(&hu), "consolidation at {hu} HU"),
                        _ => panic!("label {l}"),
                    }
                } else if lungs.voxels[64 * 64 + p] == 0 {
                    assert_eq!(s.ct.voxels[p], 40, "outside the lung nothing changes");
                }
            }
        }
        assert!(seen > 200, "lesions were inserted ({seen} px)");
    }

    /// A synthetic windowed image: `lung` share of pixels around grey `l`, the rest
    /// around grey `s` (a little spread).
    fn two_peaks(l: u8, s: u8, lung: f64) -> Vec<u8> {
        (0..10_000i32)
            .map(|i| {
                let jitter = i % 7 - 3;
                let base = if (i as f64) < lung * 10_000.0 { l } else { s };
                (base as i32 + jitter).clamp(0, 255) as u8
            })
            .collect()
    }

    #[test]
    fn calibration_puts_the_lung_and_soft_tissue_peaks_at_their_hu() {
        // Lung at grey 40, soft tissue at 200: both anchors.
        let m = calibrate_windowed(&two_peaks(40, 200, 0.5), None);
        assert_eq!(m.method, "lung+soft");
        assert!((m.hu(40) - AERATED_LUNG_HU).abs() < 6.0, "{m:?}");
        assert!((m.hu(200) - SOFT_TISSUE_HU).abs() < 6.0, "{m:?}");
        // Soft tissue clipped at the white end: the lung anchor and the pooled slope.
        let m = calibrate_windowed(&two_peaks(60, 252, 0.5), None);
        assert_eq!(m.method, "lung");
        assert!((m.hu(60) - AERATED_LUNG_HU).abs() < 6.0, "{m:?}");
        assert_eq!(m.hu_per_level, DEFAULT_HU_PER_LEVEL);
        // No aerated lung at all (a bright image): the pooled mapping.
        let m = calibrate_windowed(&two_peaks(180, 200, 0.5), None);
        assert_eq!(m.method, "default");
        assert!((m.hu(45) - AERATED_LUNG_HU).abs() < 1e-3);
        // Lesion pixels are ignored: a large lesion peak at 120 does not move the lung.
        let grey = two_peaks(40, 200, 0.5);
        let mut mixed = grey.clone();
        let mut mask = vec![0u8; grey.len()];
        for i in 0..3000 {
            mixed[i] = 100;
            mask[i] = 1;
        }
        let with = calibrate_windowed(&mixed, Some(&mask));
        assert_eq!(with.method, "lung+soft");
        assert!((with.hu(40) - AERATED_LUNG_HU).abs() < 6.0, "{with:?}");
        assert!(calibrate_windowed(&[], None).method == "default");
        // A wide window (MosMed: about -2048..1000 HU, peaks 76 levels apart).
        let m = calibrate_windowed(&two_peaks(100, 176, 0.5), None);
        assert_eq!(m.method, "lung+soft");
        assert!((m.hu(100) - AERATED_LUNG_HU).abs() < 13.0, "{m:?}");
        assert!((m.hu(176) - SOFT_TISSUE_HU).abs() < 13.0, "{m:?}");
        assert!(m.hu_per_level > 11.0 && m.hu_per_level < 13.0, "{m:?}");
    }

    #[test]
    fn normal_slices_are_cropped_to_the_body_and_unlabelled() {
        let dir = std::env::temp_dir().join(format!("pulmo-normal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 128x96 image: outside the scan circle 0, a body (grey 176) from x 40..90,
        // y 30..70 with two lungs (grey 100) inside.
        let (w, h) = (128u32, 96u32);
        let img = image::GrayImage::from_fn(w, h, |x, y| {
            let inside = (40..90).contains(&x) && (30..70).contains(&y);
            let lung = (46..62).contains(&x) || (68..84).contains(&x);
            image::Luma([match (inside, lung && (36..64).contains(&y)) {
                (false, _) => 0,
                (true, true) => 100,
                (true, false) => 176,
            }])
        });
        img.save(dir.join("img2.png")).unwrap();
        img.save(dir.join("img3.png")).unwrap();
        image::GrayImage::from_pixel(w, h, image::Luma([200]))
            .save(dir.join("img4.png"))
            .unwrap();
        let (slices, skipped) =
            read_normal_slices(&dir, 0.75, mosmed_normal_for_lesion_training).unwrap();
        assert_eq!(skipped, vec!["img4.png".to_string()]);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.name, "img2.png");
        // Body x 40..=89 and y 30..=69, plus 16 px each side.
        assert_eq!(s.ct.geometry.dims, [82, 72, 1]);
        assert!(s.labels.voxels.iter().all(|&v| v == 0));
        // Pixel (54, 44) of the image, in a lung.
        assert!((s.ct.get(30, 30, 0) as f32 - AERATED_LUNG_HU).abs() < 13.0);
        assert!((s.ct.get(0, 0, 0) as f32) < -1500.0);
        let e = read_normal_slices(&dir, 0.75, |_| false)
            .err()
            .expect("nothing selected is an error")
            .to_string();
        assert!(e.contains(&dir.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn semiseg_windowing_and_dice() {
        let map = GreyToHu {
            hu_at_0: -1000.0,
            hu_per_level: 5.0,
            method: "test",
        };
        let v = volume_from_windowed(2, 1, &[0, 200], 0.75, &map);
        assert_eq!(v.voxels, vec![-1000, 0]);
        assert_eq!(slice_dice(&[0, 3, 4, 0], &[0, 4, 4, 0], None), 1.0);
        assert_eq!(slice_dice(&[0, 3, 4, 0], &[0, 4, 4, 0], Some(3)), 0.0);
        assert_eq!(slice_dice(&[0, 0], &[0, 0], Some(3)), 1.0);
    }
}
