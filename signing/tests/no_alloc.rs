//! Verification allocates nothing: with a counting global allocator, verify(),
//! the integrated-payload checks and the interpreter run on valid and hostile
//! envelopes without a single heap allocation. This is what "bounded memory" means for the no_std core:
//! its only memory is a fixed stack frame, whatever the input claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use gantry_keys::{FileKeySource, KeySource as _, KeyType, SigningKey};
use gantry_signing::build::{
    CONFIG_PAYLOAD, ContainerRelease, add_signature, class_id_from_model, vendor_id_from_domain,
};
use gantry_signing::config::ContainerConfig;
use gantry_signing::{ActionFailed, ComponentId, Image, Parameters, Policy, Section, SuitDevice, verify};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts, per thread, so concurrently running tests do not
// disturb each other's counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

struct NullDevice;
impl SuitDevice for NullDevice {
    fn check_vendor(&self, _: ComponentId<'_>, _: &[u8]) -> bool {
        true
    }
    fn check_class(&self, _: ComponentId<'_>, _: &[u8]) -> bool {
        true
    }
    fn image(&mut self, _: ComponentId<'_>, p: &Parameters<'_>) -> Option<Image> {
        Some(Image { sha256: p.image_digest?.sha256()?, size: p.image_size? })
    }
    fn in_slot(&self, _: ComponentId<'_>, _: u64) -> bool {
        true
    }
    fn fetch(&mut self, _: ComponentId<'_>, _: &Parameters<'_>) -> Result<(), ActionFailed> {
        Ok(())
    }
    fn copy(&mut self, _: ComponentId<'_>, _: ComponentId<'_>, _: &Parameters<'_>) -> Result<(), ActionFailed> {
        Ok(())
    }
    fn invoke(&mut self, _: ComponentId<'_>, _: &Parameters<'_>) -> Result<(), ActionFailed> {
        Ok(())
    }
}

#[test]
fn verify_and_run_allocate_nothing() {
    let config = ContainerConfig::from_toml("name = \"na\"\nversion = \"1\"\n").unwrap();
    let vendor = vendor_id_from_domain("example.com");
    let blob = vec![1u8; 4096];
    let blobs = [("b".to_string(), &blob[..])];
    let release = ContainerRelease {
        config: &config,
        module: b"\0asm\x01\0\0\0",
        blobs: &blobs,
        sequence: 9,
        vendor_id: vendor,
        class_id: class_id_from_model(&vendor, "x"),
    };
    let ed = FileKeySource::from_key("e".into(), SigningKey::generate(KeyType::Ed25519));
    let p = FileKeySource::from_key("p".into(), SigningKey::generate(KeyType::P256));
    let signed = add_signature(&add_signature(&release.build_unsigned().unwrap(), &ed).unwrap(), &p).unwrap();
    let anchors = [ed.public_key().clone(), p.public_key().clone()];
    let mut deep = vec![0xd8, 0x6b, 0xa1, 0x01];
    deep.extend(std::iter::repeat_n(0x81, 10_000));
    let hostile: [&[u8]; 4] = [
        &signed[..signed.len() / 2],
        &[0xd8, 0x6b, 0xa1, 0x02, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &deep,
        &[0xff; 64],
    ];

    let n = allocations_during(|| {
        let policy = Policy::new(&anchors, 2).min_sequence(9).identity(Some(&vendor), None);
        let m = verify(&signed, &policy).unwrap();
        for s in [Section::Install, Section::Validate, Section::Invoke] {
            m.run(s, &mut NullDevice).unwrap();
        }
        assert!(m.integrated_payload(CONFIG_PAYLOAD).unwrap().is_some());
        m.check_integrated_payloads().unwrap();
        for h in hostile {
            assert!(verify(h, &policy).is_err());
        }
    });
    assert_eq!(n, 0, "verification allocated {n} times");
}
