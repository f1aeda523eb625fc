//! GPU rendering of slice views with wgpu only (the GUI layer, `ui/`, hands the renderer
//! to its paint callbacks).
//!
//! The CT is uploaded once as an `R16Sint` 3D texture (HU) and the label map as an
//! `R8Uint` 3D texture; every view samples them in `shaders/slice.wgsl`. Window/level,
//! the label colour table, opacity and outline mode are uniforms, so scrolling and W/L
//! drags do no per-voxel work on the CPU. Label edits upload only their dirty box.

pub mod headless;
pub mod reference;
pub mod report;
pub mod text;

use bytemuck::{Pod, Zeroable};

/// The WGSL source of the slice shader (validated by `build.rs`).
pub const SLICE_WGSL: &str = include_str!("../../shaders/slice.wgsl");

/// Mirror of `SliceUniforms` in `shaders/slice.wgsl` (keep in sync).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct SliceUniforms {
    /// Column-major 4x4: continuous voxel coordinates from view NDC.
    pub voxel_from_ndc: [[f32; 4]; 4],
    pub voxel_per_px_x: [f32; 4],
    pub voxel_per_px_y: [f32; 4],
    pub window_center_hu: f32,
    pub window_width_hu: f32,
    pub label_opacity: f32,
    pub flags: u32,
    /// Checkerboard tile size in voxels along i, j, k (w unused).
    pub checker_voxels: [f32; 4],
    /// `COMPARE_*`: what the view shows of the other time point.
    pub compare_mode: u32,
    /// The difference (HU) drawn at full colour in [`COMPARE_DIFFERENCE`].
    pub difference_range_hu: f32,
    /// +1: difference = CT - other (the other is the baseline); -1: other - CT.
    pub difference_sign: f32,
    pub pad0: f32,
}

impl SliceUniforms {
    /// The uniforms of one view: its voxel mapping from `frame` on `geometry`, the window
    /// (HU), label opacity and `FLAG_*` bits.
    pub fn for_view(
        frame: &crate::view::ViewFrame,
        geometry: &crate::volume::Geometry,
        window_center_hu: f32,
        window_width_hu: f32,
        label_opacity: f32,
        flags: u32,
    ) -> Self {
        let [dx, dy] = frame.voxel_per_px(geometry);
        SliceUniforms {
            voxel_from_ndc: mat4_cols(&frame.voxel_from_ndc(geometry)),
            voxel_per_px_x: [dx.x as f32, dx.y as f32, dx.z as f32, 0.0],
            voxel_per_px_y: [dy.x as f32, dy.y as f32, dy.z as f32, 0.0],
            window_center_hu,
            window_width_hu,
            label_opacity,
            flags,
            checker_voxels: [1.0; 4],
            compare_mode: COMPARE_OFF,
            difference_range_hu: 1.0,
            difference_sign: 1.0,
            pad0: 0.0,
        }
    }

    /// These uniforms with the other time point shown as `mode` (`COMPARE_*`):
    /// checkerboard tiles of `checker_mm` on `geometry`, the difference at full colour
    /// at `difference_range_hu`, later minus earlier (`other_is_baseline`).
    pub fn with_comparison(
        mut self,
        mode: u32,
        geometry: &crate::volume::Geometry,
        checker_mm: f64,
        difference_range_hu: f64,
        other_is_baseline: bool,
    ) -> Self {
        let s = geometry.spacing_mm;
        self.compare_mode = mode;
        self.checker_voxels = [
            (checker_mm / s[0]).max(1.0) as f32,
            (checker_mm / s[1]).max(1.0) as f32,
            (checker_mm / s[2]).max(1.0) as f32,
            0.0,
        ];
        self.difference_range_hu = difference_range_hu.max(1.0) as f32;
        self.difference_sign = if other_is_baseline { 1.0 } else { -1.0 };
        self
    }
}

/// What a view shows of another time point registered onto its grid
/// ([`SliceUniforms::compare_mode`]): nothing, the other time point instead of the CT,
/// a checkerboard of the two (alignment at the tile edges), or the difference in colour
/// over the CT (red: denser at the later time point, blue: less dense).
pub const COMPARE_OFF: u32 = 0;
pub const COMPARE_OTHER: u32 = 1;
pub const COMPARE_CHECKERBOARD: u32 = 2;
pub const COMPARE_DIFFERENCE: u32 = 3;
/// The difference colours (rgb 0..1): later denser, later less dense.
pub const DIFFERENCE_DENSER: [f32; 3] = [1.0, 0.25, 0.1];
pub const DIFFERENCE_LIGHTER: [f32; 3] = [0.2, 0.55, 1.0];

pub const FLAG_LINEAR: u32 = 1;
pub const FLAG_OUTLINE: u32 = 2;
pub const FLAG_SHOW_LABELS: u32 = 4;
pub const FLAG_SHOW_PROPOSALS: u32 = 8;
/// With [`FLAG_SHOW_PROPOSALS`]: draw the layer as a solid fill at `label_opacity` in its
/// values' colours (no outline, no dashes): the Compare window's agreement overlay.
pub const FLAG_LAYER_FILLED: u32 = 16;
/// Colour-table entries reserved for the agreement overlay (true positive, false
/// positive, false negative voxels of the compared label). Label tables should not use
/// these values.
pub const AGREEMENT_TP: u8 = 250;
pub const AGREEMENT_FP: u8 = 251;
pub const AGREEMENT_FN: u8 = 252;
/// Their colours (rgb 0..1, a = 1): green, red, blue.
pub const AGREEMENT_COLORS: [[f32; 4]; 3] = [
    [0.15, 0.85, 0.25, 1.0],
    [0.95, 0.2, 0.15, 1.0],
    [0.2, 0.45, 1.0, 1.0],
];
/// Colour-table entries reserved for the follow-up change map: value
/// `TRANSITION_BASE + code` for the transition codes 2..=9 of
/// `followup::progress::TRANSITIONS` (healthy and outside are not drawn).
pub const TRANSITION_BASE: u8 = 230;
/// Their colours, codes 2..=9: new ground-glass, new consolidation, resolved
/// ground-glass, resolved consolidation, persistent ground-glass, persistent
/// consolidation, ground-glass → consolidation, consolidation → ground-glass. Progression
/// in reds and oranges, recovery in greens, what stayed in muted yellow and purple.
pub const TRANSITION_COLORS: [[f32; 4]; 8] = [
    [1.0, 0.6, 0.1, 1.0],
    [0.95, 0.1, 0.1, 1.0],
    [0.55, 0.95, 0.55, 1.0],
    [0.1, 0.75, 0.25, 1.0],
    [0.8, 0.8, 0.35, 1.0],
    [0.6, 0.35, 0.75, 1.0],
    [1.0, 0.2, 0.6, 1.0],
    [0.2, 0.8, 0.8, 1.0],
];
/// Fill opacity and dash period (px) of proposals: `PROPOSAL_FILL` / `DASH_PX` in the shader.
pub const PROPOSAL_FILL: f32 = 0.2;
pub const DASH_PX: i32 = 4;

/// Mirror of `LabelColors` in `shaders/slice.wgsl`: rgb + visibility per label value.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct LabelColors {
    pub colors: [[f32; 4]; 256],
}

impl Default for LabelColors {
    fn default() -> Self {
        Self {
            colors: [[0.0; 4]; 256],
        }
    }
}

impl LabelColors {
    /// A label colour table (see `LabelTable::rgba_table`) with the overlays' reserved
    /// entries set: the agreement overlay's ([`AGREEMENT_TP`], [`AGREEMENT_FP`],
    /// [`AGREEMENT_FN`]) and the follow-up change map's ([`TRANSITION_BASE`] + 2..=9).
    pub fn with_overlays(mut colors: [[f32; 4]; 256]) -> Self {
        for (n, c) in TRANSITION_COLORS.iter().enumerate() {
            colors[TRANSITION_BASE as usize + 2 + n] = *c;
        }
        for (value, c) in [AGREEMENT_TP, AGREEMENT_FP, AGREEMENT_FN]
            .into_iter()
            .zip(AGREEMENT_COLORS)
        {
            colors[value as usize] = c;
        }
        Self { colors }
    }
}

const _: () = assert!(std::mem::size_of::<SliceUniforms>() == 144);
const _: () = assert!(std::mem::size_of::<LabelColors>() == 4096);

/// Converts an f64 4x4 (nalgebra, column-major) to the uniform layout.
pub fn mat4_cols(m: &nalgebra::Matrix4<f64>) -> [[f32; 4]; 4] {
    let mut out = [[0f32; 4]; 4];
    for (c, col) in out.iter_mut().enumerate() {
        for (r, v) in col.iter_mut().enumerate() {
            *v = m[(r, c)] as f32;
        }
    }
    out
}

/// One view's GPU state: its uniform buffer and bind group.
struct ViewSlot {
    uniforms: wgpu::Buffer,
    bind_group: Option<wgpu::BindGroup>,
}

/// Volume textures plus the slice pipeline; one uniform slot per view.
pub struct SliceRenderer {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    lut: wgpu::Buffer,
    ct: Option<wgpu::Texture>,
    labels: Option<wgpu::Texture>,
    /// The proposal layer (1x1x1 placeholder when there is none).
    proposals: Option<wgpu::Texture>,
    /// Another time point on this grid (1x1x1 placeholder when there is none).
    other_ct: Option<wgpu::Texture>,
    views: Vec<ViewSlot>,
    dims: [u32; 3],
}

fn texture_3d(
    device: &wgpu::Device,
    label: &str,
    dims: [u32; 3],
    format: wgpu::TextureFormat,
) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d {
            width: dims[0],
            height: dims[1],
            depth_or_array_layers: dims[2],
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D3,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    })
}

/// Writes `data` (i fastest) into the box `origin`..`origin + size` of a 3D texture,
/// in chunks of slices so the staging memory stays small.
fn write_box(
    queue: &wgpu::Queue,
    texture: &wgpu::Texture,
    origin: [u32; 3],
    size: [u32; 3],
    bytes_per_voxel: u32,
    data: &[u8],
) {
    let plane = (size[0] * size[1] * bytes_per_voxel) as usize;
    let chunk = (32 << 20) / plane.max(1);
    let chunk = chunk.max(1) as u32;
    let mut z = 0;
    while z < size[2] {
        let n = chunk.min(size[2] - z);
        let start = z as usize * plane;
        let end = start + n as usize * plane;
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: origin[0],
                    y: origin[1],
                    z: origin[2] + z,
                },
                aspect: wgpu::TextureAspect::All,
            },
            &data[start..end],
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(size[0] * bytes_per_voxel),
                rows_per_image: Some(size[1]),
            },
            wgpu::Extent3d {
                width: size[0],
                height: size[1],
                depth_or_array_layers: n,
            },
        );
        z += n;
    }
}

impl SliceRenderer {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("slice.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SLICE_WGSL.into()),
        });
        let uniform_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let texture_entry = |binding, sample_type| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type,
                view_dimension: wgpu::TextureViewDimension::D3,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("slice bind group layout"),
            entries: &[
                uniform_entry(0),
                uniform_entry(1),
                texture_entry(2, wgpu::TextureSampleType::Sint),
                texture_entry(3, wgpu::TextureSampleType::Uint),
                texture_entry(4, wgpu::TextureSampleType::Uint),
                texture_entry(5, wgpu::TextureSampleType::Sint),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("slice pipeline layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("slice pipeline"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: Default::default(),
            },
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format: target_format,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: Default::default(),
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        let lut = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("label colours"),
            size: std::mem::size_of::<LabelColors>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self {
            pipeline,
            layout,
            lut,
            ct: None,
            labels: None,
            proposals: None,
            other_ct: None,
            views: Vec::new(),
            dims: [0; 3],
        }
    }

    /// Uploads a CT (HU, i fastest) and an empty label map of the same dims. Called once
    /// per study.
    pub fn upload_volume(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        dims: [usize; 3],
        hu: &[i16],
        labels: &[u8],
    ) {
        let d = [dims[0] as u32, dims[1] as u32, dims[2] as u32];
        let ct = texture_3d(device, "ct hu", d, wgpu::TextureFormat::R16Sint);
        write_box(queue, &ct, [0; 3], d, 2, bytemuck::cast_slice(hu));
        let lab = texture_3d(device, "labels", d, wgpu::TextureFormat::R8Uint);
        // wgpu zero-initialises textures, so an empty label map (a study just opened)
        // needs no upload: a third fewer bytes before the first image.
        if labels
            .chunks(1 << 16)
            .any(|c| c.iter().fold(0u8, |a, &b| a | b) != 0)
        {
            write_box(queue, &lab, [0; 3], d, 1, labels);
        }
        self.ct = Some(ct);
        self.labels = Some(lab);
        self.dims = d;
        self.set_proposals(device, queue, None);
        self.set_other_ct(device, queue, None);
    }

    /// Replaces the other time point (HU on this grid, i fastest; the checkerboard and
    /// difference modes), or removes it. Ignored (removed) when its size differs.
    pub fn set_other_ct(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, hu: Option<&[i16]>) {
        let d = self.dims;
        let t = match hu {
            Some(data) if data.len() == (d[0] * d[1] * d[2]) as usize && !data.is_empty() => {
                let t = texture_3d(device, "other time point", d, wgpu::TextureFormat::R16Sint);
                write_box(queue, &t, [0; 3], d, 2, bytemuck::cast_slice(data));
                t
            }
            _ => {
                let t = texture_3d(device, "no other", [1, 1, 1], wgpu::TextureFormat::R16Sint);
                write_box(queue, &t, [0; 3], [1, 1, 1], 2, &[0, 0]);
                t
            }
        };
        self.other_ct = Some(t);
        for v in &mut self.views {
            v.bind_group = None;
        }
    }

    /// Replaces the proposal layer with `proposals` (the CT's dims, i fastest), or
    /// removes it.
    pub fn set_proposals(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        proposals: Option<&[u8]>,
    ) {
        let t = match proposals {
            Some(data) if self.dims.iter().all(|&d| d > 0) => {
                let t = texture_3d(device, "proposals", self.dims, wgpu::TextureFormat::R8Uint);
                write_box(queue, &t, [0; 3], self.dims, 1, data);
                t
            }
            _ => {
                let t = texture_3d(
                    device,
                    "no proposals",
                    [1, 1, 1],
                    wgpu::TextureFormat::R8Uint,
                );
                write_box(queue, &t, [0; 3], [1, 1, 1], 1, &[0]);
                t
            }
        };
        self.proposals = Some(t);
        for v in &mut self.views {
            v.bind_group = None;
        }
    }

    /// Uploads a box of the proposal layer (after accept / reject / edits).
    pub fn update_proposals(
        &self,
        queue: &wgpu::Queue,
        origin: [usize; 3],
        size: [usize; 3],
        data: &[u8],
    ) {
        if let Some(t) = &self.proposals
            && t.size().width == self.dims[0]
            && t.size().depth_or_array_layers == self.dims[2]
        {
            write_box(
                queue,
                t,
                origin.map(|v| v as u32),
                size.map(|v| v as u32),
                1,
                data,
            );
        }
    }

    /// Uploads the box `origin`..`origin + size` of the label map (`data` holds just
    /// that box, i fastest).
    pub fn update_labels(
        &self,
        queue: &wgpu::Queue,
        origin: [usize; 3],
        size: [usize; 3],
        data: &[u8],
    ) {
        if let Some(t) = &self.labels {
            let o = origin.map(|v| v as u32);
            let s = size.map(|v| v as u32);
            write_box(queue, t, o, s, 1, data);
        }
    }

    pub fn set_label_colors(&self, queue: &wgpu::Queue, colors: &LabelColors) {
        queue.write_buffer(&self.lut, 0, bytemuck::bytes_of(colors));
    }

    pub fn has_volume(&self) -> bool {
        self.ct.is_some()
    }

    pub fn dims(&self) -> [u32; 3] {
        self.dims
    }

    /// Writes view `index`'s uniforms (creating its slot on first use).
    pub fn prepare_view(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        index: usize,
        uniforms: &SliceUniforms,
    ) {
        while self.views.len() <= index {
            self.views.push(ViewSlot {
                uniforms: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("slice view uniforms"),
                    size: std::mem::size_of::<SliceUniforms>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                bind_group: None,
            });
        }
        queue.write_buffer(&self.views[index].uniforms, 0, bytemuck::bytes_of(uniforms));
        let (Some(ct), Some(labels), Some(proposals), Some(other)) =
            (&self.ct, &self.labels, &self.proposals, &self.other_ct)
        else {
            return;
        };
        let slot = &mut self.views[index];
        if slot.bind_group.is_none() {
            let ct_view = ct.create_view(&Default::default());
            let label_view = labels.create_view(&Default::default());
            let proposal_view = proposals.create_view(&Default::default());
            let other_view = other.create_view(&Default::default());
            slot.bind_group = Some(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("slice bind group"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: slot.uniforms.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: self.lut.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&ct_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: wgpu::BindingResource::TextureView(&label_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: wgpu::BindingResource::TextureView(&proposal_view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 5,
                        resource: wgpu::BindingResource::TextureView(&other_view),
                    },
                ],
            }));
        }
    }

    /// Draws view `index` into the current render pass (its viewport set by the caller).
    pub fn paint_view(&self, pass: &mut wgpu::RenderPass<'_>, index: usize) {
        let Some(bind_group) = self.views.get(index).and_then(|v| v.bind_group.as_ref()) else {
            return;
        };
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}
