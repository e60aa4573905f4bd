//! ps-dummy (work in progress).
