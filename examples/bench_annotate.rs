//! Annotation benchmark (issue: annotation) on a 512 x 512 x 300 label map at
//! 0.7 x 0.7 x 1.0 mm: 1000 brush strokes of radius 10 mm (9 points each, random walk in
//! axial slices) through the editor; prints the undo history's memory against one copy of
//! the volume, the painting time per stroke, and the time from a brush step to the
//! updated GPU texture (the dirty box uploaded with `SliceRenderer::update_labels` and the
//! queue waited for, on the headless wgpu adapter: lavapipe here), medians.

use std::time::Instant;

use nalgebra::{Point3, Vector3};
use pulmo::annotate::{Brush, Editor, LabelTable, Stroke};
use pulmo::render::SliceRenderer;
use pulmo::render::headless::{Headless, OFFSCREEN_FORMAT};
use pulmo::view::Plane;
use pulmo::volume::{Geometry, Volume};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dims = [512usize, 512, 300];
    let g = Geometry::axis_aligned(dims, [0.7, 0.7, 1.0], [0.0; 3]);
    let labels = Volume::filled(g.clone(), 0u8).expect("grid");
    let volume_bytes = labels.voxels.len();
    let mut ed = Editor::new(labels, LabelTable::default());
    let h = Headless::new(true).expect("a wgpu adapter");
    let mut r = SliceRenderer::new(&h.device, OFFSCREEN_FORMAT);
    let hu = vec![0i16; volume_bytes];
    r.upload_volume(&h.device, &h.queue, dims, &hu, &ed.labels().voxels);
    let _ = h.device.poll(wgpu::PollType::Wait {
        submission_index: None,
        timeout: None,
    });
    eprintln!("adapter: {}", h.adapter_name);

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut paint_ms, mut upload_ms) = (Vec::new(), Vec::new());
    let mut voxels = 0usize;
    for n in 0..1000 {
        let k = (rnd() * 300.0).floor();
        let mut p = Point3::new(rnd() * 358.4, rnd() * 358.4, k);
        let brush = Brush::disc(Plane::Axial, 10.0, 1 + (n % 6) as u8);
        let mut stroke = Stroke::new(brush);
        ed.begin(brush.name());
        for _ in 0..9 {
            // One brush step: paint, then bring the changed box to the GPU.
            let t = Instant::now();
            let changed = stroke.add_point(&mut ed, None, p).expect("inside");
            paint_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if let Some(b) = changed {
                let t = Instant::now();
                let data = ed.labels().box_voxels(b);
                r.update_labels(&h.queue, b.min, b.size(), &data);
                h.queue.submit([]);
                let _ = h.device.poll(wgpu::PollType::Wait {
                    submission_index: None,
                    timeout: None,
                });
                upload_ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            p += Vector3::new(rnd() * 10.0 - 5.0, rnd() * 10.0 - 5.0, 0.0);
            p.x = p.x.clamp(0.0, 357.0);
            p.y = p.y.clamp(0.0, 357.0);
        }
        ed.commit();
        voxels += ed.history().undo_steps().next().map_or(0, |s| s.voxels);
    }
    let bytes = ed.history().memory_bytes();
    println!(
        "1000 strokes (r 10 mm, 9 points) on 512x512x300: {voxels} voxels changed; undo history {bytes} bytes \
         = {:.2} % of one volume copy ({volume_bytes} bytes), {:.0} bytes/stroke",
        100.0 * bytes as f64 / volume_bytes as f64,
        bytes as f64 / 1000.0
    );
    println!(
        "brush step: paint median {:.3} ms; dirty-box upload to the GPU texture (submitted and waited) median {:.3} ms, p95 {:.3} ms ({} uploads)",
        median(&mut paint_ms),
        median(&mut upload_ms),
        {
            let mut v = upload_ms.clone();
            v.sort_by(f64::total_cmp);
            v[(v.len() * 95) / 100]
        },
        upload_ms.len()
    );
}
