//! The [`Editor`]: a label map, its label table and its history, with every write routed
//! through the history and checked against the locks and the overwrite policy. The
//! editor also keeps the boxes of changed voxels for the two readers of changes (the
//! display and the crash journal), so no caller merges boxes by hand.

use super::LabelTable;
use super::history::History;
use crate::volume::LabelVolume;
use crate::volume::VoxelBox;

/// Which existing voxels painting (a non-zero value) may overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverwritePolicy {
    /// Any voxel that is not locked.
    #[default]
    Everything,
    /// Only background (0) voxels.
    OnlyBackground,
    /// Only voxels of this label (and, for the eraser, only this label is erased).
    OnlyLabel(u8),
}

/// Owns a label map with its table and history. All edits go through
/// [`Editor::set_index`], which enforces:
/// - a voxel whose label is locked is never changed, and a locked label never gains
///   voxels either (painting *with* a locked label does nothing): a locked label's
///   voxels are exactly preserved;
/// - the [`OverwritePolicy`] for painting (non-zero values); erasing (writing 0) ignores
///   `OnlyBackground` and, under `OnlyLabel(l)`, erases only `l`.
#[derive(Debug)]
pub struct Editor {
    labels: LabelVolume,
    table: LabelTable,
    history: History,
    pub policy: OverwritePolicy,
    locked: [bool; 256],
    changes: Changes,
}

/// Changed voxels not yet taken by their readers.
#[derive(Debug, Default, Clone, Copy)]
struct Changes {
    /// Every change, completed or in an open transaction (for the display).
    display: Option<VoxelBox>,
    /// Changes of completed steps: commits, cancels, undo and redo (for the journal).
    completed: Option<VoxelBox>,
}

fn locked_mask(table: &LabelTable) -> [bool; 256] {
    let mut m = [false; 256];
    for l in &table.labels {
        if l.locked {
            m[l.value as usize] = true;
        }
    }
    m
}

impl Editor {
    pub fn new(labels: LabelVolume, table: LabelTable) -> Self {
        Self::with_history(labels, table, History::new())
    }

    pub fn with_history(labels: LabelVolume, table: LabelTable, history: History) -> Self {
        let locked = locked_mask(&table);
        Self {
            labels,
            table,
            history,
            policy: OverwritePolicy::Everything,
            locked,
            changes: Changes::default(),
        }
    }

    pub fn labels(&self) -> &LabelVolume {
        &self.labels
    }

    pub fn table(&self) -> &LabelTable {
        &self.table
    }

    /// Changes the table (names, colours, visibility, locks) through a closure, so that
    /// the lock cache stays in step. Table changes are not part of the undo history.
    pub fn update_table<R>(&mut self, f: impl FnOnce(&mut LabelTable) -> R) -> R {
        let r = f(&mut self.table);
        self.locked = locked_mask(&self.table);
        r
    }

    /// Locks or unlocks a label listed in the table; returns false if it is not listed.
    pub fn set_locked(&mut self, value: u8, locked: bool) -> bool {
        self.update_table(|t| match t.labels.iter_mut().find(|l| l.value == value) {
            Some(l) => {
                l.locked = locked;
                true
            }
            None => false,
        })
    }

    pub fn is_locked(&self, value: u8) -> bool {
        self.locked[value as usize]
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// For the memory cap and clearing; voxels cannot be written through it.
    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    pub fn into_parts(self) -> (LabelVolume, LabelTable, History) {
        (self.labels, self.table, self.history)
    }

    /// Whether a voxel holding `old` may become `new` (false when nothing would change).
    #[inline]
    pub fn can_write(&self, old: u8, new: u8) -> bool {
        if old == new || self.locked[old as usize] || self.locked[new as usize] {
            return false;
        }
        match (self.policy, new) {
            (OverwritePolicy::OnlyLabel(l), _) => old == l,
            (_, 0) => true,
            (OverwritePolicy::Everything, _) => true,
            (OverwritePolicy::OnlyBackground, _) => old == 0,
        }
    }

    /// Writes `value` at linear index `idx` if the rules allow it; returns whether the
    /// voxel changed. Opens a transaction named "edit" when none is open.
    #[inline]
    pub fn set_index(&mut self, idx: usize, value: u8) -> bool {
        let old = self.labels.voxels[idx];
        if !self.can_write(old, value) {
            return false;
        }
        self.history.set(&mut self.labels, idx, value)
    }

    /// [`Self::set_index`] at voxel (i, j, k); false outside the volume.
    pub fn set(&mut self, voxel: [usize; 3], value: u8) -> bool {
        let d = self.labels.geometry.dims;
        if (0..3).any(|a| voxel[a] >= d[a]) {
            return false;
        }
        let idx = self.labels.geometry.index(voxel[0], voxel[1], voxel[2]);
        self.set_index(idx, value)
    }

    /// Writes every voxel where `map` differs from the current labels (e.g. an accepted
    /// AI proposal), under the locks and policy, as one undo step named `name`. `map`
    /// must have the same dims; returns the dirty box.
    pub fn apply_map(&mut self, name: &str, map: &LabelVolume) -> Option<VoxelBox> {
        if map.geometry.dims != self.labels.geometry.dims {
            return None;
        }
        self.begin(name);
        for (idx, &v) in map.voxels.iter().enumerate() {
            if self.labels.voxels[idx] != v {
                self.set_index(idx, v);
            }
        }
        self.commit()
    }

    /// The box of every voxel changed since the last call (completed steps and writes of
    /// an open transaction alike): what the display must refresh.
    pub fn take_display_changes(&mut self) -> Option<VoxelBox> {
        self.changes.display.take()
    }

    /// The box of every voxel changed by steps completed since the last call (commits,
    /// cancels, undo, redo, [`Self::apply_map`]): what the edit journal must record.
    pub fn take_completed_changes(&mut self) -> Option<VoxelBox> {
        self.changes.completed.take()
    }

    /// Tells the editor that writes of the open transaction changed the voxels in `b`
    /// (a brush dab), so the display can show them before the transaction completes.
    /// The completed step's box covers them again for the journal.
    pub fn note_open_changes(&mut self, b: Option<VoxelBox>) {
        self.changes.display = VoxelBox::merge(self.changes.display, b);
    }

    /// Records a completed step's box for both readers and hands it back.
    fn completed(&mut self, b: Option<VoxelBox>) -> Option<VoxelBox> {
        self.changes.display = VoxelBox::merge(self.changes.display, b);
        self.changes.completed = VoxelBox::merge(self.changes.completed, b);
        b
    }

    /// Opens (or joins, when one is open) a transaction.
    pub fn begin(&mut self, name: impl Into<String>) {
        self.history.begin(name);
    }

    /// Closes the innermost [`Self::begin`]; see [`History::commit`].
    pub fn commit(&mut self) -> Option<VoxelBox> {
        let b = self.history.commit(&self.labels);
        self.completed(b)
    }

    /// Abandons the open transaction and restores what it wrote.
    pub fn cancel(&mut self) -> Option<VoxelBox> {
        let b = self.history.cancel(&mut self.labels);
        self.completed(b)
    }

    pub fn in_transaction(&self) -> bool {
        self.history.in_transaction()
    }

    pub fn undo(&mut self) -> Option<VoxelBox> {
        let b = self.history.undo(&mut self.labels);
        self.completed(b)
    }

    pub fn redo(&mut self) -> Option<VoxelBox> {
        let b = self.history.redo(&mut self.labels);
        self.completed(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::{GGO, LEFT_LUNG};
    use crate::volume::{Geometry, Volume};

    #[test]
    fn locks_and_policy() {
        let g = Geometry::axis_aligned([4, 1, 1], [1.0; 3], [0.0; 3]);
        let v = Volume::new(g, vec![0, LEFT_LUNG, GGO, 0]).unwrap();
        let mut ed = Editor::new(v, LabelTable::default());
        ed.set_locked(LEFT_LUNG, true);
        ed.begin("paint");
        assert!(!ed.set_index(1, GGO));
        assert!(!ed.set_index(0, LEFT_LUNG));
        ed.policy = OverwritePolicy::OnlyBackground;
        assert!(!ed.set_index(2, 4));
        assert!(ed.set_index(3, 4));
        ed.policy = OverwritePolicy::OnlyLabel(GGO);
        assert!(!ed.set_index(0, 5));
        assert!(ed.set_index(2, 5));
        assert!(!ed.set_index(3, 0));
        ed.commit();
        assert_eq!(ed.labels().voxels, vec![0, LEFT_LUNG, 5, 4]);
        ed.undo();
        assert_eq!(ed.labels().voxels, vec![0, LEFT_LUNG, GGO, 0]);
        // A whole proposed map: the locked voxel keeps its label.
        ed.policy = OverwritePolicy::Everything;
        let mut proposal = ed.labels().clone();
        proposal.voxels = vec![2, 2, 2, 2];
        let b = ed.apply_map("accept proposal", &proposal).unwrap();
        assert_eq!((b.min, b.max), ([0, 0, 0], [3, 0, 0]));
        assert_eq!(ed.labels().voxels, vec![2, LEFT_LUNG, 2, 2]);
        assert_eq!(ed.history().undo_name(), Some("accept proposal"));
    }

    /// The display sees every change at once; the journal only completed steps, and each
    /// reader takes a box once.
    #[test]
    fn changes_reach_display_and_journal() {
        let g = Geometry::axis_aligned([4, 4, 1], [1.0; 3], [0.0; 3]);
        let mut ed = Editor::new(Volume::filled(g, 0).unwrap(), LabelTable::default());
        assert_eq!(ed.take_display_changes(), None);
        ed.begin("stroke");
        ed.set([1, 1, 0], GGO);
        ed.note_open_changes(Some(VoxelBox::point([1, 1, 0])));
        assert_eq!(ed.take_display_changes(), Some(VoxelBox::point([1, 1, 0])));
        assert_eq!(ed.take_completed_changes(), None, "the step is still open");
        ed.set([3, 2, 0], GGO);
        ed.commit();
        let whole = VoxelBox {
            min: [1, 1, 0],
            max: [3, 2, 0],
        };
        assert_eq!(ed.take_completed_changes(), Some(whole));
        assert_eq!(ed.take_completed_changes(), None);
        assert_eq!(ed.take_display_changes(), Some(whole));
        ed.undo();
        ed.redo();
        assert_eq!(ed.take_completed_changes(), Some(whole));
        assert_eq!(ed.take_display_changes(), Some(whole));
        // A write outside the rules changes nothing and reports nothing.
        ed.set_locked(GGO, true);
        ed.begin("locked");
        assert!(!ed.set([1, 1, 0], 0));
        assert_eq!(ed.commit(), None);
        assert_eq!(ed.take_completed_changes(), None);
    }
}
