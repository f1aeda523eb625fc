//! Small vector helpers, a seeded sequential RNG and per-voxel hashes.
//!
//! Everything in the demo generator works in *reference millimetres* (see
//! [`super::Grid`]) with plain `[f32; 3]` points: the inner loops stay free of
//! abstraction overhead and nalgebra is not needed here.

pub(super) type V3 = [f32; 3];

#[inline]
pub(super) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

#[inline]
pub(super) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

#[inline]
pub(super) fn scale(a: V3, s: f32) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

#[inline]
pub(super) fn dot(a: V3, b: V3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[inline]
pub(super) fn norm(a: V3) -> f32 {
    dot(a, a).sqrt()
}

#[inline]
pub(super) fn normalize(a: V3) -> V3 {
    let n = norm(a);
    if n > 1e-12 {
        scale(a, 1.0 / n)
    } else {
        [0.0, 0.0, 1.0]
    }
}

#[inline]
pub(super) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// A unit vector perpendicular to `d` (unit).
pub(super) fn any_perpendicular(d: V3) -> V3 {
    let helper = if d[0].abs() < 0.8 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    normalize(cross(d, helper))
}

/// Rotates unit vector `d` by `angle` towards the unit vector `perp` (perpendicular to `d`).
#[inline]
pub(super) fn tilt(d: V3, perp: V3, angle: f32) -> V3 {
    normalize(add(scale(d, angle.cos()), scale(perp, angle.sin())))
}

/// Hermite smoothstep from 0 at `e0` to 1 at `e1` (`e0 > e1` gives a falling step).
#[inline]
pub(super) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Gaussian bump of height 1 at `c` with width `w`.
#[inline]
pub(super) fn bump(x: f32, c: f32, w: f32) -> f32 {
    let t = (x - c) / w;
    (-t * t).exp()
}

#[inline]
pub(super) fn mix(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// atan2(y, x) for y >= 0 (result in [0, pi]), max error about 1e-5 rad.
#[inline]
pub(super) fn atan2_upper(y: f32, x: f32) -> f32 {
    use std::f32::consts::{FRAC_PI_2, PI};
    let ax = x.abs();
    let (mn, mx) = if ax < y { (ax, y) } else { (y, ax) };
    if mx <= 0.0 {
        return 0.0;
    }
    let a = mn / mx;
    let s = a * a;
    let mut r = ((((0.0208351 * s - 0.085133) * s + 0.180141) * s - 0.3302995) * s + 0.999866) * a;
    if y > ax {
        r = FRAC_PI_2 - r;
    }
    if x < 0.0 {
        r = PI - r;
    }
    r
}

/// SplitMix64's output function: a good 64-bit mixer.
#[inline]
pub(super) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Approximately standard-normal value for voxel `index` (sum of four uniforms, so
/// bounded at about ±3.5), a pure function of `(key, index)`: identical whatever the
/// thread count.
#[inline]
pub(super) fn gauss_hash(key: u64, index: u64) -> f32 {
    let h = mix64(key ^ index.wrapping_mul(GOLDEN));
    let s = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48);
    // Mean 2 * 65535, variance 4 * 65536^2 / 12.
    (s as f32 - 131_070.0) * (1.732_050_8 / 65_536.0)
}

/// SplitMix64: a small sequential RNG for building the anatomy (single-threaded).
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64, stream: u64) -> Self {
        Rng(mix64(seed ^ mix64(stream.wrapping_add(0x5EED))))
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    pub(super) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform direction on the unit sphere.
    pub(super) fn direction(&mut self) -> V3 {
        let z = self.range(-1.0, 1.0);
        let phi = self.range(0.0, std::f32::consts::TAU);
        let s = (1.0 - z * z).max(0.0).sqrt();
        [s * phi.cos(), s * phi.sin(), z]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atan2_upper_matches_std() {
        for i in 0..=200 {
            for j in -100..=100 {
                let y = i as f32 * 0.37;
                let x = j as f32 * 0.53;
                if y == 0.0 && x == 0.0 {
                    continue;
                }
                assert!((atan2_upper(y, x) - y.atan2(x)).abs() < 1e-4, "{y} {x}");
            }
        }
    }

    #[test]
    fn gauss_hash_is_roughly_standard() {
        let n = 200_000u64;
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for i in 0..n {
            let v = gauss_hash(7, i) as f64;
            s += v;
            s2 += v * v;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }
}
