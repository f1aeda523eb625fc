//! `pulmo register` and `pulmo progress`: a follow-up CT registered to its baseline, and
//! what changed between them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use nalgebra::Matrix4;

use crate::cli::read_labels;
use crate::followup::progress::{match_lesions, transition_map, transition_volumes};
use crate::followup::report::{self, Progression, TimePoint};
use crate::followup::{
    DisplacementField, Pair, RegisterOptions, Registration, Steps, Transform, register,
};
use crate::infer::{DeviceChoice, Task};
use crate::io::nifti::{read_nifti_vectors, write_nifti, write_nifti_vectors};
use crate::io::{LoadedCt, load_ct};
use crate::session::followup::StudyIds;
use crate::volume::{CtVolume, LabelVolume};

/// Arguments of `pulmo register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// The fixed CT (the follow-up): everything is resampled onto its grid.
    pub fixed: PathBuf,
    /// The moving CT (the baseline).
    pub moving: PathBuf,
    /// Output folder: displacement.nii.gz, moving_warped.nii.gz, registration.json.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Lung mask (or label map: any non-zero lung or lesion label) of the fixed CT;
    /// proposed by the lung model when absent.
    #[arg(long)]
    pub fixed_mask: Option<PathBuf>,
    /// Lung mask of the moving CT; proposed by the lung model when absent.
    #[arg(long)]
    pub moving_mask: Option<PathBuf>,
    /// Labels of the fixed CT (lungs 1/2, ground-glass 3, consolidation 4): their lesions
    /// are kept out of the intensity force; their lungs serve as the mask when
    /// --fixed-mask is absent.
    #[arg(long)]
    pub fixed_labels: Option<PathBuf>,
    /// Labels of the moving CT, used as --fixed-labels is, and warped onto the fixed grid
    /// (nearest neighbour): moving_labels_warped.nii.gz.
    #[arg(long)]
    pub moving_labels: Option<PathBuf>,
    /// Rigid and affine only (no deformable stage).
    #[arg(long)]
    pub affine_only: bool,
    /// Register without lung masks (and without running the lung model): lung-like HU
    /// guide the start and the body guides the metric.
    #[arg(long, conflicts_with_all = ["fixed_mask", "moving_mask", "fixed_labels", "moving_labels"])]
    pub no_masks: bool,
    /// Device for the lung model when masks are proposed.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Arguments of `pulmo progress`.
#[derive(clap::Args, Debug)]
pub struct ProgressArgs {
    /// The baseline CT.
    #[arg(long)]
    pub baseline: PathBuf,
    /// Its labels (lungs 1/2, ground-glass 3, consolidation 4); proposed by the lesion
    /// model when absent.
    #[arg(long)]
    pub baseline_labels: Option<PathBuf>,
    /// The follow-up CT.
    #[arg(long)]
    pub followup: PathBuf,
    /// Its labels; proposed by the lesion model when absent.
    #[arg(long)]
    pub followup_labels: Option<PathBuf>,
    /// A `pulmo register` output folder for this pair (its displacement.nii.gz) instead
    /// of registering again.
    #[arg(long)]
    pub registration: Option<PathBuf>,
    /// Output folder: transitions.nii.gz, baseline_labels_warped.nii.gz, progress.json.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Print the JSON report (otherwise a text summary).
    #[arg(long)]
    pub json: bool,
    /// Smallest lesion (mL, at either time point) listed among the matches.
    #[arg(long, default_value_t = 0.05)]
    pub min_lesion_ml: f64,
    /// Device for proposals.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

fn load(path: &Path) -> Result<LoadedCt> {
    let loaded = load_ct(path, None, &Default::default())
        .with_context(|| format!("loading {}", path.display()))?;
    for w in &loaded.warnings {
        eprintln!("pulmo: warning: {}: {w}", path.display());
    }
    Ok(loaded)
}

/// Warns when the two studies belong to different patients; refuses a non-CT series.
fn check_studies(fixed: (&Path, &LoadedCt), moving: (&Path, &LoadedCt)) -> Result<()> {
    fn ids<'a>(name: &'a str, ct: &'a LoadedCt) -> StudyIds<'a> {
        let m = ct.dicom_meta.as_ref();
        StudyIds {
            name,
            modality: m.and_then(|m| m.modality.as_deref()),
            patient_id: m.and_then(|m| m.patient_id.as_deref()),
        }
    }
    let (f, m) = (
        fixed.0.display().to_string(),
        moving.0.display().to_string(),
    );
    let warning = crate::session::followup::check_studies(&ids(&f, fixed.1), &ids(&m, moving.1))
        .map_err(anyhow::Error::msg)?;
    if let Some(w) = warning {
        eprintln!("pulmo: warning: {w}");
    }
    Ok(())
}

/// The lung mask of a CT: from a file (any lung or lesion label counts as lung) or
/// proposed by the lung model.
fn lungs_of(
    ct: &Arc<CtVolume>,
    ct_path: &Path,
    mask: Option<&Path>,
    device: DeviceChoice,
) -> Result<LabelVolume> {
    let labels = match mask {
        Some(p) => read_labels(p)?,
        None => {
            eprintln!("proposing the lungs of {} (lung model)", ct_path.display());
            crate::cli::ai::propose(Task::Lung, ct, device)
                .with_context(|| format!("proposing the lungs of {}", ct_path.display()))?
        }
    };
    Ok(labels.map(|v| u8::from((1..=4).contains(&v))))
}

/// The lesions (ground-glass, consolidation) of a label map as a 0/1 mask.
fn lesion_mask(labels: &LabelVolume) -> LabelVolume {
    labels.map(|v| u8::from(v == crate::annotate::GGO || v == crate::annotate::CONSOLIDATION))
}

/// Runs the registration with progress on stderr.
fn run_registration(
    fixed: &CtVolume,
    moving: &CtVolume,
    lungs: Option<(&LabelVolume, &LabelVolume)>,
    lesions: (Option<&LabelVolume>, Option<&LabelVolume>),
    names: (&Path, &Path),
    affine_only: bool,
) -> Result<Registration> {
    let (fixed_name, moving_name) = (names.0.display().to_string(), names.1.display().to_string());
    let pair = Pair {
        fixed,
        moving,
        fixed_lungs: lungs.map(|l| l.0),
        moving_lungs: lungs.map(|l| l.1),
        fixed_lesions: lesions.0,
        moving_lesions: lesions.1,
        fixed_name: &fixed_name,
        moving_name: &moving_name,
    };
    let options = RegisterOptions {
        deformable: !affine_only,
        ..Default::default()
    };
    let cancel = AtomicBool::new(false);
    let progress = |stage: &str, fraction: f64| {
        eprintln!("  {stage}: {:.0} %", 100.0 * fraction);
    };
    let steps = Steps {
        cancel: &cancel,
        progress: &progress,
    };
    Ok(register(&pair, &options, &steps)?)
}

pub fn register_cmd(a: &RegisterArgs) -> Result<()> {
    let t = Instant::now();
    let fixed = load(&a.fixed)?;
    let moving = load(&a.moving)?;
    check_studies((&a.fixed, &fixed), (&a.moving, &moving))?;
    let load_s = t.elapsed().as_secs_f64();
    let fixed_ct = Arc::new(fixed.volume);
    let moving_ct = Arc::new(moving.volume);
    let labels_on =
        |path: Option<&Path>, ct: &CtVolume, ct_path: &Path| -> Result<Option<LabelVolume>> {
            let Some(p) = path else { return Ok(None) };
            let l = read_labels(p)?;
            if let Some(diff) = ct.geometry.grid_difference(&l.geometry) {
                bail!(
                    "{}: not on the grid of {}: {diff}",
                    p.display(),
                    ct_path.display()
                );
            }
            Ok(Some(l))
        };
    let fixed_labels = labels_on(a.fixed_labels.as_deref(), &fixed_ct, &a.fixed)?;
    let moving_labels = labels_on(a.moving_labels.as_deref(), &moving_ct, &a.moving)?;
    let lungs = if a.no_masks {
        None
    } else {
        let mask_or_labels = |mask: &Option<PathBuf>, labels: &Option<PathBuf>| {
            mask.as_deref().or(labels.as_deref()).map(Path::to_path_buf)
        };
        Some((
            lungs_of(
                &fixed_ct,
                &a.fixed,
                mask_or_labels(&a.fixed_mask, &a.fixed_labels).as_deref(),
                a.device,
            )?,
            lungs_of(
                &moving_ct,
                &a.moving,
                mask_or_labels(&a.moving_mask, &a.moving_labels).as_deref(),
                a.device,
            )?,
        ))
    };
    let lesions_of = |l: &Option<LabelVolume>| l.as_ref().map(lesion_mask);
    let (fixed_lesions, moving_lesions) = (lesions_of(&fixed_labels), lesions_of(&moving_labels));
    let t_reg = Instant::now();
    let r = run_registration(
        &fixed_ct,
        &moving_ct,
        lungs.as_ref().map(|(f, m)| (f, m)),
        (fixed_lesions.as_ref(), moving_lesions.as_ref()),
        (&a.fixed, &a.moving),
        a.affine_only,
    )?;
    let register_s = t_reg.elapsed().as_secs_f64();
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let t_out = Instant::now();
    let grid = &fixed_ct.geometry;
    let warped = r.transform.warp_ct(&moving_ct, grid, -1024);
    let displacement = r.transform.displacement_on(grid);
    let resample_s = t_out.elapsed().as_secs_f64();
    let field_path = a.output.join("displacement.nii.gz");
    write_nifti_vectors(&field_path, &displacement.into_volume())?;
    write_nifti(&a.output.join("moving_warped.nii.gz"), &warped)?;
    if let Some(l) = &moving_labels {
        if let Some(diff) = moving_ct.geometry.grid_difference(&l.geometry) {
            bail!(
                "{}: not on the grid of {}: {diff}",
                a.moving_labels
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                a.moving.display()
            );
        }
        let lw = r.transform.warp_labels(l, grid, 0);
        write_nifti(&a.output.join("moving_labels_warped.nii.gz"), &lw)?;
    }
    let report = serde_json::json!({
        "fixed": a.fixed.display().to_string(),
        "moving": a.moving.display().to_string(),
        "convention": "displacement.nii.gz: at each voxel centre x of the fixed grid, \
            d(x) in LPS mm such that x + d(x) is the corresponding point of the moving \
            image (ITK / SimpleITK DisplacementFieldTransform, ANTs, Slicer)",
        "registration": r.report,
        "seconds": {
            "load": load_s,
            "register": register_s,
            "resample": resample_s,
            "total": t.elapsed().as_secs_f64(),
        },
    });
    crate::io::atomic::write_atomically(&a.output.join("registration.json"), None, |w| {
        w.write_all(
            serde_json::to_string_pretty(&report)
                .unwrap_or_default()
                .as_bytes(),
        )
    })
    .with_context(|| format!("writing {}", a.output.join("registration.json").display()))?;
    let rep = &r.report;
    println!(
        "registered {} to {} in {:.1} s (resampling {:.1} s)",
        a.moving.display(),
        a.fixed.display(),
        register_s,
        resample_s
    );
    if let (Some(d0), Some(d1)) = (rep.lung_dice_affine, rep.lung_dice_final) {
        println!("lung Dice: affine {d0:.3}, final {d1:.3}");
    }
    if let Some(j) = &rep.jacobian {
        println!(
            "Jacobian: min {:.3}, max {:.3}, folded {:.4} % of {} voxels",
            j.min, j.max, j.folded_pct, j.voxels
        );
    }
    println!("wrote {}", a.output.display());
    Ok(())
}

pub fn progress_cmd(a: &ProgressArgs) -> Result<()> {
    let baseline = load(&a.baseline)?;
    let followup = load(&a.followup)?;
    check_studies((&a.followup, &followup), (&a.baseline, &baseline))?;
    let b_ct = Arc::new(baseline.volume);
    let f_ct = Arc::new(followup.volume);
    let labels_of =
        |ct: &Arc<CtVolume>, path: &Path, given: Option<&Path>| -> Result<LabelVolume> {
            let l = match given {
                Some(p) => read_labels(p)?,
                None => {
                    eprintln!(
                        "proposing lungs and lesions of {} (lesion model)",
                        path.display()
                    );
                    crate::cli::ai::propose(Task::Lesion, ct, a.device)
                        .with_context(|| format!("proposing lesions of {}", path.display()))?
                }
            };
            if let Some(diff) = ct.geometry.grid_difference(&l.geometry) {
                bail!(
                    "the labels of {} are not on its grid: {diff}",
                    path.display()
                );
            }
            Ok(l)
        };
    let b_labels = labels_of(&b_ct, &a.baseline, a.baseline_labels.as_deref())?;
    let f_labels = labels_of(&f_ct, &a.followup, a.followup_labels.as_deref())?;
    let (transform, registration) = match &a.registration {
        Some(dir) => {
            let path = dir.join("displacement.nii.gz");
            let field = DisplacementField::from_volume(read_nifti_vectors(&path)?);
            if let Some(diff) = f_ct.geometry.grid_difference(&field.geometry) {
                bail!(
                    "{} is not on the grid of {}: {diff}",
                    path.display(),
                    a.followup.display()
                );
            }
            let t = Transform {
                moving_from_fixed: Matrix4::identity(),
                field: Some(field),
            };
            (t, serde_json::Value::Null)
        }
        None => {
            let lung = |l: &LabelVolume| l.map(|v| u8::from((1..=4).contains(&v)));
            let (fl, bl) = (lung(&f_labels), lung(&b_labels));
            let r = run_registration(
                &f_ct,
                &b_ct,
                Some((&fl, &bl)),
                (Some(&lesion_mask(&f_labels)), Some(&lesion_mask(&b_labels))),
                (&a.followup, &a.baseline),
                false,
            )?;
            let report = serde_json::to_value(&r.report)?;
            (r.transform, report)
        }
    };
    let b_on_f = transform.warp_labels(&b_labels, &f_ct.geometry, 0);
    let map = transition_map(&b_on_f, &f_labels)?;
    let volumes = transition_volumes(&map, &f_labels)?;
    let lesions = match_lesions(&b_on_f, &f_labels, a.min_lesion_ml);
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    write_nifti(&a.output.join("transitions.nii.gz"), &map)?;
    write_nifti(&a.output.join("baseline_labels_warped.nii.gz"), &b_on_f)?;
    let time_points = [
        TimePoint::measure(
            "baseline",
            &a.baseline.display().to_string(),
            &b_ct,
            &b_labels,
        ),
        TimePoint::measure(
            "follow-up",
            &a.followup.display().to_string(),
            &f_ct,
            &f_labels,
        ),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| anyhow::anyhow!("quantifying the time points: {e}"))?;
    let (baseline_name, followup_name) = (
        a.baseline.display().to_string(),
        a.followup.display().to_string(),
    );
    let progression = Progression {
        baseline: &baseline_name,
        followup: &followup_name,
        volumes: &volumes,
        lesions: &lesions,
        time_points: &time_points,
    };
    let text = serde_json::to_string_pretty(&progression.to_json(registration))?;
    let csv = progression.to_csv();
    for (name, bytes) in [
        ("progress.json", text.as_bytes()),
        ("progress.csv", csv.as_bytes()),
    ] {
        let path = a.output.join(name);
        crate::io::atomic::write_atomically(&path, None, |w| w.write_all(bytes))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{text}");
    } else {
        for line in progression.text_lines(20) {
            println!("{line}");
        }
        println!("wrote {}", a.output.display());
    }
    Ok(())
}

/// Arguments of `pulmo timeline`.
#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// The CTs, oldest first.
    #[arg(long, num_args = 1.., required = true)]
    pub ct: Vec<PathBuf>,
    /// Their label maps, in the same order.
    #[arg(long, num_args = 1.., required = true)]
    pub labels: Vec<PathBuf>,
    /// Names of the time points (dates, days since admission...); default t0, t1, ...
    #[arg(long, num_args = 1..)]
    pub names: Vec<String>,
    /// Output folder: timeline.csv and timeline.json.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

/// A table per time point: lung volumes, ground-glass and consolidation volumes, % of the
/// lungs involved (each time point quantified on its own grid, as `pulmo quantify`), and
/// a plot of the lesion volumes over time.
pub fn timeline_cmd(a: &TimelineArgs) -> Result<()> {
    if a.ct.len() != a.labels.len() {
        bail!(
            "{} CTs but {} label maps: give one label map per CT, in the same order",
            a.ct.len(),
            a.labels.len()
        );
    }
    if !a.names.is_empty() && a.names.len() != a.ct.len() {
        bail!("{} names for {} time points", a.names.len(), a.ct.len());
    }
    let mut rows = Vec::new();
    for (n, (ct_path, labels_path)) in a.ct.iter().zip(&a.labels).enumerate() {
        let ct = load(ct_path)?;
        let labels = read_labels(labels_path)?;
        let name = a.names.get(n).cloned().unwrap_or_else(|| format!("t{n}"));
        rows.push(
            TimePoint::measure(&name, &ct_path.display().to_string(), &ct.volume, &labels)
                .map_err(|e| {
                    anyhow::anyhow!("{} with {}: {e}", ct_path.display(), labels_path.display())
                })?,
        );
    }
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let csv = report::timeline_csv(&rows);
    let json = serde_json::to_string_pretty(&serde_json::json!({ "time_points": rows }))?;
    let plot = crate::render::report::encode_png(&lesion_plot(&rows))
        .map_err(|e| anyhow::anyhow!("cannot encode the plot: {e}"))?;
    for (name, bytes) in [
        ("timeline.csv", csv.as_bytes()),
        ("timeline.json", json.as_bytes()),
        ("timeline.png", plot.as_slice()),
    ] {
        let path = a.output.join(name);
        crate::io::atomic::write_atomically(&path, None, |w| w.write_all(bytes))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for line in report::timeline_lines(&rows) {
        println!("{line}");
    }
    println!("wrote {}", a.output.display());
    Ok(())
}

/// The lesion volumes of the time points as a plot (`pulmo timeline`, the viewer's
/// report).
pub fn lesion_plot(rows: &[TimePoint]) -> crate::render::text::Canvas {
    let (names, ggo, cons) = TimePoint::lesion_series(rows);
    crate::render::report::lesion_plot(&names, &ggo, &cons)
}
