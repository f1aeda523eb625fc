//! Follow-up tables as users export them: a row per time point (lung, ground-glass and
//! consolidation volumes, % involvement), the change volumes per region and the lesions
//! matched over time, as CSV, JSON and text lines for the one-page PNG report. One home
//! for `pulmo timeline`, `pulmo progress` and the viewer's exports.

use serde::Serialize;

use super::progress::{
    LesionMatch, PROGRESSION_CODES, RECOVERY_CODES, TRANSITIONS, TransitionVolumes,
};
use crate::annotate::{CONSOLIDATION, GGO};
use crate::metrics::MetricsError;
use crate::metrics::fmt_opt;
use crate::metrics::quantify::{QuantifyOptions, quantify};
use crate::metrics::report::{csv_field, csv_opt};
use crate::volume::{CtVolume, LabelVolume};

/// One time point's row: each time point quantified on its own grid, as
/// `pulmo quantify` does (lungs 1 and 2, lesions ground-glass and consolidation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimePoint {
    pub name: String,
    pub ct: String,
    pub left_lung_ml: f64,
    pub right_lung_ml: f64,
    pub lungs_ml: f64,
    pub ggo_ml: f64,
    pub consolidation_ml: f64,
    pub involvement_pct: Option<f64>,
}

impl TimePoint {
    /// Quantifies `labels` on `ct`; `name` is the time point's (a date, "baseline"),
    /// `ct_name` the file it came from.
    pub fn measure(
        name: &str,
        ct_name: &str,
        ct: &CtVolume,
        labels: &LabelVolume,
    ) -> Result<TimePoint, MetricsError> {
        let options = QuantifyOptions {
            lesion_labels: vec![GGO, CONSOLIDATION],
            ..Default::default()
        };
        let q = quantify(ct, labels, &options)?;
        let ml = q.voxel_volume_ml;
        let [left, right, both] = &q.lungs;
        Ok(TimePoint {
            name: name.to_string(),
            ct: ct_name.to_string(),
            left_lung_ml: left.whole.voxels as f64 * ml,
            right_lung_ml: right.whole.voxels as f64 * ml,
            lungs_ml: both.whole.voxels as f64 * ml,
            ggo_ml: both.whole.lesion_voxels[0] as f64 * ml,
            consolidation_ml: both.whole.lesion_voxels[1] as f64 * ml,
            involvement_pct: both.whole.involvement_pct(),
        })
    }

    /// The names, ground-glass and consolidation volumes of `rows`, as a plot takes them.
    pub fn lesion_series(rows: &[TimePoint]) -> (Vec<String>, Vec<f64>, Vec<f64>) {
        (
            rows.iter().map(|r| r.name.clone()).collect(),
            rows.iter().map(|r| r.ggo_ml).collect(),
            rows.iter().map(|r| r.consolidation_ml).collect(),
        )
    }

    /// Ground-glass plus consolidation (mL).
    pub fn lesion_ml(&self) -> f64 {
        self.ggo_ml + self.consolidation_ml
    }
}

/// The header of [`timeline_csv`].
pub const TIMELINE_CSV_HEADER: &str =
    "time_point,ct,left_lung_ml,right_lung_ml,lungs_ml,ggo_ml,consolidation_ml,involvement_pct";

/// The time points as CSV (header, then a row each, oldest first).
pub fn timeline_csv(rows: &[TimePoint]) -> String {
    let mut csv = format!("{TIMELINE_CSV_HEADER}\n");
    for r in rows {
        csv += &format!(
            "{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{}\n",
            csv_field(&r.name),
            csv_field(&r.ct),
            r.left_lung_ml,
            r.right_lung_ml,
            r.lungs_ml,
            r.ggo_ml,
            r.consolidation_ml,
            csv_opt(r.involvement_pct)
        );
    }
    csv
}

/// The time points as aligned text lines.
pub fn timeline_lines(rows: &[TimePoint]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "time point", "lungs mL", "GGO mL", "consol. mL", "lesion mL", "% inv."
    )];
    for r in rows {
        lines.push(format!(
            "{:<12} {:>10.1} {:>10.2} {:>10.2} {:>10.2} {:>8}",
            r.name,
            r.lungs_ml,
            r.ggo_ml,
            r.consolidation_ml,
            r.lesion_ml(),
            fmt_opt(r.involvement_pct, 2)
        ));
    }
    lines
}

/// Everything a follow-up analysis found, as the reports write it.
#[derive(Debug, Clone, Copy)]
pub struct Progression<'a> {
    pub baseline: &'a str,
    pub followup: &'a str,
    pub volumes: &'a TransitionVolumes,
    pub lesions: &'a [LesionMatch],
    /// Baseline then follow-up, each on its own grid (may be empty).
    pub time_points: &'a [TimePoint],
}

impl Progression<'_> {
    /// The JSON document of `pulmo progress` (`registration`: its report, or null).
    pub fn to_json(&self, registration: serde_json::Value) -> serde_json::Value {
        let codes: serde_json::Map<String, serde_json::Value> = TRANSITIONS
            .iter()
            .map(|(c, n)| (c.to_string(), serde_json::Value::from(*n)))
            .collect();
        serde_json::json!({
            "baseline": self.baseline,
            "followup": self.followup,
            "transition_codes": codes,
            "progression_codes": PROGRESSION_CODES,
            "recovery_codes": RECOVERY_CODES,
            "time_points": self.time_points,
            "volumes": self.volumes,
            "lesions": self.lesions,
            "registration": registration,
        })
    }

    /// CSV in three tables separated by a blank line: the time points, the change
    /// volumes (mL, a row per region, a column per transition code 2..=9), the lesions.
    pub fn to_csv(&self) -> String {
        let mut csv = timeline_csv(self.time_points);
        csv += "\nregion";
        for (_, name) in TRANSITIONS.iter().skip(2) {
            csv += &format!(",{}_ml", name.replace(' ', "_"));
        }
        csv += ",progression_ml,recovery_ml\n";
        for r in &self.volumes.regions {
            csv += &csv_field(&r.region);
            for code in 2..TRANSITIONS.len() {
                csv += &format!(",{:.3}", r.ml[code]);
            }
            let sum = |codes: &[u8]| codes.iter().map(|&c| r.ml[c as usize]).sum::<f64>();
            csv += &format!(
                ",{:.3},{:.3}\n",
                sum(&PROGRESSION_CODES),
                sum(&RECOVERY_CODES)
            );
        }
        csv += "\nlesion,kind,baseline_ids,followup_ids,baseline_ml,followup_ml,change_ml,change_pct\n";
        let ids = |v: &[u32]| {
            v.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        for (n, m) in self.lesions.iter().enumerate() {
            csv += &format!(
                "{},{},{},{},{:.3},{:.3},{:.3},{}\n",
                n + 1,
                csv_field(&m.kind),
                ids(&m.baseline),
                ids(&m.followup),
                m.baseline_ml,
                m.followup_ml,
                m.change_ml,
                csv_opt(m.change_pct)
            );
        }
        csv
    }

    /// Text lines for the one-page report: time points, changes in both lungs and per
    /// lung, and the largest lesion changes.
    pub fn text_lines(&self, max_lesions: usize) -> Vec<String> {
        let mut lines = vec![format!(
            "Follow-up: baseline {} -> follow-up {}",
            self.baseline, self.followup
        )];
        if !self.time_points.is_empty() {
            lines.extend(
                timeline_lines(self.time_points)
                    .into_iter()
                    .map(|l| format!("  {l}")),
            );
        }
        let regions: Vec<_> = ["both", "left", "right"]
            .iter()
            .filter_map(|n| self.volumes.regions.iter().find(|r| r.region == *n))
            .collect();
        lines.push(format!(
            "  {:<34}{}",
            "change (mL)",
            regions
                .iter()
                .map(|r| format!("{:>10}", r.region))
                .collect::<String>()
        ));
        for (code, name) in TRANSITIONS.iter().skip(2) {
            lines.push(format!(
                "  {:<34}{}",
                name,
                regions
                    .iter()
                    .map(|r| format!("{:>10.2}", r.ml[*code as usize]))
                    .collect::<String>()
            ));
        }
        lines.push(format!(
            "  consolidation progression {:.2} mL, recovery {:.2} mL",
            self.volumes.progression_ml, self.volumes.recovery_ml
        ));
        lines.push(format!("  lesions over time: {}", self.lesions.len()));
        for m in self.lesions.iter().take(max_lesions) {
            lines.push(format!("    {}", m.summary()));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::followup::progress::{match_lesions, transition_map, transition_volumes};
    use crate::volume::{Geometry, Volume};

    /// Two lungs of 4x8x6 voxels of 2 mm (0.008 mL), a ground-glass block at baseline
    /// that is consolidation at follow-up, and a new ground-glass block.
    fn pair() -> (CtVolume, LabelVolume, LabelVolume) {
        let g = Geometry::axis_aligned([12, 8, 6], [2.0; 3], [0.0; 3]);
        let ct = Volume {
            geometry: g.clone(),
            voxels: vec![-800i16; g.voxel_count()],
        };
        let mut base = Volume {
            geometry: g.clone(),
            voxels: vec![0u8; g.voxel_count()],
        };
        for k in 0..6 {
            for j in 0..8 {
                for i in 0..12 {
                    if !(4..8).contains(&i) {
                        base.voxels[g.index(i, j, k)] = if i < 4 { 2 } else { 1 };
                    }
                }
            }
        }
        let mut follow = base.clone();
        for k in 1..3 {
            for j in 1..3 {
                for i in 1..3 {
                    base.voxels[g.index(i, j, k)] = GGO;
                    follow.voxels[g.index(i, j, k)] = CONSOLIDATION;
                    follow.voxels[g.index(i + 8, j + 4, k + 2)] = GGO;
                }
            }
        }
        (ct, base, follow)
    }

    #[test]
    fn tables_carry_the_time_points_changes_and_lesions() {
        let (ct, base, follow) = pair();
        let ml = 0.008;
        let t0 = TimePoint::measure("day 0", "a.nii.gz", &ct, &base).unwrap();
        let t1 = TimePoint::measure("day 9", "b.nii.gz", &ct, &follow).unwrap();
        assert!((t0.lungs_ml - 384.0 * ml).abs() < 1e-9);
        assert!((t0.ggo_ml - 8.0 * ml).abs() < 1e-9 && t0.consolidation_ml == 0.0);
        assert!((t1.consolidation_ml - 8.0 * ml).abs() < 1e-9);
        assert!((t1.lesion_ml() - 16.0 * ml).abs() < 1e-9);
        let csv = timeline_csv(&[t0.clone(), t1.clone()]);
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows[0], TIMELINE_CSV_HEADER);
        assert!(rows[2].starts_with("day 9,b.nii.gz,"), "{}", rows[2]);
        let map = transition_map(&base, &follow).unwrap();
        let volumes = transition_volumes(&map, &follow).unwrap();
        let lesions = match_lesions(&base, &follow, 0.0);
        let p = Progression {
            baseline: "a.nii.gz",
            followup: "b.nii.gz",
            volumes: &volumes,
            lesions: &lesions,
            time_points: &[t0, t1],
        };
        let csv = p.to_csv();
        let both = csv
            .lines()
            .find(|l| l.starts_with("both,"))
            .expect("a row for both lungs");
        let cells: Vec<f64> = both
            .split(',')
            .skip(1)
            .map(|c| c.parse().unwrap())
            .collect();
        // Codes 2..=9, then progression and recovery: new GGO (code 2) and GGO ->
        // consolidation (code 8), which is progression.
        assert!((cells[0] - 8.0 * ml).abs() < 1e-6, "{both}");
        assert!((cells[6] - 8.0 * ml).abs() < 1e-6, "{both}");
        assert!(
            (cells[8] - 8.0 * ml).abs() < 1e-6 && cells[9] == 0.0,
            "{both}"
        );
        assert_eq!(
            csv.lines().filter(|l| l.contains(",persistent,")).count(),
            1
        );
        assert!(csv.lines().any(|l| l.contains(",new,")));
        let json = p.to_json(serde_json::Value::Null);
        assert_eq!(json["time_points"][1]["name"], "day 9");
        assert_eq!(json["lesions"].as_array().unwrap().len(), 2);
        let lines = p.text_lines(5);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ground-glass to consolidation"))
        );
        assert!(lines.iter().any(|l| l.starts_with("    persistent")));
        // A new lesion had nothing at baseline: 0.00, not -0.00.
        let new = lines.iter().find(|l| l.starts_with("    new")).unwrap();
        assert!(new.contains(" 0.00 ->") && !new.contains("-0.00"), "{new}");
    }
}
