//! Quantification of one CT with its label map: volumes and HU statistics per label,
//! lung involvement per lung and per lung third, and Lung CT Analyzer HU bands.
//!
//! Definitions:
//! - **Per label**: voxel count, volume (mL), mean, population standard deviation
//!   (divisor n), min and max HU of the CT inside the label. Exact integer sums.
//! - **Lung region**: the voxels whose value is a lung label ([`QuantifyOptions::left_lung`],
//!   [`QuantifyOptions::right_lung`]) or a lesion label (lesions are painted over the
//!   lungs, so they belong to the lung region). Each lesion voxel is given to the lung
//!   whose centroid (of its lung-label voxels) is nearer along the world left–right axis
//!   (LPS x); with only one lung present, to that lung; with none, to no lung.
//! - **Involvement** of a region = lesion voxels / region voxels × 100, in total and per
//!   lesion label; `None` for an empty region.
//! - **Thirds**: each lung is cut into upper / middle / lower thirds of its own extent
//!   along the world superior axis (LPS z). The extent runs from the lowest voxel centre
//!   minus half a voxel's z-extent to the highest plus half (so 3 or 6 axial slices split
//!   evenly); with t = (z − z_lo) / (z_hi − z_lo), lower is t < 1/3, middle t < 2/3,
//!   upper the rest. The "both lungs" thirds are the sums of each lung's own thirds.
//! - **HU bands** (Lung CT Analyzer), half-open `[lo, hi)` in HU: below range
//!   (< −1050), emphysema [−1050, −950), inflated [−950, −750), infiltrated [−750, −400),
//!   collapsed [−400, +∞). Percentages are of the region's voxels; the five add up to 100.

use super::report::{Ordered, csv_field, csv_opt};
use super::{MetricsError, check_same_grid, fmt_opt, voxel_volume_ml};
use crate::volume::{CtVolume, LabelVolume};

/// Band edges in HU: band `b` is `[HU_BAND_EDGES[b-1], HU_BAND_EDGES[b])`, with band 0
/// below the first edge and the last band from the last edge up.
pub const HU_BAND_EDGES: [i16; 4] = [-1050, -950, -750, -400];
/// Names of the bands, in order.
pub const HU_BAND_NAMES: [&str; 5] = [
    "below_range",
    "emphysema",
    "inflated",
    "infiltrated",
    "collapsed",
];

/// The band index of a HU value (see [`HU_BAND_EDGES`]).
#[inline]
pub fn hu_band(hu: i16) -> usize {
    HU_BAND_EDGES.iter().take_while(|&&e| hu >= e).count()
}

/// Which labels are lungs and lesions.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantifyOptions {
    pub left_lung: u8,
    pub right_lung: u8,
    /// Lesion labels, in the order reported.
    pub lesion_labels: Vec<u8>,
}

impl Default for QuantifyOptions {
    /// Left lung 1, right lung 2, lesions 3 (GGO), 4 (consolidation), 5 (pleural
    /// effusion), 6 (other).
    fn default() -> Self {
        Self {
            left_lung: 1,
            right_lung: 2,
            lesion_labels: vec![3, 4, 5, 6],
        }
    }
}

/// HU statistics of one label (serialized without the label, see [`LabelStatsDoc`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelStats {
    #[serde(skip)]
    pub label: u8,
    pub voxels: u64,
    pub volume_ml: f64,
    pub mean_hu: f64,
    /// Population standard deviation (divisor n).
    pub std_hu: f64,
    pub min_hu: i16,
    pub max_hu: i16,
}

/// Voxel counts of a region (a lung, a third, both lungs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegionCounts {
    pub voxels: u64,
    /// One count per [`QuantifyOptions::lesion_labels`] entry.
    pub lesion_voxels: Vec<u64>,
    /// One count per HU band ([`HU_BAND_NAMES`]).
    pub band_voxels: [u64; 5],
}

impl RegionCounts {
    fn new(lesions: usize) -> Self {
        Self {
            lesion_voxels: vec![0; lesions],
            ..Default::default()
        }
    }

    fn add(&mut self, o: &RegionCounts) {
        self.voxels += o.voxels;
        for (a, b) in self.lesion_voxels.iter_mut().zip(&o.lesion_voxels) {
            *a += b;
        }
        for (a, b) in self.band_voxels.iter_mut().zip(&o.band_voxels) {
            *a += b;
        }
    }

    fn pct(&self, n: u64) -> Option<f64> {
        (self.voxels > 0).then(|| n as f64 * 100.0 / self.voxels as f64)
    }

    /// All lesion voxels.
    pub fn total_lesion_voxels(&self) -> u64 {
        self.lesion_voxels.iter().sum()
    }

    /// % of the region covered by any lesion label.
    pub fn involvement_pct(&self) -> Option<f64> {
        self.pct(self.total_lesion_voxels())
    }

    /// % of the region covered by lesion label number `index` (in the options' order).
    pub fn lesion_pct(&self, index: usize) -> Option<f64> {
        self.pct(self.lesion_voxels.get(index).copied().unwrap_or(0))
    }

    /// % of the region in HU band `band`.
    pub fn band_pct(&self, band: usize) -> Option<f64> {
        self.pct(self.band_voxels.get(band).copied().unwrap_or(0))
    }
}

/// One lung (or both).
#[derive(Debug, Clone, PartialEq)]
pub struct LungQuantification {
    /// "left", "right" or "both".
    pub name: &'static str,
    /// The lung label (`None` for both).
    pub label: Option<u8>,
    pub whole: RegionCounts,
    /// Upper, middle, lower third.
    pub thirds: [RegionCounts; 3],
}

/// Names of [`LungQuantification::thirds`], in order.
pub const THIRD_NAMES: [&str; 3] = ["upper", "middle", "lower"];

/// The result of [`quantify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Quantification {
    pub voxel_volume_ml: f64,
    /// Every non-zero label present, ascending.
    pub labels: Vec<LabelStats>,
    pub lesion_labels: Vec<u8>,
    /// Left, right, both.
    pub lungs: [LungQuantification; 3],
}

#[derive(Clone, Copy)]
struct Acc {
    n: u64,
    sum: i64,
    sum_sq: i128,
    min: i16,
    max: i16,
}

/// Quantifies `labels` on `ct`; see the module doc.
pub fn quantify(
    ct: &CtVolume,
    labels: &LabelVolume,
    options: &QuantifyOptions,
) -> Result<Quantification, MetricsError> {
    check_same_grid("CT", &ct.geometry, "labels", &labels.geometry)?;
    let g = &labels.geometry;
    let [nx, ny, nz] = g.dims;
    let ml = voxel_volume_ml(g);

    // Pass 1: per-label HU statistics and the lungs' world-x sums (for the centroids).
    let mut acc = [Acc {
        n: 0,
        sum: 0,
        sum_sq: 0,
        min: i16::MAX,
        max: i16::MIN,
    }; 256];
    let linear = g.direction * nalgebra::Matrix3::from_diagonal(&g.spacing_mm);
    let (dx, dz) = (linear.row(0), linear.row(2));
    let mut x_sum = [0.0f64; 2];
    let lungs = [options.left_lung, options.right_lung];
    for k in 0..nz {
        for j in 0..ny {
            let row = g.index(0, j, k);
            let x_row = g.origin_mm.x + dx[1] * j as f64 + dx[2] * k as f64;
            for i in 0..nx {
                let (v, hu) = (labels.voxels[row + i], ct.voxels[row + i]);
                let a = &mut acc[v as usize];
                a.n += 1;
                a.sum += hu as i64;
                a.sum_sq += (hu as i128) * (hu as i128);
                a.min = a.min.min(hu);
                a.max = a.max.max(hu);
                if let Some(l) = lungs.iter().position(|&l| l == v) {
                    x_sum[l] += x_row + dx[0] * i as f64;
                }
            }
        }
    }
    let label_stats = (1..=255u8)
        .filter(|&v| acc[v as usize].n > 0)
        .map(|v| {
            let a = acc[v as usize];
            let n = a.n as f64;
            // n Σx² − (Σx)², exact.
            let var_num = a.n as i128 * a.sum_sq - (a.sum as i128) * (a.sum as i128);
            LabelStats {
                label: v,
                voxels: a.n,
                volume_ml: n * ml,
                mean_hu: a.sum as f64 / n,
                std_hu: (var_num.max(0) as f64).sqrt() / n,
                min_hu: a.min,
                max_hu: a.max,
            }
        })
        .collect();

    let lung_n = lungs.map(|l| acc[l as usize].n);
    let centroid_x = [0, 1].map(|l| (lung_n[l] > 0).then(|| x_sum[l] / lung_n[l] as f64));
    let mut lesion_index = [None::<usize>; 256];
    for (n, &l) in options.lesion_labels.iter().enumerate() {
        lesion_index[l as usize].get_or_insert(n);
    }
    // Which lung (0 left, 1 right) a voxel of value `v` at world x belongs to.
    let lung_of = |v: u8, x: f64| -> Option<usize> {
        if let Some(l) = lungs.iter().position(|&l| l == v) {
            return Some(l);
        }
        lesion_index[v as usize]?;
        match centroid_x {
            [Some(a), Some(b)] => Some(if (x - a).abs() <= (x - b).abs() { 0 } else { 1 }),
            [Some(_), None] => Some(0),
            [None, Some(_)] => Some(1),
            [None, None] => None,
        }
    };

    // Pass 2: each lung's z-extent (voxel centres).
    let mut z_range = [(f64::INFINITY, f64::NEG_INFINITY); 2];
    for k in 0..nz {
        for j in 0..ny {
            let row = g.index(0, j, k);
            let x_row = g.origin_mm.x + dx[1] * j as f64 + dx[2] * k as f64;
            let z_row = g.origin_mm.z + dz[1] * j as f64 + dz[2] * k as f64;
            for i in 0..nx {
                let v = labels.voxels[row + i];
                if v == 0 {
                    continue;
                }
                if let Some(l) = lung_of(v, x_row + dx[0] * i as f64) {
                    let z = z_row + dz[0] * i as f64;
                    z_range[l].0 = z_range[l].0.min(z);
                    z_range[l].1 = z_range[l].1.max(z);
                }
            }
        }
    }
    // Half a voxel's extent along z.
    let half_z = 0.5 * (dz[0].abs() + dz[1].abs() + dz[2].abs());
    let bounds = z_range.map(|(lo, hi)| (lo - half_z, hi + half_z));

    // Pass 3: counts per lung and third.
    let nl = options.lesion_labels.len();
    let mut thirds: [[RegionCounts; 3]; 2] =
        std::array::from_fn(|_| std::array::from_fn(|_| RegionCounts::new(nl)));
    for k in 0..nz {
        for j in 0..ny {
            let row = g.index(0, j, k);
            let x_row = g.origin_mm.x + dx[1] * j as f64 + dx[2] * k as f64;
            let z_row = g.origin_mm.z + dz[1] * j as f64 + dz[2] * k as f64;
            for i in 0..nx {
                let v = labels.voxels[row + i];
                if v == 0 {
                    continue;
                }
                let Some(l) = lung_of(v, x_row + dx[0] * i as f64) else {
                    continue;
                };
                let z = z_row + dz[0] * i as f64;
                let (lo, hi) = bounds[l];
                let t = (z - lo) / (hi - lo);
                let third = if t < 1.0 / 3.0 {
                    2
                } else if t < 2.0 / 3.0 {
                    1
                } else {
                    0
                };
                let r = &mut thirds[l][third];
                r.voxels += 1;
                if let Some(n) = lesion_index[v as usize] {
                    r.lesion_voxels[n] += 1;
                }
                r.band_voxels[hu_band(ct.voxels[row + i])] += 1;
            }
        }
    }

    let sum = |parts: &[&RegionCounts]| {
        let mut r = RegionCounts::new(nl);
        parts.iter().for_each(|p| r.add(p));
        r
    };
    let lung = |l: usize, name, label| LungQuantification {
        name,
        label: Some(label),
        whole: sum(&thirds[l].iter().collect::<Vec<_>>()),
        thirds: thirds[l].clone(),
    };
    let left = lung(0, "left", options.left_lung);
    let right = lung(1, "right", options.right_lung);
    let both = LungQuantification {
        name: "both",
        label: None,
        whole: sum(&[&left.whole, &right.whole]),
        thirds: std::array::from_fn(|t| sum(&[&left.thirds[t], &right.thirds[t]])),
    };
    Ok(Quantification {
        voxel_volume_ml: ml,
        labels: label_stats,
        lesion_labels: options.lesion_labels.clone(),
        lungs: [left, right, both],
    })
}

/// The name of a label value for reports (e.g. from the study's label table).
pub type LabelName<'a> = &'a dyn Fn(u8) -> Option<String>;

/// The quantification as short text lines (as `pulmo quantify` prints them, indented by
/// two spaces): one per label, then one per lung and both.
pub fn text_lines(q: &Quantification, label_name: LabelName<'_>) -> Vec<String> {
    let ml = q.voxel_volume_ml;
    let mut lines = Vec::new();
    for s in &q.labels {
        lines.push(format!(
            "  label {:>3} {:<22} {:>10.3} mL  HU mean {:>8.1} sd {:>7.1} min {:>6} max {:>6}",
            s.label,
            label_name(s.label).unwrap_or_default(),
            s.volume_ml,
            s.mean_hu,
            s.std_hu,
            s.min_hu,
            s.max_hu
        ));
    }
    for l in &q.lungs {
        let w = &l.whole;
        lines.push(format!(
            "  {:<5} lung {:>10.3} mL  involved {} %  (upper {} %, middle {} %, lower {} %)",
            l.name,
            w.voxels as f64 * ml,
            fmt_opt(w.involvement_pct(), 2),
            fmt_opt(l.thirds[0].involvement_pct(), 2),
            fmt_opt(l.thirds[1].involvement_pct(), 2),
            fmt_opt(l.thirds[2].involvement_pct(), 2),
        ));
    }
    lines
}

/// The quantification as a JSON document ([`to_json`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuantifyDoc {
    /// What was quantified: paths or descriptions.
    pub ct: String,
    pub labels_file: String,
    pub voxel_volume_ml: f64,
    pub metadata: QuantifyNotes,
    pub labels: Vec<LabelStatsDoc>,
    /// "left", "right", "both".
    pub lungs: Ordered<LungDoc>,
}

/// The options and notes on the definitions in a quantification document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuantifyNotes {
    pub tool: &'static str,
    pub lung_labels: [u8; 2],
    pub lesion_labels: Vec<u8>,
    pub hu_bands: &'static str,
    pub lung_region: &'static str,
    pub thirds: &'static str,
    pub std_hu: &'static str,
    pub missing: &'static str,
}

/// One label's statistics in a quantification document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LabelStatsDoc {
    pub label: u8,
    pub name: Option<String>,
    /// `voxels` .. `max_hu`.
    #[serde(flatten)]
    pub stats: LabelStats,
}

/// One lung (or both) in a quantification document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LungDoc {
    /// The lung label (`null` for both).
    pub label: Option<u8>,
    #[serde(flatten)]
    pub whole: RegionDoc,
    /// "upper", "middle", "lower".
    pub thirds: Ordered<RegionDoc>,
}

/// A lung region's volumes, involvement and HU bands in a quantification document.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegionDoc {
    pub voxels: u64,
    pub volume_ml: f64,
    pub lesion_volume_ml: f64,
    pub involvement_pct: Option<f64>,
    /// Keyed by the lesion label value.
    pub by_lesion_label: Ordered<LesionDoc>,
    /// Keyed by [`HU_BAND_NAMES`].
    pub hu_bands_pct: Ordered<Option<f64>>,
}

/// One lesion label's share of a region.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LesionDoc {
    pub volume_ml: f64,
    pub pct: Option<f64>,
}

/// The quantification as a JSON document (`pulmo quantify --json`; written with
/// [`super::report::to_json_text`]): what was quantified (`ct`, `labels_file`: paths or
/// descriptions), notes on the definitions, per-label statistics and per-lung (and
/// third) involvement and HU bands.
pub fn to_json(
    q: &Quantification,
    options: &QuantifyOptions,
    ct: &str,
    labels_file: &str,
    label_name: LabelName<'_>,
) -> QuantifyDoc {
    let ml = q.voxel_volume_ml;
    let region = |r: &RegionCounts| RegionDoc {
        voxels: r.voxels,
        volume_ml: r.voxels as f64 * ml,
        lesion_volume_ml: r.total_lesion_voxels() as f64 * ml,
        involvement_pct: r.involvement_pct(),
        by_lesion_label: q
            .lesion_labels
            .iter()
            .enumerate()
            .map(|(n, l)| {
                let lesion = LesionDoc {
                    volume_ml: r.lesion_voxels[n] as f64 * ml,
                    pct: r.lesion_pct(n),
                };
                (l.to_string(), lesion)
            })
            .collect(),
        hu_bands_pct: HU_BAND_NAMES
            .iter()
            .enumerate()
            .map(|(b, name)| (name.to_string(), r.band_pct(b)))
            .collect(),
    };
    let lungs = q
        .lungs
        .iter()
        .map(|l| {
            let lung = LungDoc {
                label: l.label,
                whole: region(&l.whole),
                thirds: THIRD_NAMES
                    .iter()
                    .zip(&l.thirds)
                    .map(|(name, t)| (name.to_string(), region(t)))
                    .collect(),
            };
            (l.name.to_string(), lung)
        })
        .collect();
    let labels = q
        .labels
        .iter()
        .map(|s| LabelStatsDoc {
            label: s.label,
            name: label_name(s.label),
            stats: s.clone(),
        })
        .collect();
    QuantifyDoc {
        ct: ct.to_string(),
        labels_file: labels_file.to_string(),
        voxel_volume_ml: ml,
        metadata: QuantifyNotes {
            tool: concat!("pulmo ", env!("CARGO_PKG_VERSION")),
            lung_labels: [options.left_lung, options.right_lung],
            lesion_labels: options.lesion_labels.clone(),
            hu_bands: "Lung CT Analyzer bands, half-open [lo, hi) HU: below_range < -1050, emphysema [-1050, -950), inflated [-950, -750), infiltrated [-750, -400), collapsed [-400, +inf); % of the region's voxels",
            lung_region: "lung-label voxels plus lesion voxels; each lesion voxel goes to the lung whose centroid is nearer along the world left-right axis",
            thirds: "upper / middle / lower thirds of each lung's own extent along the world superior axis (voxel centres +- half a voxel); 'both' sums each lung's thirds",
            std_hu: "population standard deviation (divisor n)",
            missing: "null where a value is undefined (empty region)",
        },
        labels,
        lungs,
    }
}

/// The quantification as one CSV table. Rows with `section` = `label` carry per-label
/// statistics (`label` .. `max_hu`); rows with `section` = `lung` carry a region
/// (`region` left / right / both, `third` empty for the whole lung or upper / middle /
/// lower): its volume, lesion volume, involvement, % per lesion label
/// (`lesion_<value>_pct`) and % per HU band (`<band>_pct`). Cells that do not apply to
/// a row, and undefined values, are empty.
pub fn to_csv(q: &Quantification, label_name: LabelName<'_>) -> String {
    let ml = q.voxel_volume_ml;
    let mut header: Vec<String> = [
        "section",
        "region",
        "third",
        "label",
        "name",
        "voxels",
        "volume_ml",
        "mean_hu",
        "std_hu",
        "min_hu",
        "max_hu",
        "lesion_volume_ml",
        "involvement_pct",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(q.lesion_labels.iter().map(|l| format!("lesion_{l}_pct")));
    header.extend(HU_BAND_NAMES.iter().map(|b| format!("{b}_pct")));
    let mut out = header.join(",") + "\n";
    let tail = q.lesion_labels.len() + HU_BAND_NAMES.len() + 2;
    for s in &q.labels {
        let mut cells = vec![
            "label".to_string(),
            String::new(),
            String::new(),
            s.label.to_string(),
            csv_field(&label_name(s.label).unwrap_or_default()),
            s.voxels.to_string(),
            csv_opt(Some(s.volume_ml)),
            csv_opt(Some(s.mean_hu)),
            csv_opt(Some(s.std_hu)),
            s.min_hu.to_string(),
            s.max_hu.to_string(),
        ];
        cells.extend(std::iter::repeat_n(String::new(), tail));
        out += &(cells.join(",") + "\n");
    }
    for l in &q.lungs {
        let parts =
            std::iter::once(("", &l.whole)).chain(THIRD_NAMES.iter().copied().zip(l.thirds.iter()));
        for (third, r) in parts {
            let mut cells = vec![
                "lung".to_string(),
                l.name.to_string(),
                third.to_string(),
                l.label.map_or_else(String::new, |v| v.to_string()),
                String::new(),
                r.voxels.to_string(),
                csv_opt(Some(r.voxels as f64 * ml)),
            ];
            cells.extend(std::iter::repeat_n(String::new(), 4));
            cells.push(csv_opt(Some(r.total_lesion_voxels() as f64 * ml)));
            cells.push(csv_opt(r.involvement_pct()));
            cells.extend((0..q.lesion_labels.len()).map(|n| csv_opt(r.lesion_pct(n))));
            cells.extend((0..HU_BAND_NAMES.len()).map(|b| csv_opt(r.band_pct(b))));
            out += &(cells.join(",") + "\n");
        }
    }
    out
}

/// HU histograms of some labels: bins of `bin_hu` from `lo_hu` (inclusive) to `hi_hu`
/// (exclusive).
#[derive(Debug, Clone, PartialEq)]
pub struct HuHistogram {
    pub lo_hu: i32,
    pub bin_hu: i32,
    /// Per label: (label, count per bin, voxels of the label in all, inside the range
    /// or not).
    pub per_label: Vec<(u8, Vec<u64>, u64)>,
}

impl HuHistogram {
    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.per_label.first().map_or(0, |(_, c, _)| c.len())
    }

    /// Centre of bin `b` in HU.
    pub fn bin_center_hu(&self, b: usize) -> f64 {
        self.lo_hu as f64 + (b as f64 + 0.5) * self.bin_hu as f64
    }
}

/// Histograms of the CT's HU inside each of `labels` (labels with no voxels are left
/// out): `(hi_hu - lo_hu) / bin_hu` bins from `lo_hu`; values outside `[lo_hu, hi_hu)`
/// are counted in the total only.
pub fn hu_histogram(
    ct: &CtVolume,
    labels: &LabelVolume,
    wanted: &[u8],
    lo_hu: i32,
    hi_hu: i32,
    bin_hu: i32,
) -> Result<HuHistogram, MetricsError> {
    check_same_grid("CT", &ct.geometry, "labels", &labels.geometry)?;
    let bin_hu = bin_hu.max(1);
    let bins = ((hi_hu - lo_hu).max(0) / bin_hu) as usize;
    let mut slot = [None::<usize>; 256];
    for (n, &l) in wanted.iter().enumerate() {
        slot[l as usize].get_or_insert(n);
    }
    let mut counts = vec![vec![0u64; bins]; wanted.len()];
    let mut totals = vec![0u64; wanted.len()];
    for (&v, &hu) in labels.voxels.iter().zip(&ct.voxels) {
        let Some(n) = slot[v as usize] else { continue };
        totals[n] += 1;
        let off = hu as i32 - lo_hu;
        if off >= 0 && ((off / bin_hu) as usize) < bins {
            counts[n][(off / bin_hu) as usize] += 1;
        }
    }
    // A label listed twice keeps its first entry only.
    let per_label = wanted
        .iter()
        .enumerate()
        .zip(counts.into_iter().zip(totals))
        .filter(|((n, l), (_, total))| *total > 0 && slot[**l as usize] == Some(*n))
        .map(|((_, &l), (c, total))| (l, c, total))
        .collect();
    Ok(HuHistogram {
        lo_hu,
        bin_hu,
        per_label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Volume};

    #[test]
    fn bands_are_half_open() {
        assert_eq!(hu_band(-1051), 0);
        assert_eq!(hu_band(-1050), 1);
        assert_eq!(hu_band(-951), 1);
        assert_eq!(hu_band(-950), 2);
        assert_eq!(hu_band(-750), 3);
        assert_eq!(hu_band(-401), 3);
        assert_eq!(hu_band(-400), 4);
        assert_eq!(hu_band(3000), 4);
    }

    /// 4 x 1 x 6 grid, spacing 1 x 1 x 2 mm (voxel 0.002 mL), background -1000 HU.
    fn case() -> (CtVolume, LabelVolume) {
        let g = Geometry::axis_aligned([4, 1, 6], [1.0, 1.0, 2.0], [0.0, 0.0, -10.0]);
        let mut labels = Volume::filled(g.clone(), 0u8).expect("grid");
        let mut ct = Volume::filled(g, -1000i16).expect("grid");
        for k in 0..6 {
            // Left lung: i = 2, 3 (patient left is +x in LPS); right lung: i = 0, 1.
            labels.set(2, 0, k, 1);
            labels.set(3, 0, k, 1);
            labels.set(0, 0, k, 2);
            labels.set(1, 0, k, 2);
        }
        // Right lung, k = 5 (upper third): i = 0 GGO, i = 1 consolidation.
        labels.set(0, 0, 5, 3);
        ct.set(0, 0, 5, -600);
        labels.set(1, 0, 5, 4);
        ct.set(1, 0, 5, 20);
        // Left lung, k = 0 (lower third): GGO at i = 3.
        labels.set(3, 0, 0, 3);
        ct.set(3, 0, 0, -700);
        // An emphysema voxel and an inflated one in the left lung's middle third.
        ct.set(2, 0, 2, -960);
        ct.set(2, 0, 3, -800);
        (ct, labels)
    }

    #[test]
    fn hand_made_case() {
        let (ct, labels) = case();
        let q = quantify(&ct, &labels, &QuantifyOptions::default()).expect("same grid");
        assert!((q.voxel_volume_ml - 0.002).abs() < 1e-15);
        let stats: Vec<_> = q.labels.iter().map(|s| (s.label, s.voxels)).collect();
        assert_eq!(stats, [(1, 11), (2, 10), (3, 2), (4, 1)]);
        let l1 = &q.labels[0];
        // 9 voxels at -1000, one -960, one -800.
        assert_eq!(l1.mean_hu, (-9000.0 - 960.0 - 800.0) / 11.0);
        assert_eq!((l1.min_hu, l1.max_hu), (-1000, -800));
        let ggo = &q.labels[2];
        assert_eq!((ggo.mean_hu, ggo.std_hu), (-650.0, 50.0));
        assert_eq!(q.labels[3].std_hu, 0.0);
        assert!((q.labels[1].volume_ml - 0.02).abs() < 1e-15);

        let [left, right, both] = &q.lungs;
        assert_eq!(left.whole.voxels, 12);
        assert_eq!(left.whole.lesion_voxels, [1, 0, 0, 0]);
        assert_eq!(left.whole.involvement_pct(), Some(100.0 / 12.0));
        assert_eq!(right.whole.voxels, 12);
        assert_eq!(right.whole.lesion_voxels, [1, 1, 0, 0]);
        assert_eq!(right.whole.involvement_pct(), Some(200.0 / 12.0));
        assert_eq!(right.whole.lesion_pct(1), Some(100.0 / 12.0));
        // Thirds: 2 slices (4 voxels per lung) each.
        for l in [left, right] {
            assert!(l.thirds.iter().all(|t| t.voxels == 4), "{l:?}");
        }
        assert_eq!(right.thirds[0].involvement_pct(), Some(50.0));
        assert_eq!(right.thirds[1].involvement_pct(), Some(0.0));
        assert_eq!(left.thirds[2].involvement_pct(), Some(25.0));
        assert_eq!(both.whole.voxels, 24);
        assert_eq!(both.whole.involvement_pct(), Some(12.5));
        assert_eq!(both.thirds[0].involvement_pct(), Some(25.0));
        // Bands of the left lung: -1000 and -960 are emphysema, -800 inflated, -700
        // infiltrated.
        assert_eq!(left.whole.band_voxels, [0, 10, 1, 1, 0]);
        assert_eq!(left.thirds[1].band_voxels, [0, 3, 1, 0, 0]);
        assert_eq!(right.whole.band_voxels, [0, 10, 0, 1, 1]);
        let pct: f64 = (0..5).filter_map(|b| both.whole.band_pct(b)).sum();
        assert!((pct - 100.0).abs() < 1e-12);
    }

    #[test]
    fn single_lung_and_no_lung() {
        let (ct, mut labels) = case();
        labels.voxels.iter_mut().for_each(|v| {
            if *v == 2 {
                *v = 0
            }
        });
        let q = quantify(&ct, &labels, &QuantifyOptions::default()).expect("same grid");
        // All three lesion voxels go to the left lung.
        assert_eq!(q.lungs[0].whole.voxels, 14);
        assert_eq!(q.lungs[0].whole.total_lesion_voxels(), 3);
        assert_eq!(q.lungs[1].whole.voxels, 0);
        assert_eq!(q.lungs[1].whole.involvement_pct(), None);
        labels.voxels.iter_mut().for_each(|v| {
            if *v == 1 {
                *v = 0
            }
        });
        let q = quantify(&ct, &labels, &QuantifyOptions::default()).expect("same grid");
        assert_eq!(q.lungs[2].whole.voxels, 0);
        assert_eq!(q.labels.len(), 2);
    }

    fn name(v: u8) -> Option<String> {
        match v {
            1 => Some("left lung".into()),
            3 => Some("GGO, faint".into()),
            _ => None,
        }
    }

    #[test]
    fn json_csv_and_text_of_the_hand_made_case() {
        let (ct, labels) = case();
        let opts = QuantifyOptions::default();
        let q = quantify(&ct, &labels, &opts).expect("same grid");
        let doc = to_json(&q, &opts, "ct.nii", "labels.nii", &name);
        let doc: serde_json::Value =
            serde_json::from_str(&super::super::report::to_json_text(&doc)).expect("JSON");
        assert_eq!(doc["ct"], "ct.nii");
        assert_eq!(doc["voxel_volume_ml"].as_f64(), Some(q.voxel_volume_ml));
        let stats = doc["labels"].as_array().expect("labels");
        assert_eq!(stats.len(), 4);
        assert_eq!(stats[0]["name"], "left lung");
        assert!(stats[1]["name"].is_null());
        let right = &doc["lungs"]["right"];
        assert_eq!(right["label"].as_f64(), Some(2.0));
        assert_eq!(right["voxels"].as_f64(), Some(12.0));
        assert_eq!(
            right["thirds"]["upper"]["involvement_pct"].as_f64(),
            Some(50.0)
        );
        assert!(doc["lungs"]["both"]["label"].is_null());

        let csv = to_csv(&q, &name);
        let lines: Vec<&str> = csv.lines().collect();
        // Header, 4 labels, 3 lungs x (whole + 3 thirds).
        assert_eq!(lines.len(), 1 + 4 + 12);
        let header: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(header[..5], ["section", "region", "third", "label", "name"]);
        assert!(header.contains(&"lesion_4_pct") && header.contains(&"emphysema_pct"));
        // The name with a comma is quoted; every row has the header's cell count.
        assert!(lines[3].contains("\"GGO, faint\""), "{}", lines[3]);
        let cells = |l: &str| l.replace("\"GGO, faint\"", "GGO").split(',').count();
        assert!(lines.iter().all(|l| cells(l) == header.len()), "{csv}");
        let col = |row: &str, key: &str| -> String {
            let i = header.iter().position(|h| *h == key).expect("column");
            row.split(',').nth(i).expect("cell").to_string()
        };
        let ggo = lines[3].replace("\"GGO, faint\"", "GGO");
        assert_eq!(col(&ggo, "mean_hu"), "-650");
        assert_eq!(col(&ggo, "involvement_pct"), "");
        let right_upper = lines
            .iter()
            .find(|l| l.starts_with("lung,right,upper,"))
            .expect("right upper row");
        assert_eq!(col(right_upper, "involvement_pct"), "50");
        assert_eq!(col(right_upper, "mean_hu"), "");
        assert_eq!(col(right_upper, "label"), "2");
        let left = lines.iter().find(|l| l.starts_with("lung,left,,")).unwrap();
        assert_eq!(col(left, "voxels"), "12");

        let text = text_lines(&q, &name);
        assert_eq!(text.len(), 4 + 3);
        assert!(text[0].starts_with("  label   1 left lung "), "{}", text[0]);
        assert!(text[6].starts_with("  both  lung"), "{}", text[6]);
        assert!(text[6].contains("involved 12.50 %"), "{}", text[6]);
    }

    #[test]
    fn histogram_bins() {
        let (ct, labels) = case();
        let h = hu_histogram(&ct, &labels, &[1, 3, 9], -1100, 200, 10).expect("same grid");
        assert_eq!(h.bins(), 130);
        assert_eq!(h.bin_center_hu(0), -1095.0);
        // Label 9 is absent.
        assert_eq!(h.per_label.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 3]);
        let (_, c1, t1) = &h.per_label[0];
        assert_eq!(*t1, 11);
        assert_eq!(c1[10], 9, "-1000 HU is bin 10");
        assert_eq!(c1[14], 1, "-960 HU");
        assert_eq!(c1[30], 1, "-800 HU");
        let (_, c3, t3) = &h.per_label[1];
        assert_eq!((*t3, c3.iter().sum::<u64>()), (2, 2));
        // Out of range: counted in the total only.
        let h = hu_histogram(&ct, &labels, &[4], -1100, 0, 10).expect("same grid");
        let (_, c4, t4) = &h.per_label[0];
        assert_eq!((*t4, c4.iter().sum::<u64>()), (1, 0));
    }

    #[test]
    fn grid_mismatch_is_an_error() {
        let (ct, _) = case();
        let g = Geometry::axis_aligned([4, 1, 5], [1.0, 1.0, 2.0], [0.0; 3]);
        let labels = Volume::filled(g, 0u8).expect("grid");
        assert!(matches!(
            quantify(&ct, &labels, &QuantifyOptions::default()),
            Err(MetricsError::GridMismatch { .. })
        ));
    }
}
