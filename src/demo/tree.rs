//! Volume-filling branching trees (after Tawhai et al. 2000, "Generation of an
//! anatomically based three-dimensional model of the conducting airways"): a cloud of
//! points sampled in the lung is split recursively; each branch heads a fraction of the
//! way towards the centroid of the points it supplies, and its radius follows Murray's
//! law (r³ proportional to the number of points supplied). Vessels and airways grown
//! this way fill the lung with a density and calibre that fall off towards the pleura.

use super::math::{V3, add, dot, norm, normalize, scale, sub, tilt};

/// One straight branch of a tree.
#[derive(Debug, Clone, Copy)]
pub(super) struct Branch {
    pub a: V3,
    pub b: V3,
    pub radius: f32,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct TreeParams {
    /// Where the tree enters the lung (the hilum) and the direction it arrives from.
    pub root: V3,
    pub root_dir: V3,
    /// Radius of the root branch (supplying every point), mm.
    pub root_radius: f32,
    /// Radius approached by the finest branches, mm: r = min + (root - min) (n/N)^(1/3)
    /// for a branch supplying n of N points (Murray's law offset so that peripheral
    /// branches stay visible).
    pub min_radius: f32,
    /// Fraction of the distance to the supplied centroid covered by a branch.
    pub fraction: f32,
    /// Largest angle between a branch and its parent, radians.
    pub max_angle: f32,
    /// Shortest branch, mm.
    pub min_length: f32,
    /// Whether a branch supplying a single point runs all the way to it.
    pub terminal_to_point: bool,
}

struct Work {
    lo: usize,
    hi: usize,
    start: V3,
    dir: V3,
    generation: u32,
}

/// Grows a tree into `points` (reordered in place). Deterministic for given inputs.
pub(super) fn grow(points: &mut [V3], p: &TreeParams) -> Vec<Branch> {
    let total = points.len().max(1) as f32;
    let mut out = Vec::with_capacity(2 * points.len());
    let mut stack = vec![Work {
        lo: 0,
        hi: points.len(),
        start: p.root,
        dir: normalize(p.root_dir),
        generation: 0,
    }];
    while let Some(w) = stack.pop() {
        let n = w.hi - w.lo;
        if n == 0 {
            continue;
        }
        let pts = &mut points[w.lo..w.hi];
        let radius = p.min_radius + (p.root_radius - p.min_radius) * (n as f32 / total).cbrt();
        let centroid = centroid(pts);
        let to = sub(centroid, w.start);
        let dist = norm(to);
        let mut dir = if dist > 1e-4 {
            scale(to, 1.0 / dist)
        } else {
            w.dir
        };
        // Keep the branching angle anatomical.
        let cos = dot(dir, w.dir).clamp(-1.0, 1.0);
        if cos.acos() > p.max_angle && w.generation > 0 {
            let perp = sub(dir, scale(w.dir, cos));
            let perp = if norm(perp) > 1e-6 {
                normalize(perp)
            } else {
                super::math::any_perpendicular(w.dir)
            };
            dir = tilt(w.dir, perp, p.max_angle);
        }
        let length = if n == 1 && p.terminal_to_point {
            dist.max(p.min_length)
        } else {
            (p.fraction * dist).max(p.min_length)
        };
        let end = add(w.start, scale(dir, length));
        out.push(Branch {
            a: w.start,
            b: end,
            radius,
        });
        if n == 1 {
            continue;
        }
        let mid = split(pts, centroid);
        for (lo, hi) in [(w.lo, w.lo + mid), (w.lo + mid, w.hi)] {
            stack.push(Work {
                lo,
                hi,
                start: end,
                dir,
                generation: w.generation + 1,
            });
        }
    }
    out
}

fn centroid(pts: &[V3]) -> V3 {
    let mut s = [0.0f64; 3];
    for p in pts {
        for a in 0..3 {
            s[a] += p[a] as f64;
        }
    }
    let n = pts.len().max(1) as f64;
    [(s[0] / n) as f32, (s[1] / n) as f32, (s[2] / n) as f32]
}

/// Splits the points by the plane through `c` perpendicular to their principal axis;
/// returns the size of the first part (never 0 or `len` for `len >= 2`).
fn split(pts: &mut [V3], c: V3) -> usize {
    let axis = principal_axis(pts, c);
    let key = |p: &V3| dot(sub(*p, c), axis);
    // Partition in place: negative side first.
    let mut i = 0;
    for j in 0..pts.len() {
        if key(&pts[j]) < 0.0 {
            pts.swap(i, j);
            i += 1;
        }
    }
    if i == 0 || i == pts.len() {
        pts.sort_by(|a, b| key(a).total_cmp(&key(b)));
        i = pts.len() / 2;
    }
    i
}

fn principal_axis(pts: &[V3], c: V3) -> V3 {
    let mut m = [[0.0f64; 3]; 3];
    for p in pts {
        let d = sub(*p, c);
        for a in 0..3 {
            for b in 0..3 {
                m[a][b] += d[a] as f64 * d[b] as f64;
            }
        }
    }
    // Start from the coordinate axis of largest variance, then power-iterate.
    let start = (0..3)
        .max_by(|&a, &b| m[a][a].total_cmp(&m[b][b]))
        .unwrap_or(0);
    let mut v = [0.1f64; 3];
    v[start] = 1.0;
    for _ in 0..24 {
        let w = [
            m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
            m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
            m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
        ];
        let n = (w[0] * w[0] + w[1] * w[1] + w[2] * w[2]).sqrt();
        if n < 1e-12 {
            break;
        }
        v = [w[0] / n, w[1] / n, w[2] / n];
    }
    [v[0] as f32, v[1] as f32, v[2] as f32]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::math::Rng;

    #[test]
    fn tree_reaches_every_point_and_obeys_murray() {
        let mut rng = Rng::new(3, 0);
        let mut pts: Vec<V3> = (0..300)
            .map(|_| {
                [
                    rng.range(-50.0, 50.0),
                    rng.range(-50.0, 50.0),
                    rng.range(-50.0, 50.0),
                ]
            })
            .collect();
        let params = TreeParams {
            root: [-80.0, 0.0, 0.0],
            root_dir: [1.0, 0.0, 0.0],
            root_radius: 8.0,
            min_radius: 0.0,
            fraction: 0.4,
            max_angle: 1.0,
            min_length: 1.0,
            terminal_to_point: true,
        };
        let tree = grow(&mut pts, &params);
        assert_eq!(tree.len(), 2 * 300 - 1);
        assert!((tree[0].radius - 8.0).abs() < 1e-4);
        let smallest = tree.iter().map(|b| b.radius).fold(f32::MAX, f32::min);
        assert!((smallest - 8.0 * (1.0f32 / 300.0).cbrt()).abs() < 1e-3);
    }
}
