//! Integer labels from draft-ietf-suit-manifest-37 (and the COSE digest id).
#![allow(missing_docs)]

/// CBOR tag of a SUIT envelope.
pub const TAG_ENVELOPE: u64 = 107;

// SUIT_Envelope
pub const AUTHENTICATION_WRAPPER: i64 = 2;
pub const MANIFEST: i64 = 3;
// Severable members: in the envelope as bstr, in the manifest as a digest
// or, when not severed, as the bstr-wrapped command sequence itself.
pub const PAYLOAD_FETCH: i64 = 16;
pub const INSTALL: i64 = 20;
pub const TEXT: i64 = 23;
pub const SEVERABLE: [i64; 3] = [PAYLOAD_FETCH, INSTALL, TEXT];

// SUIT_Manifest
pub const MANIFEST_VERSION: i64 = 1;
pub const SEQUENCE_NUMBER: i64 = 2;
pub const COMMON: i64 = 3;
pub const REFERENCE_URI: i64 = 4;
pub const VALIDATE: i64 = 7;
pub const LOAD: i64 = 8;
pub const INVOKE: i64 = 9;

// SUIT_Common
pub const COMPONENTS: i64 = 2;
pub const SHARED_SEQUENCE: i64 = 4;

// Conditions
pub const COND_VENDOR_IDENTIFIER: i64 = 1;
pub const COND_CLASS_IDENTIFIER: i64 = 2;
pub const COND_IMAGE_MATCH: i64 = 3;
pub const COND_COMPONENT_SLOT: i64 = 5;
pub const COND_ABORT: i64 = 14;

// Directives
pub const DIR_SET_COMPONENT_INDEX: i64 = 12;
pub const DIR_TRY_EACH: i64 = 15;
pub const DIR_OVERRIDE_PARAMETERS: i64 = 20;
pub const DIR_FETCH: i64 = 21;
pub const DIR_COPY: i64 = 22;
pub const DIR_INVOKE: i64 = 23;

// Parameters
pub const PARAM_VENDOR_ID: i64 = 1;
pub const PARAM_CLASS_ID: i64 = 2;
pub const PARAM_IMAGE_DIGEST: i64 = 3;
pub const PARAM_COMPONENT_SLOT: i64 = 5;
pub const PARAM_STRICT_ORDER: i64 = 12;
pub const PARAM_SOFT_FAILURE: i64 = 13;
pub const PARAM_IMAGE_SIZE: i64 = 14;
pub const PARAM_URI: i64 = 21;
pub const PARAM_SOURCE_COMPONENT: i64 = 22;
pub const PARAM_INVOKE_ARGS: i64 = 23;

// Text map keys
pub const TEXT_MANIFEST_DESCRIPTION: i64 = 1;

/// COSE algorithm id of SHA-256 in SUIT_Digest.
pub const DIGEST_SHA256: i64 = -16;
