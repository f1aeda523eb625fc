//! Offscreen rendering without a window (tests, benchmarks, PNG reports). Prefers a CPU
//! adapter (lavapipe) so results are reproducible on machines without a GPU.

use super::{LabelColors, SliceRenderer, SliceUniforms};

/// A wgpu device without a surface.
pub struct Headless {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter_name: String,
    pub adapter_type: wgpu::DeviceType,
}

/// The colour format offscreen renders use (the shader writes display values as-is).
pub const OFFSCREEN_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

impl Headless {
    /// Opens a device, preferring a CPU adapter when `prefer_cpu`.
    pub fn new(prefer_cpu: bool) -> Result<Self, String> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if adapters.is_empty() {
            return Err("no wgpu adapter found (install mesa-vulkan-drivers for lavapipe)".into());
        }
        adapters.sort_by_key(|a| {
            let t = a.get_info().device_type;
            let cpu = t == wgpu::DeviceType::Cpu;
            let vulkan = a.get_info().backend == wgpu::Backend::Vulkan;
            (if prefer_cpu { !cpu } else { cpu }, !vulkan)
        });
        let adapter = adapters.remove(0);
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("pulmo headless"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| format!("cannot open {}: {e}", info.name))?;
        Ok(Self {
            device,
            queue,
            adapter_name: format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
            adapter_type: info.device_type,
        })
    }

    /// Renders view `index` with `uniforms` into a `width` x `height` RGBA8 image.
    pub fn render_view(
        &self,
        renderer: &mut SliceRenderer,
        index: usize,
        uniforms: &SliceUniforms,
        lut: &LabelColors,
        width: u32,
        height: u32,
    ) -> Vec<u8> {
        let (device, queue) = (&self.device, &self.queue);
        renderer.set_label_colors(queue, lut);
        renderer.prepare_view(device, queue, index, uniforms);
        let target = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("offscreen"),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: OFFSCREEN_FORMAT,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = target.create_view(&Default::default());
        let padded_row = (width * 4).div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT)
            * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (padded_row * height) as u64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("offscreen slice"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    resolve_target: None,
                    depth_slice: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            renderer.paint_view(&mut pass, index);
        }
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &target,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded_row),
                    rows_per_image: Some(height),
                },
            },
            wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
        );
        queue.submit([encoder.finish()]);
        let slice = readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        let _ = device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        });
        let Ok(data) = slice.get_mapped_range() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity((width * height * 4) as usize);
        for row in 0..height as usize {
            let start = row * padded_row as usize;
            out.extend_from_slice(&data[start..start + width as usize * 4]);
        }
        drop(data);
        readback.unmap();
        out
    }
}
