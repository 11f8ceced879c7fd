//! The SUIT interpreter runs the draft -37 examples on a test device and
//! reaches each example's expected result; conditions that do not hold stop it.

mod common;

use std::collections::HashMap;

use gantry_signing::{ActionFailed, ComponentId, Error, Image, Parameters, Policy, Section, SuitDevice, verify};

const VENDOR: &str = "fa6b4a53d5ad5fdfbe9de663e4d41ffe";
const CLASS: &str = "1492af1425695e48bf429b2d51f2ab45";
const D1: &str = "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210";
const D2: &str = "0123456789abcdeffedcba987654321000112233445566778899aabbccddeeff";

fn image(digest: &str, size: u64) -> Image {
    Image { sha256: hex::decode(digest).unwrap().try_into().unwrap(), size }
}

/// A device with per-component storage and a table of what each URI serves.
struct TestDevice {
    vendor: Vec<u8>,
    class: Vec<u8>,
    slot: u64,
    storage: HashMap<String, Image>,
    served: HashMap<&'static str, Image>,
    log: Vec<String>,
}

impl TestDevice {
    fn new() -> Self {
        TestDevice {
            vendor: hex::decode(VENDOR).unwrap(),
            class: hex::decode(CLASS).unwrap(),
            slot: 0,
            storage: HashMap::new(),
            served: HashMap::from([
                ("http://example.com/file.bin", image(D1, 34768)),
                ("http://example.com/very/long/path/to/file/file.bin", image(D1, 34768)),
                ("http://example.com/file1.bin", image(D1, 34768)),
                ("http://example.com/file2.bin", image(D2, 76834)),
            ]),
            log: Vec::new(),
        }
    }
}

impl SuitDevice for TestDevice {
    fn check_vendor(&self, _: ComponentId<'_>, id: &[u8]) -> bool {
        id == self.vendor
    }
    fn check_class(&self, _: ComponentId<'_>, id: &[u8]) -> bool {
        id == self.class
    }
    fn image(&mut self, c: ComponentId<'_>, _: &Parameters<'_>) -> Option<Image> {
        self.storage.get(&c.to_string()).copied()
    }
    fn in_slot(&self, _: ComponentId<'_>, slot: u64) -> bool {
        slot == self.slot
    }
    fn fetch(&mut self, c: ComponentId<'_>, p: &Parameters<'_>) -> Result<(), ActionFailed> {
        let uri = p.uri.unwrap();
        self.log.push(format!("fetch {c} {uri}"));
        let img = *self.served.get(uri).ok_or(ActionFailed)?;
        self.storage.insert(c.to_string(), img);
        Ok(())
    }
    fn copy(&mut self, c: ComponentId<'_>, src: ComponentId<'_>, _: &Parameters<'_>) -> Result<(), ActionFailed> {
        self.log.push(format!("copy {src} -> {c}"));
        let img = *self.storage.get(&src.to_string()).ok_or(ActionFailed)?;
        self.storage.insert(c.to_string(), img);
        Ok(())
    }
    fn invoke(&mut self, c: ComponentId<'_>, _: &Parameters<'_>) -> Result<(), ActionFailed> {
        self.log.push(format!("invoke {c}"));
        Ok(())
    }
}

fn example(n: &str) -> Option<Vec<u8>> {
    let v = common::vectors()?;
    Some(common::read(v.join(format!("suit/example{n}.cbor"))))
}

fn key() -> [gantry_keys::PublicKey; 1] {
    [common::draft_key(&common::vectors().unwrap())]
}

#[test]
fn example0_secure_boot() {
    let Some(bytes) = example("0.signed") else { return };
    let key = key();
    let m = verify(&bytes, &Policy::new(&key, 1)).unwrap();
    let mut dev = TestDevice::new();
    // Nothing installed: the image does not match.
    assert!(matches!(
        m.run(Section::Validate, &mut dev),
        Err(Error::ConditionFailed { condition: "image-match", component: 0 })
    ));
    dev.storage.insert("[h'00']".into(), image(D1, 34768));
    m.run(Section::Validate, &mut dev).unwrap();
    m.run(Section::Invoke, &mut dev).unwrap();
    assert_eq!(dev.log, ["invoke [h'00']"]);
    // Right digest, wrong size.
    dev.storage.insert("[h'00']".into(), image(D1, 1));
    assert!(m.run(Section::Validate, &mut dev).is_err());
    // Another device class stops at the shared sequence.
    let mut other = TestDevice::new();
    other.class[0] ^= 1;
    assert!(matches!(
        m.run(Section::Invoke, &mut other),
        Err(Error::ConditionFailed { condition: "class-identifier", .. })
    ));
    assert!(other.log.is_empty());
}

#[test]
fn example1_download_and_install() {
    let Some(bytes) = example("1.signed") else { return };
    let key = key();
    let m = verify(&bytes, &Policy::new(&key, 1)).unwrap();
    let mut dev = TestDevice::new();
    m.run(Section::Install, &mut dev).unwrap();
    assert_eq!(dev.log, ["fetch [h'00'] http://example.com/file.bin"]);
    m.run(Section::Validate, &mut dev).unwrap();
    // A server that serves other bytes: the install fails at image-match.
    let mut dev = TestDevice::new();
    dev.served.insert("http://example.com/file.bin", image(D2, 34768));
    assert!(matches!(m.run(Section::Install, &mut dev), Err(Error::ConditionFailed { condition: "image-match", .. })));
    // A server that serves nothing: the device reports the failed fetch.
    let mut dev = TestDevice::new();
    dev.served.clear();
    assert!(matches!(m.run(Section::Install, &mut dev), Err(Error::DeviceFailed { action: "fetch", component: 0 })));
}

#[test]
fn example2_severable_install() {
    let Some(bytes) = example("2.signed") else { return };
    let key = key();
    let m = verify(&bytes, &Policy::new(&key, 1)).unwrap();
    let mut dev = TestDevice::new();
    m.run(Section::Install, &mut dev).unwrap();
    m.run(Section::Validate, &mut dev).unwrap();
    m.run(Section::Invoke, &mut dev).unwrap();
    assert_eq!(dev.log.len(), 2, "{:?}", dev.log);
    assert_eq!(m.manifest().reference_uri(), Some("https://git.io/JJYoj"));

    let severed = example("2.signed-severed").unwrap();
    let m = verify(&severed, &Policy::new(&key, 1)).unwrap();
    assert!(matches!(m.run(Section::Install, &mut TestDevice::new()), Err(Error::SectionSevered("install"))));
}

#[test]
fn example3_picks_the_image_for_the_slot() {
    let Some(bytes) = example("3.signed") else { return };
    let key = key();
    let m = verify(&bytes, &Policy::new(&key, 1)).unwrap();
    for (slot, uri, digest) in [(0, "file1.bin", D1), (1, "file2.bin", D2)] {
        let mut dev = TestDevice::new();
        dev.slot = slot;
        m.run(Section::Install, &mut dev).unwrap();
        assert_eq!(dev.log, [format!("fetch [h'00'] http://example.com/{uri}")]);
        assert_eq!(dev.storage["[h'00']"].sha256.to_vec(), hex::decode(digest).unwrap());
        m.run(Section::Validate, &mut dev).unwrap();
    }
    // No slot option applies: try-each fails as a whole.
    let mut dev = TestDevice::new();
    dev.slot = 7;
    assert!(matches!(m.run(Section::Install, &mut dev), Err(Error::ConditionFailed { condition: "try-each", .. })));
}

#[test]
fn example4_load_from_external_storage() {
    let Some(bytes) = example("4.signed") else { return };
    let key = key();
    let m = verify(&bytes, &Policy::new(&key, 1)).unwrap();
    let mut dev = TestDevice::new();
    dev.served.insert("http://example.com/file.bin", image(D1, 34768));
    m.run(Section::PayloadFetch, &mut dev).unwrap();
    m.run(Section::Install, &mut dev).unwrap();
    m.run(Section::Validate, &mut dev).unwrap();
    // Load copies the (compressed, in the draft) image to RAM; our test copy
    // keeps the digest, so the load's image-match on D2 fails as it must.
    assert!(matches!(
        m.run(Section::Load, &mut dev),
        Err(Error::ConditionFailed { condition: "image-match", component: 2 })
    ));
    assert_eq!(
        dev.log,
        ["fetch [h'02'] http://example.com/file.bin", "copy [h'02'] -> [h'00']", "copy [h'00'] -> [h'01']"]
    );
}

#[test]
fn example5_two_images() {
    let Some(bytes) = example("5.signed") else { return };
    let key = key();
    let m = verify(&bytes, &Policy::new(&key, 1)).unwrap();
    let mut dev = TestDevice::new();
    m.run(Section::Install, &mut dev).unwrap();
    m.run(Section::Validate, &mut dev).unwrap();
    m.run(Section::Invoke, &mut dev).unwrap();
    assert_eq!(
        dev.log,
        ["fetch [h'00'] http://example.com/file1.bin", "fetch [h'01'] http://example.com/file2.bin", "invoke [h'00']"]
    );
}
