//! Writes a "user's study" for fine-tuning measurements: an LCTSC case with synthetic
//! lesions (`infer::lesion_data::insert_lesions`, the generator the lesion model's
//! synthetic training slices come from) drawn into every slice holding lung, as
//! `OUT/NAME_ct.nii.gz` and `OUT/NAME_labels.nii.gz` (1 lung, 3 GGO, 4 consolidation:
//! the exact labels an annotator would have drawn). Slices get independent lesions (the
//! models are 2D); use cases the lesion model never trained on (Case_007, Case_008).
//!
//! `cargo run --release --example synthetic_lesion_study -- DATA/lctsc256 Case_007 OUT [SEED]`

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: synthetic_lesion_study LCTSC_DIR CASE OUT [SEED]".into());
    }
    let (dir, name, out) = (PathBuf::from(&args[1]), &args[2], PathBuf::from(&args[3]));
    let seed: u64 = args.get(4).map_or(Ok(11), |s| s.parse())?;
    let case = pulmo::infer::evaluate::read_lung_case(&dir, name)?;
    let mut ct = case.ct.clone();
    let mut labels = case.mask.map(|v| u8::from(v != 0));
    let [nx, ny, nz] = ct.geometry.dims;
    let plane = nx * ny;
    let mut state = seed;
    let mut uniform = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut lesion_slices = 0;
    for k in 0..nz {
        if case.mask.slice_k(k).iter().filter(|&&v| v != 0).count() <= plane / 50 {
            continue;
        }
        let s = pulmo::infer::lesion_data::insert_lesions(&case.ct, &case.mask, k, &mut uniform);
        ct.voxels[k * plane..(k + 1) * plane].copy_from_slice(&s.ct.voxels);
        for (dst, &l) in labels.voxels[k * plane..(k + 1) * plane]
            .iter_mut()
            .zip(&s.labels.voxels)
        {
            if l != 0 {
                *dst = l;
            }
        }
        lesion_slices += 1;
    }
    std::fs::create_dir_all(&out)?;
    let ct_path = out.join(format!("{name}_ct.nii.gz"));
    let labels_path = out.join(format!("{name}_labels.nii.gz"));
    pulmo::io::nifti::write_nifti(&ct_path, &ct)?;
    pulmo::io::nifti::write_nifti(&labels_path, &labels)?;
    println!(
        "{}: lesions in {lesion_slices} of {nz} slices; wrote {} and {}",
        name,
        ct_path.display(),
        labels_path.display()
    );
    Ok(())
}
