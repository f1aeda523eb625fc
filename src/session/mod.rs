//! The session: what the user has open and is working on, GUI-free, so that the viewer
//! draws it and the CLI and tests can drive it.
//!
//! - [`study`]: the open study (CT, labels with the editor and undo history, metadata);
//! - [`load`]: opening a study or the demo off the UI thread, with progress and Cancel;
//! - [`labels_file`]: saving and opening label maps with their sidecars;
//! - [`journal`]: the edit journal file that makes every completed edit survive a crash,
//!   and [`edit_journal`], the open study's use of it (restore offer, unsaved count);
//! - [`jobs`]: background jobs (thread, result, cancel, progress, contained panics);
//! - [`startup`]: the start-up trace.

pub mod edit_journal;
pub mod jobs;
pub mod journal;
pub mod labels_file;
pub mod load;
pub mod startup;
pub mod study;

pub use edit_journal::EditJournal;
pub use journal::{Journal, JournalError, Recovered};
pub use load::{LoadJob, LoadOutcome, PreparedLoad};
pub use study::Study;

/// An error and its causes on one line, as the user should read it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
