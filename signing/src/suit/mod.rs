//! SUIT (draft-ietf-suit-manifest-37): the envelope, the manifest, and a
//! command interpreter for the subset Gantry uses.

pub mod envelope;
pub mod integrated;
pub mod interp;
pub mod labels;
pub mod manifest;
