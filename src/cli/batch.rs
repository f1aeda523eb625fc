//! `pulmo batch`: a manifest of studies through segmentation, quantification and
//! comparison, resumable and sharded (see [`crate::batch`]); `pulmo batch merge`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::batch::{self, Model, Shard, Task};
use crate::infer::worker::Worker;
use crate::infer::{self, DeviceChoice, default_factory};

/// Arguments of `pulmo batch`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub command: Option<BatchCommand>,
    /// The manifest: CSV with a header (columns ct, and optionally id, labels,
    /// reference) or a JSON array of objects with those keys. Relative paths are from
    /// the manifest's folder.
    pub manifest: Option<PathBuf>,
    /// Output folder: studies/<id>/ per study, results.csv and results.json.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Comma-separated: lung, lesion (segment; lesion includes the lungs), quantify,
    /// compare (against the manifest's reference labels).
    #[arg(long, default_value = "lung,quantify")]
    pub tasks: String,
    /// Run only shard I of N (0 <= I < N): the studies at manifest positions I, I + N,
    /// ... For Slurm array tasks and Kubernetes indexed Jobs; merge afterwards.
    #[arg(long)]
    pub shard: Option<String>,
    /// auto (CUDA when available), cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

#[derive(clap::Subcommand, Debug)]
pub enum BatchCommand {
    /// Join the per-study rows of OUT into OUT/results.csv and OUT/results.json with
    /// summary statistics (mean, median, IQR).
    Merge {
        /// The output folder of one or more `pulmo batch` runs (shards).
        out: PathBuf,
    },
    /// Write a Slurm job array (one array task per shard) and a merge job that runs
    /// after it succeeds (afterok) into OUT/slurm/; --submit submits both with sbatch.
    Slurm(Box<ClusterArgs>),
    /// Write a Kubernetes indexed Job (shard from JOB_COMPLETION_INDEX) and its merge
    /// Job into OUT/k8s/pulmo-batch.yaml (apply them with kubectl).
    K8s(Box<ClusterArgs>),
}

/// Arguments of `pulmo batch slurm` and `pulmo batch k8s`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// The manifest (as for `pulmo batch`); the nodes must see the same path.
    pub manifest: PathBuf,
    /// Output folder, shared by the nodes.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    #[arg(long, default_value = "lung,quantify")]
    pub tasks: String,
    /// Number of shards (array tasks); default one per 50 studies, at most 1000.
    #[arg(long)]
    pub shards: Option<usize>,
    /// At most K shards at once (Slurm %K, Kubernetes parallelism; 0: no limit).
    #[arg(long, default_value_t = 0)]
    pub array_max: usize,
    #[arg(long, default_value_t = 2)]
    pub cpus_per_task: usize,
    #[arg(long, default_value_t = 0)]
    pub gpus_per_task: usize,
    /// Memory per task (Slurm: 8G; Kubernetes: 8Gi).
    #[arg(long, default_value = "8G")]
    pub mem: String,
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Container image for Kubernetes.
    #[arg(long, default_value = "pulmo:latest")]
    pub image: String,
    /// Submit the array and the merge job with sbatch (Slurm only).
    #[arg(long)]
    pub submit: bool,
}

fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// Writes the scheduler scripts; submits them to Slurm with `--submit`.
fn cluster_cmd(a: &ClusterArgs, slurm: bool) -> Result<()> {
    use crate::batch::scheduler::ClusterJob;
    Task::parse_list(&a.tasks).map_err(anyhow::Error::msg)?;
    let studies = batch::read_manifest(&a.manifest)?.len();
    if studies == 0 {
        bail!("{}: no studies", a.manifest.display());
    }
    let shards = a
        .shards
        .unwrap_or_else(|| studies.div_ceil(50))
        .clamp(1, studies.min(1000));
    let (pulmo, manifest, out) = (
        std::env::current_exe().context("finding the pulmo executable")?,
        absolute(&a.manifest)?,
        absolute(&a.output)?,
    );
    let job = ClusterJob {
        pulmo: &pulmo,
        manifest: &manifest,
        out: &out,
        tasks: &a.tasks,
        device: &a.device,
        shards,
        array_max: a.array_max,
        cpus_per_task: a.cpus_per_task,
        gpus_per_task: a.gpus_per_task,
        mem: &a.mem,
        partition: a.partition.as_deref(),
        image: &a.image,
    };
    let write = |dir: &str, name: &str, text: &str| -> Result<PathBuf> {
        let d = out.join(dir);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        let p = d.join(name);
        crate::io::atomic::write_bytes(&p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
    if !slurm {
        let p = write("k8s", "pulmo-batch.yaml", &job.kubernetes())?;
        println!(
            "wrote {} ({shards} shards of {studies} studies)",
            p.display()
        );
        return Ok(());
    }
    let array = write("slurm", "batch.sbatch", &job.slurm_array())?;
    let merge = write("slurm", "merge.sbatch", &job.slurm_merge())?;
    println!(
        "wrote {} ({shards} array tasks for {studies} studies) and {}",
        array.display(),
        merge.display()
    );
    if a.submit {
        let sbatch = |args: &[&str]| -> Result<String> {
            let o = std::process::Command::new("sbatch")
                .args(args)
                .output()
                .context("running sbatch (is Slurm installed and SLURM_CONF set?)")?;
            if !o.status.success() {
                bail!(
                    "sbatch {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&o.stdout);
            // --parsable: "jobid" or "jobid;cluster".
            Ok(text.trim().split(';').next().unwrap_or("").to_string())
        };
        let array_id = sbatch(&["--parsable", &array.display().to_string()])?;
        let merge_id = sbatch(&[
            "--parsable",
            &format!("--dependency=afterok:{array_id}"),
            &merge.display().to_string(),
        ])?;
        println!("submitted array job {array_id} and merge job {merge_id}");
    }
    Ok(())
}

pub fn batch_cmd(a: &BatchArgs) -> Result<()> {
    match &a.command {
        Some(BatchCommand::Merge { out }) => {
            let m = batch::merge(out)?;
            print_summary(&m);
            println!(
                "wrote {} and results.json",
                out.join("results.csv").display()
            );
            return Ok(());
        }
        Some(BatchCommand::Slurm(c)) => return cluster_cmd(c, true),
        Some(BatchCommand::K8s(c)) => return cluster_cmd(c, false),
        None => {}
    }
    let (Some(manifest), Some(out)) = (&a.manifest, &a.output) else {
        bail!("give a manifest and -o OUT (or: pulmo batch merge OUT)");
    };
    let tasks = Task::parse_list(&a.tasks).map_err(anyhow::Error::msg)?;
    let shard = match &a.shard {
        Some(s) => Shard::parse(s).map_err(anyhow::Error::msg)?,
        None => Shard::ALL,
    };
    let entries = batch::read_manifest(manifest)?;
    let mine: Vec<_> = entries
        .iter()
        .enumerate()
        .filter(|(n, _)| shard.picks(*n))
        .map(|(_, e)| e)
        .collect();
    std::fs::create_dir_all(out.join("studies"))
        .with_context(|| format!("creating {}", out.join("studies").display()))?;
    // One worker for the whole run: the models load once, on first use.
    let mut worker: Option<Worker> = None;
    let device = a.device;
    let mut segment = |model: Model, ct: &Arc<crate::volume::CtVolume>| {
        let w = worker.get_or_insert_with(|| {
            Worker::spawn(default_factory(device, None, None), Arc::new(|| {}), 1)
        });
        let task = match model {
            Model::Lung => infer::Task::Lung,
            Model::Lesion => infer::Task::Lesion,
        };
        super::ai::run_job(w, task, ct, false)
            .map(|p| p.labels)
            .map_err(|e| format!("{e:#}"))
    };
    let t0 = Instant::now();
    let (mut done, mut skipped, mut failed) = (0usize, 0usize, Vec::new());
    let total = mine.len();
    eprintln!(
        "pulmo batch: {total} of {} studies (shard {}/{}), tasks {}",
        entries.len(),
        shard.index,
        shard.count,
        a.tasks
    );
    for (k, entry) in mine.iter().enumerate() {
        let dir = batch::study_dir(out, &entry.id);
        if batch::is_complete(&dir, entry, &tasks) {
            skipped += 1;
            eprintln!("[{}/{total}] {}: complete, skipped", k + 1, entry.id);
            continue;
        }
        let row = batch::run_study(entry, &tasks, &dir, &mut segment);
        done += 1;
        let elapsed = t0.elapsed().as_secs_f64();
        let rate = done as f64 / elapsed.max(1e-9);
        let left = (total - k - 1) as f64 / rate;
        let status = match &row.error {
            None => "ok".to_string(),
            Some(e) => {
                failed.push(entry.id.clone());
                format!("FAILED: {e}")
            }
        };
        eprintln!(
            "[{}/{total}] {}: {status} ({:.1} s; {:.1} studies/h; about {:.0} s left)",
            k + 1,
            entry.id,
            row.seconds,
            rate * 3600.0,
            left
        );
    }
    eprintln!(
        "pulmo batch: {done} run, {skipped} already complete, {} failed, in {:.1} s",
        failed.len(),
        t0.elapsed().as_secs_f64()
    );
    if shard.count == 1 {
        let m = batch::merge(out)?;
        print_summary(&m);
        println!("wrote {}", out.join("results.csv").display());
    }
    if !failed.is_empty() {
        bail!(
            "{} of {total} studies failed: {} (their rows in {}/studies/<id>/row.json say why)",
            failed.len(),
            failed.join(", "),
            out.display()
        );
    }
    Ok(())
}

fn print_summary(m: &batch::Merged) {
    println!(
        "{} studies, {} failed{}",
        m.rows.len(),
        m.failed.len(),
        if m.failed.is_empty() {
            String::new()
        } else {
            format!(": {}", m.failed.join(", "))
        }
    );
    println!(
        "{:<18} {:>5} {:>12} {:>12} {:>12} {:>12}",
        "column", "n", "mean", "median", "q1", "q3"
    );
    let f = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.3}"));
    for s in m.summary.iter().filter(|s| s.n > 0) {
        println!(
            "{:<18} {:>5} {:>12} {:>12} {:>12} {:>12}",
            s.column,
            s.n,
            f(s.mean),
            f(s.median),
            f(s.q1),
            f(s.q3)
        );
    }
}
