//! Mutation fuzzing of the readers on the stable toolchain (issue #16): proptest mutates
//! valid DICOM, NIfTI (plain and gzip), NRRD and DICOM SEG files written here (and real
//! RLE / JPEG files from pydicom's test data when the tools venv has them) and feeds
//! each to the reader the CLI uses. Every outcome must be `Ok` or an error naming the
//! file; a panic fails the test and leaves the input in `target/fuzz-failures/`.
//!
//! A memory budget of 256 MiB is set for the process, so a size taken from a mutated
//! header must be refused by the checks in `pulmo::io::guard`, never allocated.
//! `PULMO_FUZZ_CASES` sets the cases per reader (default 200: about a minute in CI).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Once;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use pulmo::annotate::LabelTable;
use pulmo::io::dicom::seg::{self, SegWriteOptions};
use pulmo::io::dicom::write::{SeriesWriteOptions, write_series};
use pulmo::io::dicom::{self, LoadOptions};
use pulmo::io::{self as pio, guard};
use pulmo::volume::{CtVolume, Geometry, LabelVolume, Volume};

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| guard::override_memory_budget(Some(256 << 20)));
}

fn cases() -> u32 {
    std::env::var("PULMO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte (position as a fraction of the length).
    Flip(f64, u8),
    /// Overwrite 2 or 4 bytes with a boundary value (sizes, lengths, counts).
    Boundary(f64, u32, bool),
    /// Cut the file.
    Truncate(f64),
    /// Insert bytes.
    Insert(f64, Vec<u8>),
    /// Copy a piece of the file elsewhere (repeats tags, sequences).
    Duplicate(f64, f64, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        4 => (at.clone(), 1..=255u8).prop_map(|(p, x)| Mutation::Flip(p, x)),
        3 => (
            at.clone(),
            prop::sample::select(vec![
                0u32, 1, 2, 0x7F, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF
            ]),
            any::<bool>()
        )
            .prop_map(|(p, v, wide)| Mutation::Boundary(p, v, wide)),
        1 => at.clone().prop_map(Mutation::Truncate),
        1 => (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        1 => (at.clone(), at, 1..64usize).prop_map(|(a, b, n)| Mutation::Duplicate(a, b, n)),
    ]
}

fn apply(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in mutations {
        let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len.saturating_sub(1));
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(p, x) => {
                let i = at(*p, b.len());
                b[i] ^= x;
            }
            Mutation::Boundary(p, v, wide) => {
                let i = at(*p, b.len());
                let bytes: Vec<u8> = if *wide {
                    v.to_le_bytes().to_vec()
                } else {
                    (*v as u16).to_le_bytes().to_vec()
                };
                for (k, x) in bytes.into_iter().enumerate() {
                    if let Some(slot) = b.get_mut(i + k) {
                        *slot = x;
                    }
                }
            }
            Mutation::Truncate(p) => {
                let i = at(*p, b.len());
                b.truncate(i);
            }
            Mutation::Insert(p, more) => {
                let i = at(*p, b.len());
                b.splice(i..i, more.iter().copied());
            }
            Mutation::Duplicate(from, to, n) => {
                let (i, j) = (at(*from, b.len()), at(*to, b.len()));
                let piece: Vec<u8> = b[i..(i + n).min(b.len())].to_vec();
                b.splice(j..j, piece);
            }
        }
    }
    b
}

fn failures_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `read` on `cases()` mutations of `seed` written as `name` (beside `extra`
/// unmodified files in the same folder); a panic fails with the input saved.
fn fuzz(
    label: &str,
    seed: &[u8],
    name: &str,
    extra: &[(String, Vec<u8>)],
    read: impl Fn(&Path, &Path) -> Result<(), String>,
) {
    setup();
    let dir = tempfile::tempdir().unwrap();
    for (n, b) in extra {
        std::fs::write(dir.path().join(n), b).unwrap();
    }
    let target = dir.path().join(name);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let outcomes = [std::cell::Cell::new(0usize), std::cell::Cell::new(0usize)];
    let result = runner.run(&prop::collection::vec(mutation(), 1..6), |mutations| {
        let bytes = apply(seed, &mutations);
        std::fs::write(&target, &bytes).unwrap();
        let started = std::time::Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&target, dir.path())));
        let took = started.elapsed().as_secs_f64();
        if took > 2.0 {
            let saved = failures_dir().join(format!("slow-{label}-{name}"));
            std::fs::write(&saved, &bytes).unwrap();
            eprintln!(
                "{label}: one input took {took:.1} s (saved to {})",
                saved.display()
            );
        }
        match outcome {
            Ok(Ok(())) => outcomes[0].set(outcomes[0].get() + 1),
            Ok(Err(message)) => {
                outcomes[1].set(outcomes[1].get() + 1);
                prop_assert!(
                    message.contains(name) || message.contains(&dir.path().display().to_string()),
                    "{label}: the error does not name the file: {message}"
                );
            }
            Err(_) => {
                let saved = failures_dir().join(format!("{label}-{name}"));
                std::fs::write(&saved, &bytes).unwrap();
                prop_assert!(
                    false,
                    "{label}: the reader panicked; input saved to {}",
                    saved.display()
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{label}: {} read, {} refused with an error",
        outcomes[0].get(),
        outcomes[1].get()
    );
}

fn phantom(dims: [usize; 3]) -> CtVolume {
    let g = Geometry::axis_aligned(dims, [0.7, 0.8, 2.5], [-10.0, 5.0, 30.0]);
    let n = g.voxel_count();
    Volume::new(g, (0..n).map(|i| (i % 1500) as i16 - 1000).collect()).unwrap()
}

fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn load_folder(_: &Path, dir: &Path) -> Result<(), String> {
    dicom::load(dir, None, &LoadOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn dicom_series_survives_mutations() {
    let src = tempfile::tempdir().unwrap();
    let files = write_series(
        &phantom([16, 12, 4]),
        src.path(),
        &SeriesWriteOptions::default(),
    )
    .unwrap();
    let extra: Vec<(String, Vec<u8>)> = files[1..]
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into(),
                read_file(p),
            )
        })
        .collect();
    fuzz(
        "dicom",
        &read_file(&files[0]),
        "slice_0000.dcm",
        &extra,
        load_folder,
    );
}

#[test]
fn dicom_codec_files_survive_mutations() {
    let Some(dir) = common::pydicom_data() else {
        return;
    };
    for name in [
        "MR_small_RLE.dcm",
        "emri_small_RLE.dcm",
        "JPEG2000.dcm",
        "JPEG-LL.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
    ] {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        fuzz(
            &format!("codec-{name}"),
            &read_file(&path),
            name,
            &[],
            |p, _| {
                dicom::decode_file_hu(p)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
    }
}

#[test]
fn nifti_survives_mutations() {
    let dir = tempfile::tempdir().unwrap();
    let vol = phantom([10, 8, 5]);
    for name in ["ct.nii", "ct.nii.gz"] {
        let p = dir.path().join(name);
        pio::nifti::write_nifti(&p, &vol).unwrap();
        fuzz(
            &format!("nifti-{name}"),
            &read_file(&p),
            name,
            &[],
            |p, _| {
                pio::nifti::read_nifti_ct(p)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
    }
}

#[test]
fn nrrd_survives_mutations() {
    let data: Vec<u8> = (0..6 * 5 * 4)
        .flat_map(|i: i16| (i * 7 - 300).to_le_bytes())
        .collect();
    let mut attached = b"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n\
sizes: 6 5 4\nspace directions: (0.7,0,0) (0,0.7,0) (0,0,2.5)\nspace origin: (1,2,3)\n\
endian: little\nencoding: raw\n\n"
        .to_vec();
    attached.extend(&data);
    fuzz("nrrd", &attached, "ct.nrrd", &[], |p, _| {
        pio::nrrd::read_nrrd_ct(p)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let detached = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nspacings: 0.7 0.7 2.5\n\
endian: little\nencoding: raw\ndata file: ct.raw\n"
        .to_vec();
    fuzz(
        "nrrd-detached",
        &detached,
        "ct.nhdr",
        &[("ct.raw".into(), data)],
        |p, _| {
            pio::nrrd::read_nrrd_ct(p)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}

#[test]
fn seg_survives_mutations() {
    let src = tempfile::tempdir().unwrap();
    let ct_dir = src.path().join("ct");
    std::fs::create_dir(&ct_dir).unwrap();
    write_series(
        &phantom([16, 12, 4]),
        &ct_dir,
        &SeriesWriteOptions::default(),
    )
    .unwrap();
    let loaded = dicom::load(&ct_dir, None, &LoadOptions::default()).unwrap();
    let g = loaded.volume.geometry.clone();
    let mut labels: LabelVolume = Volume::filled(g.clone(), 0u8).unwrap();
    for k in 1..3 {
        for j in 2..8 {
            for i in 3..9 {
                labels.set(i, j, k, if k == 1 { 1 } else { 3 });
            }
        }
    }
    let out = src.path().join("seg.dcm");
    seg::write_seg(
        &out,
        &labels,
        &LabelTable::default(),
        &loaded.meta,
        &SegWriteOptions::default(),
    )
    .unwrap();
    let for_uid = loaded.meta.frame_of_reference_uid.clone();
    fuzz("seg", &read_file(&out), "seg.dcm", &[], move |p, _| {
        seg::read_seg(p, &g, for_uid.as_deref())
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}
