//! The device API's JSON bodies as the server reads them from devices (and
//! a device reads the server's answers): any bytes give a value or a serde
//! error, and a check-in or report that passes `validate()` serializes and
//! reads back to itself (the server stores and hashes what it accepted).
#![no_main]

use gantry_protocol::{CheckinRequest, CheckinResponse, LoginResponse, Report};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<CheckinRequest>(data)
        && req.validate().is_ok()
    {
        let again = serde_json::to_vec(&req).expect("a valid check-in serializes");
        assert_eq!(serde_json::from_slice::<CheckinRequest>(&again).ok(), Some(req));
    }
    if let Ok(report) = serde_json::from_slice::<Report>(data)
        && report.validate().is_ok()
    {
        let again = serde_json::to_vec(&report).expect("a valid report serializes");
        assert_eq!(serde_json::from_slice::<Report>(&again).ok(), Some(report));
    }
    if let Ok(answer) = serde_json::from_slice::<CheckinResponse>(data) {
        let _ = answer.poll_after_clamped();
    }
    if let Ok(login) = serde_json::from_slice::<LoginResponse>(data) {
        let _ = login.expires_in_clamped();
    }
});
