//! upgrade (work in progress).
