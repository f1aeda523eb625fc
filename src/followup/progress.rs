//! What changed between a baseline and a follow-up, once the baseline's labels are on the
//! follow-up's grid: a per-voxel transition map, its volumes per lung and lung third,
//! and 3D lesions matched across the two time points.
//!
//! States of a voxel at one time point, from its label: outside the lungs (0, pleural
//! effusion 5, anything unknown), healthy lung (1, 2, other lesion 6), ground-glass (3),
//! consolidation (4). A voxel that is lung at only one time point counts as healthy lung
//! at the other (the lungs' outlines differ a little after registration).

use serde::Serialize;

use super::FollowupError;
use crate::annotate::{CONSOLIDATION, GGO, LEFT_LUNG, OTHER_LESION, RIGHT_LUNG};
use crate::metrics::instances::{Connectivity, connected_components};
use crate::metrics::quantify::{QuantifyOptions, THIRD_NAMES, quantify};
use crate::metrics::{Target, voxel_volume_ml};
use crate::volume::{Volume, VoxelBox};

/// Transition codes of the map, with their names (the map's documentation).
pub const TRANSITIONS: [(u8, &str); 10] = [
    (0, "outside the lungs"),
    (1, "healthy at both"),
    (2, "new ground-glass"),
    (3, "new consolidation"),
    (4, "resolved ground-glass"),
    (5, "resolved consolidation"),
    (6, "persistent ground-glass"),
    (7, "persistent consolidation"),
    (8, "ground-glass to consolidation"),
    (9, "consolidation to ground-glass"),
];

/// Codes whose voxels show consolidation progression (consolidation at follow-up, not at
/// baseline) and recovery (the reverse): the seed's progression / recovery maps.
pub const PROGRESSION_CODES: [u8; 2] = [3, 8];
pub const RECOVERY_CODES: [u8; 2] = [5, 9];

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Outside,
    Healthy,
    Ggo,
    Consolidation,
}

fn state(label: u8) -> State {
    match label {
        LEFT_LUNG | RIGHT_LUNG | OTHER_LESION => State::Healthy,
        GGO => State::Ggo,
        CONSOLIDATION => State::Consolidation,
        _ => State::Outside,
    }
}

/// The transition code of a voxel (see [`TRANSITIONS`]).
pub fn transition(baseline: u8, followup: u8) -> u8 {
    use State::*;
    let (mut a, mut b) = (state(baseline), state(followup));
    if a == Outside && b == Outside {
        return 0;
    }
    if a == Outside {
        a = Healthy;
    }
    if b == Outside {
        b = Healthy;
    }
    match (a, b) {
        (Healthy, Healthy) => 1,
        (Healthy, Ggo) => 2,
        (Healthy, Consolidation) => 3,
        (Ggo, Healthy) => 4,
        (Consolidation, Healthy) => 5,
        (Ggo, Ggo) => 6,
        (Consolidation, Consolidation) => 7,
        (Ggo, Consolidation) => 8,
        (Consolidation, Ggo) => 9,
        _ => 1,
    }
}

/// The transition map of `baseline` (already on the follow-up's grid) and `followup`.
pub fn transition_map(
    baseline_on_followup: &Volume<u8>,
    followup: &Volume<u8>,
) -> Result<Volume<u8>, FollowupError> {
    if let Some(diff) = followup
        .geometry
        .grid_difference(&baseline_on_followup.geometry)
    {
        return Err(FollowupError::Geometry {
            file: "the registered baseline labels".into(),
            message: format!("not on the follow-up's grid: {diff}"),
        });
    }
    let voxels = baseline_on_followup
        .voxels
        .iter()
        .zip(&followup.voxels)
        .map(|(a, b)| transition(*a, *b))
        .collect();
    Ok(Volume {
        geometry: followup.geometry.clone(),
        voxels,
    })
}

/// Volumes (mL) of every transition code in one region.
#[derive(Debug, Clone, Serialize)]
pub struct RegionVolumes {
    pub region: String,
    /// Indexed by transition code (0 is always 0 here: outside the lungs).
    pub ml: Vec<f64>,
}

/// Volumes of the transitions: whole lungs, each lung, each lung's thirds.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionVolumes {
    pub names: Vec<&'static str>,
    pub regions: Vec<RegionVolumes>,
    /// Consolidation progression and recovery volumes (mL), whole lungs.
    pub progression_ml: f64,
    pub recovery_ml: f64,
}

/// Volumes per transition in the lungs, each lung and each third of each lung (the lung
/// and third assignment of [`crate::metrics::quantify`], on the follow-up's lung labels:
/// a voxel of a transition is given to the lung whose centroid is nearer along x).
pub fn transition_volumes(
    map: &Volume<u8>,
    followup: &Volume<u8>,
) -> Result<TransitionVolumes, FollowupError> {
    // A label map for quantify: healthy voxels keep the follow-up's lung label, every
    // other transition becomes a "lesion" label 100 + code.
    let labels = Volume {
        geometry: map.geometry.clone(),
        voxels: map
            .voxels
            .iter()
            .zip(&followup.voxels)
            .map(|(&code, &f)| match code {
                0 => 0,
                1 if f == LEFT_LUNG || f == RIGHT_LUNG => f,
                _ => 100 + code,
            })
            .collect(),
    };
    let ct = Volume {
        geometry: map.geometry.clone(),
        voxels: vec![0i16; map.voxels.len()],
    };
    let options = QuantifyOptions {
        left_lung: LEFT_LUNG,
        right_lung: RIGHT_LUNG,
        lesion_labels: (101..=109).collect(),
    };
    let q = quantify(&ct, &labels, &options).map_err(|e| FollowupError::Geometry {
        file: "the transition map".into(),
        message: e.to_string(),
    })?;
    let ml = q.voxel_volume_ml;
    let mut regions = Vec::new();
    for lung in &q.lungs {
        let mut parts = vec![(lung.name.to_string(), &lung.whole)];
        for (t, name) in THIRD_NAMES.iter().enumerate() {
            parts.push((format!("{} {}", lung.name, name), &lung.thirds[t]));
        }
        for (region, counts) in parts {
            let mut v = vec![0.0; 10];
            // Healthy = the lung's own voxels minus its lesion-like ones.
            v[1] = (counts.voxels - counts.total_lesion_voxels()) as f64 * ml;
            for (n, c) in counts.lesion_voxels.iter().enumerate() {
                v[n + 1] += *c as f64 * ml;
            }
            regions.push(RegionVolumes { region, ml: v });
        }
    }
    let count = |codes: &[u8]| {
        map.voxels.iter().filter(|v| codes.contains(v)).count() as f64
            * voxel_volume_ml(&map.geometry)
    };
    Ok(TransitionVolumes {
        names: TRANSITIONS.iter().map(|(_, n)| *n).collect(),
        regions,
        progression_ml: count(&PROGRESSION_CODES),
        recovery_ml: count(&RECOVERY_CODES),
    })
}

/// How a lesion fared between the two time points.
#[derive(Debug, Clone, Serialize)]
pub struct LesionMatch {
    /// "persistent", "new", "resolved", "merged", "split" or "merged and split".
    pub kind: String,
    /// Baseline lesion ids (1-based, raster order on the follow-up grid) and follow-up ids.
    pub baseline: Vec<u32>,
    pub followup: Vec<u32>,
    pub baseline_ml: f64,
    pub followup_ml: f64,
    pub change_ml: f64,
    /// Change in percent of the baseline volume (`None` for new lesions).
    pub change_pct: Option<f64>,
    /// Follow-up voxel box of the group (its baseline part for resolved lesions).
    pub box_start: [usize; 3],
    pub box_size: [usize; 3],
}

impl LesionMatch {
    /// One aligned line: kind, baseline -> follow-up mL, change in mL and %.
    pub fn summary(&self) -> String {
        format!(
            "{:<17} {:>8.2} -> {:>8.2} mL ({:+.2} mL{})",
            self.kind,
            self.baseline_ml,
            self.followup_ml,
            self.change_ml,
            self.change_pct
                .map_or(String::new(), |p| format!(", {p:+.0} %"))
        )
    }
}

/// 3D lesions (ground-glass or consolidation, 26-connected) of the registered baseline
/// and of the follow-up, matched by overlap: groups of lesions linked by shared voxels.
pub fn match_lesions(
    baseline_on_followup: &Volume<u8>,
    followup: &Volume<u8>,
    min_ml: f64,
) -> Vec<LesionMatch> {
    let ml = voxel_volume_ml(&followup.geometry);
    let lesion = |v: &Volume<u8>| Volume {
        geometry: v.geometry.clone(),
        voxels: v
            .voxels
            .iter()
            .map(|&x| u8::from(x == GGO || x == CONSOLIDATION))
            .collect(),
    };
    let (a, b) = (lesion(baseline_on_followup), lesion(followup));
    let ca = connected_components(&a, Target::Label(1), Connectivity::TwentySix);
    let cb = connected_components(&b, Target::Label(1), Connectivity::TwentySix);
    let (na, nb) = (ca.count(), cb.count());
    // Union-find over baseline ids 0..na and follow-up ids na..na+nb.
    let mut parent: Vec<usize> = (0..na + nb).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let g = &followup.geometry;
    let [nx, ny, nz] = g.dims;
    let mut boxes: Vec<Option<VoxelBox>> = vec![None; na + nb];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let (ia, ib) = (ca.id_at(i, j, k), cb.id_at(i, j, k));
                for id in [
                    (ia > 0).then(|| ia as usize - 1),
                    (ib > 0).then(|| na + ib as usize - 1),
                ]
                .into_iter()
                .flatten()
                {
                    let b = boxes[id].get_or_insert(VoxelBox::point([i, j, k]));
                    b.include([i, j, k]);
                }
                if ia > 0 && ib > 0 {
                    let (x, y) = (
                        find(&mut parent, ia as usize - 1),
                        find(&mut parent, na + ib as usize - 1),
                    );
                    parent[x] = y;
                }
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, (Vec<u32>, Vec<u32>)> = Default::default();
    for id in 0..na + nb {
        let root = find(&mut parent, id);
        let e = groups.entry(root).or_default();
        if id < na {
            e.0.push(id as u32 + 1);
        } else {
            e.1.push((id - na) as u32 + 1);
        }
    }
    let mut out: Vec<LesionMatch> = groups
        .into_values()
        .map(|(ia, ib)| {
            // fold from +0.0: an empty f64 sum is -0.0, printed "-0.00".
            let va = ia
                .iter()
                .map(|&i| ca.voxel_counts[i as usize - 1] as f64 * ml)
                .fold(0.0, |a, b| a + b);
            let vb = ib
                .iter()
                .map(|&i| cb.voxel_counts[i as usize - 1] as f64 * ml)
                .fold(0.0, |a, b| a + b);
            let kind = match (ia.len(), ib.len()) {
                (0, _) => "new",
                (_, 0) => "resolved",
                (1, 1) => "persistent",
                (_, 1) => "merged",
                (1, _) => "split",
                _ => "merged and split",
            };
            let bx = ia
                .iter()
                .map(|&i| boxes[i as usize - 1])
                .chain(ib.iter().map(|&i| boxes[na + i as usize - 1]))
                .fold(None, VoxelBox::merge)
                .unwrap_or(VoxelBox::point([0, 0, 0]));
            LesionMatch {
                kind: kind.into(),
                baseline: ia,
                followup: ib,
                baseline_ml: va,
                followup_ml: vb,
                change_ml: vb - va,
                change_pct: (va > 0.0).then(|| 100.0 * (vb - va) / va),
                box_start: bx.min,
                box_size: bx.size(),
            }
        })
        .filter(|m| m.baseline_ml.max(m.followup_ml) >= min_ml)
        .collect();
    out.sort_by(|x, y| {
        y.baseline_ml
            .max(y.followup_ml)
            .total_cmp(&x.baseline_ml.max(x.followup_ml))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn every_pair_of_states_has_its_code() {
        assert_eq!(transition(0, 0), 0);
        assert_eq!(transition(1, 2), 1);
        assert_eq!(transition(0, 1), 1);
        assert_eq!(transition(1, GGO), 2);
        assert_eq!(transition(0, CONSOLIDATION), 3);
        assert_eq!(transition(GGO, 1), 4);
        assert_eq!(transition(CONSOLIDATION, 0), 5);
        assert_eq!(transition(GGO, GGO), 6);
        assert_eq!(transition(CONSOLIDATION, CONSOLIDATION), 7);
        assert_eq!(transition(GGO, CONSOLIDATION), 8);
        assert_eq!(transition(CONSOLIDATION, GGO), 9);
        assert_eq!(transition(5, 5), 0, "effusion is not lung");
    }

    fn labels_with(boxes: &[([usize; 3], [usize; 3], u8)]) -> Volume<u8> {
        let g = Geometry::axis_aligned([20, 20, 10], [1.0, 1.0, 2.0], [0.0; 3]);
        let mut v = Volume::filled(g, 1u8).unwrap();
        for (lo, size, value) in boxes {
            for k in lo[2]..lo[2] + size[2] {
                for j in lo[1]..lo[1] + size[1] {
                    for i in lo[0]..lo[0] + size[0] {
                        v.set(i, j, k, *value);
                    }
                }
            }
        }
        v
    }

    #[test]
    fn lesions_are_matched_as_persistent_new_resolved_and_merged() {
        let baseline = labels_with(&[
            ([1, 1, 1], [3, 3, 2], GGO),            // grows: persistent
            ([10, 1, 1], [2, 2, 2], CONSOLIDATION), // resolves
            ([1, 12, 5], [2, 2, 2], GGO),           // two that merge
            ([5, 12, 5], [2, 2, 2], GGO),
        ]);
        let followup = labels_with(&[
            ([1, 1, 1], [4, 4, 2], GGO),
            ([15, 15, 7], [2, 2, 2], CONSOLIDATION), // new
            ([1, 12, 5], [6, 2, 2], CONSOLIDATION),
        ]);
        let m = match_lesions(&baseline, &followup, 0.0);
        let kinds: Vec<&str> = m.iter().map(|x| x.kind.as_str()).collect();
        assert_eq!(m.len(), 4, "{kinds:?}");
        let persistent = m.iter().find(|x| x.kind == "persistent").unwrap();
        // 3x3x2 voxels of 2 mm³ = 0.036 mL, grown to 4x4x2 = 0.064 mL.
        assert!((persistent.baseline_ml - 0.036).abs() < 1e-9);
        assert!((persistent.change_ml - 0.028).abs() < 1e-9);
        assert!(kinds.contains(&"new") && kinds.contains(&"resolved"));
        let merged = m.iter().find(|x| x.kind == "merged").unwrap();
        assert_eq!(merged.baseline.len(), 2);

        let map = transition_map(&baseline, &followup).unwrap();
        let v = transition_volumes(&map, &followup).unwrap();
        let both = &v.regions[0];
        assert_eq!(both.region, "left");
        // Consolidation progression: the new lesion (8 voxels) plus the merged lesions'
        // ground-glass turned consolidation (16) and healthy turned consolidation (8).
        assert!(
            (v.progression_ml - 32.0 * 0.002).abs() < 1e-9,
            "{}",
            v.progression_ml
        );
        assert!((v.recovery_ml - 8.0 * 0.002).abs() < 1e-9);
        let total: f64 = both.ml.iter().sum();
        assert!((total - 4000.0 * 0.002).abs() < 1e-9, "{total}");
    }
}
