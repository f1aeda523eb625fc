//! The slice shader rendered headlessly (wgpu on the CPU lavapipe adapter) against the
//! CPU reference, within 1/255, for several window/level settings and label modes.

use nalgebra::{Point3, Vector2};
use pulmo::render::headless::{Headless, OFFSCREEN_FORMAT};
use pulmo::render::reference::{
    SliceVolumes, render_slice, render_slice_with_proposals, render_volumes,
};
use pulmo::render::{
    AGREEMENT_FN, AGREEMENT_FP, AGREEMENT_TP, COMPARE_CHECKERBOARD, COMPARE_DIFFERENCE,
    COMPARE_OFF, COMPARE_OTHER, FLAG_LAYER_FILLED, FLAG_LINEAR, FLAG_OUTLINE, FLAG_SHOW_LABELS,
    FLAG_SHOW_PROPOSALS, LabelColors, SliceRenderer, SliceUniforms,
};
use pulmo::view::{Plane, ViewFrame, ViewState};
use pulmo::volume::{Geometry, Volume};

fn device() -> Option<Headless> {
    match Headless::new(true) {
        Ok(h) => Some(h),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI needs lavapipe: {e}")
        }
        Err(e) => {
            eprintln!("SKIP: {e}");
            None
        }
    }
}

#[test]
fn shader_matches_cpu_reference() {
    let Some(h) = device() else { return };
    eprintln!("adapter: {}", h.adapter_name);
    let g = Geometry::axis_aligned([40, 30, 10], [0.8, 0.8, 2.5], [-16.0, -12.0, 0.0]);
    let [nx, ny, nz] = g.dims;
    let mut hu = Vec::new();
    let mut labels = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                hu.push((-2000 + (i * 120 + j * 17 + k * 3) as i32) as i16);
                let r2 = (i as i32 - 20).pow(2) + (j as i32 - 15).pow(2);
                labels.push(if r2 < 36 {
                    3
                } else if r2 < 100 {
                    1
                } else {
                    0
                });
            }
        }
    }
    let vol = Volume::new(g.clone(), hu).unwrap();
    let mut renderer = SliceRenderer::new(&h.device, OFFSCREEN_FORMAT);
    renderer.upload_volume(&h.device, &h.queue, g.dims, &vol.voxels, &labels);
    let mut lut = LabelColors::default();
    lut.colors[1] = [0.2, 0.6, 1.0, 1.0];
    lut.colors[3] = [1.0, 0.8, 0.0, 1.0];
    let (w, hgt) = (80u32, 60u32);
    let cursor = Point3::new(0.0, 0.0, 10.0);
    let windows = [
        (-600.0, 1500.0),
        (40.0, 350.0),
        (500.0, 2000.0),
        (40.0, 1.0),
        (5000.0, 400.0),
        (-3000.0, 10.0),
    ];
    let mut checked = 0;
    for plane in [Plane::Axial, Plane::Coronal] {
        let state = ViewState::new(plane);
        let frame = ViewFrame::new(&g, &state, Vector2::new(w as f64, hgt as f64), cursor);
        for (c, width) in windows {
            for flags in [
                0,
                FLAG_LINEAR,
                FLAG_SHOW_LABELS,
                FLAG_SHOW_LABELS | FLAG_OUTLINE,
            ] {
                let u = SliceUniforms::for_view(&frame, &g, c as f32, width as f32, 0.4, flags);
                let gpu = h.render_view(&mut renderer, 0, &u, &lut, w, hgt);
                let cpu = render_slice(
                    &u,
                    &lut,
                    g.dims,
                    &vol.voxels,
                    &labels,
                    w as usize,
                    hgt as usize,
                );
                assert_eq!(gpu.len(), cpu.len());
                let worst = gpu
                    .iter()
                    .zip(&cpu)
                    .map(|(a, b)| (*a as i32 - *b as i32).abs())
                    .max()
                    .unwrap();
                let bad = gpu
                    .iter()
                    .zip(&cpu)
                    .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 1)
                    .count();
                assert!(
                    bad == 0,
                    "{plane:?} C{c} W{width} flags {flags}: {bad} channels differ by more than 1/255 (worst {worst})"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 48);
}

/// The proposal layer (faint fill, dashed outline in the label colour) against the CPU
/// reference, over filled labels; and a layer that is removed is no longer drawn.
#[test]
fn proposal_layer_matches_cpu_reference() {
    let Some(h) = device() else { return };
    let g = Geometry::axis_aligned([32, 32, 6], [1.0, 1.0, 2.0], [-16.0, -16.0, 0.0]);
    let [nx, ny, nz] = g.dims;
    let n = nx * ny * nz;
    let hu: Vec<i16> = (0..n)
        .map(|i| (-900 + (i % 97) as i32 * 10) as i16)
        .collect();
    let mut labels = vec![0u8; n];
    let mut proposals = vec![0u8; n];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let idx = i + nx * (j + ny * k);
                if (4..14).contains(&i) && (4..20).contains(&j) {
                    labels[idx] = 1;
                }
                let r2 = (i as i32 - 18).pow(2) + (j as i32 - 16).pow(2);
                if r2 < 64 {
                    proposals[idx] = 3;
                } else if (22..30).contains(&i) && (2..8).contains(&j) {
                    proposals[idx] = 4;
                }
            }
        }
    }
    let mut renderer = SliceRenderer::new(&h.device, OFFSCREEN_FORMAT);
    renderer.upload_volume(&h.device, &h.queue, g.dims, &hu, &labels);
    renderer.set_proposals(&h.device, &h.queue, Some(&proposals));
    let mut lut = LabelColors::default();
    lut.colors[1] = [0.2, 0.6, 1.0, 1.0];
    lut.colors[3] = [1.0, 0.8, 0.0, 1.0];
    lut.colors[4] = [1.0, 0.2, 0.2, 0.0]; // hidden label: proposals still show
    let (w, hgt) = (96u32, 96u32);
    let state = ViewState::new(Plane::Axial);
    let frame = ViewFrame::new(
        &g,
        &state,
        Vector2::new(w as f64, hgt as f64),
        Point3::new(0.0, 0.0, 4.0),
    );
    let u = SliceUniforms::for_view(
        &frame,
        &g,
        -600.0,
        1500.0,
        0.4,
        FLAG_SHOW_LABELS | FLAG_SHOW_PROPOSALS,
    );
    let gpu = h.render_view(&mut renderer, 0, &u, &lut, w, hgt);
    let cpu = render_slice_with_proposals(
        &u,
        &lut,
        g.dims,
        &hu,
        &labels,
        Some(&proposals),
        w as usize,
        hgt as usize,
    );
    let bad = gpu
        .iter()
        .zip(&cpu)
        .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 1)
        .count();
    assert_eq!(
        bad, 0,
        "proposal layer differs from the CPU reference in {bad} channels"
    );
    // The layer is visible: pure label-3 colour (dash) and black (gap) pixels exist.
    let px = |c: [u8; 3]| gpu.chunks(4).filter(|p| p[..3] == c).count();
    assert!(px([255, 204, 0]) > 10, "dashes in the GGO colour");
    assert!(px([0, 0, 0]) > 10, "dash gaps");
    let without = render_slice(&u, &lut, g.dims, &hu, &labels, w as usize, hgt as usize);
    assert_ne!(cpu, without);
    // Removing the layer removes it from the picture.
    renderer.set_proposals(&h.device, &h.queue, None);
    let gpu = h.render_view(&mut renderer, 0, &u, &lut, w, hgt);
    let bad = gpu
        .iter()
        .zip(&without)
        .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 1)
        .count();
    assert_eq!(bad, 0);
}

/// The agreement overlay: the layer drawn as a solid fill at the label opacity in the
/// reserved TP / FP / FN colours, over labels (filled and outlined) and on its own,
/// against the CPU reference; in the coronal view too.
#[test]
fn filled_layer_matches_cpu_reference() {
    let Some(h) = device() else { return };
    let g = Geometry::axis_aligned([32, 28, 8], [1.0, 1.2, 2.0], [-16.0, -16.0, 0.0]);
    let [nx, ny, nz] = g.dims;
    let n = nx * ny * nz;
    let hu: Vec<i16> = (0..n)
        .map(|i| (-1000 + (i % 131) as i32 * 9) as i16)
        .collect();
    let mut labels = vec![0u8; n];
    let mut layer = vec![0u8; n];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let idx = i + nx * (j + ny * k);
                if (3..20).contains(&i) && (3..22).contains(&j) {
                    labels[idx] = 2;
                }
                let r2 = (i as i32 - 14).pow(2) + (j as i32 - 13).pow(2);
                let shifted = (i as i32 - 17).pow(2) + (j as i32 - 13).pow(2);
                layer[idx] = match (r2 < 49, shifted < 49) {
                    (true, true) => AGREEMENT_TP,
                    (true, false) => AGREEMENT_FN,
                    (false, true) => AGREEMENT_FP,
                    _ => 0,
                };
            }
        }
    }
    let mut renderer = SliceRenderer::new(&h.device, OFFSCREEN_FORMAT);
    renderer.upload_volume(&h.device, &h.queue, g.dims, &hu, &labels);
    renderer.set_proposals(&h.device, &h.queue, Some(&layer));
    let mut table = [[0.0f32; 4]; 256];
    table[2] = [0.3, 0.85, 0.55, 1.0];
    let lut = LabelColors::with_overlays(table);
    assert_eq!(lut.colors[AGREEMENT_TP as usize][3], 1.0);
    assert_ne!(
        lut.colors[AGREEMENT_FP as usize],
        lut.colors[AGREEMENT_FN as usize]
    );
    let (w, hgt) = (90u32, 70u32);
    let mut checked = 0;
    for plane in [Plane::Axial, Plane::Coronal] {
        let state = ViewState::new(plane);
        let frame = ViewFrame::new(
            &g,
            &state,
            Vector2::new(w as f64, hgt as f64),
            Point3::new(0.0, -3.0, 6.0),
        );
        for (flags, opacity) in [
            (FLAG_SHOW_PROPOSALS | FLAG_LAYER_FILLED, 0.35),
            (
                FLAG_SHOW_PROPOSALS | FLAG_LAYER_FILLED | FLAG_SHOW_LABELS,
                0.6,
            ),
            (
                FLAG_SHOW_PROPOSALS | FLAG_LAYER_FILLED | FLAG_SHOW_LABELS | FLAG_OUTLINE,
                1.0,
            ),
            (
                FLAG_SHOW_PROPOSALS | FLAG_LAYER_FILLED | FLAG_LINEAR | FLAG_SHOW_LABELS,
                0.2,
            ),
        ] {
            let u = SliceUniforms::for_view(&frame, &g, -600.0, 1500.0, opacity, flags);
            let gpu = h.render_view(&mut renderer, 0, &u, &lut, w, hgt);
            let cpu = render_slice_with_proposals(
                &u,
                &lut,
                g.dims,
                &hu,
                &labels,
                Some(&layer),
                w as usize,
                hgt as usize,
            );
            let bad = gpu
                .iter()
                .zip(&cpu)
                .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 1)
                .count();
            assert_eq!(
                bad, 0,
                "{plane:?} flags {flags}: the filled layer differs from the CPU reference in {bad} channels"
            );
            if opacity == 1.0 {
                // At full opacity the three reserved colours appear as they are.
                for code in [AGREEMENT_TP, AGREEMENT_FP, AGREEMENT_FN] {
                    let c = lut.colors[code as usize].map(|v| (v * 255.0).round() as u8);
                    let count = gpu.chunks(4).filter(|p| p[..3] == c[..3]).count();
                    assert!(
                        count > 10,
                        "{plane:?}: colour of {code} drawn {count} times"
                    );
                }
            }
            let dashed = SliceUniforms {
                flags: flags & !FLAG_LAYER_FILLED,
                ..u
            };
            let plain = render_slice_with_proposals(
                &dashed,
                &lut,
                g.dims,
                &hu,
                &labels,
                Some(&layer),
                w as usize,
                hgt as usize,
            );
            assert_ne!(cpu, plain, "the filled mode differs from the dashed one");
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}

/// An empty label map is not uploaded (wgpu zero-initialises the texture): a study
/// opened after one with labels draws no labels, exactly as the CPU reference.
#[test]
fn empty_labels_draw_nothing_after_a_labelled_study() {
    let Some(h) = device() else { return };
    let g = Geometry::axis_aligned([24, 20, 6], [1.0, 1.0, 2.0], [0.0, 0.0, 0.0]);
    let n = g.voxel_count();
    let hu: Vec<i16> = (0..n).map(|i| (i % 700) as i16 - 900).collect();
    let mut renderer = SliceRenderer::new(&h.device, OFFSCREEN_FORMAT);
    let mut lut = LabelColors::default();
    lut.colors[3] = [1.0, 0.8, 0.0, 1.0];
    let (w, hgt) = (48u32, 40u32);
    let frame = ViewFrame::new(
        &g,
        &ViewState::new(Plane::Axial),
        Vector2::new(w as f64, hgt as f64),
        Point3::new(12.0, 10.0, 6.0),
    );
    let u = SliceUniforms::for_view(&frame, &g, -600.0, 1500.0, 0.8, FLAG_SHOW_LABELS);
    let full = vec![3u8; n];
    let empty = vec![0u8; n];
    renderer.upload_volume(&h.device, &h.queue, g.dims, &hu, &full);
    let labelled = h.render_view(&mut renderer, 0, &u, &lut, w, hgt);
    renderer.upload_volume(&h.device, &h.queue, g.dims, &hu, &empty);
    let gpu = h.render_view(&mut renderer, 0, &u, &lut, w, hgt);
    let cpu = render_slice(&u, &lut, g.dims, &hu, &empty, w as usize, hgt as usize);
    let differ = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| x.abs_diff(**y) > 1).count();
    assert!(
        differ(&labelled, &cpu) > 0,
        "the labelled study shows its labels"
    );
    assert_eq!(differ(&gpu, &cpu), 0, "an empty label map draws nothing");
}

/// The follow-up comparison modes (the other time point instead of the CT, a
/// checkerboard of both, their difference in colour) against the CPU reference, with
/// labels on top and linear sampling, on an anisotropic grid in two planes; removing
/// the other time point turns the modes off.
#[test]
fn comparison_modes_match_cpu_reference() {
    let Some(h) = device() else { return };
    let g = Geometry::axis_aligned([36, 30, 9], [0.9, 1.1, 2.5], [-16.0, -16.0, 0.0]);
    let [nx, ny, nz] = g.dims;
    let n = nx * ny * nz;
    let hu: Vec<i16> = (0..n)
        .map(|i| (-1000 + (i % 97) as i32 * 12) as i16)
        .collect();
    // The other time point: denser in a disc, lighter in another, shifted elsewhere.
    let mut other = hu.clone();
    let mut labels = vec![0u8; n];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let idx = i + nx * (j + ny * k);
                let d1 = (i as i32 - 10).pow(2) + (j as i32 - 10).pow(2);
                let d2 = (i as i32 - 25).pow(2) + (j as i32 - 20).pow(2);
                if d1 < 30 {
                    other[idx] = hu[idx] - 400;
                } else if d2 < 30 {
                    other[idx] = hu[idx] + 250;
                } else {
                    other[idx] = hu[idx] + ((i * 7 + j) % 23) as i16;
                }
                if (20..30).contains(&i) && (3..9).contains(&j) {
                    labels[idx] = 1;
                }
            }
        }
    }
    let mut renderer = SliceRenderer::new(&h.device, OFFSCREEN_FORMAT);
    renderer.upload_volume(&h.device, &h.queue, g.dims, &hu, &labels);
    renderer.set_other_ct(&h.device, &h.queue, Some(&other));
    let mut lut = LabelColors::default();
    lut.colors[1] = [0.2, 0.6, 1.0, 1.0];
    let (w, hgt) = (84u32, 72u32);
    let volumes = SliceVolumes {
        dims: g.dims,
        hu: &hu,
        labels: &labels,
        proposals: None,
        other_hu: Some(&other),
    };
    let mut pictures = Vec::new();
    for plane in [Plane::Axial, Plane::Coronal] {
        let frame = ViewFrame::new(
            &g,
            &ViewState::new(plane),
            Vector2::new(w as f64, hgt as f64),
            Point3::new(0.0, -4.0, 9.0),
        );
        for mode in [
            COMPARE_OFF,
            COMPARE_OTHER,
            COMPARE_CHECKERBOARD,
            COMPARE_DIFFERENCE,
        ] {
            for (flags, baseline) in [(FLAG_SHOW_LABELS, true), (FLAG_LINEAR, false)] {
                let u = SliceUniforms::for_view(&frame, &g, -400.0, 1200.0, 0.5, flags)
                    .with_comparison(mode, &g, 6.0, 300.0, baseline);
                let gpu = h.render_view(&mut renderer, 0, &u, &lut, w, hgt);
                let cpu = render_volumes(&u, &lut, &volumes, w as usize, hgt as usize);
                let bad = gpu
                    .iter()
                    .zip(&cpu)
                    .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 1)
                    .count();
                assert_eq!(
                    bad, 0,
                    "{plane:?} mode {mode} flags {flags}: {bad} channels differ from the CPU reference"
                );
                if plane == Plane::Axial && flags == FLAG_SHOW_LABELS {
                    pictures.push(gpu);
                }
            }
        }
    }
    // Every mode draws something else; the difference shows both colours.
    for a in 0..pictures.len() {
        for b in a + 1..pictures.len() {
            assert_ne!(pictures[a], pictures[b], "modes {a} and {b} look the same");
        }
    }
    let diff = &pictures[3];
    let reddish = diff
        .chunks(4)
        .filter(|p| p[0] as i32 > p[2] as i32 + 80)
        .count();
    let bluish = diff
        .chunks(4)
        .filter(|p| p[2] as i32 > p[0] as i32 + 80)
        .count();
    assert!(reddish > 20 && bluish > 20, "red {reddish}, blue {bluish}");
    // Without the other time point the modes draw the CT alone.
    renderer.set_other_ct(&h.device, &h.queue, None);
    let frame = ViewFrame::new(
        &g,
        &ViewState::new(Plane::Axial),
        Vector2::new(w as f64, hgt as f64),
        Point3::new(0.0, -4.0, 9.0),
    );
    let u = SliceUniforms::for_view(&frame, &g, -400.0, 1200.0, 0.5, FLAG_SHOW_LABELS)
        .with_comparison(COMPARE_CHECKERBOARD, &g, 6.0, 300.0, true);
    let gpu = h.render_view(&mut renderer, 0, &u, &lut, w, hgt);
    assert_eq!(gpu, pictures[0]);
}
