//! # pulmo — a CT viewer for the lungs with built-in AI annotation
//!
//! ## Architecture: dependencies only flow down
//!
//! ```text
//!   cli (anyhow, top level) ──────────► ui/ (egui, eframe: views, menus, panels, dialogs)
//!        │                               │            │
//!        │                               │         render/ (wgpu only: textures, WGSL)
//!        ▼                               ▼            ▼
//!   ┌──────────────────────── domain (no egui / eframe / wgpu) ─────────────────────────┐
//!   │ session   – the open study: CT + labels + editor/history, loading and saving with  │
//!   │             sidecars, the edit journal, AI proposals under review, background jobs,│
//!   │             the model library and fine-tuning from the user's labels               │
//!   │ infer     – the worker thread, segmenters, the AI process protocol (no libtorch),  │
//!   │             evaluation protocols, fine-tuning data                                 │
//!   │ io        – DICOM (dicom-rs) series and SEG, NIfTI, NRRD; atomic writes            │
//!   │ annotate  – label table, the editor (locks, changed boxes), tools, undo deltas     │
//!   │ batch     – manifests of studies, shards, one folder per study written atomically, │
//!   │             resumable runs, the merged table (the caller runs the models)          │
//!   │ followup  – registration of a follow-up CT to its baseline, transition maps,       │
//!   │             lesions matched over time                                              │
//!   │ metrics   – overlap, surface distances, quantification, reports                    │
//!   │ view      – the three slice views' geometry: screen px ↔ world mm ↔ voxels       │
//!   │ demo      – the deterministic synthetic chest CT                                   │
//!   │ volume    – Volume<T>, Geometry (world_from_voxel in LPS), VoxelBox, resampling,   │
//!   │             window presets                                                         │
//!   └───────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Within the domain the allowed edges (`tests/architecture.rs`, `ALLOWED_EDGES`) are:
//! `view`, `demo`, `metrics` → `volume`; `annotate` → `volume`, `view`; `io` → `volume`,
//! `annotate` (SEG segments carry the label table); `followup` → `volume`, `annotate`,
//! `metrics`; `batch` → `volume`, `io`, `metrics`, `followup`; `infer` → those below it;
//! `session`
//! → every other domain module. `ui` draws the [`session::Session`] and turns input into
//! calls on it; it holds view, tool and panel settings, never domain logic.
//!
//! Two executables: `pulmo` (viewer and CLI, this library) and `pulmo-ai`
//! (`src/bin/pulmo-ai/`, the only code that links libtorch: the U-Net, TorchScript
//! models, training). The viewer starts `pulmo-ai serve` when a model first runs and
//! exchanges CT and proposals with it over pipes (`infer::remote`), so the viewer's
//! process never pays libtorch's start-up and a libtorch crash cannot take it down.
//!
//! Rules, enforced by `tests/architecture.rs`:
//! - Every use of a top-level module by another is an edge of an acyclic allow-list.
//! - The domain modules (`volume`, `io`, `annotate`, `metrics`, `followup`, `batch`,
//!   `infer`, `session`, `demo`, `view`) never mention egui, eframe or wgpu: they are usable from the CLI, from
//!   tests and from scripts without a display.
//! - `render/` uses wgpu (and bytemuck mirrors of the WGSL uniform structs) but not egui.
//! - `ui/` may use everything; functions that draw into an `egui::Ui` end in `_ui`.
//! - Only `src/bin/pulmo-ai/` mentions libtorch (`tch`), and the `pulmo` executable has
//!   no libtorch among its shared libraries.
//! - Lower modules never call upwards: `volume` knows nothing of files, `io` nothing of
//!   sessions. Progress and wake-ups cross layers as plain callbacks.
//! - Each module has its own `thiserror` error enum carrying the file or series in
//!   context; `anyhow` appears only at the top (`cli`, the two `main`s, and `ui::run_viewer`).
//!
//! Frames and units are in names: `world_from_voxel` maps voxel indices to patient
//! millimetres (DICOM LPS), `spacing_mm`, `window_hu`.

pub mod annotate;
pub mod batch;
pub mod cli;
pub mod demo;
pub mod followup;
pub mod infer;
pub mod io;
pub mod metrics;
pub mod render;
pub mod session;
pub mod ui;
pub mod view;
pub mod volume;
