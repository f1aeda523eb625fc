//! Properties of editing with undo: any sequence of tool operations, undone step by step,
//! passes back through every intermediate label map and ends bit-exact at the original;
//! redo replays them; every undo/redo's dirty box covers what it changed; and a locked
//! label's voxels are never changed by any operation.

use nalgebra::Point3;
use proptest::prelude::*;
use pulmo::annotate::{
    Brush, BrushExtent, BrushShape, Editor, LabelTable, Morphology, OverwritePolicy, RegionGrow,
    Scope, flood_fill, interpolate_slices, morphology, paint_stroke, polygon_fill,
};
use pulmo::view::Plane;
use pulmo::volume::VoxelBox;
use pulmo::volume::{CtVolume, Geometry, LabelVolume, Volume};

const DIMS: [usize; 3] = [10, 8, 5];
const SPACINGS: [[f64; 3]; 3] = [[1.0, 1.0, 1.0], [0.7, 0.7, 2.5], [1.0, 2.0, 3.0]];

#[derive(Debug, Clone)]
enum Op {
    Stroke {
        points: Vec<[f64; 3]>,
        radius_mm: f64,
        square: bool,
        /// 0..3: a disc in that plane; 3: a ball.
        extent: usize,
        value: u8,
        hu: Option<(i16, i16)>,
    },
    Fill {
        seed: [usize; 3],
        value: u8,
        plane: Option<usize>,
        hu: Option<(i16, i16)>,
        within: Option<Vec<u8>>,
    },
    Polygon {
        plane: usize,
        vertices: Vec<[f64; 3]>,
        value: u8,
    },
    Morph {
        label: u8,
        op: usize,
        radius_mm: f64,
        plane: Option<usize>,
    },
    Interpolate {
        label: u8,
        plane: usize,
    },
    Policy(usize, u8),
}

fn voxel_point() -> impl Strategy<Value = [f64; 3]> {
    (
        -1.0..DIMS[0] as f64,
        -1.0..DIMS[1] as f64,
        -0.5..DIMS[2] as f64 - 0.5,
    )
        .prop_map(|(i, j, k)| [i, j, k])
}

fn hu_range() -> impl Strategy<Value = Option<(i16, i16)>> {
    prop::option::of((-1000i16..200, 0i16..800).prop_map(|(lo, w)| (lo, lo.saturating_add(w))))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (
            prop::collection::vec(voxel_point(), 1..6),
            0.3f64..4.0,
            any::<bool>(),
            0usize..4,
            0u8..5,
            hu_range(),
        )
            .prop_map(|(points, radius_mm, square, extent, value, hu)| Op::Stroke {
                points,
                radius_mm,
                square,
                extent,
                value,
                hu,
            }),
        2 => (
            (0..DIMS[0], 0..DIMS[1], 0..DIMS[2]),
            0u8..5,
            prop::option::of(0usize..3),
            hu_range(),
            prop::option::of(prop::collection::vec(0u8..5, 1..3)),
        )
            .prop_map(|((i, j, k), value, plane, hu, within)| Op::Fill {
                seed: [i, j, k],
                value,
                plane,
                hu,
                within,
            }),
        1 => (0usize..3, prop::collection::vec(voxel_point(), 3..7), 0u8..5).prop_map(
            |(plane, vertices, value)| Op::Polygon {
                plane,
                vertices,
                value
            }
        ),
        2 => (1u8..5, 0usize..5, 0.5f64..3.0, prop::option::of(0usize..3)).prop_map(
            |(label, op, radius_mm, plane)| Op::Morph {
                label,
                op,
                radius_mm,
                plane
            }
        ),
        1 => (1u8..5, 0usize..3).prop_map(|(label, plane)| Op::Interpolate { label, plane }),
        1 => (0usize..3, 1u8..5).prop_map(|(p, l)| Op::Policy(p, l)),
    ]
}

fn world(g: &Geometry, p: [f64; 3]) -> Point3<f64> {
    g.world_at_voxel(p.into())
}

/// Applies `op`; true when it ran without an error.
fn apply(ed: &mut Editor, ct: &CtVolume, op: &Op) -> bool {
    let g = ed.labels().geometry.clone();
    let r = match op {
        Op::Stroke {
            points,
            radius_mm,
            square,
            extent,
            value,
            hu,
        } => {
            let brush = Brush {
                radius_mm: *radius_mm,
                shape: if *square {
                    BrushShape::Square
                } else {
                    BrushShape::Round
                },
                extent: if *extent < 3 {
                    BrushExtent::Disc(Plane::ALL[*extent])
                } else {
                    BrushExtent::Ball
                },
                value: *value,
                hu_range: *hu,
            };
            let pts: Vec<_> = points.iter().map(|&p| world(&g, p)).collect();
            paint_stroke(ed, &brush, Some(ct), &pts)
        }
        Op::Fill {
            seed,
            value,
            plane,
            hu,
            within,
        } => {
            let grow = RegionGrow {
                seed: *seed,
                value: *value,
                scope: plane.map_or(Scope::Volume, |p| Scope::Plane(Plane::ALL[p])),
                hu_range: *hu,
                within_labels: within.clone(),
            };
            flood_fill(ed, &grow, Some(ct))
        }
        Op::Polygon {
            plane,
            vertices,
            value,
        } => {
            let v: Vec<_> = vertices.iter().map(|&p| world(&g, p)).collect();
            polygon_fill(ed, Plane::ALL[*plane], &v, *value)
        }
        Op::Morph {
            label,
            op,
            radius_mm,
            plane,
        } => {
            let m = match op {
                0 => Morphology::Dilate {
                    radius_mm: *radius_mm,
                },
                1 => Morphology::Erode {
                    radius_mm: *radius_mm,
                },
                2 => Morphology::FillHoles,
                3 => Morphology::RemoveIslands {
                    min_volume_mm3: radius_mm * 4.0,
                },
                _ => Morphology::KeepLargest,
            };
            let scope = plane.map_or(Scope::Volume, |p| Scope::Plane(Plane::ALL[p]));
            morphology(ed, *label, m, scope)
        }
        Op::Interpolate { label, plane } => interpolate_slices(ed, *label, Plane::ALL[*plane]),
        Op::Policy(p, l) => {
            ed.policy = [
                OverwritePolicy::Everything,
                OverwritePolicy::OnlyBackground,
                OverwritePolicy::OnlyLabel(*l),
            ][*p];
            Ok(None)
        }
    };
    r.is_ok()
}

/// Every voxel that differs between `a` and `b` lies in `bbox`.
fn covered(a: &LabelVolume, b: &LabelVolume, bbox: Option<VoxelBox>) -> bool {
    let [nx, ny, _] = a.dims();
    a.voxels
        .iter()
        .zip(&b.voxels)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .all(|(idx, _)| {
            let p = [idx % nx, (idx / nx) % ny, idx / (nx * ny)];
            bbox.is_some_and(|b| b.contains(p))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn undo_all_restores_and_locks_hold(
        spacing in 0usize..3,
        labels in prop::collection::vec(prop_oneof![3 => Just(0u8), 1 => 1u8..5], DIMS.iter().product::<usize>()),
        hu in prop::collection::vec(-1000i16..300, DIMS.iter().product::<usize>()),
        locked in prop::option::of(1u8..5),
        ops in prop::collection::vec(op(), 1..10),
    ) {
        let g = Geometry::axis_aligned(DIMS, SPACINGS[spacing], [-3.0, 7.5, 100.0]);
        let original = Volume::new(g.clone(), labels).unwrap();
        let ct = Volume::new(g, hu).unwrap();
        let mut ed = Editor::new(original.clone(), LabelTable::default());
        if let Some(l) = locked {
            prop_assert!(ed.set_locked(l, true));
        }
        let mut states = vec![original.clone()];
        for op in &ops {
            let before = ed.labels().clone();
            let steps = ed.history().undo_steps().count();
            // Errors (e.g. a polygon starting outside the slices) must leave no trace.
            let _ran = apply(&mut ed, &ct, op);
            prop_assert!(!ed.in_transaction());
            if let Some(l) = locked {
                let moved = before.voxels.iter().zip(&ed.labels().voxels)
                    .any(|(&x, &y)| (x == l) != (y == l));
                prop_assert!(!moved, "{op:?} changed locked label {l}");
            }
            let now = ed.history().undo_steps().count();
            if now == steps + 1 {
                prop_assert!(&before != ed.labels());
                states.push(ed.labels().clone());
            } else {
                prop_assert_eq!(now, steps);
                prop_assert!(&before == ed.labels(), "{op:?} changed voxels without a step");
            }
        }
        // Undo then redo is the identity.
        let last = ed.labels().clone();
        if ed.undo().is_some() {
            prop_assert!(ed.redo().is_some());
        }
        prop_assert!(ed.labels() == &last);
        // Undo everything, through every intermediate state, back to the original.
        for want in states.iter().rev().skip(1) {
            let before = ed.labels().clone();
            let bbox = ed.undo();
            prop_assert!(bbox.is_some());
            prop_assert!(ed.labels() == want);
            prop_assert!(covered(&before, want, bbox));
        }
        prop_assert!(ed.undo().is_none());
        prop_assert!(ed.labels() == &original);
        // Redo everything.
        for want in states.iter().skip(1) {
            let before = ed.labels().clone();
            let bbox = ed.redo();
            prop_assert!(ed.labels() == want);
            prop_assert!(covered(&before, want, bbox));
        }
        prop_assert!(ed.redo().is_none());
        prop_assert!(ed.labels() == &last);
    }
}
