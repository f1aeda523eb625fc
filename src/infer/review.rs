//! Reviewing a proposal: its instances (3D connected components per class), their
//! statistics, and accepting / rejecting them into a label map through the
//! [`Editor`] (one undo step per decision, locks and overwrite policy respected).
//! Nothing here writes the label map without an explicit accept call.

use serde::{Deserialize, Serialize};

use super::{ModelInfo, Proposal, Task};
use crate::annotate::editor::Editor;
use crate::metrics::Target;
use crate::metrics::instances::{Connectivity, connected_components};
use crate::volume::VoxelBox;
use crate::volume::{CtVolume, LabelVolume, Volume};

/// The reviewer's decision on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Pending,
    Accepted,
    Rejected,
}

/// One proposed component.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Label value it would write.
    pub label: u8,
    /// Linear voxel indices.
    pub voxels: Vec<u32>,
    pub volume_ml: f64,
    pub mean_hu: f64,
    /// Mean model probability over the instance, 0..1.
    pub confidence: f64,
    /// First and last axial slice (k), inclusive.
    pub slices: (usize, usize),
    /// Voxel (continuous) of the centroid.
    pub centroid_voxel: [f64; 3],
    pub decision: Decision,
}

/// Sort orders of the instance table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Class,
    Volume,
    MeanHu,
    Confidence,
    FirstSlice,
}

/// What an accepted instance came from (written beside saved labels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptRecord {
    pub model: ModelInfo,
    pub task: Task,
    pub label: u8,
    pub voxels: usize,
    pub volume_ml: f64,
    pub confidence: f64,
}

/// A proposal under review.
pub struct Review {
    pub task: Task,
    pub model: ModelInfo,
    pub instances: Vec<Instance>,
    /// The layer drawn over the image: label value of every pending instance's voxels.
    /// The reviewer may edit it (brush / eraser) and then [`Review::refresh`].
    pub layer: LabelVolume,
    /// The model's probability of its class per voxel (0..=255).
    pub confidence: Volume<u8>,
}

impl Review {
    /// Splits `proposal` into instances (26-connected components per label value) and
    /// measures them on `ct`.
    pub fn new(proposal: &Proposal, ct: &CtVolume) -> Review {
        let instances = components(&proposal.labels, ct, &proposal.confidence);
        let mut r = Review {
            task: proposal.task,
            model: proposal.model.clone(),
            instances,
            layer: proposal.labels.map(|_| 0),
            confidence: proposal.confidence.clone(),
        };
        r.sort(SortKey::Confidence, true);
        r.rebuild_layer();
        r
    }

    /// Re-derives the pending instances from the layer after the reviewer edited it;
    /// accepted and rejected instances stay as they were.
    pub fn refresh(&mut self, ct: &CtVolume) {
        self.instances.retain(|i| i.decision != Decision::Pending);
        self.instances
            .extend(components(&self.layer, ct, &self.confidence));
        self.sort(SortKey::Confidence, true);
    }

    /// Sorts the instances (descending when `desc`); ties by first slice.
    pub fn sort(&mut self, key: SortKey, desc: bool) {
        let k = |i: &Instance| -> f64 {
            match key {
                SortKey::Class => i.label as f64,
                SortKey::Volume => i.volume_ml,
                SortKey::MeanHu => i.mean_hu,
                SortKey::Confidence => i.confidence,
                SortKey::FirstSlice => i.slices.0 as f64,
            }
        };
        self.instances.sort_by(|a, b| {
            let o = k(a).total_cmp(&k(b)).then(a.slices.0.cmp(&b.slices.0));
            if desc { o.reverse() } else { o }
        });
    }

    fn rebuild_layer(&mut self) {
        self.layer.voxels.iter_mut().for_each(|v| *v = 0);
        for inst in &self.instances {
            if inst.decision == Decision::Pending {
                for &i in &inst.voxels {
                    self.layer.voxels[i as usize] = inst.label;
                }
            }
        }
    }

    fn set_layer(&mut self, index: usize, value: u8) {
        for &i in &self.instances[index].voxels {
            self.layer.voxels[i as usize] = value;
        }
    }

    /// The box of instance `index`'s voxels (what its accept or reject changes in the
    /// layer).
    pub fn instance_box(&self, index: usize) -> Option<VoxelBox> {
        let d = self.layer.geometry.dims;
        let mut b: Option<VoxelBox> = None;
        for &i in &self.instances.get(index)?.voxels {
            let p = voxel_of(i as usize, d);
            match &mut b {
                Some(b) => b.include(p),
                None => b = Some(VoxelBox::point(p)),
            }
        }
        b
    }

    pub fn pending(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.decision == Decision::Pending)
            .count()
    }

    /// Writes instance `index` into the labels as one undo step; returns the changed
    /// box of the labels and of the layer.
    pub fn accept(
        &mut self,
        index: usize,
        editor: &mut Editor,
    ) -> (Option<VoxelBox>, Option<AcceptRecord>) {
        let Some(inst) = self.instances.get(index) else {
            return (None, None);
        };
        if inst.decision != Decision::Pending {
            return (None, None);
        }
        let name = format!(
            "Accept {} proposal ({:.2} mL, {} {})",
            label_name(inst.label),
            inst.volume_ml,
            self.model.name,
            self.model.version
        );
        editor.begin(name);
        for &i in &inst.voxels {
            editor.set_index(i as usize, inst.label);
        }
        let changed = editor.commit();
        let record = AcceptRecord {
            model: self.model.clone(),
            task: self.task,
            label: inst.label,
            voxels: inst.voxels.len(),
            volume_ml: inst.volume_ml,
            confidence: inst.confidence,
        };
        self.instances[index].decision = Decision::Accepted;
        self.set_layer(index, 0);
        (changed, Some(record))
    }

    /// Marks instance `index` rejected (removed from the layer).
    pub fn reject(&mut self, index: usize) {
        if let Some(inst) = self.instances.get_mut(index)
            && inst.decision == Decision::Pending
        {
            inst.decision = Decision::Rejected;
            self.set_layer(index, 0);
        }
    }

    /// Accepts every pending instance with confidence ≥ `threshold` as one undo step.
    pub fn accept_above(
        &mut self,
        threshold: f64,
        editor: &mut Editor,
    ) -> (Option<VoxelBox>, Vec<AcceptRecord>) {
        let chosen: Vec<usize> = (0..self.instances.len())
            .filter(|&i| {
                self.instances[i].decision == Decision::Pending
                    && self.instances[i].confidence >= threshold
            })
            .collect();
        if chosen.is_empty() {
            return (None, Vec::new());
        }
        editor.begin(format!(
            "Accept {} proposals with confidence ≥ {:.2} ({} {})",
            chosen.len(),
            threshold,
            self.model.name,
            self.model.version
        ));
        let mut records = Vec::new();
        for &i in &chosen {
            let inst = &self.instances[i];
            for &v in &inst.voxels {
                editor.set_index(v as usize, inst.label);
            }
            records.push(AcceptRecord {
                model: self.model.clone(),
                task: self.task,
                label: inst.label,
                voxels: inst.voxels.len(),
                volume_ml: inst.volume_ml,
                confidence: inst.confidence,
            });
            self.instances[i].decision = Decision::Accepted;
        }
        let changed = editor.commit();
        self.rebuild_layer();
        (changed, records)
    }

    pub fn reject_all(&mut self) {
        for inst in &mut self.instances {
            if inst.decision == Decision::Pending {
                inst.decision = Decision::Rejected;
            }
        }
        self.rebuild_layer();
    }
}

/// 26-connected components of every non-zero value of `labels`, measured on `ct`.
fn components(labels: &LabelVolume, ct: &CtVolume, confidence: &Volume<u8>) -> Vec<Instance> {
    let g = &labels.geometry;
    let ml = crate::metrics::voxel_volume_ml(g);
    let mut present = [false; 256];
    for &v in &labels.voxels {
        present[v as usize] = true;
    }
    let mut instances = Vec::new();
    for value in 1..=255u8 {
        if !present[value as usize] {
            continue;
        }
        let inst = connected_components(labels, Target::Label(value), Connectivity::TwentySix);
        let mut groups: Vec<Vec<u32>> = vec![Vec::new(); inst.count()];
        let [sx, sy, sz] = inst.size;
        for z in 0..sz {
            for y in 0..sy {
                for x in 0..sx {
                    let id = inst.ids[x + sx * (y + sy * z)];
                    if id != 0 {
                        let idx = g.index(x + inst.start[0], y + inst.start[1], z + inst.start[2]);
                        groups[id as usize - 1].push(idx as u32);
                    }
                }
            }
        }
        for voxels in groups {
            instances.push(measure(value, voxels, ct, confidence, ml));
        }
    }
    instances
}

/// Voxel (i, j, k) of linear index `i` on a grid of `dims`.
fn voxel_of(i: usize, d: [usize; 3]) -> [usize; 3] {
    [i % d[0], (i / d[0]) % d[1], i / (d[0] * d[1])]
}

fn label_name(v: u8) -> &'static str {
    match v {
        super::LEFT_LUNG => "left lung",
        super::RIGHT_LUNG => "right lung",
        super::GGO => "ground-glass",
        super::CONSOLIDATION => "consolidation",
        _ => "label",
    }
}

fn measure(
    label: u8,
    voxels: Vec<u32>,
    ct: &CtVolume,
    confidence: &Volume<u8>,
    ml: f64,
) -> Instance {
    let d = ct.geometry.dims;
    let (mut hu, mut conf) = (0f64, 0f64);
    let mut c = [0f64; 3];
    let (mut k0, mut k1) = (usize::MAX, 0);
    for &i in &voxels {
        let i = i as usize;
        hu += ct.voxels[i] as f64;
        conf += confidence.voxels[i] as f64 / 255.0;
        let p = voxel_of(i, d);
        for a in 0..3 {
            c[a] += p[a] as f64;
        }
        k0 = k0.min(p[2]);
        k1 = k1.max(p[2]);
    }
    let n = voxels.len().max(1) as f64;
    Instance {
        label,
        volume_ml: voxels.len() as f64 * ml,
        mean_hu: hu / n,
        confidence: conf / n,
        slices: (k0.min(k1), k1),
        centroid_voxel: c.map(|v| v / n),
        voxels,
        decision: Decision::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::LabelTable;
    use crate::volume::Geometry;

    fn proposal() -> (Proposal, CtVolume) {
        let g = Geometry::axis_aligned([10, 10, 4], [1.0, 1.0, 2.0], [0.0; 3]);
        let mut labels = Volume::filled(g.clone(), 0u8).unwrap();
        let mut conf = Volume::filled(g.clone(), 0u8).unwrap();
        for k in 0..2 {
            for j in 0..3 {
                for i in 0..3 {
                    labels.set(i, j, k, 3);
                    conf.set(i, j, k, 255);
                }
            }
        }
        for i in 6..10 {
            labels.set(i, 8, 3, 4);
            conf.set(i, 8, 3, 102);
        }
        let ct = Volume::filled(g, -500i16).unwrap();
        (
            Proposal {
                task: Task::Lesion,
                labels,
                confidence: conf,
                model: ModelInfo {
                    name: "m".into(),
                    version: "1".into(),
                    device: "cpu".into(),
                },
                model_seconds: 0.0,
                total_seconds: 0.0,
                detail: String::new(),
            },
            ct,
        )
    }

    #[test]
    fn instances_accept_reject_and_undo() {
        let (p, ct) = proposal();
        let mut r = Review::new(&p, &ct);
        assert_eq!(r.instances.len(), 2);
        // Sorted by confidence, highest first.
        assert_eq!(r.instances[0].label, 3);
        assert_eq!(r.instances[0].voxels.len(), 18);
        assert!((r.instances[0].volume_ml - 0.036).abs() < 1e-12);
        assert_eq!(r.instances[0].slices, (0, 1));
        assert!((r.instances[1].confidence - 0.4).abs() < 1e-9);
        assert_eq!(r.instances[1].mean_hu, -500.0);

        let mut ed = Editor::new(p.labels.map(|_| 0), LabelTable::default());
        let (changed, rec) = r.accept(0, &mut ed);
        assert!(changed.is_some());
        assert_eq!(rec.unwrap().voxels, 18);
        assert_eq!(ed.labels().get(1, 1, 1), 3);
        assert_eq!(r.layer.get(1, 1, 1), 0, "accepted leaves the layer");
        assert_eq!(r.layer.get(7, 8, 3), 4, "the other is still proposed");
        r.reject(1);
        assert_eq!(r.layer.voxels.iter().filter(|&&v| v != 0).count(), 0);
        assert_eq!(
            ed.labels().get(7, 8, 3),
            0,
            "rejected never enters the labels"
        );
        assert!(ed.undo().is_some());
        assert!(ed.labels().voxels.iter().all(|&v| v == 0));
    }

    #[test]
    fn edited_layer_gives_new_pending_instances() {
        let (p, ct) = proposal();
        let mut r = Review::new(&p, &ct);
        let mut ed = Editor::new(p.labels.map(|_| 0), LabelTable::default());
        r.accept(1, &mut ed); // the consolidation
        // The reviewer erases half of the GGO block and paints a new blob.
        for j in 0..3 {
            r.layer.set(0, j, 0, 0);
            r.layer.set(0, j, 1, 0);
        }
        r.layer.set(8, 2, 0, 3);
        r.refresh(&ct);
        let pending: Vec<_> = r
            .instances
            .iter()
            .filter(|i| i.decision == Decision::Pending)
            .collect();
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending.iter().map(|i| i.voxels.len()).sum::<usize>(),
            12 + 1
        );
        assert_eq!(
            r.instances
                .iter()
                .filter(|i| i.decision == Decision::Accepted)
                .count(),
            1
        );
        // The painted voxel had no model probability.
        assert!(
            pending
                .iter()
                .any(|i| i.voxels.len() == 1 && i.confidence == 0.0)
        );
    }

    #[test]
    fn accept_above_threshold_is_one_step_and_respects_locks() {
        let (p, ct) = proposal();
        let mut r = Review::new(&p, &ct);
        let mut ed = Editor::new(p.labels.map(|_| 0), LabelTable::default());
        ed.set_locked(3, true); // GGO locked: proposals may not write it
        let (_, recs) = r.accept_above(0.3, &mut ed);
        assert_eq!(recs.len(), 2);
        assert_eq!(ed.labels().voxels.iter().filter(|&&v| v == 3).count(), 0);
        assert_eq!(ed.labels().voxels.iter().filter(|&&v| v == 4).count(), 4);
        ed.set_locked(3, false);
        let mut r = Review::new(&p, &ct);
        let (changed, recs) = r.accept_above(0.5, &mut ed);
        assert!(changed.is_some());
        assert_eq!(recs.len(), 1, "only the 0.99 instance is above 0.5");
        assert_eq!(ed.labels().voxels.iter().filter(|&&v| v != 0).count(), 22);
        ed.undo();
        assert_eq!(
            ed.labels().voxels.iter().filter(|&&v| v != 0).count(),
            4,
            "one undo step"
        );
        ed.undo();
        assert!(ed.labels().voxels.iter().all(|&v| v == 0));
        assert_eq!(r.pending(), 1, "the 0.4 instance is still pending");
    }
}
