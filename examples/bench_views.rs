//! Viewer frame-time benchmark: the 512 x 512 x 300 demo in the three-view layout of a
//! 1400 x 900 window, rendered offscreen on the CPU lavapipe adapter (or a GPU with
//! `--gpu`). Measures per-frame time (CPU uniform updates + GPU render, waited for) while
//! scrolling slices and while dragging window/level, and the one-time upload.
//!
//!     cargo run --release --example bench_views [-- --gpu] [-- --frames N]

use std::time::Instant;

use nalgebra::{Point3, Vector2};
use pulmo::demo::{DemoOptions, generate};
use pulmo::render::headless::{Headless, OFFSCREEN_FORMAT};
use pulmo::render::{FLAG_LINEAR, FLAG_SHOW_LABELS, LabelColors, SliceRenderer, SliceUniforms};
use pulmo::view::{Plane, ViewFrame, ViewState, world_bounds};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gpu = args.iter().any(|a| a == "--gpu");
    let frames: usize = args
        .iter()
        .position(|a| a == "--frames")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let t = Instant::now();
    let demo = generate(&DemoOptions::default());
    println!(
        "demo generated in {:.2} s: {:?}",
        t.elapsed().as_secs_f64(),
        demo.ct.geometry.dims
    );
    let h = Headless::new(!gpu).expect("a wgpu adapter");
    println!("adapter: {}", h.adapter_name);
    let g = &demo.ct.geometry;
    let mut renderer = SliceRenderer::new(&h.device, OFFSCREEN_FORMAT);
    let t = Instant::now();
    renderer.upload_volume(
        &h.device,
        &h.queue,
        g.dims,
        &demo.ct.voxels,
        &demo.truth.voxels,
    );
    let _ = h.device.poll(wgpu::PollType::Wait {
        submission_index: None,
        timeout: None,
    });
    let upload_s = t.elapsed().as_secs_f64();
    let texture_mb = (g.voxel_count() * 3) as f64 / 1e6;
    println!("upload (once per study): {upload_s:.3} s, GPU texture memory {texture_mb:.0} MB");

    let lut = LabelColors {
        colors: pulmo::annotate::LabelTable::default().rgba_table(),
    };
    // The three-view layout of a 1400 x 900 window (axial left, coronal/sagittal right).
    let sizes = [(680u32, 820u32), (500, 408), (500, 408)];
    let (lo, hi) = world_bounds(g);
    let mut cursor = Point3::from((lo.coords + hi.coords) / 2.0);
    let states = Plane::ALL.map(ViewState::new);
    let mut window = (-600.0f32, 1500.0f32);
    type Step<'a> = &'a mut dyn FnMut(usize, &mut Point3<f64>, &mut (f32, f32));
    let mut run = |name: &str, step: Step| {
        let mut times = Vec::with_capacity(frames);
        let mut cpu_times = Vec::with_capacity(frames);
        for f in 0..frames {
            step(f, &mut cursor, &mut window);
            let t = Instant::now();
            let mut cpu = 0.0;
            for (v, state) in states.iter().enumerate() {
                let c = Instant::now();
                let (w, hgt) = sizes[v];
                let frame = ViewFrame::new(g, state, Vector2::new(w as f64, hgt as f64), cursor);
                let u = SliceUniforms::for_view(
                    &frame,
                    g,
                    window.0,
                    window.1,
                    0.35,
                    FLAG_LINEAR | FLAG_SHOW_LABELS,
                );
                cpu += c.elapsed().as_secs_f64();
                // Render and wait (the readback includes the copy; it is the same for all).
                let _ = h.render_view(&mut renderer, v, &u, &lut, w, hgt);
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
            cpu_times.push(cpu * 1e6);
        }
        times.sort_by(f64::total_cmp);
        cpu_times.sort_by(f64::total_cmp);
        println!(
            "{name:24} frame median {:7.2} ms  p95 {:7.2} ms  | CPU view maths median {:.1} us",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&cpu_times, 0.5)
        );
    };
    let step_mm = g.spacing_mm.z;
    run("scrolling (axial)", &mut |_, c, _| c.z += step_mm);
    run("window/level drag", &mut |f, _, w| {
        w.0 = -600.0 + (f % 50) as f32 * 4.0;
        w.1 = 1500.0 + (f % 50) as f32 * 8.0;
    });
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.to_string())
        .unwrap_or_default();
    println!("peak resident memory: {rss}");
}
