//! Lesions: ground-glass opacities (hazy, soft-edged, vessels still visible through
//! them) and consolidations (dense, sharper, with air bronchograms), placed
//! peripherally in the lungs at positions drawn from the seed.

use super::anatomy::{classify_point, code, pleural_depth, pleural_normal};
use super::math::{Rng, V3, add, any_perpendicular, cross, dot, norm, normalize, scale, sub, tilt};
use super::model::{Capsule, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LesionKind {
    GroundGlass,
    Consolidation,
}

/// An irregular blob: a union of spheres with a wavy boundary.
#[derive(Debug, Clone)]
pub(super) struct Lesion {
    pub kind: LesionKind,
    pub center: V3,
    pub radius: f32,
    /// Lung code of the side it lies in.
    pub side: u8,
    lobes: Vec<(V3, f32)>,
    waves: [(V3, f32); 3],
    amp: f32,
    texture: (V3, f32),
    /// Edge width (mm) of the blend; at least one voxel when rasterised.
    soft: f32,
    /// HU the lesion blends towards.
    pub target_hu: f32,
    pub lo: V3,
    pub hi: V3,
}

impl Lesion {
    #[inline]
    fn sdf(&self, p: V3) -> f32 {
        let mut d = f32::MAX;
        for &(c, r) in &self.lobes {
            d = d.min(norm(sub(p, c)) - r);
        }
        let mut w = 0.0;
        for &(k, phase) in &self.waves {
            w += (dot(k, p) + phase).sin();
        }
        d + self.amp * w * (1.0 / 3.0)
    }

    /// Blend weight in [0, 1] at `p`; `pv` is the voxel size (mm).
    #[inline]
    pub fn weight(&self, p: V3, pv: f32) -> f32 {
        let d = self.sdf(p);
        let soft = self.soft.max(pv);
        let w = (0.5 - d / soft).clamp(0.0, 1.0);
        match self.kind {
            LesionKind::GroundGlass if w > 0.0 => {
                w * (0.82 + 0.18 * (dot(self.texture.0, p) + self.texture.1).sin())
            }
            _ => w,
        }
    }

    fn new(kind: LesionKind, center: V3, radius: f32, side: u8, rng: &mut Rng) -> Self {
        // Lobes spread along the pleura, so that the lesion is flattened against it
        // (subpleural, lentiform) rather than round.
        let normal = pleural_normal(center);
        let mut lobes = vec![(center, radius * 0.8)];
        for _ in 0..4 {
            let d = rng.direction();
            let d = normalize(sub(d, scale(normal, 0.8 * dot(d, normal))));
            let off = scale(d, radius * rng.range(0.35, 0.7));
            lobes.push((add(center, off), radius * rng.range(0.45, 0.65)));
        }
        let mut waves = [([0.0; 3], 0.0); 3];
        for w in &mut waves {
            let k = std::f32::consts::TAU / (radius * rng.range(0.6, 1.2));
            *w = (
                scale(rng.direction(), k),
                rng.range(0.0, std::f32::consts::TAU),
            );
        }
        let (amp, soft, target_hu) = match kind {
            LesionKind::GroundGlass => (0.15 * radius, 6.0, rng.range(-480.0, -400.0)),
            LesionKind::Consolidation => (0.1 * radius, 1.5, rng.range(20.0, 40.0)),
        };
        let texture = (
            scale(
                rng.direction(),
                std::f32::consts::TAU / rng.range(6.0, 10.0),
            ),
            rng.range(0.0, std::f32::consts::TAU),
        );
        let reach = radius * 1.35 + amp + soft;
        Lesion {
            kind,
            center,
            radius,
            side,
            lobes,
            waves,
            amp,
            texture,
            soft,
            target_hu,
            lo: sub(center, [reach; 3]),
            hi: add(center, [reach; 3]),
        }
    }

    /// A ground-glass halo around another lesion (the "halo sign").
    fn halo(of: &Lesion, rng: &mut Rng) -> Self {
        let mut h = of.clone();
        h.kind = LesionKind::GroundGlass;
        h.radius = of.radius * 1.45;
        for l in &mut h.lobes {
            l.1 = l.1 * 1.45 + 2.0;
        }
        h.soft = 6.0;
        h.target_hu = rng.range(-520.0, -450.0);
        let reach = h.radius * 1.2 + h.amp + h.soft;
        h.lo = sub(h.center, [reach; 3]);
        h.hi = add(h.center, [reach; 3]);
        h
    }

    /// Zone and side in words, for the study description.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            LesionKind::GroundGlass => "ground-glass opacity",
            LesionKind::Consolidation => "consolidation",
        };
        let side = if self.side == code::LEFT {
            "left"
        } else {
            "right"
        };
        let z = self.center[2];
        let zone = if z > 50.0 {
            "upper"
        } else if z > -20.0 {
            "middle"
        } else {
            "lower"
        };
        let ap = if self.center[1] > 20.0 {
            "posterior"
        } else {
            "anterior"
        };
        format!(
            "{kind} ~{:.0} mm, {side} {zone} zone, {ap}",
            2.0 * self.radius
        )
    }
}

/// Whether a lesion of `radius` centred at `c` sits in the periphery of lung `side`,
/// away from the mediastinum, heart and diaphragm.
fn fits(c: V3, radius: f32, side: u8, depth: (f32, f32)) -> bool {
    if classify_point(c).1 != side {
        return false;
    }
    let d = pleural_depth(c);
    if d < depth.0 || d > depth.1 {
        return false;
    }
    let reach = 0.75 * radius;
    for axis in 0..3 {
        for s in [-1.0, 1.0] {
            let mut p = c;
            p[axis] += s * reach;
            let cd = classify_point(p).1;
            if cd != side && cd != code::WALL && cd != code::BONE {
                return false;
            }
        }
    }
    true
}

fn find_center(
    rng: &mut Rng,
    side: u8,
    radius: f32,
    z_range: (f32, f32),
    y_range: (f32, f32),
    depth: (f32, f32),
    others: &[Lesion],
) -> V3 {
    let x_range = if side == code::LEFT {
        (10.0, 135.0)
    } else {
        (-135.0, -10.0)
    };
    let mut fallback = None;
    for attempt in 0..40_000 {
        // Relax the zone constraints if the preferred zone is crowded.
        let (zr, yr) = if attempt < 20_000 {
            (z_range, y_range)
        } else {
            ((-110.0, 120.0), (-70.0, 90.0))
        };
        let c = [
            rng.range(x_range.0, x_range.1),
            rng.range(yr.0, yr.1),
            rng.range(zr.0, zr.1),
        ];
        let apart = others
            .iter()
            .all(|o| norm(sub(o.center, c)) > 1.1 * (o.radius + radius) + 4.0);
        if !apart {
            continue;
        }
        if fits(c, radius, side, depth) {
            return c;
        }
        if fallback.is_none() && classify_point(c).1 == side {
            fallback = Some(c);
        }
    }
    fallback.unwrap_or(if side == code::LEFT {
        [80.0, 30.0, 0.0]
    } else {
        [-80.0, 30.0, 0.0]
    })
}

/// Air bronchograms: a small bronchial tree entering a consolidation from the hilar
/// side and branching inside it (lumens only; drawn where the consolidation is).
fn bronchograms(l: &Lesion, rng: &mut Rng) -> Vec<Capsule> {
    let hilum = if l.side == code::LEFT {
        [40.0, 5.0, 25.0]
    } else {
        [-40.0, 5.0, 25.0]
    };
    let dir = normalize(sub(l.center, hilum));
    let start = sub(l.center, scale(dir, 1.1 * l.radius));
    let entry = sub(l.center, scale(dir, 0.15 * l.radius));
    let mut out = vec![Capsule::tube(start, entry, 1.8, Kind::Bronchogram)];
    let children = 3 + rng.below(2) as usize;
    let base_perp = any_perpendicular(dir);
    for c in 0..children {
        let spin = c as f32 * std::f32::consts::TAU / children as f32 + rng.range(-0.4, 0.4);
        let perp = rotate_about(base_perp, dir, spin);
        let d1 = tilt(dir, perp, rng.range(0.3, 0.6));
        let end1 = add(entry, scale(d1, l.radius * rng.range(0.45, 0.7)));
        out.push(Capsule::tube(entry, end1, 1.45, Kind::Bronchogram));
        for g in 0..2 {
            let perp2 = rotate_about(
                any_perpendicular(d1),
                d1,
                g as f32 * 3.1 + rng.range(-0.5, 0.5),
            );
            let d2 = tilt(d1, perp2, rng.range(0.25, 0.5));
            let end2 = add(end1, scale(d2, l.radius * rng.range(0.3, 0.45)));
            out.push(Capsule::tube(end1, end2, 1.1, Kind::Bronchogram));
        }
    }
    out
}

/// Rotates `v` (perpendicular to unit `axis`) by `angle` about `axis`.
fn rotate_about(v: V3, axis: V3, angle: f32) -> V3 {
    normalize(add(
        scale(v, angle.cos()),
        scale(cross(axis, v), angle.sin()),
    ))
}

/// Places 3-5 ground-glass opacities and 2-3 consolidations; returns them (ground
/// glass first) and the air-bronchogram capsules.
pub(super) fn place(seed: u64) -> (Vec<Lesion>, Vec<Capsule>) {
    let mut rng = Rng::new(seed, 0x1E5);
    let n_ggo = 3 + rng.below(3) as usize;
    let n_cons = 2 + rng.below(2) as usize;
    let halo = rng.unit() < 0.5;

    let mut cons: Vec<Lesion> = Vec::new();
    let mut all: Vec<Lesion> = Vec::new();
    let cons_start = rng.below(2) as usize;
    for i in 0..n_cons {
        let side = if (i + cons_start).is_multiple_of(2) {
            code::RIGHT
        } else {
            code::LEFT
        };
        let radius = rng.range(18.0, 27.0);
        let c = find_center(
            &mut rng,
            side,
            radius,
            (-95.0, 40.0),
            (-5.0, 85.0),
            (0.15 * radius, 0.5 * radius),
            &all,
        );
        let l = Lesion::new(LesionKind::Consolidation, c, radius, side, &mut rng);
        all.push(l.clone());
        cons.push(l);
    }
    let mut ggo: Vec<Lesion> = Vec::new();
    if halo {
        ggo.push(Lesion::halo(&cons[0], &mut rng));
    }
    let first_side = if rng.unit() < 0.5 {
        code::LEFT
    } else {
        code::RIGHT
    };
    for i in ggo.len()..n_ggo {
        let side = if i % 2 == 0 {
            first_side
        } else {
            code::LEFT + code::RIGHT - first_side
        };
        let radius = if i == 0 {
            rng.range(16.0, 25.0)
        } else {
            rng.range(6.0, 18.0)
        };
        let c = find_center(
            &mut rng,
            side,
            radius,
            (-90.0, 110.0),
            (-70.0, 90.0),
            (0.1 * radius, 0.6 * radius + 3.0),
            &all,
        );
        let l = Lesion::new(LesionKind::GroundGlass, c, radius, side, &mut rng);
        all.push(l.clone());
        ggo.push(l);
    }
    let mut caps = Vec::new();
    for l in &cons {
        caps.extend(bronchograms(l, &mut rng));
    }
    ggo.extend(cons);
    (ggo, caps)
}
