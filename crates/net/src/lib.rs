//! net (work in progress).
