//! The edit journal: every completed edit of a study's label map is appended to a file
//! and synced before the next one, so a killed pulmo (power cut, `kill -9`) loses nothing
//! up to the last completed stroke.
//!
//! File layout (little endian):
//! ```text
//! header  "PULMOJ1\n" | dims u32 x3 | key length u16 | key bytes | crc32 u32 (of all before)
//! record  payload length u32 | crc32 of payload u32 | payload
//! payload kind u8 = 1 delta | 2 full map | 3 saved marker
//!         delta / full map: runs of (start u32, length u32, value u8) in index order
//! ```
//! The first record is the full map the journal starts from. Recovery replays records in
//! order and stops at the first torn or corrupt one (a write the kill interrupted).
//! A "saved" marker says the map at that point was saved to a file; a journal with no
//! delta after its last marker has nothing to restore.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::volume::LabelVolume;
use crate::volume::VoxelBox;

const MAGIC: &[u8; 8] = b"PULMOJ1\n";
const KIND_DELTA: u8 = 1;
const KIND_FULL: u8 = 2;
const KIND_SAVED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: {message}")]
    Format { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The journal file of a study: `dir/<fnv64 of key>.journal`.
pub fn journal_path(dir: &Path, key: &str) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    dir.join(format!("{h:016x}.journal"))
}

/// The default folder: `$XDG_STATE_HOME/pulmo/journal`, else `~/.local/state/pulmo/journal`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("pulmo").join("journal"))
}

fn runs_of(out: &mut Vec<u8>, values: impl Iterator<Item = (usize, u8)>) -> u32 {
    let mut count = 0u32;
    let mut cur: Option<(usize, usize, u8)> = None; // start, len, value
    let mut flush = |out: &mut Vec<u8>, r: (usize, usize, u8)| {
        out.extend_from_slice(&(r.0 as u32).to_le_bytes());
        out.extend_from_slice(&(r.1 as u32).to_le_bytes());
        out.push(r.2);
        count += 1;
    };
    for (i, v) in values {
        cur = match cur {
            Some((s, n, cv)) if s + n == i && cv == v => Some((s, n + 1, cv)),
            Some(r) => {
                flush(out, r);
                Some((i, 1, v))
            }
            None => Some((i, 1, v)),
        };
    }
    if let Some(r) = cur {
        flush(out, r);
    }
    count
}

/// An open journal being appended to.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// The label map as the journal has it (to find what an edit changed).
    shadow: Vec<u8>,
    dims: [usize; 3],
    deltas_since_save: usize,
}

/// What a journal on disk holds.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub key: String,
    pub voxels: Vec<u8>,
    pub dims: [usize; 3],
    /// Delta records replayed in all, and after the last saved marker.
    pub deltas: usize,
    pub deltas_since_save: usize,
    /// Records cut short or corrupt at the end (a write interrupted by the kill).
    pub torn_tail: bool,
    pub modified: Option<SystemTime>,
}

impl Journal {
    /// Starts a new journal for `key` at `path` (replacing any), from `labels`.
    pub fn create(path: &Path, key: &str, labels: &LabelVolume) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let dims = labels.geometry.dims;
        let mut header = MAGIC.to_vec();
        for d in dims {
            header.extend_from_slice(&(d as u32).to_le_bytes());
        }
        let k = key.as_bytes();
        header.extend_from_slice(&(k.len().min(u16::MAX as usize) as u16).to_le_bytes());
        header.extend_from_slice(&k[..k.len().min(u16::MAX as usize)]);
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        // Written to a temporary file and renamed, so an old journal is replaced whole.
        let tmp = path.with_extension("journal.tmp");
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&header).map_err(io_err(&tmp))?;
        let mut j = Journal {
            path: path.to_path_buf(),
            file,
            shadow: labels.voxels.clone(),
            dims,
            deltas_since_save: 0,
        };
        let mut payload = vec![KIND_FULL];
        runs_of(&mut payload, labels.voxels.iter().copied().enumerate());
        j.append(&payload)?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        Ok(j)
    }

    /// Continues an existing journal whose replayed map is `recovered` (after a restore).
    pub fn resume(path: &Path, recovered: &Recovered) -> Result<Journal, JournalError> {
        // Cut a torn tail first so new records follow the last good one.
        let good = good_length(path)?;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        file.set_len(good).map_err(io_err(path))?;
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        file.flush().map_err(io_err(path))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            shadow: recovered.voxels.clone(),
            dims: recovered.dims,
            deltas_since_save: recovered.deltas_since_save,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Completed edits since the last save.
    pub fn unsaved_edits(&self) -> usize {
        self.deltas_since_save
    }

    fn append(&mut self, payload: &[u8]) -> Result<(), JournalError> {
        let mut rec = Vec::with_capacity(payload.len() + 8);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        let path = self.path.clone();
        self.file.write_all(&rec).map_err(io_err(&path))?;
        self.file.sync_data().map_err(io_err(&path))
    }

    /// Appends what changed in `bbox` since the last record (nothing when nothing did).
    /// Durable (synced) when it returns.
    pub fn record(&mut self, labels: &LabelVolume, bbox: VoxelBox) -> Result<usize, JournalError> {
        if labels.geometry.dims != self.dims {
            return Err(JournalError::Format {
                path: self.path.clone(),
                message: format!(
                    "label map dims {:?} differ from the journal's {:?}",
                    labels.geometry.dims, self.dims
                ),
            });
        }
        let [nx, ny, _] = self.dims;
        let mut changed = Vec::new();
        for k in bbox.min[2]..=bbox.max[2] {
            for j in bbox.min[1]..=bbox.max[1] {
                let row = nx * (j + ny * k);
                for i in bbox.min[0]..=bbox.max[0] {
                    let idx = row + i;
                    let v = labels.voxels[idx];
                    if self.shadow[idx] != v {
                        changed.push((idx, v));
                        self.shadow[idx] = v;
                    }
                }
            }
        }
        if changed.is_empty() {
            return Ok(0);
        }
        let mut payload = vec![KIND_DELTA];
        runs_of(&mut payload, changed.iter().copied());
        self.append(&payload)?;
        self.deltas_since_save += 1;
        Ok(changed.len())
    }

    /// Marks the current map as saved to a file.
    pub fn mark_saved(&mut self) -> Result<(), JournalError> {
        self.append(&[KIND_SAVED])?;
        self.deltas_since_save = 0;
        Ok(())
    }

    /// Deletes the journal (the user discarded the edits, or closed cleanly).
    pub fn remove(self) -> Result<(), JournalError> {
        let path = self.path.clone();
        drop(self.file);
        std::fs::remove_file(&path).map_err(io_err(&path))
    }
}

fn read_header(r: &mut impl Read, path: &Path) -> Result<([usize; 3], String, u64), JournalError> {
    let bad = |m: &str| JournalError::Format {
        path: path.to_path_buf(),
        message: m.to_string(),
    };
    let mut head = [0u8; 22];
    r.read_exact(&mut head)
        .map_err(|_| bad("too short for a header"))?;
    if &head[..8] != MAGIC {
        return Err(bad("not a pulmo journal (bad magic)"));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let dims = [
        u32_at(&head, 8) as usize,
        u32_at(&head, 12) as usize,
        u32_at(&head, 16) as usize,
    ];
    let klen = u16::from_le_bytes([head[20], head[21]]) as usize;
    let mut key = vec![0u8; klen];
    r.read_exact(&mut key)
        .map_err(|_| bad("header cut short"))?;
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc)
        .map_err(|_| bad("header cut short"))?;
    let mut all = head.to_vec();
    all.extend_from_slice(&key);
    if crc32fast::hash(&all) != u32::from_le_bytes(crc) {
        return Err(bad("header checksum mismatch"));
    }
    Ok((
        dims,
        String::from_utf8_lossy(&key).into_owned(),
        (22 + klen + 4) as u64,
    ))
}

/// Reads the next intact record's payload; `None` at the end or at a torn record.
fn next_record(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h).ok()?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > (1 << 31) {
        return None;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).ok()?;
    (crc32fast::hash(&payload) == crc).then_some(payload)
}

/// Byte length of the header plus every intact record.
fn good_length(path: &Path) -> Result<u64, JournalError> {
    let mut r = BufReader::new(File::open(path).map_err(io_err(path))?);
    let (_, _, mut len) = read_header(&mut r, path)?;
    while let Some(p) = next_record(&mut r) {
        len += 8 + p.len() as u64;
    }
    Ok(len)
}

fn apply_runs(payload: &[u8], voxels: &mut [u8]) -> bool {
    let mut o = 1;
    while o + 9 <= payload.len() {
        let s = u32::from_le_bytes(payload[o..o + 4].try_into().expect("4 bytes")) as usize;
        let n = u32::from_le_bytes(payload[o + 4..o + 8].try_into().expect("4 bytes")) as usize;
        let v = payload[o + 8];
        if s.checked_add(n).is_none_or(|e| e > voxels.len()) {
            return false;
        }
        voxels[s..s + n].fill(v);
        o += 9;
    }
    o == payload.len()
}

/// Replays the journal at `path`.
pub fn recover(path: &Path) -> Result<Recovered, JournalError> {
    let file = File::open(path).map_err(io_err(path))?;
    let modified = file.metadata().ok().and_then(|m| m.modified().ok());
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::new(file);
    let (dims, key, mut consumed) = read_header(&mut r, path)?;
    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|v| v.checked_mul(dims[2]))
        .filter(|&n| n <= 1 << 33)
        .ok_or_else(|| JournalError::Format {
            path: path.to_path_buf(),
            message: format!("implausible dims {dims:?}"),
        })?;
    let mut voxels = vec![0u8; n];
    let (mut deltas, mut since_save, mut have_full) = (0, 0, false);
    let mut torn_tail = false;
    while let Some(p) = next_record(&mut r) {
        let ok = match p.first() {
            Some(&KIND_FULL) => {
                have_full = true;
                apply_runs(&p, &mut voxels)
            }
            Some(&KIND_DELTA) if have_full => {
                deltas += 1;
                since_save += 1;
                apply_runs(&p, &mut voxels)
            }
            Some(&KIND_SAVED) => {
                since_save = 0;
                true
            }
            _ => false,
        };
        if !ok {
            torn_tail = true;
            break;
        }
        consumed += 8 + p.len() as u64;
    }
    if consumed < total {
        torn_tail = true;
    }
    if !have_full {
        return Err(JournalError::Format {
            path: path.to_path_buf(),
            message: "no starting label map (journal cut short at its start)".into(),
        });
    }
    Ok(Recovered {
        key,
        voxels,
        dims,
        deltas,
        deltas_since_save: since_save,
        torn_tail,
        modified,
    })
}

/// The `pulmo journal-selftest` edit sequence (for the kill -9 test): step `n` paints a
/// 5x5x3 box of value `n % 6 + 1` at a position that walks through the volume.
#[doc(hidden)]
pub fn selftest_step(labels: &mut LabelVolume, n: usize) -> VoxelBox {
    let [nx, ny, nz] = labels.geometry.dims;
    let (x, y, z) = ((n * 7) % (nx - 5), (n * 13) % (ny - 5), (n * 3) % (nz - 3));
    for k in z..z + 3 {
        for j in y..y + 5 {
            for i in x..x + 5 {
                labels.set(i, j, k, (n % 6 + 1) as u8);
            }
        }
    }
    VoxelBox {
        min: [x, y, z],
        max: [x + 4, y + 4, z + 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Volume};

    fn labels() -> LabelVolume {
        Volume::filled(Geometry::axis_aligned([8, 6, 4], [1.0; 3], [0.0; 3]), 0u8).unwrap()
    }

    #[test]
    fn records_replay_exactly_and_saved_markers_count() {
        let dir = tempfile::tempdir().unwrap();
        let p = journal_path(dir.path(), "study A");
        let mut l = labels();
        l.set(1, 1, 1, 5);
        let mut j = Journal::create(&p, "study A", &l).unwrap();
        l.set(2, 2, 2, 3);
        l.set(3, 2, 2, 3);
        assert_eq!(
            j.record(
                &l,
                VoxelBox {
                    min: [0; 3],
                    max: [7, 5, 3]
                }
            )
            .unwrap(),
            2
        );
        assert_eq!(
            j.record(
                &l,
                VoxelBox {
                    min: [0; 3],
                    max: [7, 5, 3]
                }
            )
            .unwrap(),
            0,
            "nothing new"
        );
        j.mark_saved().unwrap();
        l.set(2, 2, 2, 0);
        j.record(&l, VoxelBox::point([2, 2, 2])).unwrap();
        let r = recover(&p).unwrap();
        assert_eq!(r.key, "study A");
        assert_eq!(r.voxels, l.voxels);
        assert_eq!((r.deltas, r.deltas_since_save, r.torn_tail), (2, 1, false));
        assert_eq!(j.unsaved_edits(), 1);
    }

    #[test]
    fn a_torn_tail_is_cut_and_resume_continues() {
        let dir = tempfile::tempdir().unwrap();
        let p = journal_path(dir.path(), "k");
        let mut l = labels();
        let mut j = Journal::create(&p, "k", &l).unwrap();
        l.set(0, 0, 0, 1);
        j.record(&l, VoxelBox::point([0, 0, 0])).unwrap();
        let good = l.voxels.clone();
        l.set(1, 0, 0, 2);
        j.record(&l, VoxelBox::point([1, 0, 0])).unwrap();
        drop(j);
        // Cut the last record in half (a write interrupted by a kill).
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 5).unwrap();
        let r = recover(&p).unwrap();
        assert!(r.torn_tail);
        assert_eq!(r.voxels, good);
        assert_eq!(r.deltas, 1);
        let mut j = Journal::resume(&p, &r).unwrap();
        l.set(1, 0, 0, 0);
        l.set(7, 5, 3, 4);
        j.record(
            &l,
            VoxelBox {
                min: [0; 3],
                max: [7, 5, 3],
            },
        )
        .unwrap();
        let r2 = recover(&p).unwrap();
        assert!(!r2.torn_tail);
        assert_eq!(r2.voxels, l.voxels);
        assert_eq!(r2.deltas, 2);
    }

    #[test]
    fn corruption_and_foreign_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.journal");
        std::fs::write(&p, b"hello").unwrap();
        assert!(recover(&p).unwrap_err().to_string().contains("x.journal"));
        std::fs::write(&p, b"NOTAJOURNAL-----------------------").unwrap();
        assert!(recover(&p).unwrap_err().to_string().contains("magic"));
        let l = labels();
        let mut j = Journal::create(&p, "k", &l).unwrap();
        let mut l2 = l.clone();
        l2.set(4, 4, 3, 9);
        j.record(&l2, VoxelBox::point([4, 4, 3])).unwrap();
        drop(j);
        // Flip a byte inside the delta: its CRC fails, replay stops before it.
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let r = recover(&p).unwrap();
        assert!(r.torn_tail);
        assert_eq!(r.voxels, l.voxels);
    }
}
