//! Publish (in progress).
