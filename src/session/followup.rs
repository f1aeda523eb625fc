//! Follow-up of the open study: another time point of the same patient (the baseline or
//! a later scan) registered onto the open study's grid, and what changed between them.
//!
//! The open study is always the fixed image (its grid, its labels, its views stay as
//! they are, so nothing the user has open can be lost); the other time point is read,
//! registered and resampled onto it in a background job with progress and Cancel. The
//! transition map is computed in time order whichever of the two is the baseline.
//! Labels: the open study's current labels; for the other time point a label map the
//! user gives, else the lesion model's proposal (so is the open study's when it has no
//! lung or lesion labels at all; the editor is never changed by this).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::annotate::{CONSOLIDATION, GGO};
use crate::followup::progress::{
    LesionMatch, TransitionVolumes, match_lesions, transition_map, transition_volumes,
};
use crate::followup::report::{Progression, TimePoint};
use crate::followup::{Pair, RegisterOptions, RegistrationReport, Steps, Transform, register};
use crate::infer::{DeviceChoice, Task};
use crate::io::{dicom, load_ct, read_label_map_on};
use crate::session::jobs::JobControl;
use crate::volume::{CtVolume, LabelVolume};

/// Which time point the other study is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherIs {
    /// Earlier than the open study: the open study is the follow-up.
    Baseline,
    /// Later than the open study.
    Followup,
}

/// What the job needs.
#[derive(Debug, Clone)]
pub struct FollowupRequest {
    pub other_ct: PathBuf,
    pub other_labels: Option<PathBuf>,
    pub other_is: OtherIs,
    /// The open study's name (reports and tables).
    pub open_name: String,
}

/// Stages shown while the job runs ([`JobControl::set_progress`]'s stage).
pub const STAGES: [&str; 5] = [
    "reading the other study",
    "proposing labels (lesion model)",
    "registering",
    "mapping the changes",
    "done",
];

/// What identifies a study for the pair checks: its name (path), DICOM Modality and
/// PatientID when known.
#[derive(Debug, Clone, Copy)]
pub struct StudyIds<'a> {
    pub name: &'a str,
    pub modality: Option<&'a str>,
    pub patient_id: Option<&'a str>,
}

/// Checks a pair of time points before registering `moving` to `fixed`: a non-CT
/// series is an error naming both; different PatientIDs give a warning (returned).
pub fn check_studies(
    fixed: &StudyIds<'_>,
    moving: &StudyIds<'_>,
) -> Result<Option<String>, String> {
    for s in [fixed, moving] {
        if let Some(m) = s.modality
            && m != "CT"
        {
            return Err(format!(
                "{} is a {m} series, not CT: registering {} to {} needs two CTs",
                s.name, moving.name, fixed.name
            ));
        }
    }
    Ok(match (fixed.patient_id, moving.patient_id) {
        (Some(a), Some(b)) if a != b => Some(format!(
            "different patients: {} has PatientID {a:?}, {} has {b:?}",
            fixed.name, moving.name
        )),
        _ => None,
    })
}

/// The other time point on the open study's grid and what changed.
pub struct FollowupResult {
    pub request: FollowupRequest,
    /// The other study's CT and labels resampled onto the open study's grid.
    pub other_ct: CtVolume,
    pub other_labels: LabelVolume,
    /// The other study on its own grid, with its labels (the side-by-side views).
    pub other_native_ct: Arc<CtVolume>,
    pub other_native_labels: LabelVolume,
    /// Open-study point → other-study point.
    pub transform: Transform,
    pub report: RegistrationReport,
    /// Transition codes ([`crate::followup::progress::TRANSITIONS`]) on the open grid.
    pub transitions: LabelVolume,
    pub volumes: TransitionVolumes,
    pub lesions: Vec<LesionMatch>,
    /// Baseline then follow-up, each quantified on its own grid.
    pub time_points: Vec<TimePoint>,
    /// What the user should know (proposed labels, patient ids that differ).
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl FollowupResult {
    /// The tables of this analysis as the reports write them.
    pub fn progression(&self) -> Progression<'_> {
        let file = |n: usize| self.time_points.get(n).map_or("", |t| t.ct.as_str());
        Progression {
            baseline: file(0),
            followup: file(1),
            volumes: &self.volumes,
            lesions: &self.lesions,
            time_points: &self.time_points,
        }
    }
}

fn is_lung_or_lesion(v: u8) -> bool {
    (1..=4).contains(&v)
}

/// Runs the follow-up analysis; `open_ct` / `open_labels` are the open study's.
pub fn run(
    open_ct: Arc<CtVolume>,
    open_labels: LabelVolume,
    open_patient: Option<String>,
    request: FollowupRequest,
    control: &JobControl,
) -> Result<Box<FollowupResult>, String> {
    let t = Instant::now();
    let cancelled = || {
        if control.is_cancelled() {
            Err("cancelled".to_string())
        } else {
            Ok(())
        }
    };
    let mut notes = Vec::new();
    control.set_progress(0, 0, 1);
    let name = request.other_ct.display().to_string();
    let loaded = load_ct(&request.other_ct, None, &dicom::LoadOptions::default())
        .map_err(|e| format!("{name}: {}", super::error_chain(&e)))?;
    let meta = loaded.dicom_meta.as_ref();
    let open = StudyIds {
        name: &request.open_name,
        modality: None,
        patient_id: open_patient.as_deref(),
    };
    let other = StudyIds {
        name: &name,
        modality: meta.and_then(|m| m.modality.as_deref()),
        patient_id: meta.and_then(|m| m.patient_id.as_deref()),
    };
    notes.extend(check_studies(&open, &other)?);
    cancelled()?;
    let other_ct = Arc::new(loaded.volume);
    let other_labels = match &request.other_labels {
        Some(p) => read_label_map_on(p, &other_ct.geometry, &name)
            .map_err(|e| crate::io::guard::error_chain(&e))?,
        None => {
            control.set_progress(1, 0, 1);
            notes.push(format!("labels of {name} proposed by the lesion model"));
            propose(&other_ct)?
        }
    };
    cancelled()?;
    let open_labels = if open_labels.voxels.iter().any(|v| is_lung_or_lesion(*v)) {
        open_labels
    } else {
        control.set_progress(1, 0, 1);
        notes.push(
            "the open study has no lung or lesion labels: the lesion model's proposal was used (your labels are unchanged)"
                .into(),
        );
        propose(&open_ct)?
    };
    cancelled()?;
    control.set_progress(2, 0, 100);
    let lungs = |l: &LabelVolume| l.map(|v| u8::from(is_lung_or_lesion(v)));
    let (open_lungs, other_lungs) = (lungs(&open_labels), lungs(&other_labels));
    let lesions = |l: &LabelVolume| l.map(|v| u8::from(v == GGO || v == CONSOLIDATION));
    let progress = |_: &str, fraction: f64| {
        control.set_progress(2, (fraction * 100.0) as usize, 100);
        control.wake();
    };
    let steps = Steps {
        cancel: control.cancel_flag(),
        progress: &progress,
    };
    let pair = Pair {
        fixed: &open_ct,
        moving: &other_ct,
        fixed_lungs: Some(&open_lungs),
        moving_lungs: Some(&other_lungs),
        fixed_lesions: Some(&lesions(&open_labels)),
        moving_lesions: Some(&lesions(&other_labels)),
        fixed_name: "the open study",
        moving_name: &name,
    };
    let registration =
        register(&pair, &RegisterOptions::default(), &steps).map_err(|e| e.to_string())?;
    cancelled()?;
    control.set_progress(3, 0, 1);
    let grid = &open_ct.geometry;
    let transform = registration.transform;
    let other_ct_on_grid = transform.warp_ct(&other_ct, grid, -1024);
    let other_labels_on_grid = transform.warp_labels(&other_labels, grid, 0);
    let (baseline, followup) = match request.other_is {
        OtherIs::Baseline => (&other_labels_on_grid, &open_labels),
        OtherIs::Followup => (&open_labels, &other_labels_on_grid),
    };
    let transitions = transition_map(baseline, followup).map_err(|e| e.to_string())?;
    let volumes = transition_volumes(&transitions, followup).map_err(|e| e.to_string())?;
    let lesions = match_lesions(baseline, followup, 0.05);
    let open_point = (request.open_name.as_str(), &*open_ct, &open_labels);
    let other_point = (name.as_str(), &*other_ct, &other_labels);
    let (first, second) = match request.other_is {
        OtherIs::Baseline => (other_point, open_point),
        OtherIs::Followup => (open_point, other_point),
    };
    let time_points = [("baseline", first), ("follow-up", second)]
        .into_iter()
        .map(|(when, (file, ct, labels))| TimePoint::measure(when, file, ct, labels))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    control.set_progress(4, 1, 1);
    Ok(Box::new(FollowupResult {
        request,
        other_ct: other_ct_on_grid,
        other_labels: other_labels_on_grid,
        other_native_ct: other_ct,
        other_native_labels: other_labels,
        transform,
        report: registration.report,
        transitions,
        volumes,
        lesions,
        time_points,
        notes,
        seconds: t.elapsed().as_secs_f64(),
    }))
}

/// The lesion model's labels (lungs and lesions) for a CT, in a worker of its own.
fn propose(ct: &Arc<CtVolume>) -> Result<LabelVolume, String> {
    use crate::infer::worker::{Job, Worker};
    let mut worker = Worker::spawn(
        crate::infer::default_factory(DeviceChoice::Auto, None, None),
        Arc::new(|| {}),
        1,
    );
    let job = Job {
        task: Task::Lesion,
        ct: ct.clone(),
        lungs: None,
    };
    worker
        .run_to_end(job, |_| {})
        .map(|p| p.labels)
        .map_err(|m| format!("the lesion model failed: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::DemoOptions;
    use crate::io::nifti::write_nifti;
    use nalgebra::{Matrix4, Vector3};

    /// The demo as the baseline; a "follow-up" file made from it by a shift, with one
    /// ground-glass region turned consolidation: registered back, the change shows as
    /// ground-glass → consolidation where it was made.
    #[test]
    fn pairs_of_other_modalities_are_refused_and_other_patients_warned() {
        let ct = |name, patient| StudyIds {
            name,
            modality: Some("CT"),
            patient_id: patient,
        };
        let a = ct("a/", Some("P1"));
        assert_eq!(check_studies(&a, &ct("b/", Some("P1"))), Ok(None));
        assert_eq!(check_studies(&a, &ct("b/", None)), Ok(None));
        let w = check_studies(&a, &ct("b/", Some("P2"))).unwrap().unwrap();
        assert!(
            w.contains("a/") && w.contains("b/") && w.contains("P2"),
            "{w}"
        );
        let mr = StudyIds {
            modality: Some("MR"),
            ..ct("m/", Some("P1"))
        };
        let e = check_studies(&a, &mr).unwrap_err();
        assert!(e.contains("m/ is a MR series") && e.contains("a/"), "{e}");
    }

    #[test]
    fn another_time_point_is_registered_and_its_changes_mapped() {
        let demo = crate::demo::generate(&DemoOptions {
            dims: [96, 96, 48],
            spacing_mm: [3.6, 3.6, 6.0],
            ..Default::default()
        });
        let shift = Transform::affine(Matrix4::new_translation(&Vector3::new(4.0, -3.0, 6.0)));
        let g = &demo.ct.geometry;
        let later_ct = shift.warp_ct(&demo.ct, g, -1024);
        let mut later_labels = shift.warp_labels(&demo.truth, g, 0);
        let ggo_before = later_labels.voxels.iter().filter(|v| **v == GGO).count();
        assert!(ggo_before > 100, "the demo has ground-glass");
        let mut changed = 0;
        for v in later_labels.voxels.iter_mut() {
            if *v == GGO && changed < ggo_before / 2 {
                *v = CONSOLIDATION;
                changed += 1;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (ct_path, labels_path) = (
            dir.path().join("later.nii.gz"),
            dir.path().join("later_labels.nii.gz"),
        );
        write_nifti(&ct_path, &later_ct).unwrap();
        write_nifti(&labels_path, &later_labels).unwrap();
        let control = JobControl::default();
        let r = run(
            Arc::new(demo.ct.clone()),
            demo.truth.clone(),
            None,
            FollowupRequest {
                other_ct: ct_path,
                other_labels: Some(labels_path),
                other_is: OtherIs::Followup,
                open_name: "demo".into(),
            },
            &control,
        )
        .unwrap();
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let both = r
            .volumes
            .regions
            .iter()
            .find(|x| x.region == "both")
            .unwrap();
        let ml = crate::metrics::voxel_volume_ml(g);
        let made = changed as f64 * ml;
        // Most of what was changed is found as ground-glass → consolidation.
        assert!(
            (both.ml[8] - made).abs() < 0.25 * made,
            "GGO→consolidation {:.1} mL, made {made:.1} mL",
            both.ml[8]
        );
        assert!(r.report.lung_dice_final.unwrap() > 0.95);
        // Cancelled: an error, nothing else.
        control.cancel();
        let again = run(
            Arc::new(demo.ct.clone()),
            demo.truth.clone(),
            None,
            r.request.clone(),
            &control,
        );
        assert_eq!(again.err().as_deref(), Some("cancelled"));
    }
}
