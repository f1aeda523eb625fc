//! Command line: `pulmo [PATH]` opens the viewer; subcommands work without a display.
//! The only place (with `main`) that uses `anyhow`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

pub mod ai;
pub mod batch;
pub mod followup;

use crate::io::{self, Format, dicom, load_ct};
use crate::metrics;
use crate::metrics::report::CompareRow;
use crate::session::compare::{BatchTable, compare_text, rows_with_intensity};
use crate::volume::CtVolume;

#[derive(Parser, Debug)]
#[command(
    name = "pulmo",
    version,
    about = "CT viewer for the lungs with built-in AI annotation"
)]
pub struct Cli {
    /// A DICOM file, folder or DICOMDIR, or a .nii/.nii.gz/.nrrd/.nhdr volume to open in
    /// the viewer. Without it the viewer opens the bundled synthetic demo study.
    pub path: Option<PathBuf>,
    /// A later CT of the same patient: registered onto PATH (the baseline) in the
    /// viewer's Follow-up window, with the changes mapped.
    pub followup: Option<PathBuf>,
    /// A label map to open onto PATH in the viewer.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Labels of FOLLOWUP (otherwise the lesion model proposes them).
    #[arg(long, requires = "followup")]
    pub followup_labels: Option<PathBuf>,
    /// Series to open when PATH holds several (SeriesInstanceUID).
    #[arg(long, global = true)]
    pub series: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print each series found under PATH: modality, dims, spacing, orientation, HU range,
    /// transfer syntaxes and every warning.
    Info { path: PathBuf },
    /// Write the volume at PATH as NIfTI (.nii or .nii.gz); PATH `demo` writes the
    /// synthetic demo and its ground truth (`OUT_truth.nii.gz`).
    Convert { path: PathBuf, out: PathBuf },
    /// Write a CT volume (any readable input, or `demo` for the synthetic study) as a
    /// DICOM series, one uncompressed file per slice.
    WriteSeries {
        /// Input volume, or `demo`.
        input: String,
        out_dir: PathBuf,
        /// For `demo`: dims as X,Y,Z (default 512,512,300).
        #[arg(long, value_delimiter = ',')]
        dims: Option<Vec<usize>>,
    },
    /// Load PATH and print the time it took (for benchmarks).
    Load {
        path: PathBuf,
        /// Repeat the load this many times, printing each time in seconds.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Report the environment: libtorch, CUDA.
    Doctor,
    /// Compare a test label map with a reference one (Dice, IoU, HD, HD95, ASSD, ...),
    /// or with --batch every same-named pair of two folders.
    Compare(CompareArgs),
    /// Propose lungs (labels 1 left, 2 right) or lesions (3 ground-glass, 4
    /// consolidation) for a CT and write them as a NIfTI label map on the CT's grid.
    Segment(ai::SegmentArgs),
    /// Train a built-in model (lung: on LCTSC-layout data) and write its weights and
    /// manifest.
    Train(Box<ai::TrainArgs>),
    /// Fine-tune a copy of the lesion model on your own label maps (NAME_labels.nii.gz
    /// beside NAME_ct.nii.gz, or --ct in the same order) and write it as a new model
    /// version with before/after figures; the parent model is never changed.
    Finetune(Box<ai::FinetuneArgs>),
    /// Measure a model: lung on cases with reference masks, lesion on COVID-SemiSeg test
    /// slices or on real volumes with slice labels (JSON report).
    Eval(ai::EvalArgs),
    /// Test support: journals an endless deterministic edit sequence into DIR, printing
    /// "durable N" after each synced record (the kill -9 test kills it mid-way).
    #[command(hide = true)]
    JournalSelftest { dir: PathBuf },
    /// Quantify a CT with its label map: volume and HU statistics per label, lung
    /// involvement per lung and lung third, Lung CT Analyzer HU bands.
    Quantify {
        /// The CT (any readable input).
        ct: PathBuf,
        /// The label map (.nii, .nii.gz, .nrrd) on the CT's grid.
        labels: PathBuf,
        /// Print JSON (otherwise a short text summary).
        #[arg(long)]
        json: bool,
    },
    /// Export a label map on a DICOM CT's grid as a binary DICOM SEG referencing the CT
    /// series (one segment per label value present).
    ExportSeg {
        /// The source CT series (DICOM folder, file or DICOMDIR).
        #[arg(long)]
        ct: PathBuf,
        /// The label map (.nii, .nii.gz, .nrrd) on the CT's grid.
        #[arg(long)]
        labels: PathBuf,
        /// The SEG file to write.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Register a follow-up CT (FIXED) to its baseline (MOVING): rigid, affine, then
    /// deformable inside the lungs; writes the displacement field (ITK convention), the
    /// warped baseline and a JSON report.
    Register(Box<followup::RegisterArgs>),
    /// What changed between a baseline and a follow-up: transition map (new, resolved,
    /// persistent ground-glass and consolidation), volumes per lung and third, lesions
    /// matched over time.
    Progress(Box<followup::ProgressArgs>),
    /// A table over several time points (oldest first): lung, ground-glass and
    /// consolidation volumes and % of the lungs involved (CSV and JSON).
    Timeline(followup::TimelineArgs),
    /// Run lung / lesion segmentation, quantification and comparison over a manifest of
    /// studies, one folder per study, resumable (complete studies are skipped) and
    /// sharded (--shard I/N); `pulmo batch merge OUT` joins the rows.
    Batch(Box<batch::BatchArgs>),
    /// Import a binary DICOM SEG onto a DICOM CT's grid and write it as a NIfTI label map.
    ImportSeg {
        /// The CT series the SEG was drawn on.
        #[arg(long)]
        ct: PathBuf,
        /// The DICOM SEG file.
        seg: PathBuf,
        /// The label map to write (.nii or .nii.gz).
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
}

/// Arguments of `pulmo compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Reference label map (.nii, .nii.gz, .nrrd), or folder with --batch.
    pub reference: PathBuf,
    /// Test (predicted) label map, or folder with --batch.
    pub test: PathBuf,
    /// CT on the same grid: adds ME, MAE and the relative mean HU difference.
    #[arg(long, conflicts_with = "batch")]
    pub ct: Option<PathBuf>,
    /// Labels to compare, e.g. 3,4 (default: every non-zero value in either map).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<u8>>,
    /// Print JSON.
    #[arg(long, conflicts_with_all = ["csv", "batch"])]
    pub json: bool,
    /// Print CSV (one row per label, then "any" foreground).
    #[arg(long)]
    pub csv: bool,
    /// REFERENCE and TEST are folders: compare files with the same name, write CSV.
    #[arg(long)]
    pub batch: bool,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

/// Entry point: runs the CLI and turns errors into a one-line message and exit code 1.
pub fn main() -> ExitCode {
    crate::session::startup::record_process_start();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once: errors that already print their source are not repeated.
            eprintln!("pulmo: error: {}", crate::io::guard::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Info { path }) => info(&path, cli.series.as_deref()),
        Some(Command::Convert { path, out }) => convert(&path, &out, cli.series.as_deref()),
        Some(Command::WriteSeries {
            input,
            out_dir,
            dims,
        }) => write_series(&input, &out_dir, dims),
        Some(Command::Load { path, repeat }) => load_timed(&path, cli.series.as_deref(), repeat),
        Some(Command::Doctor) => doctor(),
        Some(Command::Compare(args)) => compare_cmd(&args),
        Some(Command::Quantify { ct, labels, json }) => quantify_cmd(&ct, &labels, json),
        Some(Command::Segment(a)) => ai::segment(&a),
        Some(Command::Register(a)) => followup::register_cmd(&a),
        Some(Command::Progress(a)) => followup::progress_cmd(&a),
        Some(Command::Timeline(a)) => followup::timeline_cmd(&a),
        Some(Command::Batch(a)) => batch::batch_cmd(&a),
        Some(Command::JournalSelftest { dir }) => journal_selftest(&dir),
        Some(Command::Train(a)) => ai::train(&a),
        Some(Command::Finetune(_)) => ai::forward_to_ai("finetune"),
        Some(Command::Eval(a)) => ai::eval(&a),
        Some(Command::ExportSeg { ct, labels, output }) => {
            export_seg_cmd(&ct, &labels, &output, cli.series.as_deref())
        }
        Some(Command::ImportSeg { ct, seg, output }) => {
            import_seg_cmd(&ct, &seg, &output, cli.series.as_deref())
        }
        None => crate::ui::run_viewer(
            cli.path,
            cli.series,
            cli.labels,
            cli.followup.map(|f| (f, cli.followup_labels)),
        ),
    }
}

fn describe_volume(v: &CtVolume) -> String {
    let g = &v.geometry;
    let (lo, hi) = v.min_max().unwrap_or((0, 0));
    format!(
        "  dims        {} x {} x {}\n  spacing     {:.4} x {:.4} x {:.4} mm\n  orientation {} (obliquity {:.2} deg)\n  origin      ({:.3}, {:.3}, {:.3}) mm LPS\n  HU range    {lo} .. {hi}",
        g.dims[0],
        g.dims[1],
        g.dims[2],
        g.spacing_mm.x,
        g.spacing_mm.y,
        g.spacing_mm.z,
        g.orientation_code(),
        g.obliquity_degrees(),
        g.origin_mm.x,
        g.origin_mm.y,
        g.origin_mm.z
    )
}

fn info(path: &Path, only_series: Option<&str>) -> Result<()> {
    if Format::of_path(path) != Format::Dicom {
        let loaded = load_ct(path, None, &Default::default())?;
        println!("{}", path.display());
        println!("{}", describe_volume(&loaded.volume));
        for w in &loaded.warnings {
            println!("  warning: {w}");
        }
        return Ok(());
    }
    let opts = dicom::LoadOptions::default();
    let scan = dicom::scan(path, &opts)?;
    println!("{}: {} series", path.display(), scan.series.len());
    let mut failures = 0;
    for (summary, _) in &scan.series {
        if only_series.is_some_and(|s| s != summary.uid) {
            continue;
        }
        println!("\nseries {summary}");
        match dicom::load_series(&scan, Some(&summary.uid), &opts) {
            Ok(v) => {
                println!(
                    "  modality    {}",
                    v.meta.modality.as_deref().unwrap_or("(none)")
                );
                println!("{}", describe_volume(&v.volume));
                for (uid, name) in &v.meta.transfer_syntaxes {
                    println!("  transfer    {uid} ({name})");
                }
                for w in &v.meta.windows {
                    println!(
                        "  window      C {} / W {}{}",
                        w.center_hu,
                        w.width_hu,
                        w.explanation
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    );
                }
                for w in &v.report.warnings {
                    println!("  warning: {w}");
                }
                for p in v.report.skipped_files.iter().take(20) {
                    println!("  skipped: {p}");
                }
            }
            Err(e) => {
                failures += 1;
                println!("  error: {e}");
                if scan.series.len() > 1 {
                    eprintln!("pulmo: error: {e}");
                } else {
                    // The one series' reason is the error (on stderr, once).
                    return Err(e.into());
                }
            }
        }
    }
    if scan.series.is_empty() || failures == scan.series.len() {
        anyhow::bail!("{}: none of its series could be loaded", path.display());
    }
    Ok(())
}

fn convert(path: &Path, out: &Path, series: Option<&str>) -> Result<()> {
    let name = out.to_string_lossy();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        anyhow::bail!("{}: output must end in .nii or .nii.gz", out.display());
    }
    if path == Path::new("demo") && !path.exists() {
        // The synthetic demo (512x512x300) and its exact ground truth beside it.
        let demo = crate::demo::generate(&Default::default());
        io::nifti::write_nifti(out, &demo.ct)?;
        let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
        let truth = PathBuf::from(format!("{stem}_truth.nii.gz"));
        io::nifti::write_nifti(&truth, &demo.truth)?;
        println!(
            "demo -> {} (+ ground truth {})",
            out.display(),
            truth.display()
        );
        return Ok(());
    }
    let loaded = load_ct(path, series, &Default::default())?;
    for w in &loaded.warnings {
        eprintln!("pulmo: warning: {w}");
    }
    io::nifti::write_nifti(out, &loaded.volume)
        .with_context(|| format!("converting {}", path.display()))?;
    println!("{} -> {}", path.display(), out.display());
    Ok(())
}

fn write_series(input: &str, out_dir: &Path, dims: Option<Vec<usize>>) -> Result<()> {
    let volume = if input == "demo" {
        let mut opts = crate::demo::DemoOptions::default();
        if let Some(d) = dims {
            anyhow::ensure!(
                d.len() == 3 && d.iter().all(|&n| n > 0),
                "--dims takes X,Y,Z"
            );
            // Keep the field of view: scale the spacing.
            for ((spacing, old), new) in opts.spacing_mm.iter_mut().zip(opts.dims).zip(&d) {
                *spacing *= old as f64 / *new as f64;
            }
            opts.dims = [d[0], d[1], d[2]];
        }
        crate::demo::generate(&opts).ct
    } else {
        load_ct(Path::new(input), None, &Default::default())?.volume
    };
    let files = dicom::write::write_series(&volume, out_dir, &Default::default())
        .with_context(|| format!("writing {}", out_dir.display()))?;
    println!("wrote {} files to {}", files.len(), out_dir.display());
    Ok(())
}

/// (current resident, peak resident) memory of this process in bytes (Linux).
fn memory_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn load_timed(path: &Path, series: Option<&str>, repeat: usize) -> Result<()> {
    for _ in 0..repeat.max(1) {
        let (rss_before, _) = memory_bytes();
        let t = std::time::Instant::now();
        // When decoding started (the header scan before it).
        let decode_start = std::sync::Mutex::new(None::<f64>);
        let progress = |stage: dicom::LoadStage, _: usize, _: usize| {
            if stage == dicom::LoadStage::Decoding {
                decode_start
                    .lock()
                    .map(|mut d| *d.get_or_insert(t.elapsed().as_secs_f64()))
                    .ok();
            }
        };
        let options = dicom::LoadOptions {
            progress: Some(&progress),
            cancel: None,
        };
        let loaded = load_ct(path, series, &options)?;
        let secs = t.elapsed().as_secs_f64();
        if let Ok(Some(d)) = decode_start.lock().map(|d| *d) {
            println!("header scan {d:.4} s, decode {:.4} s", secs - d);
        }
        let (_, peak) = memory_bytes();
        let g = &loaded.volume.geometry;
        let voxel_bytes = loaded.volume.voxels.len() * 2;
        println!(
            "loaded {}x{}x{} in {secs:.4} s; voxel bytes {voxel_bytes}; peak RSS {peak} (+{} over the {rss_before} before loading)",
            g.dims[0],
            g.dims[1],
            g.dims[2],
            peak.saturating_sub(rss_before)
        );
        drop(loaded);
    }
    Ok(())
}

fn doctor() -> Result<()> {
    println!("pulmo {}", env!("CARGO_PKG_VERSION"));
    println!("viewer process: libtorch not loaded (models run in the AI helper)");
    match crate::infer::remote::program() {
        Ok(p) => {
            println!("AI helper: {}", p.display());
            ai::forward_to_ai("doctor")
        }
        Err(e) => {
            println!("AI helper: missing ({e})");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// compare / quantify

/// Reads a label map (.nii, .nii.gz, .nrrd, .nhdr); reader warnings go to stderr.
pub(crate) fn read_labels(path: &Path) -> Result<crate::volume::LabelVolume> {
    let r = io::read_label_map(path)?;
    for w in &r.warnings {
        eprintln!("pulmo: warning: {}: {w}", path.display());
    }
    Ok(r.volume)
}

/// Compares one pair; errors are one line naming the files.
fn compare_pair(
    reference: &Path,
    test: &Path,
    ct: Option<&Path>,
    labels: Option<&[u8]>,
) -> Result<(metrics::Comparison, Vec<CompareRow>)> {
    let r = read_labels(reference)?;
    let t = read_labels(test)?;
    let labels = labels.map_or_else(|| metrics::labels_present(&r, &t), <[u8]>::to_vec);
    let cmp = metrics::compare(&r, &t, &labels)
        .map_err(|e| anyhow::anyhow!("{} vs {}: {e}", reference.display(), test.display()))?;
    let ct = match ct {
        Some(p) => {
            let loaded = load_ct(p, None, &Default::default())?;
            for w in &loaded.warnings {
                eprintln!("pulmo: warning: {}: {w}", p.display());
            }
            Some((p, loaded.volume))
        }
        None => None,
    };
    let rows = rows_with_intensity(&cmp, ct.as_ref().map(|(_, v)| v), &r, &t).map_err(|e| {
        let ct = ct
            .as_ref()
            .map_or_else(String::new, |(p, _)| p.display().to_string());
        anyhow::anyhow!("{ct} vs {}: {e}", reference.display())
    })?;
    Ok((cmp, rows))
}

/// Writes `text` to `output`, or standard output.
fn emit(output: Option<&Path>, text: &str) -> Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing to standard output")
        }
    }
}

fn compare_cmd(a: &CompareArgs) -> Result<()> {
    use metrics::report::{compare_csv, compare_json, to_json_text};
    if a.batch {
        return compare_batch(a);
    }
    let (cmp, rows) = compare_pair(&a.reference, &a.test, a.ct.as_deref(), a.labels.as_deref())?;
    let path = |p: &Path| p.display().to_string();
    let text = if a.json {
        let ct = a.ct.as_deref().map(path);
        let doc = compare_json(
            &path(&a.reference),
            &path(&a.test),
            ct.as_deref(),
            &cmp,
            &rows,
            a.ct.is_some(),
        );
        to_json_text(&doc) + "\n"
    } else if a.csv {
        compare_csv(&rows, a.ct.is_some())
    } else {
        compare_text(&path(&a.reference), &path(&a.test), &cmp, &rows)
    };
    emit(a.output.as_deref(), &text)
}

/// The label-map files of a folder by file name (.nii, .nii.gz, .nrrd).
fn label_files(dir: &Path) -> Result<std::collections::BTreeMap<String, PathBuf>> {
    let mut files = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lower = name.to_ascii_lowercase();
        if path.is_file()
            && [".nii", ".nii.gz", ".nrrd"]
                .iter()
                .any(|e| lower.ends_with(e))
        {
            files.insert(name, path);
        }
    }
    Ok(files)
}

/// The case name: the file name without .nii, .nii.gz or .nrrd.
fn case_name(file: &str) -> &str {
    let lower = file.to_ascii_lowercase();
    [".nii.gz", ".nii", ".nrrd"]
        .iter()
        .find(|e| lower.ends_with(*e))
        .map_or(file, |e| &file[..file.len() - e.len()])
}

fn compare_batch(a: &CompareArgs) -> Result<()> {
    let refs = label_files(&a.reference)?;
    let tests = label_files(&a.test)?;
    for name in refs.keys().filter(|n| !tests.contains_key(*n)) {
        eprintln!(
            "pulmo: warning: {name}: only in {} (skipped)",
            a.reference.display()
        );
    }
    for name in tests.keys().filter(|n| !refs.contains_key(*n)) {
        eprintln!(
            "pulmo: warning: {name}: only in {} (skipped)",
            a.test.display()
        );
    }
    let pairs: Vec<(&String, &PathBuf, &PathBuf)> = refs
        .iter()
        .filter_map(|(n, r)| tests.get(n).map(|t| (n, r, t)))
        .collect();
    anyhow::ensure!(
        !pairs.is_empty(),
        "{} and {}: no label maps with the same file name",
        a.reference.display(),
        a.test.display()
    );
    let mut table = BatchTable::default();
    let mut failed = 0;
    for (n, (name, r, t)) in pairs.iter().enumerate() {
        let case = case_name(name);
        eprintln!("[{}/{}] {case}...", n + 1, pairs.len());
        let rows = match compare_pair(r, t, None, a.labels.as_deref()) {
            Ok((_, rows)) => rows,
            Err(e) => {
                failed += 1;
                eprintln!(
                    "pulmo: warning: {case} skipped: {}",
                    crate::io::guard::error_chain(&*e)
                );
                continue;
            }
        };
        table.add_case(case, rows);
    }
    emit(a.output.as_deref(), &table.finish())?;
    if let Some(o) = &a.output {
        eprintln!("wrote {} ({} cases)", o.display(), pairs.len() - failed);
    }
    anyhow::ensure!(failed == 0, "{failed} of {} cases failed", pairs.len());
    Ok(())
}

fn quantify_cmd(ct_path: &Path, labels_path: &Path, json: bool) -> Result<()> {
    use metrics::quantify::{QuantifyOptions, quantify, text_lines, to_json};
    use metrics::report::to_json_text;
    let loaded = load_ct(ct_path, None, &Default::default())?;
    for w in &loaded.warnings {
        eprintln!("pulmo: warning: {}: {w}", ct_path.display());
    }
    let labels = read_labels(labels_path)?;
    let options = QuantifyOptions::default();
    let q = quantify(&loaded.volume, &labels, &options)
        .map_err(|e| anyhow::anyhow!("{} vs {}: {e}", ct_path.display(), labels_path.display()))?;
    let table = crate::annotate::LabelTable::default();
    let name = |v: u8| table.get(v).map(|l| l.name.clone());
    if !json {
        println!("{} with {}", ct_path.display(), labels_path.display());
        for line in text_lines(&q, &name) {
            println!("{line}");
        }
        return Ok(());
    }
    let doc = to_json(
        &q,
        &options,
        &ct_path.display().to_string(),
        &labels_path.display().to_string(),
        &name,
    );
    println!("{}", to_json_text(&doc));
    Ok(())
}

fn journal_selftest(dir: &Path) -> Result<()> {
    use std::io::Write;
    let g = crate::volume::Geometry::axis_aligned([64, 64, 32], [1.0; 3], [0.0; 3]);
    let mut labels = crate::volume::Volume::filled(g, 0u8)?;
    let path = crate::session::journal::journal_path(dir, "selftest");
    let mut j = crate::session::Journal::create(&path, "selftest", &labels)?;
    let mut out = std::io::stdout().lock();
    for n in 1.. {
        let b = crate::session::journal::selftest_step(&mut labels, n);
        j.record(&labels, b)?;
        writeln!(out, "durable {n}")?;
        out.flush()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// export-seg / import-seg

/// Loads a DICOM CT for SEG export/import; its warnings go to stderr.
fn load_dicom_ct(ct_path: &Path, series: Option<&str>) -> Result<io::LoadedCt> {
    anyhow::ensure!(
        Format::of_path(ct_path) == Format::Dicom,
        "{}: a DICOM SEG needs a DICOM CT series (folder, file or DICOMDIR)",
        ct_path.display()
    );
    let loaded = load_ct(ct_path, series, &Default::default())?;
    for w in &loaded.warnings {
        eprintln!("pulmo: warning: {}: {w}", ct_path.display());
    }
    Ok(loaded)
}

fn export_seg_cmd(
    ct_path: &Path,
    labels_path: &Path,
    out: &Path,
    series: Option<&str>,
) -> Result<()> {
    use crate::io::dicom::seg;
    let loaded = load_dicom_ct(ct_path, series)?;
    let meta = loaded
        .dicom_meta
        .as_ref()
        .with_context(|| format!("{}: no DICOM attributes", ct_path.display()))?;
    let labels = read_labels(labels_path)?;
    metrics::check_same_grid("CT", &loaded.volume.geometry, "labels", &labels.geometry)
        .map_err(|e| anyhow::anyhow!("{} vs {}: {e}", ct_path.display(), labels_path.display()))?;
    // The SEG is placed on the CT's grid (same dims and spacing, checked above).
    let labels = crate::volume::Volume::new(loaded.volume.geometry.clone(), labels.voxels)?;
    let table = crate::annotate::LabelTable::default();
    seg::write_seg(out, &labels, &table, meta, &seg::SegWriteOptions::default())?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn import_seg_cmd(ct_path: &Path, seg_path: &Path, out: &Path, series: Option<&str>) -> Result<()> {
    use crate::io::dicom::seg;
    anyhow::ensure!(
        Format::of_path(out) == Format::Nifti,
        "{}: the output label map must be .nii or .nii.gz",
        out.display()
    );
    let loaded = load_dicom_ct(ct_path, series)?;
    let imported = seg::read_seg(
        seg_path,
        &loaded.volume.geometry,
        loaded
            .dicom_meta
            .as_ref()
            .and_then(|m| m.frame_of_reference_uid.as_deref()),
    )?;
    for w in &imported.warnings {
        eprintln!("pulmo: warning: {w}");
    }
    for l in &imported.table.labels {
        eprintln!("  label {} \"{}\" rgb {:?}", l.value, l.name, l.color);
    }
    io::nifti::write_nifti(out, &imported.labels)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
