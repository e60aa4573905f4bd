//! ps-stripe (work in progress).
