//! Shared test helpers.
#![allow(dead_code)]

use std::path::PathBuf;

/// `Some(path)` when it exists. Otherwise, in CI (`CI=true`) the test fails: what it
/// needs must be there; locally it is skipped with the printed reason (the caller
/// returns on `None`).
pub fn require(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} ({}) is required in CI but missing", path.display());
    }
    eprintln!("SKIP: {what} ({}) not found", path.display());
    None
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real data folder (`$PULMO_DATA`, else `../shared/data` from the crate root).
pub fn data_dir(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("PULMO_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"));
    require(base.join(sub), "real data (set PULMO_DATA)")
}

/// The Python of the test venv (`scripts/setup.sh` creates it).
pub fn tools_python() -> Option<PathBuf> {
    require(
        root().join(".venv-tools/bin/python"),
        "the test venv's Python (run scripts/setup.sh)",
    )
}

/// The folder of PyPI's pydicom-data files in the test venv.
pub fn pydicom_data() -> Option<PathBuf> {
    let lib = root().join(".venv-tools/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|mut it| {
        it.find_map(|e| {
            let p = e.ok()?.path().join("site-packages/data_store/data");
            p.is_dir().then_some(p)
        })
    });
    require(
        found.unwrap_or_else(|| lib.join("python3.*/site-packages/data_store/data")),
        "pydicom-data in .venv-tools (run scripts/setup.sh)",
    )
}
