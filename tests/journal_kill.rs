//! Nothing is lost when pulmo is killed: a real process journals edits and is killed
//! with SIGKILL mid-way; the journal replays to exactly the state after the last
//! completed edit it reported (or a later one it completed before dying).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pulmo::session::journal::{journal_path, recover, selftest_step};
use pulmo::volume::{Geometry, Volume};

#[test]
fn kill_9_loses_no_completed_edit() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulmo"))
        .arg("journal-selftest")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported = 0;
    while reported < 40 {
        let line = lines.next().expect("the child reports progress").unwrap();
        reported = line.trim_start_matches("durable ").parse().unwrap();
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructors, no flushing
    child.wait().unwrap();

    let r = recover(&journal_path(dir.path(), "selftest")).unwrap();
    assert!(
        r.deltas >= reported,
        "replayed {} edits, {} were reported durable",
        r.deltas,
        reported
    );
    let g = Geometry::axis_aligned([64, 64, 32], [1.0; 3], [0.0; 3]);
    let mut expect = Volume::filled(g, 0u8).unwrap();
    for n in 1..=r.deltas {
        selftest_step(&mut expect, n);
    }
    assert!(
        r.voxels == expect.voxels,
        "the replayed map is the map after edit {}",
        r.deltas
    );
    eprintln!(
        "killed after {reported} reported edits; replayed {} (torn tail: {})",
        r.deltas, r.torn_tail
    );
}
