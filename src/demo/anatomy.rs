//! The analytic anatomy of the demo chest, in reference millimetres (LPS: +x patient
//! left, +y posterior, +z superior; origin at the centre of the field of view).
//!
//! Large structures are closed-form shapes evaluated per voxel through a per-slice
//! [`SliceCtx`] and a per-row [`RowCtx`] (so most tests are interval checks):
//! body outline with skin, subcutaneous fat and muscle; the thoracic cavity; lungs
//! (cavity minus mediastinum, heart and spine, under apical domes, above a domed
//! diaphragm); heart; vertebrae with discs, canal and posterior elements; ribs with
//! costal cartilages; sternum; scapulae; upper abdominal organs. Tubular structures
//! (vessels, airways, clavicles) are [`Capsule`]s rasterised by `raster`.

use super::math::{V3, bump, cross, mix, normalize, smoothstep};

/// Region codes written per voxel while a slice is built. Codes 0..=4 are the truth
/// labels themselves; codes >= 10 are non-lung tissues (label 0).
pub(super) mod code {
    pub const AIR: u8 = 0;
    pub const LEFT: u8 = 1;
    pub const RIGHT: u8 = 2;
    pub const GGO: u8 = 3;
    pub const CONSOLIDATION: u8 = 4;
    /// Skin, subcutaneous fat, chest-wall muscle.
    pub const WALL: u8 = 10;
    pub const BONE: u8 = 11;
    /// Mediastinal / pericardial fat (vessels and airways may run through it).
    pub const MEDFAT: u8 = 12;
    pub const HEART: u8 = 13;
    pub const ABDOMEN: u8 = 14;
    /// Soft tissue of the thoracic inlet above the lung apices.
    pub const NECK: u8 = 15;
    /// Paravertebral soft tissue and spinal canal.
    pub const SPINE_SOFT: u8 = 16;

    #[inline]
    pub fn is_lung(c: u8) -> bool {
        (LEFT..=CONSOLIDATION).contains(&c)
    }
}

/// Hounsfield units of the tissues (non-contrast CT).
pub(super) mod hu {
    pub const AIR: f32 = -1000.0;
    pub const SKIN: f32 = 25.0;
    pub const FAT: f32 = -95.0;
    pub const MED_FAT: f32 = -88.0;
    pub const MUSCLE: f32 = 50.0;
    pub const BLOOD: f32 = 40.0;
    pub const MYOCARDIUM: f32 = 46.0;
    pub const CORTEX: f32 = 900.0;
    pub const MARROW: f32 = 250.0;
    pub const CANCELLOUS: f32 = 220.0;
    pub const PROCESS: f32 = 620.0;
    pub const DISC: f32 = 85.0;
    pub const CSF: f32 = 12.0;
    pub const CARTILAGE: f32 = 130.0;
    pub const SOFT: f32 = 38.0;
    pub const VESSEL: f32 = 38.0;
    pub const AIRWAY_WALL: f32 = 30.0;
    pub const LIVER: f32 = 58.0;
    pub const SPLEEN: f32 = 47.0;
    pub const KIDNEY: f32 = 32.0;
    pub const GUT_WALL: f32 = 42.0;
    pub const FLUID: f32 = 12.0;
    pub const ABDOMINAL_FAT: f32 = -88.0;
    pub const DIAPHRAGM: f32 = 44.0;
    pub const THYROID: f32 = 95.0;
    /// Visceral pleura of a fissure.
    pub const FISSURE: f32 = -100.0;
}

// ---------------------------------------------------------------------------------
// Large shapes as functions of z.

const BODY_Y0: f32 = 8.0;
const CAV_Y0: f32 = 10.0;
const BODY_BOXY: f32 = 0.5;

fn body_axes(z: f32) -> (f32, f32, f32) {
    let shoulders = smoothstep(70.0, 145.0, z);
    (161.0 + 7.0 * shoulders, 112.0, 125.0 + 4.0 * shoulders)
}

/// Subcutaneous fat thickness laterally, anteriorly and posteriorly.
const FAT_T: (f32, f32, f32) = (17.0, 12.0, 13.0);
const SKIN_T: f32 = 1.6;

pub(super) fn cavity_axes(z: f32) -> (f32, f32, f32) {
    // The thorax narrows towards the inlet, more so in front (the apices are posterior).
    let p = ((z + 10.0) / 150.0).clamp(0.0, 1.0).powf(2.2);
    let low = smoothstep(-40.0, -150.0, z);
    (
        138.0 - 58.0 * p + 2.0 * low,
        80.0 - 48.0 * p,
        80.0 - 22.0 * p,
    )
}

/// Apical domes: lungs above `DOME_Z0` lie within a shrinking circle per side.
const DOME_Z0: f32 = 40.0;
pub(super) const APEX_Z: f32 = 129.0;
const DOME_C: [(f32, f32); 2] = [(-58.0, 25.0), (58.0, 25.0)]; // [right, left]

fn dome_radius(z: f32) -> f32 {
    let t = (z - DOME_Z0) / (APEX_Z - DOME_Z0);
    78.0 * (1.0 - t * t).max(0.0).sqrt()
}

/// Height of the diaphragm (top of the abdomen) under (x, y): two domes, the right
/// one higher, with deep posterior and lateral recesses.
#[inline]
pub(super) fn diaphragm_z(x: f32, y: f32) -> f32 {
    let r = -42.0 - ((x + 62.0) * (x + 62.0) + y * y) * (1.0 / 150.0);
    let l = -55.0 - ((x - 66.0) * (x - 66.0) + (y - 5.0) * (y - 5.0)) * (1.0 / 150.0);
    r.max(l).max(-128.0)
}
const DIAPHRAGM_TOP: f32 = -42.0;

/// The heart: an ellipsoid with its long axis pointing left, anterior and inferior.
struct HeartShape {
    c: V3,
    /// Quadric matrix Q (q(p) = (p-c)ᵀ Q (p-c) < 1 inside).
    q: [[f32; 3]; 3],
}

fn heart_shape() -> HeartShape {
    let c = [20.0, -22.0, -24.0];
    let e1 = normalize([0.7, -0.55, -0.45]);
    let e2 = normalize(cross(e1, [0.0, 0.0, 1.0]));
    let e3 = cross(e1, e2);
    let axes = [(e1, 66.0f32), (e2, 45.0), (e3, 40.0)];
    let mut q = [[0.0f32; 3]; 3];
    for (e, a) in axes {
        for r in 0..3 {
            for s in 0..3 {
                q[r][s] += e[r] * e[s] / (a * a);
            }
        }
    }
    HeartShape { c, q }
}
/// q below which the heart is blood rather than myocardium (cosmetic), and the q of the
/// pericardial fat margin (about 4 mm).
const HEART_BLOOD_Q: f32 = 0.5;
const HEART_FAT_Q: f32 = 1.2;

/// The ribs: posterior height, anterior drop, angle where the bone ends, cartilage.
#[derive(Clone, Copy)]
struct Rib {
    z_post: f32,
    drop: f32,
    bone_end: f32,
    /// Height where the bone ends.
    end_z: f32,
    /// (angle where the cartilage ends, its height there)
    cartilage: Option<(f32, f32)>,
}

const RIB_START: f32 = 0.22;
const RIB_GAP: f32 = 0.8;
const RIB_T: f32 = 6.5;
const RIB_H: f32 = 10.5;
const CART_T: f32 = 6.0;
const CART_H: f32 = 9.0;
const RIB_COUNT: usize = 12;

fn rib(n: usize) -> Rib {
    const DROP: [f32; RIB_COUNT] = [
        40.0, 55.0, 68.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 66.0, 50.0, 36.0,
    ];
    const END: [f32; RIB_COUNT] = [
        2.7, 2.5, 2.45, 2.45, 2.45, 2.45, 2.45, 2.35, 2.3, 2.25, 1.9, 1.5,
    ];
    let z_post = 132.0 - 24.0 * n as f32;
    let drop = DROP[n];
    let bone_end = END[n];
    let end_z = z_post - drop;
    let cartilage = if n < 7 {
        Some((std::f32::consts::PI - 0.16, 92.0 - 19.0 * n as f32))
    } else if n < 10 {
        Some((2.75, end_z + 22.0))
    } else {
        None
    };
    Rib {
        z_post,
        drop,
        bone_end,
        end_z,
        cartilage,
    }
}

/// Height of rib `r` at angle `theta` (0 posterior, pi anterior), and whether it is
/// cartilage there. The bony rib descends steadily from the spine to its anterior end
/// (`drop` lower); the costal cartilage then runs to the sternum.
#[inline]
fn rib_height(r: &Rib, theta: f32) -> Option<(f32, bool)> {
    if theta < RIB_START {
        return None;
    }
    if theta <= r.bone_end {
        let f = (theta - RIB_START) / (r.bone_end - RIB_START);
        return Some((r.z_post - r.drop * f * (0.7 + 0.3 * f), false));
    }
    let (end, z_end) = r.cartilage?;
    if theta > end {
        return None;
    }
    let t = (theta - r.bone_end) / (end - r.bone_end);
    Some((mix(r.end_z, z_end, t), true))
}

/// An ellipsoidal organ of the upper abdomen.
struct Organ {
    c: V3,
    semi: V3,
    hu: f32,
}

const STOMACH: Organ = Organ {
    c: [58.0, -22.0, -98.0],
    semi: [42.0, 34.0, 44.0],
    hu: hu::FLUID,
};
const SPLEEN: Organ = Organ {
    c: [88.0, 50.0, -96.0],
    semi: [24.0, 38.0, 46.0],
    hu: hu::SPLEEN,
};
const KIDNEY_R: Organ = Organ {
    c: [-68.0, 64.0, -166.0],
    semi: [28.0, 24.0, 52.0],
    hu: hu::KIDNEY,
};
const KIDNEY_L: Organ = Organ {
    c: [68.0, 64.0, -158.0],
    semi: [28.0, 24.0, 52.0],
    hu: hu::KIDNEY,
};

/// An organ's cross-section in one slice: centre and semi-axes.
#[derive(Clone, Copy, Default)]
struct Oval {
    cx: f32,
    cy: f32,
    ax: f32,
    ay: f32,
}

fn organ_slice(o: &Organ, z: f32) -> Option<Oval> {
    let t = (z - o.c[2]) / o.semi[2];
    let s = 1.0 - t * t;
    (s > 0.0).then(|| {
        let s = s.sqrt();
        Oval {
            cx: o.c[0],
            cy: o.c[1],
            ax: o.semi[0] * s,
            ay: o.semi[1] * s,
        }
    })
}

#[inline]
fn in_oval(o: &Option<Oval>, x: f32, y: f32) -> Option<f32> {
    let o = o.as_ref()?;
    let u = (x - o.cx) / o.ax;
    let v = (y - o.cy) / o.ay;
    let e = u * u + v * v;
    (e < 1.0).then_some(e)
}

// ---------------------------------------------------------------------------------
// Per-slice and per-row contexts.

#[derive(Clone, Copy)]
struct HeartSlice {
    cx: f32,
    cy: f32,
    qxx: f32,
    qxy2: f32,
    qyy: f32,
    lin_x: f32,
    lin_y: f32,
    c0: f32,
}

#[derive(Clone, Copy)]
struct Sternum {
    half_w: f32,
    y_mid: f32,
    half_th: f32,
}

/// Everything about one axial plane (z) that does not depend on x or y.
pub(super) struct SliceCtx {
    pub z: f32,
    body: (f32, f32, f32),
    skin: (f32, f32, f32),
    fat: (f32, f32, f32),
    cav: (f32, f32, f32),
    dome_r: Option<f32>,
    diaphragm: bool,
    heart: Option<HeartSlice>,
    /// Mediastinum: centre x, centre y, half-width, half-depth (superellipse, power 4).
    med: (f32, f32, f32, f32),
    // Spine.
    yv: f32,
    vbx: f32,
    vby: f32,
    canal_y: f32,
    canal_r: f32,
    disc: bool,
    arch: bool,
    spinous: bool,
    transverse: bool,
    sternum: Option<Sternum>,
    scapula: Option<(f32, f32)>,
    ribs: [Rib; RIB_COUNT],
    rib_count: usize,
    stomach: Option<Oval>,
    spleen: Option<Oval>,
    kidneys: [Option<Oval>; 2],
}

/// Half-width (x) of an oval centred on x = 0 at height y, or a negative number when
/// the row misses it. `boxy` squares off the posterior half.
#[inline]
fn oval_half(y: f32, y0: f32, (ax, ya, yp): (f32, f32, f32), boxy: f32) -> f32 {
    let v = if y < y0 { (y - y0) / ya } else { (y - y0) / yp };
    let v2 = v * v;
    if v2 >= 1.0 {
        return -1.0;
    }
    if y > y0 && boxy > 0.0 {
        ax * ((1.0 - v2) / (1.0 - boxy * v2)).sqrt()
    } else {
        ax * (1.0 - v2).sqrt()
    }
}

impl SliceCtx {
    pub(super) fn new(z: f32) -> Self {
        let body = body_axes(z);
        let skin = (body.0 - SKIN_T, body.1 - SKIN_T, body.2 - SKIN_T);
        let fat = (body.0 - FAT_T.0, body.1 - FAT_T.1, body.2 - FAT_T.2);
        let cav = cavity_axes(z);

        let dome_r = (z > DOME_Z0).then(|| dome_radius(z));
        let diaphragm = z < DIAPHRAGM_TOP;

        let h = heart_shape();
        let dz = z - h.c[2];
        let q = h.q;
        let heart = Some(HeartSlice {
            cx: h.c[0],
            cy: h.c[1],
            qxx: q[0][0],
            qxy2: 2.0 * q[0][1],
            qyy: q[1][1],
            lin_x: 2.0 * q[0][2] * dz,
            lin_y: 2.0 * q[1][2] * dz,
            c0: q[2][2] * dz * dz,
        })
        .filter(|_| dz.abs() < 70.0);

        let med = (
            3.0 + 5.0 * bump(z, 68.0, 22.0),
            -17.0,
            19.0 + 13.0 * bump(z, 64.0, 20.0) + 9.0 * bump(z, 30.0, 18.0),
            58.0,
        );

        let t = (150.0 - z) / 300.0;
        let yv = 50.0 + 8.0 * (1.0 - (z / 150.0) * (z / 150.0));
        let vbx = 17.0 + 5.0 * t;
        let vby = 13.0 + 4.0 * t;
        let canal_r = 8.0;
        let canal_y = yv + vby + canal_r + 0.5;
        let phase = ((140.0 - z) / 24.0).rem_euclid(1.0);

        let sternum = (-62.0..100.0).contains(&z).then(|| {
            let (half_w, th) = if z > 68.0 {
                (26.0 + 4.0 * smoothstep(68.0, 100.0, z), 12.0)
            } else if z > -45.0 {
                (14.0, 10.0)
            } else {
                (8.0, 7.0)
            };
            let y_back = CAV_Y0 - cav.1 - 1.5;
            Sternum {
                half_w,
                y_mid: y_back - th * 0.5,
                half_th: th * 0.5,
            }
        });

        let scapula = (-5.0..122.0).contains(&z).then(|| {
            let f = (z + 5.0) / 127.0;
            let lo = 0.42 + 0.15 * (1.0 - f);
            (lo, lo + 0.9 * f.sqrt())
        });

        let mut ribs = [rib(0); RIB_COUNT];
        let mut rib_count = 0;
        for n in 0..RIB_COUNT {
            let r = rib(n);
            let lowest = r.end_z.min(r.cartilage.map_or(r.end_z, |c| c.1));
            if z < r.z_post + RIB_H && z > lowest - RIB_H {
                ribs[rib_count] = r;
                rib_count += 1;
            }
        }

        SliceCtx {
            z,
            body,
            skin,
            fat,
            cav,
            dome_r,
            diaphragm,
            heart,
            med,
            yv,
            vbx,
            vby,
            canal_y,
            canal_r,
            disc: !(0.1..0.9).contains(&phase),
            arch: (0.15..0.7).contains(&phase),
            spinous: (0.3..0.95).contains(&phase),
            transverse: (0.15..0.5).contains(&phase),
            sternum,
            scapula,
            ribs,
            rib_count,
            stomach: organ_slice(&STOMACH, z),
            spleen: organ_slice(&SPLEEN, z),
            kidneys: [organ_slice(&KIDNEY_R, z), organ_slice(&KIDNEY_L, z)],
        }
    }
}

/// Everything about one row (z, y) that does not depend on x.
pub(super) struct RowCtx {
    pub y: f32,
    /// Half-widths of the body, of the skin's inner edge and of the fat's inner edge.
    pub body_half: f32,
    skin_half: f32,
    fat_half: f32,
    cav_half: f32,
    /// Cavity: normalised y and 1 / (semi-axis in y)².
    cav_v: f32,
    cav_inv_b2: f32,
    /// Apical dome intervals [right, left] (empty when the row misses).
    dome: [(f32, f32); 2],
    med: (f32, f32),
    heart: Option<(f32, f32, f32, f32)>, // x0, x1, linear coefficient, constant
    /// Half-widths of the vertebral-body zone and of the posterior-elements zone.
    spine_half: f32,
    arch_half: f32,
    sternum: bool,
    lung_hu: f32,
}

impl RowCtx {
    pub(super) fn new(s: &SliceCtx, y: f32) -> Self {
        let body_half = oval_half(y, BODY_Y0, s.body, BODY_BOXY);
        let skin_half = oval_half(y, BODY_Y0, s.skin, BODY_BOXY);
        let fat_half = oval_half(y, BODY_Y0, s.fat, BODY_BOXY);
        let cav_half = oval_half(y, CAV_Y0, s.cav, 0.0);
        let b = if y < CAV_Y0 { s.cav.1 } else { s.cav.2 };
        let cav_v = (y - CAV_Y0) / b;

        let mut dome = [(0.0, 0.0); 2];
        if let Some(r) = s.dome_r {
            for (side, &(cx, cy)) in DOME_C.iter().enumerate() {
                let d2 = r * r - (y - cy) * (y - cy);
                if d2 > 0.0 {
                    let h = d2.sqrt();
                    dome[side] = (cx - h, cx + h);
                }
            }
        }

        let (xm, ym, wx, wy) = s.med;
        let t = (y - ym) / wy;
        let t4 = t * t * t * t;
        let med = if t4 < 1.0 {
            let h = wx * (1.0 - t4).sqrt().sqrt();
            (xm - h, xm + h)
        } else {
            (0.0, 0.0)
        };

        let heart = s.heart.and_then(|h| {
            let dy = y - h.cy;
            let lin = h.qxy2 * dy + h.lin_x;
            let c = h.qyy * dy * dy + h.lin_y * dy + h.c0;
            let disc = lin * lin - 4.0 * h.qxx * (c - HEART_FAT_Q);
            (disc > 0.0).then(|| {
                let r = disc.sqrt();
                let x0 = h.cx + (-lin - r) / (2.0 * h.qxx);
                let x1 = h.cx + (-lin + r) / (2.0 * h.qxx);
                (x0, x1, lin, c)
            })
        });

        let dy = y - s.yv;
        let zx = s.vbx + 7.0;
        let zy = s.vby + 7.0;
        let e = 1.0 - (dy / zy) * (dy / zy);
        let spine_half = if e > 0.0 { zx * e.sqrt() } else { -1.0 };
        let da = (y - s.canal_y - 4.0) / 27.0;
        let ea = 1.0 - da * da;
        let arch_half = if ea > 0.0 { 31.0 * ea.sqrt() } else { -1.0 };

        let sternum = s
            .sternum
            .is_some_and(|st| (y - st.y_mid).abs() < st.half_th);

        RowCtx {
            y,
            body_half,
            skin_half,
            fat_half,
            cav_half,
            cav_v,
            cav_inv_b2: 1.0 / (b * b),
            dome,
            med,
            heart,
            spine_half,
            arch_half,
            sternum,
            lung_hu: lung_hu(y),
        }
    }
}

/// Healthy parenchyma, denser in the dependent (posterior) lung of a supine patient.
#[inline]
fn lung_hu(y: f32) -> f32 {
    -925.0 + 45.0 * ((y + 70.0) / 160.0).clamp(0.0, 1.0)
}

/// Tissue (HU, region code) at x in the given row. The hot path of the generator.
#[inline]
pub(super) fn classify(s: &SliceCtx, r: &RowCtx, x: f32) -> (f32, u8) {
    let ax = x.abs();
    if ax >= r.body_half {
        return (hu::AIR, code::AIR);
    }
    if ax >= r.skin_half {
        return (hu::SKIN, code::WALL);
    }
    if ax >= r.fat_half {
        return (hu::FAT, code::WALL);
    }
    if ax < r.spine_half || ax < r.arch_half {
        return spine(s, r, x, ax);
    }
    if ax < r.cav_half {
        return cavity(s, r, x);
    }
    wall(s, r, x, ax)
}

#[inline]
fn spine(s: &SliceCtx, r: &RowCtx, x: f32, ax: f32) -> (f32, u8) {
    let y = r.y;
    let dy = y - s.yv;
    let e = (x / s.vbx) * (x / s.vbx) + (dy / s.vby) * (dy / s.vby);
    if e < 1.0 {
        if s.disc {
            return (hu::DISC, code::BONE);
        }
        let rim = 1.0 - 1.3 / s.vby;
        return (
            if e > rim * rim {
                hu::CORTEX
            } else {
                hu::CANCELLOUS
            },
            code::BONE,
        );
    }
    let cy = y - s.canal_y;
    let rr = x * x + cy * cy;
    if rr < s.canal_r * s.canal_r {
        return (hu::CSF, code::SPINE_SOFT);
    }
    let ring = s.canal_r + 4.5;
    if s.arch && rr < ring * ring && y > s.yv + s.vby - 3.0 {
        return (hu::PROCESS, code::BONE);
    }
    if s.spinous && ax < 3.5 && y > s.canal_y && y < s.canal_y + 30.0 {
        return (hu::PROCESS, code::BONE);
    }
    if s.transverse && (cy + 4.0 - 0.4 * (ax - 8.0)).abs() < 4.0 && ax > 8.0 && ax < 30.0 {
        return (hu::PROCESS, code::BONE);
    }
    if ax < r.cav_half {
        (hu::SOFT, code::SPINE_SOFT)
    } else {
        (hu::MUSCLE, code::WALL)
    }
}

#[inline]
fn cavity(s: &SliceCtx, r: &RowCtx, x: f32) -> (f32, u8) {
    if s.diaphragm {
        let zd = diaphragm_z(x, r.y);
        if s.z < zd {
            return abdomen(s, r, x, zd);
        }
    }
    if let (Some((x0, x1, lin, c)), Some(h)) = (r.heart, s.heart)
        && x > x0
        && x < x1
    {
        let dx = x - h.cx;
        let q = h.qxx * dx * dx + lin * dx + c;
        if q < 1.0 {
            let v = if q < HEART_BLOOD_Q {
                hu::BLOOD
            } else {
                hu::MYOCARDIUM
            };
            return (v, code::HEART);
        }
        return (hu::MED_FAT, code::MEDFAT);
    }
    if x > r.med.0 && x < r.med.1 {
        return (hu::MED_FAT, code::MEDFAT);
    }
    let left = x > s.med.0;
    if s.dome_r.is_some() {
        let (a, b) = r.dome[left as usize];
        if !(x > a && x < b) {
            return (hu::SOFT, code::NECK);
        }
    }
    (r.lung_hu, if left { code::LEFT } else { code::RIGHT })
}

#[inline]
fn abdomen(s: &SliceCtx, r: &RowCtx, x: f32, zd: f32) -> (f32, u8) {
    let y = r.y;
    if s.z > zd - 4.0 {
        return (hu::DIAPHRAGM, code::ABDOMEN);
    }
    if let Some(e) = in_oval(&s.stomach, x, y) {
        let o = s.stomach.unwrap_or_default();
        let wall = 1.0 - 3.0 / o.ax.min(o.ay).max(3.5);
        let v = if e > wall * wall {
            hu::GUT_WALL
        } else if y < o.cy - 12.0 {
            hu::AIR
        } else {
            STOMACH.hu
        };
        return (v, code::ABDOMEN);
    }
    if in_oval(&s.spleen, x, y).is_some() {
        return (SPLEEN.hu, code::ABDOMEN);
    }
    for k in &s.kidneys {
        if in_oval(k, x, y).is_some() {
            return (KIDNEY_L.hu, code::ABDOMEN);
        }
    }
    if x < 12.0 - 0.45 * (y + 20.0) {
        return (hu::LIVER, code::ABDOMEN);
    }
    (hu::ABDOMINAL_FAT, code::ABDOMEN)
}

#[inline]
fn wall(s: &SliceCtx, r: &RowCtx, x: f32, ax: f32) -> (f32, u8) {
    if r.sternum
        && let Some(st) = s.sternum
    {
        let u = x / st.half_w;
        let v = (r.y - st.y_mid) / st.half_th;
        let e = u * u * u * u + v * v;
        if e < 1.0 {
            let depth = (1.0 - e.sqrt()) * st.half_th;
            return (
                if depth < 1.2 { hu::CORTEX } else { hu::MARROW },
                code::BONE,
            );
        }
    }
    // Distance outside the cavity (first-order, exact for a circle) and the angle
    // around it (0 posterior, pi anterior).
    let a = s.cav.0;
    let u = ax / a;
    let v = r.cav_v;
    let f = u * u + v * v;
    let sq = f.sqrt();
    let g = (u * u / (a * a) + v * v * r.cav_inv_b2).sqrt() / sq;
    let d_out = (sq - 1.0) / g;
    if d_out < 20.0 {
        let theta = super::math::atan2_upper(u, v);
        for rb in &s.ribs[..s.rib_count] {
            if let Some((zr, cartilage)) = rib_height(rb, theta) {
                let (t, h) = if cartilage {
                    (CART_T, CART_H)
                } else {
                    (RIB_T, RIB_H)
                };
                let dr = (d_out - (RIB_GAP + 0.5 * t)) / (0.5 * t);
                let dz = (s.z - zr) / (0.5 * h);
                let e2 = dr * dr + dz * dz;
                if e2 < 1.0 {
                    if cartilage {
                        return (hu::CARTILAGE, code::BONE);
                    }
                    let depth = (1.0 - e2.sqrt()) * 0.5 * t;
                    return (
                        if depth < 1.1 { hu::CORTEX } else { hu::MARROW },
                        code::BONE,
                    );
                }
            }
        }
        if let Some((lo, hi)) = s.scapula
            && theta > lo
            && theta < hi
            && d_out > 14.0
            && d_out < 18.5
        {
            return (hu::PROCESS, code::BONE);
        }
    }
    (hu::MUSCLE, code::WALL)
}

/// Tissue at a 3-D point (slow: builds the slice and row contexts).
pub(super) fn classify_point(p: V3) -> (f32, u8) {
    let s = SliceCtx::new(p[2]);
    let r = RowCtx::new(&s, p[1]);
    classify(&s, &r, p[0])
}

/// Depth of a point below the costal pleura (distance inside the cavity outline),
/// first-order; negative outside.
pub(super) fn pleural_depth(p: V3) -> f32 {
    let (a, ya, yp) = cavity_axes(p[2]);
    let b = if p[1] < CAV_Y0 { ya } else { yp };
    let u = p[0] / a;
    let v = (p[1] - CAV_Y0) / b;
    let sq = (u * u + v * v).sqrt().max(1e-6);
    let g = (u * u / (a * a) + v * v / (b * b)).sqrt() / sq;
    (1.0 - sq) / g.max(1e-9)
}

/// Outward unit normal of the costal pleura nearest to a point (in the axial plane).
pub(super) fn pleural_normal(p: V3) -> V3 {
    let (a, ya, yp) = cavity_axes(p[2]);
    let b = if p[1] < CAV_Y0 { ya } else { yp };
    normalize([p[0] / (a * a), (p[1] - CAV_Y0) / (b * b), 0.0])
}

/// Coverage (0..1) of the interlobar fissures at a lung point, for voxels `pv` mm wide
/// in-plane and `pvz` mm thick: the oblique fissure of each lung (from the posterior
/// upper chest down to the anterior diaphragm) and the horizontal fissure of the right
/// lung (above the middle lobe). Fissures are thin sheets, so they show as fine lines
/// where cut across and as a faint haze where cut along (the horizontal fissure on
/// axial slices), and fade on thick slices.
#[inline]
pub(super) fn fissure_coverage(x: f32, y: f32, z: f32, pv: f32, pvz: f32) -> f32 {
    const THICKNESS: f32 = 0.35;
    // Oblique fissure z = z0 + SLOPE y + LATERAL |x|: it faces anterolaterally, so in an
    // axial slice it runs from the lateral chest wall backwards to the hilum.
    const SLOPE: f32 = 0.85;
    const LATERAL: f32 = 0.4;
    // Horizontal fissure z = 12 + TILT (y + 20), anterior to the oblique one.
    const TILT: f32 = 0.05;
    let sheet = |offset: f32, gx: f32, gy: f32| {
        // `offset` is the level-set value of a plane with gradient (gx, gy, 1).
        let g = (gx * gx + gy * gy + 1.0).sqrt();
        let d = (offset / g).abs();
        // Voxel extent along the sheet's normal.
        let extent = ((gx * gx + gy * gy) * pv * pv + pvz * pvz).sqrt() / g;
        if d >= extent {
            0.0
        } else {
            (1.0 - d / extent) * (THICKNESS / extent).min(1.0)
        }
    };
    let above = z - (-5.0 + SLOPE * (y - 10.0) + LATERAL * (x.abs() - 80.0));
    let mut c = sheet(above, LATERAL, SLOPE);
    if x < 0.0 && above > 0.0 {
        c = c.max(sheet(z - 12.0 - TILT * (y + 20.0), 0.0, TILT));
    }
    c
}
