//! The manifest of a batch run: one study per row (CSV with a header, or a JSON array
//! of objects) with its CT, optional label map and optional reference labels; and the
//! deterministic shard of it that one process runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BatchError;

/// One study of the manifest. Relative paths are taken from the manifest's folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyEntry {
    /// Names the study's output folder: letters, digits, `.`, `_`, `-` (from the CT's
    /// file name when the manifest gives none).
    pub id: String,
    pub ct: PathBuf,
    /// A label map to use instead of segmenting (quantify and compare read it).
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// Reference labels to compare the study's labels with (Dice, HD95).
    #[serde(default)]
    pub reference: Option<PathBuf>,
}

/// The largest manifest read (a manifest of a million studies is ~100 MB).
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// The manifest's columns, in CSV header names.
pub const COLUMNS: [&str; 4] = ["id", "ct", "labels", "reference"];

/// Reads a manifest: JSON when the file name ends in `.json`, else CSV with a header
/// naming at least `ct` (columns `id`, `labels`, `reference` optional, in any order).
pub fn read_manifest(path: &Path) -> Result<Vec<StudyEntry>, BatchError> {
    let invalid = |line: usize, message: String| BatchError::Manifest {
        path: path.to_path_buf(),
        line,
        message,
    };
    // A regular file only (a FIFO would block), of a bounded size.
    let size = crate::io::guard::ensure_regular_file(path)
        .map_err(|source| BatchError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > MAX_MANIFEST_BYTES {
        return Err(invalid(
            0,
            format!("{size} bytes: larger than {MAX_MANIFEST_BYTES}, split it"),
        ));
    }
    let bytes = crate::io::guard::read_regular_file(path).map_err(|source| BatchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        invalid(
            0,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut entries: Vec<(usize, StudyEntry)> = if is_json {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            id: Option<String>,
            ct: PathBuf,
            #[serde(default)]
            labels: Option<PathBuf>,
            #[serde(default)]
            reference: Option<PathBuf>,
        }
        let raw: Vec<Raw> =
            serde_json::from_str(&text).map_err(|e| invalid(e.line(), e.to_string()))?;
        raw.into_iter()
            .enumerate()
            .map(|(n, r)| {
                (
                    n + 1,
                    StudyEntry {
                        id: r.id.unwrap_or_default(),
                        ct: r.ct,
                        labels: r.labels,
                        reference: r.reference,
                    },
                )
            })
            .collect()
    } else {
        parse_csv(&text).map_err(|(line, m)| invalid(line, m))?
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut seen = std::collections::HashMap::new();
    for (line, e) in &mut entries {
        if e.ct.as_os_str().is_empty() {
            return Err(invalid(*line, "no ct path".into()));
        }
        for p in [Some(&mut e.ct), e.labels.as_mut(), e.reference.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if e.id.is_empty() {
            e.id = id_from_path(&e.ct);
        }
        if !valid_id(&e.id) {
            return Err(invalid(
                *line,
                format!(
                    "id {:?}: use letters, digits, '.', '_' and '-' only (it names a folder)",
                    e.id
                ),
            ));
        }
        if let Some(first) = seen.insert(e.id.clone(), *line) {
            return Err(invalid(
                *line,
                format!(
                    "id {:?} is also on line {first}: ids name output folders and must differ",
                    e.id
                ),
            ));
        }
    }
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A folder name from a CT path: its file name without `.nii.gz` / `.nii` / `.nrrd` /
/// `.nhdr` / `.dcm`, other characters replaced by `_`.
pub fn id_from_path(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let stem = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm"]
        .iter()
        .find(|s| lower.ends_with(*s))
        .map_or(name.as_str(), |s| &name[..name.len() - s.len()]);
    let id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() || id == "." || id == ".." {
        "study".into()
    } else {
        id
    }
}

/// Splits one CSV record (RFC 4180: fields in double quotes may hold commas and doubled
/// quotes).
fn split_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields.into_iter().map(|f| f.trim().to_string()).collect())
}

fn parse_csv(text: &str) -> Result<Vec<(usize, StudyEntry)>, (usize, String)> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let header = split_record(header).map_err(|m| (header_line, m))?;
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    for h in &header {
        if !COLUMNS.iter().any(|c| c.eq_ignore_ascii_case(h)) {
            return Err((
                header_line,
                format!(
                    "unknown column {h:?} (the columns are {})",
                    COLUMNS.join(", ")
                ),
            ));
        }
    }
    let ct = column("ct").ok_or((header_line, "the header has no \"ct\" column".to_string()))?;
    let (id, labels, reference) = (column("id"), column("labels"), column("reference"));
    let mut out = Vec::new();
    for (n, line) in lines {
        let f = split_record(line).map_err(|m| (n, m))?;
        if f.len() != header.len() {
            return Err((
                n,
                format!("{} fields, the header has {}", f.len(), header.len()),
            ));
        }
        let opt = |c: Option<usize>| c.map(|c| f[c].clone()).filter(|v| !v.is_empty());
        out.push((
            n,
            StudyEntry {
                id: opt(id).unwrap_or_default(),
                ct: PathBuf::from(&f[ct]),
                labels: opt(labels).map(PathBuf::from),
                reference: opt(reference).map(PathBuf::from),
            },
        ));
    }
    Ok(out)
}

/// Shard `index` of `count` (`--shard I/N`, I from 0): the studies whose position in
/// the manifest is I modulo N, so N processes together run every study once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` with 0 <= I < N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {text:?}: give I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether the study at manifest position `n` (0-based) belongs to this shard.
    pub fn picks(&self, n: usize) -> bool {
        n % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn csv_and_json_manifests_resolve_paths_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            dir.path(),
            "m.csv",
            "ct,id,reference\n# a comment\ncases/a.nii.gz,,\n\"/abs/b c.nrrd\",b1,\"ref,1.nii\"\n",
        );
        let e = read_manifest(&csv).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].id, "a");
        assert_eq!(e[0].ct, dir.path().join("cases/a.nii.gz"));
        assert_eq!(e[0].reference, None);
        assert_eq!(e[1].id, "b1");
        assert_eq!(e[1].ct, PathBuf::from("/abs/b c.nrrd"));
        assert_eq!(e[1].reference, Some(dir.path().join("ref,1.nii")));
        let json = write(
            dir.path(),
            "m.json",
            r#"[{"ct": "x/Case 1.nii.gz"}, {"id": "two", "ct": "/y.nii", "labels": "l.nii"}]"#,
        );
        let e = read_manifest(&json).unwrap();
        assert_eq!(e[0].id, "Case_1");
        assert_eq!(e[1].labels, Some(dir.path().join("l.nii")));
    }

    #[test]
    fn bad_manifests_are_refused_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            ("id,ct\na,x.nii\na,y.nii\n", "also on line 2"),
            ("id,ct\n../up,x.nii\n", "names a folder"),
            ("ct,colour\nx.nii,red\n", "unknown column \"colour\""),
            ("id\nx\n", "no \"ct\" column"),
            ("id,ct\nx\n", "1 fields, the header has 2"),
            ("ct\n\"x.nii\n", "not closed"),
        ] {
            let p = write(dir.path(), "bad.csv", text);
            let e = read_manifest(&p).unwrap_err().to_string();
            assert!(e.contains("bad.csv") && e.contains(needle), "{text:?}: {e}");
        }
        let p = write(dir.path(), "bad.json", "[{\"id\": \"a\"}]");
        let e = read_manifest(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("ct"), "{e}");
        let e = read_manifest(&dir.path().join("none.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.csv"), "{e}");
        // A folder, a FIFO (would block) and binary bytes are refused, naming the path.
        let e = read_manifest(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        let fifo = dir.path().join("fifo.csv");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            let e = read_manifest(&fifo).unwrap_err().to_string();
            assert!(e.contains("fifo.csv"), "{e}");
        }
        std::fs::write(dir.path().join("bin.csv"), [0x63, 0x74, 0xff, 0xfe, 0x0a]).unwrap();
        let e = read_manifest(&dir.path().join("bin.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bin.csv") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn shards_cover_every_study_once() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let n = 23;
        let mut hits = vec![0; n];
        for i in 0..5 {
            let s = Shard { index: i, count: 5 };
            for (k, h) in hits.iter_mut().enumerate() {
                *h += usize::from(s.picks(k));
            }
        }
        assert!(hits.iter().all(|&h| h == 1));
    }
}
