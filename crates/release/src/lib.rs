//! release (work in progress).
