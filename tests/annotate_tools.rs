//! The annotation tools on small text grids (one character per voxel, rows = j, columns
//! = i, of an axial slice; `.` is 0, `#` is 1, digits are their value), the history's
//! memory on a realistic drag load, and region growing on a real CT.

mod common;

use std::time::Instant;

use nalgebra::{Point3, Vector3};
use pulmo::annotate::{
    Brush, BrushExtent, BrushShape, Editor, LabelTable, Morphology, OverwritePolicy, RegionGrow,
    Scope, flood_fill, interpolate_slices, morphology, paint_stroke, polygon_fill,
};
use pulmo::view::Plane;
use pulmo::volume::{CtVolume, Geometry, LabelVolume, Volume};

// ---------------------------------------------------------------- grid helpers

/// The non-empty lines of `text`, trimmed.
fn rows(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn char_value(c: char) -> u8 {
    match c {
        '.' => 0,
        '#' => 1,
        d if d.is_ascii_digit() => d as u8 - b'0',
        other => panic!("unknown grid character {other:?}"),
    }
}

fn value_char(v: u8) -> char {
    match v {
        0 => '.',
        1 => '#',
        v if v < 10 => (b'0' + v) as char,
        _ => '?',
    }
}

/// A label volume whose axial slices are the given grids (all the same size).
fn labels_from(slices: &[&str], spacing_mm: [f64; 3]) -> LabelVolume {
    let grids: Vec<Vec<String>> = slices.iter().map(|s| rows(s)).collect();
    let (ny, nx) = (grids[0].len(), grids[0][0].chars().count());
    let mut voxels = Vec::with_capacity(nx * ny * grids.len());
    for g in &grids {
        assert_eq!(g.len(), ny, "all slices need {ny} rows");
        for row in g {
            assert_eq!(row.chars().count(), nx, "row {row:?} needs {nx} columns");
            voxels.extend(row.chars().map(char_value));
        }
    }
    let geom = Geometry::axis_aligned([nx, ny, grids.len()], spacing_mm, [0.0; 3]);
    Volume::new(geom, voxels).unwrap()
}

/// A CT on the same kind of grid, with `hu(c)` giving each character's value.
fn ct_from(slices: &[&str], spacing_mm: [f64; 3], hu: impl Fn(char) -> i16) -> CtVolume {
    let grids: Vec<Vec<String>> = slices.iter().map(|s| rows(s)).collect();
    let (ny, nx) = (grids[0].len(), grids[0][0].chars().count());
    let voxels = grids
        .iter()
        .flat_map(|g| g.iter().flat_map(|r| r.chars().map(&hu)))
        .collect();
    Volume::new(
        Geometry::axis_aligned([nx, ny, grids.len()], spacing_mm, [0.0; 3]),
        voxels,
    )
    .unwrap()
}

/// Axial slice `k` as text rows.
fn grid_of(v: &LabelVolume, k: usize) -> Vec<String> {
    let [nx, _, _] = v.dims();
    v.slice_k(k)
        .chunks(nx)
        .map(|r| r.iter().map(|&x| value_char(x)).collect())
        .collect()
}

#[track_caller]
fn assert_slice(v: &LabelVolume, k: usize, expected: &str) {
    let got = grid_of(v, k);
    let want = rows(expected);
    assert!(
        got == want,
        "slice {k} differs\n--- expected\n{}\n--- got\n{}",
        want.join("\n"),
        got.join("\n")
    );
}

/// World position (mm) of voxel coordinates on an axis-aligned grid at the origin.
fn at(v: &LabelVolume, i: f64, j: f64, k: f64) -> Point3<f64> {
    v.geometry.world_at_voxel(Vector3::new(i, j, k))
}

fn editor(v: LabelVolume) -> Editor {
    Editor::new(v, LabelTable::default())
}

const EMPTY_7X11: &str = "
    ...........
    ...........
    ...........
    ...........
    ...........
    ...........
    ...........
";

#[test]
fn grid_helpers_round_trip() {
    let v = labels_from(&["..#2.", "#...9"], [1.0; 3]);
    assert_eq!(v.dims(), [5, 1, 2]);
    assert_slice(&v, 0, "..#2.");
    assert_slice(&v, 1, "#...9");
}

// ---------------------------------------------------------------- brush

#[test]
fn brush_disc_radius_is_in_mm_with_anisotropic_pixels() {
    // Pixels 1 mm wide and 2 mm tall: a 3 mm disc is 7 pixels wide and 3 tall.
    let v = labels_from(&[EMPTY_7X11; 3], [1.0, 2.0, 3.0]);
    let mut ed = editor(v);
    let c = at(ed.labels(), 5.0, 3.0, 1.0);
    let dirty = paint_stroke(&mut ed, &Brush::disc(Plane::Axial, 3.0, 1), None, &[c]).unwrap();
    assert_slice(
        ed.labels(),
        1,
        "
        ...........
        ...........
        ...#####...
        ..#######..
        ...#####...
        ...........
        ...........
        ",
    );
    assert_slice(ed.labels(), 0, EMPTY_7X11);
    assert_slice(ed.labels(), 2, EMPTY_7X11);
    let b = dirty.unwrap();
    assert_eq!((b.min, b.max), ([2, 2, 1], [8, 4, 1]));

    // The same brush in the coronal plane spans 3 mm slices: only the centre reaches
    // the neighbouring slices (exactly 3 mm away: the boundary counts as inside).
    let v = labels_from(&[EMPTY_7X11; 3], [1.0, 2.0, 3.0]);
    let mut ed = editor(v);
    paint_stroke(&mut ed, &Brush::disc(Plane::Coronal, 3.0, 2), None, &[c]).unwrap();
    let row3 = |k: usize| grid_of(ed.labels(), k)[3].clone();
    assert_eq!(row3(1), "..2222222..");
    assert_eq!(row3(0), ".....2.....");
    assert_eq!(row3(2), ".....2.....");
    assert_eq!(grid_of(ed.labels(), 1)[2], "...........");

    // A 3 mm ball: 3 mm slices away only the centre, 2 mm rows away ±2 pixels.
    let v = labels_from(&[EMPTY_7X11; 3], [1.0, 2.0, 3.0]);
    let mut ed = editor(v);
    paint_stroke(&mut ed, &Brush::ball(3.0, 1), None, &[c]).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ...........
        ...........
        ...........
        .....#.....
        ...........
        ...........
        ...........
        ",
    );
    assert_eq!(ed.labels().voxels.iter().filter(|&&x| x == 1).count(), 19);
}

#[test]
fn fast_drag_leaves_no_gaps_and_is_one_step() {
    let v = labels_from(&[EMPTY_7X11], [1.0; 3]);
    let mut ed = editor(v);
    let (a, b) = (
        at(ed.labels(), 1.0, 3.0, 0.0),
        at(ed.labels(), 9.0, 3.0, 0.0),
    );
    let c = at(ed.labels(), 9.0, 6.0, 0.0);
    paint_stroke(
        &mut ed,
        &Brush::disc(Plane::Axial, 1.0, 1),
        None,
        &[a, b, c],
    )
    .unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ...........
        ...........
        .#########.
        ###########
        .##########
        ........###
        ........###
        ",
    );
    assert_eq!(ed.history().undo_steps().count(), 1);
    assert_eq!(ed.history().undo_name(), Some("Brush"));
    ed.undo();
    assert_slice(ed.labels(), 0, EMPTY_7X11);
}

#[test]
fn square_brush_eraser_and_locks() {
    let v = labels_from(
        &["
        2222222
        2233322
        2222222
        2222222
        "],
        [1.0; 3],
    );
    let mut ed = editor(v);
    ed.set_locked(3, true);
    let brush = Brush {
        shape: BrushShape::Square,
        ..Brush::eraser(BrushExtent::Disc(Plane::Axial), 1.5)
    };
    let p = at(ed.labels(), 3.0, 2.0, 0.0);
    paint_stroke(&mut ed, &brush, None, &[p]).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        2222222
        2233322
        22...22
        22...22
        ",
    );
    assert_eq!(ed.history().undo_name(), Some("Eraser"));
}

#[test]
fn intensity_limited_painting() {
    let ct = ct_from(
        &["
        aaaawwww
        aaaawwww
        aawwwwaa
        "],
        [1.0; 3],
        |c| if c == 'a' { -850 } else { 40 },
    );
    let v = labels_from(&["........\n........\n........"], [1.0; 3]);
    let mut ed = editor(v);
    let brush = Brush {
        hu_range: Some((-1000, -500)),
        ..Brush::disc(Plane::Axial, 10.0, 3)
    };
    let p = at(ed.labels(), 3.0, 1.0, 0.0);
    paint_stroke(&mut ed, &brush, Some(&ct), &[p]).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        3333....
        3333....
        33....33
        ",
    );
    // Without the CT an HU limit is an error, and nothing is recorded.
    let p = at(ed.labels(), 0.0, 0.0, 0.0);
    let err = paint_stroke(&mut ed, &brush, None, &[p]);
    assert!(err.is_err());
    assert_eq!(ed.history().undo_steps().count(), 1);
}

#[test]
fn overwrite_policies() {
    let start = "
        ####....
        ####....
        ..222222
    ";
    for (policy, expected) in [
        (
            OverwritePolicy::Everything,
            "
            ##44444.
            ##44444.
            ..444442
            ",
        ),
        (
            OverwritePolicy::OnlyBackground,
            "
            ####444.
            ####444.
            ..222222
            ",
        ),
        (
            OverwritePolicy::OnlyLabel(2),
            "
            ####....
            ####....
            ..444442
            ",
        ),
    ] {
        let mut ed = editor(labels_from(&[start], [1.0; 3]));
        ed.policy = policy;
        let brush = Brush {
            shape: BrushShape::Square,
            ..Brush::disc(Plane::Axial, 1.0, 4)
        };
        let pts = [
            at(ed.labels(), 3.0, 1.0, 0.0),
            at(ed.labels(), 5.0, 1.0, 0.0),
        ];
        paint_stroke(&mut ed, &brush, None, &pts).unwrap();
        assert_slice(ed.labels(), 0, expected);
    }
}

// ---------------------------------------------------------------- flood fill

const LUNG_CT: &str = "
    wwwwwwwwwww
    waaawwaaaaw
    waaawwawwaw
    wwaawwaaaaw
    waawwwwwwww
    wwwwwwaaaaw
";

fn lung_ct(slices: &[&str]) -> CtVolume {
    ct_from(slices, [0.7, 0.7, 2.5], |c| match c {
        'a' => -870,
        'v' => -450,
        _ => 30,
    })
}

#[test]
fn flood_fill_with_hu_limits_2d_and_3d() {
    let below = "
        wwwwwwwwwww
        wwwwwwwwwww
        wwwwwwwwwww
        wwwwwwwwwww
        wvwwwwwwwww
        wvvvvvvvvww
    ";
    let ct = lung_ct(&[LUNG_CT, below]);
    let empty = "
        ...........
        ...........
        ...........
        ...........
        ...........
        ...........
    ";
    let grow = RegionGrow {
        hu_range: Some((-1024, -400)),
        ..RegionGrow::new([1, 1, 0], 1, Scope::Plane(Plane::Axial))
    };
    let mut ed = editor(labels_from(&[empty, empty], [0.7, 0.7, 2.5]));
    flood_fill(&mut ed, &grow, Some(&ct)).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ...........
        .###.......
        .###.......
        ..##.......
        .##........
        ...........
        ",
    );
    assert_slice(ed.labels(), 1, empty);

    // In 3D the region leaks through the -450 HU bridge of the slice below into the
    // bottom-right air pocket (but not the ring, which touches neither).
    let mut ed = editor(labels_from(&[empty, empty], [0.7, 0.7, 2.5]));
    let grow3 = RegionGrow {
        scope: Scope::Volume,
        ..grow.clone()
    };
    flood_fill(&mut ed, &grow3, Some(&ct)).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ...........
        .###.......
        .###.......
        ..##.......
        .##........
        ......####.
        ",
    );
    assert_slice(
        ed.labels(),
        1,
        "
        ...........
        ...........
        ...........
        ...........
        .#.........
        .########..
        ",
    );
    // A tighter window stops at the bridge.
    let mut ed = editor(labels_from(&[empty, empty], [0.7, 0.7, 2.5]));
    let tight = RegionGrow {
        hu_range: Some((-1024, -500)),
        ..grow3
    };
    flood_fill(&mut ed, &tight, Some(&ct)).unwrap();
    assert_slice(ed.labels(), 1, empty);
    assert_eq!(ed.history().undo_name(), Some("Region growing"));
}

#[test]
fn flood_fill_within_labels_and_bucket_fill() {
    // Grow label 3 over the lung labels 1 (#) and 2 only (no HU limit: the CT is unused).
    let labels = "
        ...........
        .###..2222.
        .###..2..2.
        ..##..2222.
        .##........
        ......2222.
    ";
    let ct = lung_ct(&[LUNG_CT]);
    let mut ed = editor(labels_from(&[labels], [0.7, 0.7, 2.5]));
    let grow = RegionGrow {
        within_labels: Some(vec![1, 2]),
        ..RegionGrow::new([7, 1, 0], 3, Scope::Plane(Plane::Axial))
    };
    flood_fill(&mut ed, &grow, Some(&ct)).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ...........
        .###..3333.
        .###..3..3.
        ..##..3333.
        .##........
        ......2222.
        ",
    );
    // A bucket fill (no limits) replaces the seed's connected label: here the
    // background, which wraps around everything but the ring's inside.
    flood_fill(
        &mut ed,
        &RegionGrow::new([0, 0, 0], 5, Scope::Plane(Plane::Axial)),
        None,
    )
    .unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        55555555555
        5###5533335
        5###553..35
        55##5533335
        5##55555555
        55555522225
        ",
    );
}

#[test]
fn flood_fill_in_sagittal_and_coronal_slices() {
    // Seeds off the first column/row: the fill stays in the seed's sagittal (constant i)
    // or coronal (constant j) slice.
    let empty = "
        .....
        .....
        .....
    ";
    let mut ed = editor(labels_from(&[empty, empty], [1.0; 3]));
    let sag = RegionGrow::new([3, 1, 1], 2, Scope::Plane(Plane::Sagittal));
    flood_fill(&mut ed, &sag, None).unwrap();
    let cor = RegionGrow::new([0, 2, 0], 3, Scope::Plane(Plane::Coronal));
    flood_fill(&mut ed, &cor, None).unwrap();
    // The coronal bucket fill takes row j = 2 of both slices except the sagittal column
    // (label 2 is not the seed's background).
    for k in 0..2 {
        assert_slice(
            ed.labels(),
            k,
            "
            ...2.
            ...2.
            3332.
            ",
        );
    }
}

// ---------------------------------------------------------------- polygon

#[test]
fn polygon_fill_even_odd() {
    let mut ed = editor(labels_from(&[EMPTY_7X11], [1.0; 3]));
    // An L, vertices between voxel centres.
    let l: Vec<Point3<f64>> = [
        (0.5, 0.5),
        (6.5, 0.5),
        (6.5, 2.5),
        (2.5, 2.5),
        (2.5, 5.5),
        (0.5, 5.5),
    ]
    .iter()
    .map(|&(i, j)| at(ed.labels(), i, j, 0.0))
    .collect();
    polygon_fill(&mut ed, Plane::Axial, &l, 4).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ...........
        .444444....
        .444444....
        .44........
        .44........
        .44........
        ...........
        ",
    );
    // A self-crossing loop around two overlapping rectangles: their overlap (row 3,
    // columns 4..6) is enclosed twice and left empty by the even-odd rule.
    let mut ed = editor(labels_from(&[EMPTY_7X11], [1.0; 3]));
    let loop_: Vec<Point3<f64>> = [
        (0.5, 0.5),
        (6.5, 0.5),
        (6.5, 3.5),
        (3.5, 3.5),
        (3.5, 5.5),
        (9.5, 5.5),
        (9.5, 2.5),
        (0.5, 2.5),
    ]
    .iter()
    .map(|&(i, j)| at(ed.labels(), i, j, 0.0))
    .collect();
    polygon_fill(&mut ed, Plane::Axial, &loop_, 1).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ...........
        .######....
        .######....
        .......###.
        ....######.
        ....######.
        ...........
        ",
    );
}

// ---------------------------------------------------------------- morphology

#[test]
fn fill_holes_2d_per_slice_and_3d() {
    let ring = "
        .......
        .#####.
        .#...#.
        .#.#.#.
        .#...#.
        .#####.
        .......
    ";
    // A tube along k: every slice is a ring, the inside is open at both ends.
    let tube = [ring, ring, ring];
    let filled = "
        .......
        .#####.
        .#####.
        .#####.
        .#####.
        .#####.
        .......
    ";
    let mut ed = editor(labels_from(&tube, [1.0; 3]));
    morphology(&mut ed, 1, Morphology::FillHoles, Scope::Volume).unwrap();
    for k in 0..3 {
        assert_slice(ed.labels(), k, ring);
    }
    morphology(
        &mut ed,
        1,
        Morphology::FillHoles,
        Scope::Plane(Plane::Axial),
    )
    .unwrap();
    for k in 0..3 {
        assert_slice(ed.labels(), k, filled);
    }
    // A closed box: filled in 3D too.
    let mut ed = editor(labels_from(&[filled, ring, filled], [1.0; 3]));
    morphology(&mut ed, 1, Morphology::FillHoles, Scope::Volume).unwrap();
    assert_slice(ed.labels(), 1, filled);
    // An open C is not a hole.
    let c = "
        ......
        .####.
        .#....
        .####.
        ......
    ";
    let mut ed = editor(labels_from(&[c], [1.0; 3]));
    assert_eq!(
        morphology(&mut ed, 1, Morphology::FillHoles, Scope::Volume).unwrap(),
        None
    );
    assert_slice(ed.labels(), 0, c);
}

#[test]
fn erode_and_dilate_in_mm() {
    let square = "
        .......
        .#####.
        .#####.
        .#####.
        .#####.
        .#####.
        .......
    ";
    let mut ed = editor(labels_from(&[square], [1.0; 3]));
    morphology(
        &mut ed,
        1,
        Morphology::Erode { radius_mm: 1.0 },
        Scope::Volume,
    )
    .unwrap();
    let small = "
        .......
        .......
        ..###..
        ..###..
        ..###..
        .......
        .......
    ";
    assert_slice(ed.labels(), 0, small);
    // Dilating by 1 mm adds the 4-neighbours only (diagonals are √2 mm away).
    morphology(
        &mut ed,
        1,
        Morphology::Dilate { radius_mm: 1.0 },
        Scope::Volume,
    )
    .unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        .......
        ..###..
        .#####.
        .#####.
        .#####.
        ..###..
        .......
        ",
    );

    // Anisotropic pixels (1 x 2 mm): a 2 mm dilation of one voxel is an ellipse
    // 5 pixels wide and 3 tall.
    let dot = "
        .......
        .......
        ...#...
        .......
        .......
    ";
    let mut ed = editor(labels_from(&[dot], [1.0, 2.0, 1.0]));
    morphology(
        &mut ed,
        1,
        Morphology::Dilate { radius_mm: 2.0 },
        Scope::Plane(Plane::Axial),
    )
    .unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        .......
        ...#...
        .#####.
        ...#...
        .......
        ",
    );
    // In 3D a 1 mm dilation also reaches the neighbouring 1 mm slices.
    let empty = ".......\n".repeat(5);
    let mut ed = editor(labels_from(&[&empty, dot, &empty], [1.0, 2.0, 1.0]));
    morphology(
        &mut ed,
        1,
        Morphology::Dilate { radius_mm: 1.0 },
        Scope::Volume,
    )
    .unwrap();
    assert_slice(ed.labels(), 0, dot);
    assert_slice(ed.labels(), 2, dot);
    assert_eq!(ed.labels().voxels.iter().filter(|&&x| x == 1).count(), 5);
    assert_slice(
        ed.labels(),
        1,
        "
        .......
        .......
        ..###..
        .......
        .......
        ",
    );
}

#[test]
fn remove_islands_and_keep_largest() {
    let blobs = "
        #.......##
        ........##
        ..##......
        ........#.
        #.......#.
    ";
    let mut ed = editor(labels_from(&[blobs], [1.0, 1.0, 1.0]));
    morphology(
        &mut ed,
        1,
        Morphology::RemoveIslands {
            min_volume_mm3: 2.0,
        },
        Scope::Volume,
    )
    .unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ........##
        ........##
        ..##......
        ........#.
        ........#.
        ",
    );
    morphology(&mut ed, 1, Morphology::KeepLargest, Scope::Volume).unwrap();
    assert_slice(
        ed.labels(),
        0,
        "
        ........##
        ........##
        ..........
        ..........
        ..........
        ",
    );
    assert_eq!(ed.history().undo_steps().count(), 2);
}

// ---------------------------------------------------------------- interpolation

#[test]
fn interpolation_between_two_slices() {
    let big = "
        .........
        .........
        ..#####..
        ..#####..
        ..#####..
        ..#####..
        ..#####..
        .........
        .........
    ";
    let dot = "
        .........
        .........
        .........
        .........
        ....#....
        .........
        .........
        .........
        .........
    ";
    let empty = ".........\n".repeat(9);
    let mut ed = editor(labels_from(
        &[big, &empty, dot, &empty, &empty, big],
        [1.0, 1.0, 2.0],
    ));
    interpolate_slices(&mut ed, 1, Plane::Axial).unwrap();
    assert_slice(
        ed.labels(),
        1,
        "
        .........
        .........
        .........
        ...###...
        ...###...
        ...###...
        .........
        .........
        .........
        ",
    );
    // Between the dot and the square, two slices: a third and two thirds of the way
    // (blend `2 sd_dot + sd_square <= 0`, then `sd_dot + 2 sd_square <= 0`).
    assert_slice(
        ed.labels(),
        3,
        "
        .........
        .........
        .........
        ....#....
        ...###...
        ....#....
        .........
        .........
        .........
        ",
    );
    assert_slice(
        ed.labels(),
        4,
        "
        .........
        .........
        ....#....
        ...###...
        ..#####..
        ...###...
        ....#....
        .........
        .........
        ",
    );
    assert_eq!(ed.history().undo_steps().count(), 1);
    assert_eq!(ed.history().undo_name(), Some("Interpolate slices"));
    ed.undo();
    assert_slice(ed.labels(), 1, &empty);
    assert_slice(ed.labels(), 4, &empty);
}

// ---------------------------------------------------------------- history memory

#[test]
fn history_of_1000_strokes_is_far_below_a_volume_copy() {
    let dims = [256, 256, 120];
    let geom = Geometry::axis_aligned(dims, [0.8, 0.8, 2.5], [0.0; 3]);
    let v = Volume::filled(geom, 0u8).unwrap();
    let volume_bytes = v.voxels.len();
    let mut ed = editor(v);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let t = Instant::now();
    let mut voxels = 0usize;
    for n in 0..1000 {
        let k = (rnd() * 120.0).floor();
        let mut p = Point3::new(rnd() * 204.8, rnd() * 204.8, k * 2.5);
        let mut pts = vec![p];
        for _ in 0..8 {
            p += Vector3::new(rnd() * 10.0 - 5.0, rnd() * 10.0 - 5.0, 0.0);
            pts.push(p);
        }
        let brush = Brush::disc(Plane::Axial, 10.0, 1 + (n % 6) as u8);
        paint_stroke(&mut ed, &brush, None, &pts).unwrap();
        voxels += ed.history().undo_steps().next().map_or(0, |s| s.voxels);
    }
    let elapsed = t.elapsed();
    let bytes = ed.history().memory_bytes();
    eprintln!(
        "1000 strokes (radius 10 mm, 9 points) on 256x256x120: {voxels} voxels changed, \
         history {bytes} bytes ({:.1} bytes/stroke, {:.3} bytes/voxel) vs {volume_bytes} \
         bytes for one volume copy ({:.1}%); painting took {elapsed:?}",
        bytes as f64 / 1000.0,
        bytes as f64 / voxels as f64,
        100.0 * bytes as f64 / volume_bytes as f64
    );
    assert_eq!(ed.history().undo_steps().count(), 1000);
    assert!(
        bytes * 10 < volume_bytes,
        "history {bytes} bytes is not far below {volume_bytes}"
    );
    // Undo all: back to empty, with the dirty boxes covering every change.
    let t = Instant::now();
    while ed.undo().is_some() {}
    eprintln!("undoing 1000 strokes took {:?}", t.elapsed());
    assert!(ed.labels().voxels.iter().all(|&x| x == 0));
}

// ---------------------------------------------------------------- real CT

#[test]
fn region_growing_on_real_ct_matches_the_lung_mask() {
    let Some(dir) = common::data_dir("lctsc256") else {
        return;
    };
    let ct_path = dir.join("Case_000_ct.nii.gz");
    let mask_path = dir.join("Case_000_lungs.nii.gz");
    for p in [&ct_path, &mask_path] {
        if !p.exists() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("real data {} is required in CI but missing", p.display());
            }
            eprintln!("SKIP: {} not found", p.display());
            return;
        }
    }
    let ct = pulmo::io::nifti::read_nifti_ct(&ct_path).unwrap().volume;
    let mask = pulmo::io::nifti::read_nifti_labels(&mask_path)
        .unwrap()
        .volume;
    assert_eq!(ct.dims(), mask.dims());
    let (lo, hi) = (-1024i16, -400i16);
    // Seed: the median (in memory order) voxel of label 1 whose HU is in range.
    let candidates: Vec<usize> = (0..mask.voxels.len())
        .filter(|&i| mask.voxels[i] == 1 && (lo..=hi).contains(&ct.voxels[i]))
        .collect();
    assert!(!candidates.is_empty(), "no lung voxel in the HU range");
    let s = candidates[candidates.len() / 2];
    let [nx, ny, _] = ct.dims();
    let seed = [s % nx, (s / nx) % ny, s / (nx * ny)];
    let empty = Volume::filled(ct.geometry.clone(), 0u8).unwrap();
    let mut ed = editor(empty);
    let t = Instant::now();
    let grow = RegionGrow {
        hu_range: Some((lo, hi)),
        ..RegionGrow::new(seed, 1, Scope::Volume)
    };
    let dirty = flood_fill(&mut ed, &grow, Some(&ct)).unwrap();
    let elapsed = t.elapsed();
    let region = &ed.labels().voxels;
    let (mut both, mut a, mut b) = (0usize, 0usize, 0usize);
    for (r, m) in region.iter().zip(&mask.voxels) {
        let (r, m) = (*r != 0, *m != 0);
        a += r as usize;
        b += m as usize;
        both += (r && m) as usize;
    }
    let dice = 2.0 * both as f64 / (a + b) as f64;
    eprintln!(
        "region growing on {:?} from {seed:?}: {a} voxels (mask {b}), Dice {dice:.4}, \
         dirty box {dirty:?}, history {} bytes, {elapsed:?}",
        ct.dims(),
        ed.history().memory_bytes()
    );
    assert!(dice > 0.8, "Dice {dice}");
    ed.undo();
    assert!(ed.labels().voxels.iter().all(|&x| x == 0));
}
