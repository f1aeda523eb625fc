//! Label map save/load timing (issue: annotation): reads a label map N times and writes
//! it N times (.nii.gz, pulmo's atomic writer), printing the median seconds as JSON.
//! Usage: bench_labels LABELS.nii.gz OUT_DIR [REPEAT]

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (input, out_dir) = (
        std::path::Path::new(&args[1]),
        std::path::Path::new(&args[2]),
    );
    let repeat: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut load = Vec::new();
    let mut save = Vec::new();
    let mut voxels = 0;
    for r in 0..repeat {
        let t = Instant::now();
        let v = pulmo::io::nifti::read_nifti_labels(input)
            .expect("readable")
            .volume;
        load.push(t.elapsed().as_secs_f64());
        voxels = v.voxels.len();
        let out = out_dir.join(format!("pulmo-save-{r}.nii.gz"));
        let t = Instant::now();
        pulmo::io::nifti::write_nifti(&out, &v).expect("writable");
        save.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{{\"tool\": \"pulmo\", \"voxels\": {voxels}, \"load_s\": {:.4}, \"save_s\": {:.4}}}",
        median(&mut load),
        median(&mut save)
    );
}
