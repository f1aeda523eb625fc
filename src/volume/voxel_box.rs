//! [`VoxelBox`]: an inclusive box of voxel indices — the changed region of an edit, the
//! part of a texture to re-upload, the extent of a lesion — and copying a box's voxels
//! out of a [`Volume`].

use super::Volume;

/// An inclusive box of voxel indices (`min[a] <= max[a]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoxelBox {
    pub min: [usize; 3],
    pub max: [usize; 3],
}

impl VoxelBox {
    /// The box of a single voxel.
    pub fn point(p: [usize; 3]) -> Self {
        Self { min: p, max: p }
    }

    /// Grows the box to contain `p`.
    pub fn include(&mut self, p: [usize; 3]) {
        for (a, &pa) in p.iter().enumerate() {
            self.min[a] = self.min[a].min(pa);
            self.max[a] = self.max[a].max(pa);
        }
    }

    /// The smallest box containing both.
    pub fn union(self, other: VoxelBox) -> VoxelBox {
        let mut b = self;
        b.include(other.min);
        b.include(other.max);
        b
    }

    /// `Some(a ∪ b)`, or whichever is present.
    pub fn merge(a: Option<VoxelBox>, b: Option<VoxelBox>) -> Option<VoxelBox> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.union(b)),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// Voxels along each axis.
    pub fn size(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.max[a] - self.min[a] + 1)
    }

    pub fn contains(&self, p: [usize; 3]) -> bool {
        (0..3).all(|a| self.min[a] <= p[a] && p[a] <= self.max[a])
    }
}

impl<T: Copy> Volume<T> {
    /// The voxels inside `b`, x fastest, then y, then z (the layout of a texture
    /// sub-region upload). `b` must lie inside the volume.
    pub fn box_voxels(&self, b: VoxelBox) -> Vec<T> {
        let size = b.size();
        let mut data = Vec::with_capacity(size[0] * size[1] * size[2]);
        for k in b.min[2]..=b.max[2] {
            for j in b.min[1]..=b.max[1] {
                let row = self.geometry.index(b.min[0], j, k);
                data.extend_from_slice(&self.voxels[row..row + size[0]]);
            }
        }
        data
    }
}
