//! The check-in: the device's inventory and a fresh nonce out; a deployment
//! ticket and where to fetch what it names back (or `304`).

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::limits::{
    FIRMWARE_STREAM, MAX_BOOT_REASON, MAX_INVENTORY, MAX_POLL_AFTER, UUID_HEX_LEN, valid_digest, valid_stream,
};

/// What a device's container is doing with the version it runs, as its
/// inventory says. The wire strings never change: the server stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum InventoryState {
    /// Installed, not confirmed yet: reverted if its health check fails.
    Probation,
    /// Confirmed healthy.
    Confirmed,
    /// An update was reverted; it runs the version before.
    Reverted,
    /// Disabled by the operator of the device: installed but not run.
    Disabled,
}

impl InventoryState {
    /// Every state, in wire order.
    pub const ALL: [InventoryState; 4] =
        [InventoryState::Probation, InventoryState::Confirmed, InventoryState::Reverted, InventoryState::Disabled];

    /// Its wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryState::Probation => "probation",
            InventoryState::Confirmed => "confirmed",
            InventoryState::Reverted => "reverted",
            InventoryState::Disabled => "disabled",
        }
    }
}

crate::error::wire_text!(InventoryState);

/// One entry of a device's inventory: what it runs on a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct InventoryItem {
    /// Stream (container name), 1 to [`crate::MAX_STREAM`] bytes.
    pub stream: String,
    /// SUIT digest of the manifest it runs, 64 hex digits.
    pub manifest_digest: String,
    /// Its sequence number.
    pub sequence: u64,
    /// Its state; optional on the wire (the agent always sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InventoryState>,
    /// The bootloader's measured boot record: on the
    /// [`FIRMWARE_STREAM`] entry only, when the device's firmware runs
    /// under gantry-boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootMeasurement>,
}

/// Logical slot (A/B) of the running firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum BootSlot {
    /// Even generations of confirmed updates.
    A,
    /// Odd ones.
    B,
}

/// What the bootloader measured at this boot (gantry-boot's `BootRecord`,
/// docs/bootloader.md): which image runs, and the counters. The firmware
/// entry's `manifest_digest`, `sequence` and `state` (`probation` while on
/// trial) complete it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BootMeasurement {
    /// SHA-256 of the booted image, 64 hex digits.
    pub image_digest: String,
    /// Its size in bytes.
    pub image_size: u64,
    /// Boots handed over since the device was provisioned, this one included.
    pub boot_count: u64,
    /// Logical slot of the running image.
    pub slot: BootSlot,
    /// Trial boots so far, this one included (0 when not on trial).
    pub trial_boots: u64,
    /// The anti-rollback counter: the lowest sequence number that may boot.
    pub security_counter: u64,
    /// Why the last firmware update was refused or reverted, if it was:
    /// gantry-boot's reason code, 1 to [`MAX_BOOT_REASON`] bytes of `a-z`,
    /// `0-9` and `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

impl BootMeasurement {
    /// Checks it against the limits the server enforces.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !valid_digest(&self.image_digest) {
            return Err(ValidationError::Digest);
        }
        if let Some(code) = &self.last_failure {
            let charset = code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !(1..=MAX_BOOT_REASON).contains(&code.len()) || !charset {
                return Err(ValidationError::BootReason);
            }
        }
        Ok(())
    }
}

impl InventoryItem {
    /// Checks the entry against the limits the server enforces.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !valid_stream(&self.stream) {
            return Err(ValidationError::Stream { len: self.stream.len() });
        }
        if !valid_digest(&self.manifest_digest) {
            return Err(ValidationError::Digest);
        }
        match &self.boot {
            Some(_) if self.stream != FIRMWARE_STREAM => Err(ValidationError::BootNotFirmware),
            Some(boot) => boot.validate(),
            None => Ok(()),
        }
    }
}

/// `POST /api/v1/device/checkin` (bearer token; `If-None-Match` optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct CheckinRequest {
    /// 16 to 32 fresh random bytes, standard base64; the ticket answered is
    /// signed for it (its size is checked with the ticket's `NONCE_MIN` and
    /// `NONCE_MAX` in `gantry-signing`).
    pub nonce: String,
    /// What the device runs, at most [`MAX_INVENTORY`] entries.
    #[serde(default)]
    pub inventory: Vec<InventoryItem>,
    /// Version of the trust root the device holds: the server answers
    /// with the newer ones ([`CheckinResponse::trust_roots`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root_version: Option<u64>,
    /// The device's SUIT vendor id (a UUID, 32 lowercase hex digits): the
    /// server deploys a release only to devices of its vendor and class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    /// The device's SUIT class id (a UUID, 32 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_id: Option<String>,
}

/// Whether `s` is a SUIT vendor or class id as the API writes it: a UUID
/// as [`UUID_HEX_LEN`] lowercase hex digits.
pub fn valid_uuid_hex(s: &str) -> bool {
    s.len() == UUID_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl CheckinRequest {
    /// Checks the inventory and ids against the limits the server enforces.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if [&self.vendor_id, &self.class_id].into_iter().flatten().any(|id| !valid_uuid_hex(id)) {
            return Err(ValidationError::Uuid);
        }
        if self.inventory.len() > MAX_INVENTORY {
            return Err(ValidationError::InventoryTooLong { count: self.inventory.len() });
        }
        for (index, item) in self.inventory.iter().enumerate() {
            item.validate().map_err(|cause| ValidationError::InventoryEntry { index, cause: Box::new(cause) })?;
        }
        Ok(())
    }
}

/// Where a blob is: a content address on the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BlobRef {
    /// Its path on the server, `/blobs/sha256/<sha256>`.
    pub url: String,
    /// SHA-256 of its content, 64 lowercase hex digits.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One stream the device should run, as the check-in answer lists it. The
/// listing is a convenience; only the verified ticket decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Assignment {
    /// Stream.
    pub stream: String,
    /// Manifest digest of the release, 64 lowercase hex digits.
    pub manifest_digest: String,
    /// Its sequence number.
    pub sequence: u64,
    /// Its envelope.
    pub envelope: BlobRef,
}

/// The `200` answer to a check-in: a new desired state and its ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct CheckinResponse {
    /// The deployment ticket (COSE_Sign1, formats.md §11), standard base64.
    pub ticket: String,
    /// ETag of this desired state, for the next `If-None-Match`.
    pub etag: String,
    /// Seconds until the next check-in. A number from the network: use
    /// [`CheckinResponse::poll_after_clamped`].
    pub poll_after: u64,
    /// What the ticket assigns, with the envelopes' blob addresses.
    pub assignments: Vec<Assignment>,
    /// The trust roots newer than the one the device said it holds, oldest
    /// first, each a signed CBOR document in standard base64, at most
    /// [`crate::MAX_TRUST_ROOTS`]. The device accepts each only as a valid
    /// successor of the one before (a threshold of the old and of the new
    /// root keys), so a server cannot make it trust anything by itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_roots: Vec<String>,
}

impl CheckinResponse {
    /// `poll_after`, at most [`MAX_POLL_AFTER`] seconds.
    pub fn poll_after_clamped(&self) -> u64 {
        self.poll_after.min(MAX_POLL_AFTER)
    }
}

/// The seconds of a [`crate::POLL_AFTER_HEADER`] value (on `200` and
/// `304`), at most [`MAX_POLL_AFTER`]; `None` if it is not a number.
pub fn parse_poll_after(value: &str) -> Option<u64> {
    value.trim().parse::<u64>().ok().map(|s| s.min(MAX_POLL_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_STREAM;

    fn item() -> InventoryItem {
        InventoryItem {
            stream: "app".into(),
            manifest_digest: "ab".repeat(32),
            sequence: 3,
            state: Some(InventoryState::Confirmed),
            boot: None,
        }
    }

    fn measurement() -> BootMeasurement {
        BootMeasurement {
            image_digest: "cd".repeat(32),
            image_size: 20_000,
            boot_count: 7,
            slot: BootSlot::B,
            trial_boots: 0,
            security_counter: 3,
            last_failure: Some("trial-expired".into()),
        }
    }

    #[test]
    fn every_inventory_state_round_trips() {
        let wire = ["probation", "confirmed", "reverted", "disabled"];
        for (state, text) in InventoryState::ALL.into_iter().zip(wire) {
            assert_eq!(state.as_str(), text);
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(text));
            assert_eq!(serde_json::from_value::<InventoryState>(text.into()).unwrap(), state);
            assert_eq!(text.parse::<InventoryState>(), Ok(state));
        }
        assert_eq!("active".parse::<InventoryState>(), Err(ValidationError::UnknownState("active".into())));
        assert!(serde_json::from_str::<InventoryState>("\"active\"").is_err());
    }

    #[test]
    fn an_inventory_item_keeps_its_json_shape() {
        // The server hashes the stored inventory: field order and the
        // missing `state` must stay as they were.
        let json = serde_json::to_string(&item()).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"stream":"app","manifest_digest":"{}","sequence":3,"state":"confirmed"}}"#, "ab".repeat(32))
        );
        let bare = InventoryItem { state: None, ..item() };
        assert!(!serde_json::to_string(&bare).unwrap().contains("state"));
        let firmware = InventoryItem { stream: FIRMWARE_STREAM.into(), boot: Some(measurement()), ..item() };
        let json = serde_json::to_value(&firmware).unwrap();
        assert_eq!(json["boot"]["slot"], "b");
        assert_eq!(serde_json::from_value::<InventoryItem>(json).unwrap(), firmware);
    }

    #[test]
    fn validation_refuses_each_bad_field() {
        let ok = CheckinRequest {
            nonce: "AAAAAAAAAAAAAAAAAAAAAA==".into(),
            inventory: vec![item(); MAX_INVENTORY],
            trust_root_version: Some(1),
            vendor_id: Some("0123456789abcdef".repeat(2)),
            class_id: None,
        };
        assert_eq!(ok.validate(), Ok(()));
        for bad in ["0123456789ABCDEF".repeat(2), "ab".into(), "g".repeat(32)] {
            let r = CheckinRequest { class_id: Some(bad.clone()), ..ok.clone() };
            assert_eq!(r.validate(), Err(ValidationError::Uuid), "{bad}");
        }
        let too_many = CheckinRequest { inventory: vec![item(); MAX_INVENTORY + 1], ..ok.clone() };
        assert_eq!(too_many.validate(), Err(ValidationError::InventoryTooLong { count: MAX_INVENTORY + 1 }));
        let refused = |bad: InventoryItem| {
            let mut r = ok.clone();
            r.inventory[5] = bad;
            match r.validate() {
                Err(ValidationError::InventoryEntry { index: 5, cause }) => *cause,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(refused(InventoryItem { stream: String::new(), ..item() }), ValidationError::Stream { len: 0 });
        let long = "s".repeat(MAX_STREAM + 1);
        assert_eq!(refused(InventoryItem { stream: long, ..item() }), ValidationError::Stream { len: MAX_STREAM + 1 });
        assert_eq!(refused(InventoryItem { manifest_digest: "ab".into(), ..item() }), ValidationError::Digest);
        assert_eq!(refused(InventoryItem { manifest_digest: "g".repeat(64), ..item() }), ValidationError::Digest);
        let upper = "AB".repeat(32);
        assert_eq!(refused(InventoryItem { manifest_digest: upper, ..item() }), ValidationError::Digest);
        let forged = "app\n2026-12-04 INFO forged".to_owned();
        assert_eq!(
            refused(InventoryItem { stream: forged.clone(), ..item() }),
            ValidationError::Stream { len: forged.len() }
        );
        let boot = |b: BootMeasurement| InventoryItem { stream: FIRMWARE_STREAM.into(), boot: Some(b), ..item() };
        assert_eq!(boot(measurement()).validate(), Ok(()));
        assert_eq!(boot(BootMeasurement { last_failure: None, ..measurement() }).validate(), Ok(()));
        let on_a_container = InventoryItem { boot: Some(measurement()), ..item() };
        assert_eq!(refused(on_a_container), ValidationError::BootNotFirmware);
        let digest = BootMeasurement { image_digest: "x".into(), ..measurement() };
        assert_eq!(refused(boot(digest)), ValidationError::Digest);
        let longest = "r".repeat(MAX_BOOT_REASON);
        assert_eq!(boot(BootMeasurement { last_failure: Some(longest), ..measurement() }).validate(), Ok(()));
        for code in [String::new(), "r".repeat(MAX_BOOT_REASON + 1), "Trial".into(), "a b".into(), "é".into()] {
            let bad = BootMeasurement { last_failure: Some(code.clone()), ..measurement() };
            assert_eq!(refused(boot(bad)), ValidationError::BootReason, "{code:?}");
        }
        let msg = too_many.validate().unwrap_err().to_string();
        assert!(msg.contains("at most 64"), "{msg}");
    }

    #[test]
    fn poll_after_never_overflows_a_clock() {
        let r = CheckinResponse {
            ticket: String::new(),
            etag: String::new(),
            poll_after: u64::MAX,
            assignments: vec![],
            trust_roots: vec![],
        };
        assert_eq!(r.poll_after_clamped(), MAX_POLL_AFTER);
        let _ = std::time::Instant::now() + std::time::Duration::from_secs(r.poll_after_clamped());
        assert_eq!(parse_poll_after("317"), Some(317));
        assert_eq!(parse_poll_after(&u64::MAX.to_string()), Some(MAX_POLL_AFTER));
        assert_eq!(parse_poll_after("soon"), None);
        assert_eq!(parse_poll_after("-1"), None);
    }

    #[test]
    fn answers_are_read_leniently() {
        let j = serde_json::json!({
            "ticket": "dA==", "etag": "\"e\"", "poll_after": 60, "future": true,
            "assignments": [{"stream": "app", "manifest_digest": "ab".repeat(32), "sequence": 2,
                             "envelope": {"url": "/blobs/sha256/x", "sha256": "cd".repeat(32), "size": 914}}],
        });
        let r: CheckinResponse = serde_json::from_value(j).unwrap();
        assert_eq!(r.assignments[0].envelope.size, 914);
    }
}
