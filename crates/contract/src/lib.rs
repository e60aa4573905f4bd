//! contract (work in progress).
