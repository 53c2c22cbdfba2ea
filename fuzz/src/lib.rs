//! Fuzz targets of the Stella Ops release pipeline: see [`targets`].
pub mod targets;
