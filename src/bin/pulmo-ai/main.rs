//! `pulmo-ai`: the AI helper, the only binary that links libtorch.
//!
//! `pulmo` (viewer and CLI) never loads libtorch; it starts `pulmo-ai serve` when a
//! model first runs and talks to it over stdin/stdout (`pulmo::infer::remote`), and it
//! forwards `pulmo train` and the libtorch part of `pulmo doctor` here. The built-in
//! U-Net, TorchScript loading and training live in [`torch`].

mod torch;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use pulmo::cli::ai::{FinetuneArgs, TrainArgs, data_root};
use pulmo::infer::{DeviceChoice, InferError, Segmenter, Task};

#[derive(Parser, Debug)]
#[command(
    name = "pulmo-ai",
    version,
    about = "pulmo's AI helper: libtorch models for the viewer and the CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve segmentation requests on standard input/output (started by `pulmo`).
    Serve,
    /// Train a built-in model (as `pulmo train`, which runs this).
    Train(Box<TrainArgs>),
    /// Fine-tune a lesion model on the user's label maps (as `pulmo finetune`).
    Finetune(Box<FinetuneArgs>),
    /// Report libtorch and CUDA.
    Doctor,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve => serve(),
        Cmd::Train(a) => train(&a),
        Cmd::Finetune(a) => finetune(&a),
        Cmd::Doctor => {
            doctor();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pulmo-ai: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(
    task: Task,
    manifest: &Path,
    device: DeviceChoice,
) -> Result<Box<dyn Segmenter>, InferError> {
    let seg = torch::load_segmenter(manifest, device)?;
    if seg.task() != task {
        return Err(InferError::Manifest {
            path: manifest.to_path_buf(),
            message: format!("a {} model, not a {} model", seg.task().name(), task.name()),
        });
    }
    Ok(seg)
}

/// The protocol owns the original standard output; everything else printed to standard
/// output (by pulmo's code or libtorch's) goes to standard error instead, so it cannot
/// corrupt a frame.
fn serve() -> Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain descriptor calls on this process's own standard streams; the new
    // descriptor is owned by the File below and nothing else.
    let protocol = unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            bail!(
                "cannot set up the protocol stream: {}",
                std::io::Error::last_os_error()
            );
        }
        std::fs::File::from_raw_fd(fd)
    };
    let out = std::io::BufWriter::with_capacity(1 << 20, protocol);
    let mut input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
    let mut factory = load;
    pulmo::infer::remote::serve(&mut factory, &mut input, out).context("serving pulmo")
}

fn train(a: &TrainArgs) -> Result<()> {
    use torch::train::{TrainOptions, train};
    let data = a.data.clone().unwrap_or_else(|| match a.task {
        Task::Lung => data_root().join("lctsc256"),
        Task::Lesion => data_root(),
    });
    if !data.is_dir() {
        bail!(
            "{}: training data folder not found (set PULMO_DATA or --data)",
            data.display()
        );
    }
    let mut o = match a.task {
        Task::Lung => TrainOptions::lung_defaults(data, a.out.clone()),
        Task::Lesion => TrainOptions::lesion_defaults(data, a.out.clone()),
    };
    if let Some(v) = a.epochs {
        o.epochs = v;
    }
    if let Some(v) = a.batch {
        o.batch = v;
    }
    if let Some(v) = a.lr {
        o.lr = v;
    }
    if let Some(v) = a.seed {
        o.seed = v;
    }
    if let Some(v) = a.base {
        o.arch.base_channels = v;
    }
    if let Some(v) = a.depth {
        o.arch.depth = v;
    }
    if let Some(v) = a.crop {
        o.crop = v;
    }
    if let Some(v) = a.spacing {
        o.spacing_mm = v;
    }
    if let Some(v) = &a.train_cases {
        o.train_cases = v.clone();
    }
    if let Some(v) = &a.val_cases {
        o.val_cases = v.clone();
    }
    o.steps_per_epoch = a.steps;
    o.max_slices_per_case = a.max_slices;
    o.resume = a.resume;
    o.skip_eval = a.no_eval;
    o.device = a.device;
    o.real_per_batch = a.real_per_batch;
    o.normal_per_batch = a.normal_per_batch;
    o.time_budget_s = a.time_budget_min.map(|m| m * 60.0);
    o.keep_best = a.keep_best;
    o.model_version = a.model_version.clone();
    o.augment = a.augment.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    // `pulmo train ...` passes its own command line (recorded in the manifest).
    o.command = std::env::var("PULMO_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let report = train(&o, &mut |line| eprintln!("{line}"))?;
    eprintln!(
        "trained {} epochs in {:.0} s",
        report.state.epoch_losses.len(),
        report.state.seconds
    );
    println!("{}", report.manifest_path.display());
    Ok(())
}

fn finetune(a: &FinetuneArgs) -> Result<()> {
    use torch::finetune::{FinetuneOptions, finetune};
    if a.task != Task::Lesion {
        bail!(
            "only the lesion model learns from your labels (got {})",
            a.task.name()
        );
    }
    let parent = a
        .model
        .clone()
        .unwrap_or_else(|| pulmo::infer::manifest::default_manifest_path(Task::Lesion));
    let mut o = FinetuneOptions::new(parent, a.labels.clone(), a.out.clone());
    o.cts = a.ct.clone();
    o.time_budget_s = a.time_budget_min * 60.0;
    o.data = match &a.data {
        Some(d) if d.as_os_str() == "none" => None,
        Some(d) => Some(d.clone()),
        None => Some(data_root()),
    };
    o.device = a.device;
    o.seed = a.seed;
    o.version = a.model_version.clone();
    o.steps_per_epoch = a.steps.max(1);
    o.command = std::env::var("PULMO_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let manifest = finetune(&o, &mut |line| eprintln!("{line}"), &|| false)?;
    println!("{}", manifest.display());
    Ok(())
}

fn doctor() {
    println!("libtorch: linked (tch 0.24, libtorch 2.11.0)");
    println!("CUDA available: {}", tch::Cuda::is_available());
    println!("CUDA devices: {}", tch::Cuda::device_count());
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    println!(
        "tensor check: sum(1,2,3) = {}",
        t.sum(tch::Kind::Float).double_value(&[])
    );
}
