//! The image config labels every Stella Ops image carries (spec §6.2): written by the build
//! stage, read back by `verify`, `preflight` and `repro --against`.

pub const LABEL_VERSION: &str = "org.opencontainers.image.version";
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";
pub const LABEL_CREATED: &str = "org.opencontainers.image.created";
pub const LABEL_CALENDAR: &str = "org.stellaops.release.calendar";
pub const LABEL_CHANNEL: &str = "org.stellaops.release.channel";
pub const LABEL_PROVENANCE: &str = "org.stellaops.build.slsaProvenance";
