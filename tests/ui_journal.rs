//! Never lose work, through the GUI: a brush stroke is journaled; another app instance
//! opening the same study offers the unsaved edit and restores it exactly; opening
//! another study with unsaved edits asks first.

use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use pulmo::ui::{AppOptions, PulmoApp};

#[path = "common/ui.rs"]
mod ui;

fn harness(journal_dir: &std::path::Path) -> Harness<'static, PulmoApp> {
    let options = AppOptions {
        journal_dir: Some(journal_dir.to_path_buf()),
        ..ui::options()
    };
    ui::harness_with(options, egui::vec2(1000.0, 700.0), false)
}

fn stroke(h: &mut Harness<'static, PulmoApp>) {
    h.key_press(Key::B);
    h.run();
    ui::drag(h, egui::pos2(150.0, 330.0), egui::pos2(260.0, 360.0));
    h.run();
}

#[test]
fn a_journaled_stroke_is_offered_and_restored_in_a_new_session() {
    let dir = tempfile::tempdir().unwrap();
    let painted = {
        let mut h = harness(dir.path());
        let before = ui::labels(&h);
        stroke(&mut h);
        let after = ui::labels(&h);
        assert!(before != after, "the stroke painted");
        assert_eq!(h.state().unsaved_edits(), 1);
        // Opening another study now asks first.
        let ctx = h.ctx.clone();
        h.state_mut()
            .request_open(&ctx, pulmo::ui::app::PendingOpen::Demo);
        h.run();
        h.get_by_label("1 edit(s) to the labels are not saved.");
        h.get_by_label("Cancel").click();
        h.run();
        assert!(h.state().journal.pending.is_none());
        after
        // The harness is dropped without saving: as if pulmo had been killed.
    };
    let journals: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(journals.len(), 1, "one journal file");

    let mut h = harness(dir.path());
    h.run();
    assert!(
        h.state().session.journal.offer.is_some(),
        "the earlier session's edit is offered"
    );
    h.get_by_label("Restore edits").click();
    h.run();
    let restored = ui::labels(&h);
    assert!(
        restored == painted,
        "the restored labels equal the painted ones"
    );
    assert_eq!(
        ui::study(&h).editor.history().undo_steps().count(),
        1,
        "restoring is one undoable step"
    );
    assert_eq!(h.state().unsaved_edits(), 1);
}

/// Saving writes the NIfTI and an ITK-SNAP label description; opening them back (as from
/// ITK-SNAP) is one undoable step; a map on another grid is refused with a message.
#[test]
fn labels_save_and_open_with_itksnap_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    let saved_path = dir.path().join("mine.nii.gz");
    h.state_mut().session.label_table.labels[0].name = "Lung L".into();
    h.state_mut().save_labels_to(&saved_path);
    assert!(h.state().save_error.is_none(), "{:?}", h.state().save_error);
    let text = std::fs::read_to_string(dir.path().join("mine.label.txt")).unwrap();
    assert!(text.contains("\"Lung L\""), "{text}");
    assert_eq!(h.state().unsaved_edits(), 0);

    // An edited copy of the map (as another tool would write it) opens as one step.
    let original = ui::study(&h).editor.labels().clone();
    let mut other = original.clone();
    other
        .voxels
        .iter_mut()
        .for_each(|v| *v = if *v == 1 { 2 } else { *v });
    let other_path = dir.path().join("theirs.nii.gz");
    pulmo::io::nifti::write_nifti(&other_path, &other).unwrap();
    std::fs::write(
        dir.path().join("theirs.label.txt"),
        text.replace("Lung L", "Left (theirs)"),
    )
    .unwrap();
    h.state_mut().open_labels_from(&other_path);
    h.run();
    assert!(h.state().save_error.is_none(), "{:?}", h.state().save_error);
    assert!(ui::study(&h).editor.labels().voxels == other.voxels);
    assert_eq!(
        h.state().session.label_table.labels[0].name,
        "Left (theirs)"
    );
    h.key_press_modifiers(egui::Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(ui::study(&h).editor.labels().voxels == original.voxels);

    // Another grid is refused and changes nothing.
    let small = pulmo::volume::Volume::filled(
        pulmo::volume::Geometry::axis_aligned([4, 4, 4], [1.0; 3], [0.0; 3]),
        1u8,
    )
    .unwrap();
    let bad = dir.path().join("small.nii.gz");
    pulmo::io::nifti::write_nifti(&bad, &small).unwrap();
    h.state_mut().open_labels_from(&bad);
    let msg = h.state().save_error.clone().unwrap();
    assert!(
        msg.contains("small.nii.gz") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(ui::study(&h).editor.labels().voxels == original.voxels);
}
