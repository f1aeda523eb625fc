//! Command line: `pulmo [PATH]` opens the viewer; subcommands work without a display.
//! The only place (with `main`) that uses `anyhow`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::io::{self, Format, dicom, load_ct};
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
    /// Write the volume at PATH as NIfTI (.nii or .nii.gz).
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
}

/// When `main` started (for the time-to-first-image measurement).
pub static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Entry point: runs the CLI and turns errors into a one-line message and exit code 1.
pub fn main() -> ExitCode {
    let _ = PROCESS_START.set(std::time::Instant::now());
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pulmo: error: {e:#}");
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
        Some(Command::Doctor) => {
            doctor();
            Ok(())
        }
        None => crate::ui::run_viewer(cli.path, cli.series),
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
            }
        }
    }
    if scan.series.is_empty() || failures == scan.series.len() {
        anyhow::bail!("{}: no series could be loaded", path.display());
    }
    Ok(())
}

fn convert(path: &Path, out: &Path, series: Option<&str>) -> Result<()> {
    let loaded = load_ct(path, series, &Default::default())?;
    for w in &loaded.warnings {
        eprintln!("pulmo: warning: {w}");
    }
    let name = out.to_string_lossy();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        anyhow::bail!("{}: output must end in .nii or .nii.gz", out.display());
    }
    io::nifti::write_nifti(out, &loaded.volume)?;
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

fn doctor() {
    println!("pulmo {}", env!("CARGO_PKG_VERSION"));
    #[cfg(feature = "torch")]
    {
        println!("libtorch: linked (tch 0.24, libtorch 2.11.0)");
        println!("CUDA available: {}", tch::Cuda::is_available());
        println!("CUDA devices: {}", tch::Cuda::device_count());
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        println!(
            "tensor check: sum(1,2,3) = {}",
            t.sum(tch::Kind::Float).double_value(&[])
        );
    }
    #[cfg(not(feature = "torch"))]
    println!("libtorch: not built in (feature `torch` off)");
}
