//! An open study's lasting state outside the label map itself: the edit journal that
//! makes every completed edit survive a crash or `kill -9` ([`journal`]).

pub mod journal;
pub mod startup;

pub use journal::{Journal, JournalError, Recovered};
