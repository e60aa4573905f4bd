//! dir (work in progress).
