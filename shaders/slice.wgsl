// Slice view: samples the CT (i16 HU) and label (u8) 3D textures on a plane and applies
// window/level, the label colour table, label opacity and outline mode; AI proposals
// (a third u8 texture, never the label map) are drawn over it as a faint fill with a
// dashed outline in their label's colour. A fourth texture holds another time point of
// the same patient registered onto this grid (follow-up): shown instead of the CT, as a
// checkerboard with it, or as their difference.
//
// Keep `SliceUniforms` and `LabelColors` in sync with their `#[repr(C)]` mirrors
// `render::SliceUniforms` and `render::LabelColors` (src/render/mod.rs).

struct SliceUniforms {
    // Continuous voxel coordinates (voxel centres at integers) of a point in the view,
    // given as (ndc.x, ndc.y, 0, 1).
    voxel_from_ndc: mat4x4<f32>,
    // One screen-pixel step in voxel coordinates along view x and view y (w unused).
    voxel_per_px_x: vec4<f32>,
    voxel_per_px_y: vec4<f32>,
    window_center_hu: f32,
    window_width_hu: f32,
    label_opacity: f32,
    // bit 0 (render::FLAG_LINEAR): linear sampling; bit 1 (FLAG_OUTLINE): labels as
    // outlines; bit 2 (FLAG_SHOW_LABELS): show labels; bit 3 (FLAG_SHOW_PROPOSALS): show
    // proposals; bit 4 (FLAG_LAYER_FILLED): draw the proposal layer as a solid fill at
    // label_opacity (the agreement overlay) instead of a faint fill with dashes.
    flags: u32,
    // Checkerboard tile size in voxels along i, j, k (w unused).
    checker_voxels: vec4<f32>,
    // render::COMPARE_*: 0 the CT, 1 the other time point, 2 a checkerboard of the two,
    // 3 their difference over the CT.
    compare_mode: u32,
    // The difference drawn at full colour (HU), and its sign: +1 for CT - other (the
    // other is the baseline), -1 for other - CT; later minus earlier either way.
    difference_range_hu: f32,
    difference_sign: f32,
    pad0: f32,
};

struct LabelColors {
    // rgb in 0..1, a = 1 when the label is visible, 0 when hidden.
    colors: array<vec4<f32>, 256>,
};

@group(0) @binding(0) var<uniform> u: SliceUniforms;
@group(0) @binding(1) var<uniform> lut: LabelColors;
@group(0) @binding(2) var ct_hu: texture_3d<i32>;
@group(0) @binding(3) var labels: texture_3d<u32>;
// The proposal layer; a 1x1x1 placeholder when there is none.
@group(0) @binding(4) var proposals: texture_3d<u32>;
// The other time point on this grid (HU); a 1x1x1 placeholder when there is none.
@group(0) @binding(5) var other_hu: texture_3d<i32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) ndc: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    // Two triangles covering the viewport (egui sets the viewport to the view rect).
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(-1.0, -1.0), vec2<f32>(1.0, -1.0), vec2<f32>(1.0, 1.0),
        vec2<f32>(-1.0, -1.0), vec2<f32>(1.0, 1.0), vec2<f32>(-1.0, 1.0),
    );
    let p = corners[index];
    var out: VertexOut;
    out.position = vec4<f32>(p, 0.0, 1.0);
    out.ndc = p;
    return out;
}

fn inside(voxel: vec3<f32>, dims: vec3<f32>) -> bool {
    return all(voxel >= vec3<f32>(-0.5)) && all(voxel < dims - vec3<f32>(0.5));
}

fn load_hu(tex: texture_3d<i32>, ijk: vec3<i32>, dims: vec3<i32>) -> f32 {
    let c = clamp(ijk, vec3<i32>(0), dims - vec3<i32>(1));
    return f32(textureLoad(tex, c, 0).x);
}

fn sample_hu(tex: texture_3d<i32>, voxel: vec3<f32>, dims: vec3<i32>) -> f32 {
    if ((u.flags & 1u) == 0u) {
        return load_hu(tex, vec3<i32>(floor(voxel + vec3<f32>(0.5))), dims);
    }
    // Trilinear interpolation between voxel centres (integer textures cannot be
    // filtered by a sampler).
    let base = floor(voxel);
    let f = voxel - base;
    let b = vec3<i32>(base);
    let c000 = load_hu(tex, b, dims);
    let c100 = load_hu(tex, b + vec3<i32>(1, 0, 0), dims);
    let c010 = load_hu(tex, b + vec3<i32>(0, 1, 0), dims);
    let c110 = load_hu(tex, b + vec3<i32>(1, 1, 0), dims);
    let c001 = load_hu(tex, b + vec3<i32>(0, 0, 1), dims);
    let c101 = load_hu(tex, b + vec3<i32>(1, 0, 1), dims);
    let c011 = load_hu(tex, b + vec3<i32>(0, 1, 1), dims);
    let c111 = load_hu(tex, b + vec3<i32>(1, 1, 1), dims);
    let x00 = mix(c000, c100, f.x);
    let x10 = mix(c010, c110, f.x);
    let x01 = mix(c001, c101, f.x);
    let x11 = mix(c011, c111, f.x);
    return mix(mix(x00, x10, f.y), mix(x01, x11, f.y), f.z);
}

// DICOM PS3.3 C.11.2.1.2.1 LINEAR VOI function, output in 0..1.
fn window_level(hu: f32) -> f32 {
    let c = u.window_center_hu;
    let w = u.window_width_hu;
    if (w <= 1.0) {
        return select(1.0, 0.0, hu <= c - 0.5);
    }
    return clamp((hu - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0);
}

// The value of a u8 volume at the voxel nearest to `voxel`; 0 outside the volume.
fn nearest_value(tex: texture_3d<u32>, voxel: vec3<f32>, dims: vec3<i32>) -> u32 {
    if (!inside(voxel, vec3<f32>(dims))) {
        return 0u;
    }
    let ijk = clamp(vec3<i32>(floor(voxel + vec3<f32>(0.5))), vec3<i32>(0), dims - vec3<i32>(1));
    return textureLoad(tex, ijk, 0).x;
}

// Whether a screen neighbour one pixel away (along the view's x or y) holds another value
// than `value`: the pixel is on the boundary of `value`'s region.
fn on_edge(tex: texture_3d<u32>, voxel: vec3<f32>, dims: vec3<i32>, value: u32) -> bool {
    let dx = u.voxel_per_px_x.xyz;
    let dy = u.voxel_per_px_y.xyz;
    return nearest_value(tex, voxel + dx, dims) != value
        || nearest_value(tex, voxel - dx, dims) != value
        || nearest_value(tex, voxel + dy, dims) != value
        || nearest_value(tex, voxel - dy, dims) != value;
}

fn label_at(voxel: vec3<f32>, dims: vec3<i32>) -> u32 {
    return nearest_value(labels, voxel, dims);
}

fn proposal_at(voxel: vec3<f32>, dims: vec3<i32>) -> u32 {
    return nearest_value(proposals, voxel, dims);
}

// Fill opacity of proposals and the dash period (screen pixels) of their outline.
const PROPOSAL_FILL: f32 = 0.2;
const DASH_PX: i32 = 4;

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let voxel = (u.voxel_from_ndc * vec4<f32>(in.ndc, 0.0, 1.0)).xyz;
    let dims = vec3<i32>(textureDimensions(ct_hu));
    if (!inside(voxel, vec3<f32>(dims))) {
        return vec4<f32>(0.0, 0.0, 0.0, 1.0);
    }
    let hu = sample_hu(ct_hu, voxel, dims);
    var rgb = vec3<f32>(window_level(hu));
    if (u.compare_mode != 0u && all(vec3<i32>(textureDimensions(other_hu)) == dims)) {
        let other = sample_hu(other_hu, voxel, dims);
        if (u.compare_mode == 1u) {
            rgb = vec3<f32>(window_level(other));
        } else if (u.compare_mode == 2u) {
            // Tiles counted from the volume's corner (voxel >= -0.5 inside).
            let t = vec3<i32>(floor((voxel + vec3<f32>(0.5)) / u.checker_voxels.xyz));
            if (((t.x + t.y + t.z) & 1) == 1) {
                rgb = vec3<f32>(window_level(other));
            }
        } else {
            // Denser later in red, less dense later in blue, over the CT.
            let t = clamp(u.difference_sign * (hu - other) / u.difference_range_hu, -1.0, 1.0);
            let hot = select(vec3<f32>(0.2, 0.55, 1.0), vec3<f32>(1.0, 0.25, 0.1), t > 0.0);
            rgb = mix(rgb, hot, abs(t));
        }
    }
    if ((u.flags & 4u) != 0u) {
        let label = label_at(voxel, dims);
        let outline_mode = (u.flags & 2u) != 0u;
        if (label != 0u) {
            let color = lut.colors[label];
            if (color.a > 0.0) {
                if (outline_mode) {
                    // A boundary pixel: a screen neighbour one pixel away carries another label.
                    let edge = on_edge(labels, voxel, dims, label);
                    if (edge) {
                        rgb = color.rgb;
                    }
                } else {
                    rgb = mix(rgb, color.rgb, u.label_opacity);
                }
            }
        }
    }
    if ((u.flags & 8u) != 0u && all(vec3<i32>(textureDimensions(proposals)) == dims)) {
        let p = proposal_at(voxel, dims);
        if (p != 0u && (u.flags & 16u) != 0u) {
            rgb = mix(rgb, lut.colors[p].rgb, u.label_opacity);
        } else if (p != 0u) {
            let color = lut.colors[p].rgb;
            let edge = on_edge(proposals, voxel, dims, p);
            if (edge) {
                let px = vec2<i32>(floor(in.position.xy));
                let on = ((px.x + px.y) / DASH_PX) % 2 == 0;
                rgb = select(vec3<f32>(0.0), color, on);
            } else {
                rgb = mix(rgb, color, PROPOSAL_FILL);
            }
        }
    }
    return vec4<f32>(rgb, 1.0);
}
