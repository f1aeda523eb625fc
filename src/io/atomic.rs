//! Atomic file writes: a failed or interrupted save never leaves a half-written file in
//! place of a good one. [`write_atomically`] streams through a writer (optionally
//! gzip-compressed); [`write_bytes`] writes a buffer.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes through `fill` (gzip-compressed at `gzip_level` when given) into a temporary
/// file next to `path`, fsyncs it and renames it over `path` (then syncs the folder);
/// removes the temporary file on any failure, leaving an existing `path` as it was.
pub fn write_atomically(
    path: &Path,
    gzip_level: Option<u32>,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| -> io::Result<()> {
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        if let Some(level) = gzip_level {
            let mut enc = GzEncoder::new(out, Compression::new(level));
            fill(&mut enc)?;
            out = enc.finish()?;
        } else {
            fill(&mut out)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => {
            // Make the rename itself durable; not all platforms allow syncing a folder.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `path` atomically (see [`write_atomically`]).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically(path, None, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_replace_whole_files_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("table.csv");
        write_bytes(&path, b"first").expect("write");
        write_bytes(&path, b"second").expect("overwrite");
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(names(dir.path()), ["table.csv"]);
        // A folder that does not exist: an error, nothing written.
        let bad = dir.path().join("missing").join("x.csv");
        assert!(write_bytes(&bad, b"x").is_err());
        assert!(!bad.exists());
        // A target that cannot be replaced (a folder): the error, the folder intact.
        let folder = dir.path().join("folder.csv");
        fs::create_dir(&folder).unwrap();
        assert!(write_bytes(&folder, b"x").is_err());
        assert!(folder.is_dir());
        assert_eq!(names(dir.path()), ["folder.csv", "table.csv"]);
    }
}
