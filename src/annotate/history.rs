//! Undo/redo of label edits as compact deltas.
//!
//! Every edit is a transaction: [`History::begin`], any number of [`History::set`] (one
//! per changed voxel, e.g. every stamp of a brush drag), [`History::commit`]. Begin/commit
//! pairs nest: an inner pair joins the outermost transaction, so a tool that opens its own
//! transaction can run inside a larger one (the outermost name is kept).
//!
//! While a transaction is open the history keeps, per written voxel, its linear index and
//! the value it had before (8 bytes per write, packed into one `u64`; a transaction that
//! writes more than an eighth of the volume switches to a dense old-value buffer with a
//! touched bitset, 1.125 bytes per voxel, until it is committed). On commit those records
//! are sorted, voxels that ended where they started are dropped, and the rest is stored
//! as a step: a run-length encoded delta, never a copy of the volume.
//!
//! # Delta encoding
//! - *spans*: maximal runs of consecutive linear indices (i fastest), stored as LEB128
//!   varint pairs `(gap from the end of the previous span, length)`: a brush row costs
//!   about three bytes;
//! - *old* and *new* values of the concatenated span voxels, each run-length encoded as
//!   `(value byte, varint count)` (painting one label over background is one run each),
//!   or stored as raw bytes when that is smaller (speckled values).
//!
//! Undo writes the old stream back, redo the new one; both return the [`VoxelBox`] of the
//! step so that a viewer uploads only that region. The stored steps are capped in memory
//! ([`DEFAULT_MEMORY_CAP_BYTES`], configurable): beyond the cap the oldest steps are
//! dropped (the newest one is always kept, even if it alone exceeds the cap). A new
//! commit clears the redo stack.

use std::collections::VecDeque;

use crate::volume::{LabelVolume, VoxelBox};

/// The default memory cap of the stored steps: 512 MiB.
pub const DEFAULT_MEMORY_CAP_BYTES: usize = 512 * 1024 * 1024;

/// What the history knows about one stored step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo<'a> {
    pub name: &'a str,
    /// Voxels the step changes.
    pub voxels: usize,
    /// Bounding box of the changed voxels.
    pub bbox: VoxelBox,
    /// Heap and inline bytes the step occupies.
    pub bytes: usize,
}

/// One committed transaction.
#[derive(Debug, Clone)]
struct Step {
    name: String,
    /// Varint pairs (gap, len).
    spans: Vec<u8>,
    span_count: usize,
    /// RLE (value, varint count) of the values before / after.
    old: Vec<u8>,
    new: Vec<u8>,
    voxels: usize,
    bbox: VoxelBox,
}

impl Step {
    fn bytes(&self) -> usize {
        std::mem::size_of::<Step>()
            + self.name.capacity()
            + self.spans.capacity()
            + self.old.capacity()
            + self.new.capacity()
    }

    fn info(&self) -> StepInfo<'_> {
        StepInfo {
            name: &self.name,
            voxels: self.voxels,
            bbox: self.bbox,
            bytes: self.bytes(),
        }
    }

    /// Writes the old (`redo == false`) or new values back into `labels`.
    fn apply(&self, labels: &mut LabelVolume, redo: bool) {
        let mut spans = VarintReader {
            bytes: &self.spans,
            pos: 0,
        };
        let mut values = ValueReader::new(if redo { &self.new } else { &self.old });
        let vox = &mut labels.voxels;
        let mut end = 0usize;
        for _ in 0..self.span_count {
            let start = end + spans.next() as usize;
            let len = spans.next() as usize;
            end = start + len;
            values.fill(&mut vox[start..end]);
        }
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

struct VarintReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl VarintReader<'_> {
    fn next(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        while let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        v
    }
}

/// Value stream tags: run-length encoded or raw bytes, whichever is smaller.
const TAG_RLE: u8 = 0;
const TAG_RAW: u8 = 1;

/// Reads a value stream (tag byte, then RLE pairs or raw bytes).
struct ValueReader<'a> {
    inner: VarintReader<'a>,
    raw: bool,
    value: u8,
    left: usize,
}

impl<'a> ValueReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            inner: VarintReader { bytes, pos: 1 },
            raw: bytes.first() == Some(&TAG_RAW),
            value: 0,
            left: 0,
        }
    }

    /// Fills `dst` with the next `dst.len()` values.
    fn fill(&mut self, dst: &mut [u8]) {
        if self.raw {
            let p = self.inner.pos;
            dst.copy_from_slice(&self.inner.bytes[p..p + dst.len()]);
            self.inner.pos += dst.len();
            return;
        }
        let mut at = 0;
        while at < dst.len() {
            if self.left == 0 {
                self.value = self
                    .inner
                    .bytes
                    .get(self.inner.pos)
                    .copied()
                    .unwrap_or_default();
                self.inner.pos += 1;
                self.left = (self.inner.next() as usize).max(1);
            }
            let n = self.left.min(dst.len() - at);
            dst[at..at + n].fill(self.value);
            self.left -= n;
            at += n;
        }
    }
}

/// Writes a value stream: run-length encoded, unless the raw bytes turn out smaller.
struct ValueWriter {
    rle: Vec<u8>,
    cur: Option<(u8, u64)>,
    /// The raw values, dropped once RLE is clearly winning on a long stream.
    raw: Option<Vec<u8>>,
}

impl Default for ValueWriter {
    fn default() -> Self {
        Self {
            rle: vec![TAG_RLE],
            cur: None,
            raw: Some(vec![TAG_RAW]),
        }
    }
}

impl ValueWriter {
    fn push(&mut self, v: u8) {
        match &mut self.cur {
            Some((value, n)) if *value == v => *n += 1,
            _ => {
                self.flush();
                self.cur = Some((v, 1));
            }
        }
        if let Some(raw) = &mut self.raw {
            raw.push(v);
            if raw.len() > 1 << 20 && self.rle.len() * 4 < raw.len() {
                self.raw = None;
            }
        }
    }

    fn flush(&mut self) {
        if let Some((v, n)) = self.cur.take() {
            self.rle.push(v);
            push_varint(&mut self.rle, n);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.flush();
        let mut out = match self.raw {
            Some(raw) if raw.len() < self.rle.len() => raw,
            _ => self.rle,
        };
        out.shrink_to_fit();
        out
    }
}

/// Records of the open transaction: the value each written voxel had before it.
#[derive(Debug)]
enum Pending {
    /// `index << 8 | old value`, in write order (8 bytes per write).
    Sparse(Vec<u64>),
    /// For large transactions (more writes than an eighth of the voxels): the old value
    /// per voxel, meaningful where the `touched` bit is set (1.125 bytes per voxel of
    /// the volume, and already in index order at commit).
    Dense { old: Vec<u8>, touched: Vec<u64> },
}

/// Sparse records are converted to dense ones beyond this many and an eighth of the
/// volume.
const SPARSE_MIN: usize = 1 << 16;

impl Pending {
    fn bytes(&self) -> usize {
        match self {
            Pending::Sparse(r) => r.capacity() * 8,
            Pending::Dense { old, touched } => old.capacity() + touched.capacity() * 8,
        }
    }

    fn record(&mut self, index: usize, old: u8, voxel_count: usize) {
        match self {
            Pending::Sparse(r) => {
                r.push(((index as u64) << 8) | u64::from(old));
                if r.len() > SPARSE_MIN && r.len() > voxel_count / 8 {
                    let mut dense = Pending::Dense {
                        old: vec![0; voxel_count],
                        touched: vec![0; voxel_count.div_ceil(64)],
                    };
                    for &x in r.iter() {
                        dense.record((x >> 8) as usize, (x & 0xff) as u8, voxel_count);
                    }
                    *self = dense;
                }
            }
            Pending::Dense { old: o, touched } => {
                let (w, bit) = (index / 64, 1u64 << (index % 64));
                if touched[w] & bit == 0 {
                    touched[w] |= bit;
                    o[index] = old;
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Pending::Sparse(r) => r.is_empty(),
            Pending::Dense { touched, .. } => touched.iter().all(|&w| w == 0),
        }
    }

    /// (index, value before the transaction) of every written voxel, in index order.
    fn into_first_writes(self) -> Box<dyn Iterator<Item = (usize, u8)>> {
        match self {
            Pending::Sparse(mut r) => {
                // Stable: for a voxel written twice, its first record holds the original.
                r.sort_by_key(|x| x >> 8);
                let mut last = usize::MAX;
                Box::new(r.into_iter().filter_map(move |x| {
                    let idx = (x >> 8) as usize;
                    (idx != last).then(|| {
                        last = idx;
                        (idx, (x & 0xff) as u8)
                    })
                }))
            }
            Pending::Dense { old, touched } => Box::new(
                touched
                    .into_iter()
                    .enumerate()
                    .flat_map(|(w, word)| {
                        let mut bits = word;
                        std::iter::from_fn(move || {
                            (bits != 0).then(|| {
                                let t = bits.trailing_zeros() as usize;
                                bits &= bits - 1;
                                w * 64 + t
                            })
                        })
                    })
                    .map(move |idx| (idx, old[idx])),
            ),
        }
    }
}

/// The transaction being recorded.
#[derive(Debug)]
struct Open {
    name: String,
    depth: usize,
    pending: Pending,
}

/// The undo/redo store. It does not own the label volume: every call that reads or
/// writes voxels takes it, and it must be the same volume (same dims) throughout.
#[derive(Debug)]
pub struct History {
    undo: VecDeque<Step>,
    redo: Vec<Step>,
    open: Option<Open>,
    cap_bytes: usize,
    /// Bytes of the steps in `undo` and `redo`.
    stored_bytes: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history with the default memory cap.
    pub fn new() -> Self {
        Self::with_memory_cap(DEFAULT_MEMORY_CAP_BYTES)
    }

    /// An empty history whose stored steps stay below `cap_bytes` (the newest step is
    /// always kept).
    pub fn with_memory_cap(cap_bytes: usize) -> Self {
        Self {
            undo: VecDeque::new(),
            redo: Vec::new(),
            open: None,
            cap_bytes,
            stored_bytes: 0,
        }
    }

    pub fn memory_cap(&self) -> usize {
        self.cap_bytes
    }

    /// Changes the cap, dropping the oldest steps if they no longer fit.
    pub fn set_memory_cap(&mut self, cap_bytes: usize) {
        self.cap_bytes = cap_bytes;
        self.enforce_cap();
    }

    /// Bytes used by the stored steps plus the records of an open transaction.
    pub fn memory_bytes(&self) -> usize {
        self.stored_bytes
            + self
                .open
                .as_ref()
                .map_or(0, |o| o.pending.bytes() + o.name.capacity())
    }

    /// Opens a transaction named `name`, or joins the open one (nesting).
    pub fn begin(&mut self, name: impl Into<String>) {
        match &mut self.open {
            Some(o) => o.depth += 1,
            None => {
                self.open = Some(Open {
                    name: name.into(),
                    depth: 1,
                    pending: Pending::Sparse(Vec::new()),
                })
            }
        }
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Writes `value` at linear `index` and records the old value. Opens a transaction
    /// named "edit" when none is open. Returns whether the voxel changed. No lock or
    /// overwrite rule is checked here: that is the [`super::Editor`]'s job.
    pub fn set(&mut self, labels: &mut LabelVolume, index: usize, value: u8) -> bool {
        let old = labels.voxels[index];
        if old == value {
            return false;
        }
        if self.open.is_none() {
            self.begin("edit");
        }
        if let Some(o) = &mut self.open {
            o.pending.record(index, old, labels.voxels.len());
        }
        labels.voxels[index] = value;
        true
    }

    /// Closes the innermost `begin`. When that closes the transaction, the changes are
    /// stored as one step (nothing is stored when no voxel ends up changed), the redo
    /// stack is cleared, and the bounding box of the changed voxels is returned. `None`
    /// for an inner commit, an empty transaction, or no open transaction.
    pub fn commit(&mut self, labels: &LabelVolume) -> Option<VoxelBox> {
        let o = self.open.as_mut()?;
        o.depth -= 1;
        if o.depth > 0 {
            return None;
        }
        let o = self.open.take()?;
        let step = encode(o, labels)?;
        self.stored_bytes -= self.redo.iter().map(Step::bytes).sum::<usize>();
        self.redo.clear();
        self.stored_bytes += step.bytes();
        let bbox = step.bbox;
        self.undo.push_back(step);
        self.enforce_cap();
        Some(bbox)
    }

    /// Abandons the open transaction (all nesting levels), restoring every voxel it
    /// wrote. Returns the box of the restored voxels.
    pub fn cancel(&mut self, labels: &mut LabelVolume) -> Option<VoxelBox> {
        let o = self.open.take()?;
        let mut bbox: Option<VoxelBox> = None;
        let dims = labels.geometry.dims;
        for (idx, old) in o.pending.into_first_writes() {
            labels.voxels[idx] = old;
            let p = unravel(idx, dims);
            bbox = VoxelBox::merge(bbox, Some(VoxelBox::point(p)));
        }
        bbox
    }

    /// Undoes the newest step (committing an open transaction first) and returns the box
    /// to re-upload.
    pub fn undo(&mut self, labels: &mut LabelVolume) -> Option<VoxelBox> {
        self.force_commit(labels);
        let step = self.undo.pop_back()?;
        step.apply(labels, false);
        let bbox = step.bbox;
        self.redo.push(step);
        Some(bbox)
    }

    /// Redoes the newest undone step.
    pub fn redo(&mut self, labels: &mut LabelVolume) -> Option<VoxelBox> {
        self.force_commit(labels);
        let step = self.redo.pop()?;
        step.apply(labels, true);
        let bbox = step.bbox;
        self.undo.push_back(step);
        Some(bbox)
    }

    fn force_commit(&mut self, labels: &LabelVolume) {
        if let Some(o) = &mut self.open {
            o.depth = 1;
            self.commit(labels);
        }
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Stored undo steps, newest first.
    pub fn undo_steps(&self) -> impl Iterator<Item = StepInfo<'_>> {
        self.undo.iter().rev().map(Step::info)
    }

    /// Stored redo steps, next to redo first.
    pub fn redo_steps(&self) -> impl Iterator<Item = StepInfo<'_>> {
        self.redo.iter().rev().map(Step::info)
    }

    /// Name of the step [`Self::undo`] would undo.
    pub fn undo_name(&self) -> Option<&str> {
        self.undo.back().map(|s| s.name.as_str())
    }

    /// Name of the step [`Self::redo`] would redo.
    pub fn redo_name(&self) -> Option<&str> {
        self.redo.last().map(|s| s.name.as_str())
    }

    /// Forgets every step (an open transaction stays open).
    pub fn clear(&mut self) {
        self.undo.clear();
        self.redo.clear();
        self.stored_bytes = 0;
    }

    fn enforce_cap(&mut self) {
        while self.stored_bytes > self.cap_bytes && self.undo.len() + self.redo.len() > 1 {
            let dropped = if let Some(s) = self.undo.pop_front() {
                s
            } else {
                self.redo.remove(0)
            };
            self.stored_bytes -= dropped.bytes();
        }
    }
}

/// (i, j, k) of a linear index.
pub(crate) fn unravel(idx: usize, dims: [usize; 3]) -> [usize; 3] {
    let i = idx % dims[0];
    let r = idx / dims[0];
    [i, r % dims[1], r / dims[1]]
}

fn encode(o: Open, labels: &LabelVolume) -> Option<Step> {
    if o.pending.is_empty() {
        return None;
    }
    let dims = labels.geometry.dims;
    let mut spans = Vec::new();
    let mut span_count = 0usize;
    let (mut old_w, mut new_w) = (ValueWriter::default(), ValueWriter::default());
    let mut voxels = 0usize;
    let mut bbox: Option<VoxelBox> = None;
    // Current span [start, start + len) and the end of the previous one.
    let mut cur: Option<(usize, usize)> = None;
    let mut prev_end = 0usize;
    let mut flush = |span: (usize, usize), prev_end: &mut usize, spans: &mut Vec<u8>| {
        push_varint(spans, (span.0 - *prev_end) as u64);
        push_varint(spans, span.1 as u64);
        *prev_end = span.0 + span.1;
        let b = span_box(span.0, span.0 + span.1 - 1, dims);
        bbox = VoxelBox::merge(bbox, Some(b));
    };
    for (idx, old) in o.pending.into_first_writes() {
        let new = labels.voxels[idx];
        if old == new {
            continue;
        }
        voxels += 1;
        old_w.push(old);
        new_w.push(new);
        cur = match cur {
            Some((s, l)) if s + l == idx => Some((s, l + 1)),
            Some(span) => {
                flush(span, &mut prev_end, &mut spans);
                span_count += 1;
                Some((idx, 1))
            }
            None => Some((idx, 1)),
        };
    }
    let span = cur?;
    flush(span, &mut prev_end, &mut spans);
    span_count += 1;
    spans.shrink_to_fit();
    let mut name = o.name;
    name.shrink_to_fit();
    Some(Step {
        name,
        spans,
        span_count,
        old: old_w.finish(),
        new: new_w.finish(),
        voxels,
        bbox: bbox?,
    })
}

/// Bounding box of the linear index range `first..=last`.
fn span_box(first: usize, last: usize, dims: [usize; 3]) -> VoxelBox {
    let a = unravel(first, dims);
    let b = unravel(last, dims);
    if a[1] == b[1] && a[2] == b[2] {
        VoxelBox { min: a, max: b }
    } else if a[2] == b[2] {
        VoxelBox {
            min: [0, a[1], a[2]],
            max: [dims[0] - 1, b[1], b[2]],
        }
    } else {
        VoxelBox {
            min: [0, 0, a[2]],
            max: [dims[0] - 1, dims[1] - 1, b[2]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Volume};

    fn vol() -> LabelVolume {
        Volume::filled(Geometry::axis_aligned([8, 6, 4], [1.0; 3], [0.0; 3]), 0).unwrap()
    }

    #[test]
    fn varint_round_trip() {
        let mut out = Vec::new();
        let values = [0u64, 1, 127, 128, 300, 1 << 40];
        for v in values {
            push_varint(&mut out, v);
        }
        let mut r = VarintReader {
            bytes: &out,
            pos: 0,
        };
        for v in values {
            assert_eq!(r.next(), v);
        }
    }

    #[test]
    fn transaction_undo_redo() {
        let mut v = vol();
        let mut h = History::new();
        h.begin("a");
        for i in 2..6 {
            let idx = v.geometry.index(i, 1, 2);
            h.set(&mut v, idx, 3);
        }
        let idx = v.geometry.index(7, 5, 3);
        h.set(&mut v, idx, 1);
        // Written twice: the original value must come back.
        let idx = v.geometry.index(2, 1, 2);
        h.set(&mut v, idx, 4);
        let after = v.clone();
        let b = h.commit(&v).unwrap();
        assert_eq!(
            b,
            VoxelBox {
                min: [2, 1, 2],
                max: [7, 5, 3]
            }
        );
        assert_eq!(h.undo_steps().next().unwrap().voxels, 5);
        assert_eq!(h.undo(&mut v), Some(b));
        assert_eq!(v, vol());
        assert_eq!(h.redo_name(), Some("a"));
        h.redo(&mut v);
        assert_eq!(v, after);
        assert!(h.memory_bytes() < 200);
    }

    #[test]
    fn empty_and_nested_transactions() {
        let mut v = vol();
        let mut h = History::new();
        h.begin("nothing");
        assert_eq!(h.commit(&v), None);
        h.begin("back and forth");
        h.set(&mut v, 5, 2);
        h.set(&mut v, 5, 0);
        assert_eq!(h.commit(&v), None);
        assert!(!h.can_undo());
        h.begin("outer");
        h.begin("inner");
        h.set(&mut v, 0, 1);
        assert_eq!(h.commit(&v), None);
        h.set(&mut v, 1, 1);
        assert!(h.commit(&v).is_some());
        assert_eq!(h.undo_name(), Some("outer"));
        assert_eq!(h.undo_steps().count(), 1);
    }

    #[test]
    fn cap_drops_oldest_and_new_edit_clears_redo() {
        let mut v = vol();
        let mut h = History::with_memory_cap(0);
        for n in 0..3 {
            h.begin(format!("s{n}"));
            h.set(&mut v, n, 1);
            h.commit(&v);
        }
        assert_eq!(h.undo_steps().count(), 1);
        assert_eq!(h.undo_name(), Some("s2"));
        h.set_memory_cap(DEFAULT_MEMORY_CAP_BYTES);
        h.undo(&mut v);
        assert!(h.can_redo());
        h.begin("x");
        h.set(&mut v, 20, 2);
        h.commit(&v);
        assert!(!h.can_redo());
    }

    #[test]
    fn large_transactions_switch_to_dense_records() {
        let g = Geometry::axis_aligned([100, 100, 20], [1.0; 3], [0.0; 3]);
        let orig = Volume::new(g, (0..200_000).map(|i| (i % 7) as u8).collect()).unwrap();
        let mut v = orig.clone();
        let mut h = History::new();
        for cancel in [true, false] {
            h.begin("big");
            for idx in (0..200_000).step_by(2) {
                h.set(&mut v, idx, 9);
            }
            // Rewritten after the switch: the first old value must be kept.
            for idx in (0..1000).step_by(2) {
                h.set(&mut v, idx, 8);
            }
            assert!(matches!(
                h.open.as_ref().map(|o| &o.pending),
                Some(Pending::Dense { .. })
            ));
            if cancel {
                h.cancel(&mut v);
                assert_eq!(v, orig);
            }
        }
        let after = v.clone();
        h.commit(&v).unwrap();
        // 100 000 isolated voxels: 2 bytes of span each, speckled old values stored raw
        // (1 byte each, RLE would take 2), the new values one or two runs.
        let bytes = h.memory_bytes();
        assert!(bytes < 3 * 100_000 + 1000, "{bytes}");
        h.undo(&mut v);
        assert_eq!(v, orig);
        h.redo(&mut v);
        assert_eq!(v, after);
    }

    #[test]
    fn cancel_restores() {
        let mut v = vol();
        let mut h = History::new();
        h.begin("c");
        h.set(&mut v, 3, 1);
        h.set(&mut v, 3, 2);
        h.set(&mut v, 40, 2);
        assert!(h.cancel(&mut v).is_some());
        assert_eq!(v, vol());
        assert!(!h.in_transaction());
    }
}
