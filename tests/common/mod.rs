//! Shared test helpers.
#![allow(dead_code)]

use std::path::PathBuf;

/// The real data folder (`$PULMO_DATA`, else `../shared/data` from the crate root).
/// In CI (`CI=true`) a missing folder fails the test; locally the test is skipped
/// with a printed reason (the caller returns on `None`).
pub fn data_dir(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("PULMO_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let p = base.join(sub);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "real data {} is required in CI but missing (set PULMO_DATA)",
            p.display()
        );
    }
    eprintln!("SKIP: real data {} not found (set PULMO_DATA)", p.display());
    None
}

/// The folder of PyPI's pydicom-data files in the test venv (`make test` installs it).
pub fn pydicom_data() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|mut it| {
        it.find_map(|e| {
            let p = e.ok()?.path().join("site-packages/data_store/data");
            p.is_dir().then_some(p)
        })
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "pydicom-data is required in CI (scripts/setup.sh installs it into .venv-tools)"
            );
        }
        eprintln!("SKIP: pydicom-data not installed in .venv-tools (run scripts/setup.sh)");
    }
    found
}
