//! Distance transforms shared by the editing tools and the metrics.

/// 1D squared distance transform of sampled function `f` on positions `q * s`:
/// `out[p] = min_q f[q] + ((p - q) s)^2` (Felzenszwalb & Huttenlocher). Infinite
/// samples are no sites; a line without sites stays infinite.
pub fn squared_distance_1d(
    f: &[f64],
    s: f64,
    out: &mut [f64],
    v: &mut Vec<usize>,
    z: &mut Vec<f64>,
) {
    v.clear();
    z.clear();
    for (q, &fq) in f.iter().enumerate() {
        if fq == f64::INFINITY {
            continue;
        }
        let xq = q as f64 * s;
        let hq = fq + xq * xq;
        loop {
            match v.last() {
                None => {
                    v.push(q);
                    z.push(f64::NEG_INFINITY);
                    break;
                }
                Some(&p) => {
                    let xp = p as f64 * s;
                    let zz = (hq - (f[p] + xp * xp)) / (2.0 * (xq - xp));
                    if zz <= z[z.len() - 1] {
                        v.pop();
                        z.pop();
                    } else {
                        v.push(q);
                        z.push(zz);
                        break;
                    }
                }
            }
        }
    }
    if v.is_empty() {
        out.fill(f64::INFINITY);
        return;
    }
    let mut k = 0;
    for (p, o) in out.iter_mut().enumerate() {
        let xp = p as f64 * s;
        while k + 1 < v.len() && z[k + 1] < xp {
            k += 1;
        }
        let d = (p as f64 - v[k] as f64) * s;
        *o = d * d + f[v[k]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dimensional_transform_matches_brute_force() {
        let inf = f64::INFINITY;
        let f = [inf, 0.0, inf, inf, 4.0, inf, inf, inf];
        let mut out = vec![0.0; f.len()];
        let (mut v, mut z) = (Vec::new(), Vec::new());
        squared_distance_1d(&f, 0.5, &mut out, &mut v, &mut z);
        for (p, o) in out.iter().enumerate() {
            let brute = f
                .iter()
                .enumerate()
                .filter(|(_, x)| x.is_finite())
                .map(|(q, x)| x + ((p as f64 - q as f64) * 0.5).powi(2))
                .fold(inf, f64::min);
            assert_eq!(*o, brute);
        }
        let mut none = vec![0.0; 3];
        squared_distance_1d(&[inf; 3], 1.0, &mut none, &mut v, &mut z);
        assert!(none.iter().all(|x| x.is_infinite()));
    }
}
