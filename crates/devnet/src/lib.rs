//! devnet (work in progress).
