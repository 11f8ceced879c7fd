//! Signing a login proof (the device side, or a test standing in for it).

use alloc::string::String;
use alloc::vec::Vec;

use gantry_keys::KeySource;
use gantry_keys::cbor_vec::VecWriter;
use minicbor::Encoder;

use super::{LOGIN_AAD, valid_device_id};
use crate::Error;
use crate::ticket::build::sign_attached;
use crate::ticket::{NONCE_MAX, NONCE_MIN};

/// A login proof to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginProof {
    /// The device's id.
    pub device_id: String,
    /// The server's challenge (16-32 bytes).
    pub challenge: Vec<u8>,
    /// The device's time, Unix seconds; 0 if it has no clock.
    pub timestamp: u64,
}

impl LoginProof {
    /// Signs the proof with the device's key.
    pub fn sign(&self, key: &dyn KeySource) -> Result<Vec<u8>, Error> {
        if !valid_device_id(&self.device_id) {
            return Err(Error::Build(format!("invalid device id {:?}", self.device_id)));
        }
        if !(NONCE_MIN..=NONCE_MAX).contains(&self.challenge.len()) {
            return Err(Error::Build(format!("challenge of {} bytes, 16 to 32 required", self.challenge.len())));
        }
        let mut e = Encoder::new(VecWriter::default());
        let _ = (|| -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
            e.map(3)?.u8(1)?.str(&self.device_id)?.u8(2)?.bytes(&self.challenge)?.u8(3)?.u64(self.timestamp)?;
            Ok(())
        })();
        sign_attached(e.into_writer().0, LOGIN_AAD, key)
    }
}
