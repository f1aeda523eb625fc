//! The tubular anatomy (capsules) and the assembled model: mediastinal vessels,
//! trachea and bronchi, pulmonary vessel trees, clavicles, lesions.

use super::anatomy::{classify_point, code, hu};
use super::lesion::{self, Lesion};
use super::math::{Rng, V3, mix};
use super::tree::{self, TreeParams};

/// What a capsule is, in painting order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// Cortical bone of radius `r` around marrow of radius `inner`.
    Bone,
    /// Soft tissue in the mediastinum (great vessels, oesophagus...) with a fat margin;
    /// never lung.
    Mediastinal,
    /// Pulmonary vessel (drawn in lung and mediastinal fat).
    Vessel,
    /// Airway: wall out to `r`, air lumen of radius `inner`.
    Airway,
    /// Air lumen drawn only inside consolidation.
    Bronchogram,
}

/// A line segment with a radius (reference mm).
#[derive(Debug, Clone, Copy)]
pub(super) struct Capsule {
    pub a: V3,
    pub b: V3,
    pub r: f32,
    pub inner: f32,
    pub hu: f32,
    pub kind: Kind,
    /// Trachea and main bronchi: not part of the lung label.
    pub central: bool,
}

impl Capsule {
    pub(super) fn tube(a: V3, b: V3, r: f32, kind: Kind) -> Self {
        let hu = match kind {
            Kind::Bone => hu::CORTEX,
            Kind::Mediastinal | Kind::Vessel => hu::VESSEL,
            Kind::Airway => hu::AIRWAY_WALL,
            Kind::Bronchogram => hu::AIR,
        };
        Capsule {
            a,
            b,
            r,
            inner: r,
            hu,
            kind,
            central: false,
        }
    }

    fn airway(a: V3, b: V3, lumen: f32, central: bool) -> Self {
        let wall = 0.22 * lumen + 0.4;
        Capsule {
            inner: lumen,
            central,
            ..Capsule::tube(a, b, lumen + wall, Kind::Airway)
        }
    }

    fn bone(a: V3, b: V3, r: f32) -> Self {
        Capsule {
            inner: r - 1.6,
            ..Capsule::tube(a, b, r, Kind::Bone)
        }
    }
}

/// Capsules along a polyline with the radius interpolated from `r0` to `r1`.
fn polyline(points: &[V3], r0: f32, r1: f32, hu: f32, out: &mut Vec<Capsule>) {
    let n = points.len().saturating_sub(1).max(1) as f32;
    for (i, w) in points.windows(2).enumerate() {
        let r = mix(r0, r1, (i as f32 + 0.5) / n);
        out.push(Capsule {
            hu,
            ..Capsule::tube(w[0], w[1], r, Kind::Mediastinal)
        });
    }
}

/// The whole synthetic patient.
pub(super) struct Anatomy {
    /// Sorted by kind (painting order).
    pub capsules: Vec<Capsule>,
    /// Ground-glass opacities first, then consolidations.
    pub lesions: Vec<Lesion>,
}

/// Where the trees of each lung start, [right, left].
const CARINA: V3 = [0.0, 18.0, 40.0];
const MAIN_BRONCHUS_END: [V3; 2] = [[-27.0, 24.0, 22.0], [38.0, 26.0, 16.0]];
const ARTERY_ROOT: [(V3, V3); 2] = [
    ([-38.0, 2.0, 28.0], [-0.8, 0.1, -0.2]),
    ([38.0, 6.0, 38.0], [0.8, 0.3, 0.0]),
];
const VEIN_ROOT: [(V3, V3); 2] = [
    ([-36.0, 15.0, -2.0], [-1.0, 0.0, 0.0]),
    ([38.0, 18.0, -5.0], [1.0, 0.0, 0.0]),
];

/// Points sampled uniformly in one lung (by the analytic anatomy).
fn sample_lung(rng: &mut Rng, side: u8, n: usize) -> Vec<V3> {
    let x = if side == code::LEFT {
        (0.0, 140.0)
    } else {
        (-140.0, 0.0)
    };
    let mut pts = Vec::with_capacity(n);
    let mut tries = 0;
    while pts.len() < n && tries < 400 * n {
        tries += 1;
        let p = [
            rng.range(x.0, x.1),
            rng.range(-75.0, 95.0),
            rng.range(-130.0, 135.0),
        ];
        if classify_point(p).1 == side {
            pts.push(p);
        }
    }
    pts
}

fn mediastinum(out: &mut Vec<Capsule>) {
    // Aorta: ascending, arch, descending (continuing into the abdomen).
    polyline(
        &[[-2.0, -22.0, -8.0], [-8.0, -30.0, 55.0]],
        15.0,
        15.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[
            [-8.0, -30.0, 55.0],
            [-5.0, -20.0, 70.0],
            [8.0, -4.0, 76.0],
            [22.0, 18.0, 70.0],
            [24.0, 34.0, 54.0],
        ],
        14.0,
        12.5,
        hu::BLOOD,
        out,
    );
    polyline(
        &[
            [24.0, 34.0, 54.0],
            [23.0, 40.0, 20.0],
            [18.0, 44.0, -40.0],
            [12.0, 46.0, -100.0],
            [6.0, 46.0, -170.0],
        ],
        12.0,
        11.0,
        hu::BLOOD,
        out,
    );
    // Arch branches.
    polyline(
        &[[-4.0, -20.0, 72.0], [-14.0, -14.0, 100.0]],
        7.0,
        7.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[
            [-14.0, -14.0, 100.0],
            [-24.0, -5.0, 132.0],
            [-60.0, 5.0, 148.0],
            [-140.0, 15.0, 150.0],
        ],
        5.5,
        5.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[[-14.0, -14.0, 100.0], [-22.0, -8.0, 170.0]],
        4.5,
        4.5,
        hu::BLOOD,
        out,
    );
    polyline(
        &[[4.0, -10.0, 76.0], [18.0, -4.0, 170.0]],
        4.5,
        4.5,
        hu::BLOOD,
        out,
    );
    polyline(
        &[
            [14.0, 4.0, 74.0],
            [20.0, 6.0, 118.0],
            [30.0, 8.0, 142.0],
            [70.0, 12.0, 150.0],
            [140.0, 18.0, 150.0],
        ],
        5.5,
        5.0,
        hu::BLOOD,
        out,
    );
    // Veins: brachiocephalic veins, superior vena cava, inferior vena cava, azygos.
    polyline(
        &[
            [80.0, -25.0, 142.0],
            [30.0, -28.0, 112.0],
            [10.0, -30.0, 95.0],
            [-26.0, -20.0, 90.0],
        ],
        6.5,
        7.5,
        hu::BLOOD,
        out,
    );
    polyline(
        &[
            [-80.0, -20.0, 142.0],
            [-35.0, -20.0, 112.0],
            [-28.0, -18.0, 100.0],
        ],
        7.5,
        8.5,
        hu::BLOOD,
        out,
    );
    polyline(
        &[
            [-28.0, -18.0, 100.0],
            [-27.0, -18.0, 60.0],
            [-26.0, -18.0, 15.0],
        ],
        10.0,
        10.5,
        hu::BLOOD,
        out,
    );
    polyline(
        &[
            [-20.0, 18.0, -170.0],
            [-18.0, 12.0, -60.0],
            [-14.0, -5.0, -40.0],
        ],
        12.0,
        12.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[
            [-8.0, 45.0, -60.0],
            [-10.0, 44.0, 30.0],
            [-20.0, 22.0, 46.0],
            [-26.0, -14.0, 48.0],
        ],
        4.0,
        4.5,
        hu::BLOOD,
        out,
    );
    // Pulmonary trunk and arteries to the hila.
    polyline(
        &[[12.0, -48.0, 0.0], [8.0, -28.0, 30.0]],
        13.0,
        13.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[[8.0, -28.0, 30.0], [24.0, -8.0, 40.0], ARTERY_ROOT[1].0],
        10.5,
        9.5,
        hu::BLOOD,
        out,
    );
    polyline(
        &[[8.0, -28.0, 30.0], [-10.0, -8.0, 30.0], ARTERY_ROOT[0].0],
        10.5,
        9.5,
        hu::BLOOD,
        out,
    );
    // Left atrium and pulmonary veins.
    polyline(
        &[[-12.0, 12.0, -4.0], [22.0, 12.0, -4.0]],
        16.0,
        16.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[[-12.0, 12.0, -4.0], VEIN_ROOT[0].0],
        7.0,
        7.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[[22.0, 12.0, -4.0], VEIN_ROOT[1].0],
        7.0,
        7.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[[-10.0, 8.0, 4.0], [-38.0, 0.0, 18.0]],
        6.0,
        6.0,
        hu::BLOOD,
        out,
    );
    polyline(
        &[[18.0, 8.0, 4.0], [40.0, 4.0, 22.0]],
        6.0,
        6.0,
        hu::BLOOD,
        out,
    );
    // Oesophagus (to the stomach) and thyroid lobes.
    polyline(
        &[
            [4.0, 30.0, 170.0],
            [4.0, 33.0, 60.0],
            [5.0, 33.0, 0.0],
            [20.0, 22.0, -70.0],
            [42.0, -6.0, -92.0],
        ],
        7.0,
        7.5,
        hu::GUT_WALL,
        out,
    );
    for s in [-1.0f32, 1.0] {
        polyline(
            &[[s * 20.0, -2.0, 124.0], [s * 20.0, -2.0, 170.0]],
            9.0,
            9.0,
            hu::THYROID,
            out,
        );
    }
}

fn clavicles(out: &mut Vec<Capsule>) {
    for s in [-1.0f32, 1.0] {
        let pts: [V3; 4] = [
            [s * 22.0, -92.0, 118.0],
            [s * 70.0, -90.0, 126.0],
            [s * 120.0, -64.0, 134.0],
            [s * 146.0, -42.0, 132.0],
        ];
        for w in pts.windows(2) {
            out.push(Capsule::bone(w[0], w[1], 6.5));
        }
    }
}

fn airways(rng: &mut Rng, out: &mut Vec<Capsule>) {
    out.push(Capsule::airway([0.0, 8.0, 175.0], CARINA, 8.5, true));
    for (side, end) in MAIN_BRONCHUS_END.iter().enumerate() {
        let lumen = if side == 0 { 6.5 } else { 5.8 };
        out.push(Capsule::airway(CARINA, *end, lumen, true));
        let lung = if side == 0 { code::RIGHT } else { code::LEFT };
        let mut pts = sample_lung(rng, lung, 72);
        let dir = super::math::sub(*end, CARINA);
        let branches = tree::grow(
            &mut pts,
            &TreeParams {
                root: *end,
                root_dir: dir,
                root_radius: lumen * 0.8,
                min_radius: 0.0,
                fraction: 0.4,
                max_angle: 1.0,
                min_length: 3.0,
                terminal_to_point: false,
            },
        );
        for b in branches {
            let airway = Capsule::airway(b.a, b.b, b.radius, false);
            // The companion pulmonary artery runs alongside each bronchus.
            let r_artery = 0.85 * b.radius;
            let off = companion_offset(b.a, b.b, airway.r + r_artery + 0.4);
            out.push(Capsule::tube(
                super::math::add(b.a, off),
                super::math::add(b.b, off),
                r_artery,
                Kind::Vessel,
            ));
            out.push(airway);
        }
    }
}

/// Where a bronchus's companion artery lies: perpendicular to the bronchus, on the
/// side of a fixed reference direction (so that it stays on the same side from a
/// branch to the next).
fn companion_offset(a: V3, b: V3, distance: f32) -> V3 {
    use super::math::{dot, normalize, scale, sub};
    let d = normalize(sub(b, a));
    let reference = normalize([0.35, -0.55, 0.75]);
    let mut perp = sub(reference, scale(d, dot(reference, d)));
    if dot(perp, perp) < 1e-4 {
        perp = super::math::any_perpendicular(d);
    }
    scale(normalize(perp), distance)
}

const VESSEL_POINTS: usize = 3000;

fn vessel_trees(rng: &mut Rng, out: &mut Vec<Capsule>) {
    for side in 0..2 {
        let lung = if side == 0 { code::RIGHT } else { code::LEFT };
        for (roots, r0) in [(&ARTERY_ROOT, 5.0), (&VEIN_ROOT, 4.6)] {
            let (root, dir) = roots[side];
            let mut pts = sample_lung(rng, lung, VESSEL_POINTS);
            let branches = tree::grow(
                &mut pts,
                &TreeParams {
                    root,
                    root_dir: dir,
                    root_radius: r0,
                    min_radius: 0.3,
                    fraction: 0.4,
                    max_angle: 1.05,
                    min_length: 1.5,
                    terminal_to_point: true,
                },
            );
            out.extend(
                branches
                    .iter()
                    .map(|b| Capsule::tube(b.a, b.b, b.radius, Kind::Vessel)),
            );
        }
    }
}

impl Anatomy {
    pub(super) fn build(seed: u64) -> Self {
        let mut capsules = Vec::new();
        clavicles(&mut capsules);
        mediastinum(&mut capsules);
        let mut rng = Rng::new(seed, 0xA1);
        airways(&mut rng, &mut capsules);
        let mut rng = Rng::new(seed, 0x7EE);
        vessel_trees(&mut rng, &mut capsules);
        let (lesions, bronchograms) = lesion::place(seed);
        capsules.extend(bronchograms);
        capsules.sort_by_key(|c| c.kind);
        Anatomy { capsules, lesions }
    }
}
