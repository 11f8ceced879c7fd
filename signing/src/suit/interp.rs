//! A SUIT command interpreter for the subset Gantry uses:
//! set-component-index, override-parameters, vendor/class identifier,
//! image-match, component-slot, abort, try-each, fetch, copy and invoke.
//!
//! It runs only a [`VerifiedManifest`], against a [`SuitDevice`] that answers
//! conditions and performs actions; it allocates nothing. Anything outside
//! the subset is refused with [`Error::UnsupportedCommand`] or
//! [`Error::UnsupportedParameter`] rather than skipped, because skipping a
//! condition would weaken what the signer asked for.

use crate::Error;
use crate::cbor::{KeyOrder, Reader};
use crate::suit::envelope::Digest;
use crate::suit::labels::*;
use crate::suit::manifest::{ComponentId, MAX_COMPONENTS, Section};
use crate::verify::VerifiedManifest;

/// Deepest try-each nesting accepted.
const MAX_NESTING: u8 = 4;

/// The parameters set for one component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parameters<'a> {
    /// suit-parameter-vendor-identifier.
    pub vendor_id: Option<&'a [u8]>,
    /// suit-parameter-class-identifier.
    pub class_id: Option<&'a [u8]>,
    /// suit-parameter-image-digest.
    pub image_digest: Option<Digest<'a>>,
    /// suit-parameter-image-size.
    pub image_size: Option<u64>,
    /// suit-parameter-component-slot.
    pub slot: Option<u64>,
    /// suit-parameter-uri.
    pub uri: Option<&'a str>,
    /// suit-parameter-source-component (an index).
    pub source_component: Option<u64>,
    /// suit-parameter-invoke-args.
    pub invoke_args: Option<&'a [u8]>,
}

/// What a device's current content of a component looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// Its length in bytes.
    pub size: u64,
}

/// A device could not carry out a directive (fetch, copy, invoke); the
/// section stops with [`Error::DeviceFailed`]. The device keeps its own
/// record of why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionFailed;

/// The device the interpreter acts on. Conditions ask, directives act; a
/// directive returning [`ActionFailed`] aborts the section with
/// [`Error::DeviceFailed`].
pub trait SuitDevice {
    /// Whether `vendor_id` is this device's vendor for `component`.
    fn check_vendor(&self, component: ComponentId<'_>, vendor_id: &[u8]) -> bool;
    /// Whether `class_id` is this device's class for `component`.
    fn check_class(&self, component: ComponentId<'_>, class_id: &[u8]) -> bool;
    /// The component's current content (in the slot the parameters name, if
    /// any), or `None` if it holds nothing.
    fn image(&mut self, component: ComponentId<'_>, params: &Parameters<'_>) -> Option<Image>;
    /// Whether the component is in (will be written to) `slot`.
    fn in_slot(&self, component: ComponentId<'_>, slot: u64) -> bool;
    /// Fetches the payload at `params.uri` into the component.
    fn fetch(&mut self, component: ComponentId<'_>, params: &Parameters<'_>) -> Result<(), ActionFailed>;
    /// Copies `source` into `component`.
    fn copy(
        &mut self,
        component: ComponentId<'_>,
        source: ComponentId<'_>,
        params: &Parameters<'_>,
    ) -> Result<(), ActionFailed>;
    /// Hands control to the component.
    fn invoke(&mut self, component: ComponentId<'_>, params: &Parameters<'_>) -> Result<(), ActionFailed>;
}

impl<'a> VerifiedManifest<'a> {
    /// Runs the shared sequence, then `section`, against `device`. A section
    /// the manifest does not have runs nothing and succeeds.
    pub fn run<D: SuitDevice>(&self, section: Section, device: &mut D) -> Result<(), Error> {
        let Some(seq) = self.section(section)? else { return Ok(()) };
        let mut ids = [None; MAX_COMPONENTS];
        for (slot, id) in ids.iter_mut().zip(self.manifest().components()) {
            *slot = Some(id);
        }
        let mut it = Interpreter {
            ids,
            count: self.manifest().component_count(),
            params: [Parameters::default(); MAX_COMPONENTS],
            selected: 1,
            device,
        };
        if let Some(shared) = self.manifest().shared_sequence() {
            it.run_sequence(shared, 0)?;
        }
        it.run_sequence(seq, 0)
    }
}

struct Interpreter<'a, 'd, D> {
    ids: [Option<ComponentId<'a>>; MAX_COMPONENTS],
    count: usize,
    params: [Parameters<'a>; MAX_COMPONENTS],
    /// Bit set of the components commands apply to.
    selected: u32,
    device: &'d mut D,
}

impl<'a, D: SuitDevice> Interpreter<'a, '_, D> {
    fn id(&self, i: usize) -> Result<ComponentId<'a>, Error> {
        self.ids.get(i).copied().flatten().ok_or(Error::ComponentIndex(i as u64))
    }

    fn selection(&self) -> impl Iterator<Item = usize> + use<D> {
        let (sel, count) = (self.selected, self.count);
        (0..count).filter(move |i| sel & (1 << i) != 0)
    }

    fn run_sequence(&mut self, seq: &'a [u8], depth: u8) -> Result<(), Error> {
        if depth > MAX_NESTING {
            return Err(Error::TooDeep);
        }
        let mut r = Reader::new(seq);
        let n = r.array("command sequence")?;
        if n % 2 != 0 {
            return Err(Error::Invalid("command sequence must have command/argument pairs"));
        }
        for _ in 0..n / 2 {
            let cmd = r.i64("command")?;
            match cmd {
                DIR_SET_COMPONENT_INDEX => self.set_index(&mut r)?,
                DIR_OVERRIDE_PARAMETERS => self.override_parameters(&mut r)?,
                DIR_TRY_EACH => self.try_each(&mut r, depth)?,
                COND_VENDOR_IDENTIFIER
                | COND_CLASS_IDENTIFIER
                | COND_IMAGE_MATCH
                | COND_COMPONENT_SLOT
                | COND_ABORT => {
                    r.u64("reporting policy")?;
                    for i in self.selection() {
                        self.condition(cmd, i)?;
                    }
                }
                DIR_FETCH | DIR_COPY | DIR_INVOKE => {
                    r.u64("reporting policy")?;
                    for i in self.selection() {
                        self.directive(cmd, i)?;
                    }
                }
                other => return Err(Error::UnsupportedCommand(other)),
            }
        }
        r.finish("command sequence")
    }

    fn set_index(&mut self, r: &mut Reader<'a>) -> Result<(), Error> {
        self.selected = read_component_selection(r, self.count)?;
        Ok(())
    }

    fn override_parameters(&mut self, r: &mut Reader<'a>) -> Result<(), Error> {
        let n = r.map("parameters map")?;
        let mut order = KeyOrder::new();
        for _ in 0..n {
            let key = r.int_key(&mut order)?;
            let mut apply: Parameters<'a> = Parameters::default();
            let set = |p: &mut Parameters<'a>, v: &Parameters<'a>| match key {
                PARAM_VENDOR_ID => p.vendor_id = v.vendor_id,
                PARAM_CLASS_ID => p.class_id = v.class_id,
                PARAM_IMAGE_DIGEST => p.image_digest = v.image_digest,
                PARAM_IMAGE_SIZE => p.image_size = v.image_size,
                PARAM_COMPONENT_SLOT => p.slot = v.slot,
                PARAM_URI => p.uri = v.uri,
                PARAM_SOURCE_COMPONENT => p.source_component = v.source_component,
                PARAM_INVOKE_ARGS => p.invoke_args = v.invoke_args,
                _ => {}
            };
            match key {
                PARAM_VENDOR_ID => apply.vendor_id = Some(r.bytes("vendor id")?),
                PARAM_CLASS_ID => apply.class_id = Some(r.bytes("class id")?),
                PARAM_IMAGE_DIGEST => apply.image_digest = Some(Digest::parse(r.bytes("image digest bstr")?)?),
                PARAM_IMAGE_SIZE => apply.image_size = Some(r.u64("image size")?),
                PARAM_COMPONENT_SLOT => apply.slot = Some(r.u64("component slot")?),
                PARAM_URI => apply.uri = Some(r.str("uri")?),
                PARAM_SOURCE_COMPONENT => apply.source_component = Some(r.u64("source component")?),
                PARAM_INVOKE_ARGS => apply.invoke_args = Some(r.bytes("invoke args")?),
                // Policy flags with no effect on a sequential interpreter.
                PARAM_STRICT_ORDER | PARAM_SOFT_FAILURE => {
                    r.bool("boolean parameter")?;
                }
                other => return Err(Error::UnsupportedParameter(other)),
            }
            for i in self.selection() {
                set(&mut self.params[i], &apply);
            }
        }
        Ok(())
    }

    fn try_each(&mut self, r: &mut Reader<'a>, depth: u8) -> Result<(), Error> {
        let n = r.array("try-each options")?;
        let mut done = false;
        for _ in 0..n {
            if r.null()? {
                // A nil option ends try-each successfully.
                done = true;
                continue;
            }
            let option = r.bytes("try-each option bstr")?;
            if done {
                continue;
            }
            let (params, selected) = (self.params, self.selected);
            match self.run_sequence(option, depth + 1) {
                Ok(()) => done = true,
                Err(Error::ConditionFailed { .. }) => {
                    self.params = params;
                    self.selected = selected;
                }
                Err(e) => return Err(e),
            }
        }
        if done {
            Ok(())
        } else {
            let component = self.selection().next().unwrap_or(0);
            Err(Error::ConditionFailed { condition: "try-each", component })
        }
    }

    fn condition(&mut self, cmd: i64, i: usize) -> Result<(), Error> {
        let id = self.id(i)?;
        let p = self.params[i];
        let missing = |parameter| Error::MissingParameter { command: condition_name(cmd), parameter };
        let ok = match cmd {
            COND_VENDOR_IDENTIFIER => self.device.check_vendor(id, p.vendor_id.ok_or(missing("vendor-id"))?),
            COND_CLASS_IDENTIFIER => self.device.check_class(id, p.class_id.ok_or(missing("class-id"))?),
            COND_COMPONENT_SLOT => self.device.in_slot(id, p.slot.ok_or(missing("component-slot"))?),
            COND_IMAGE_MATCH => {
                let want = p.image_digest.ok_or(missing("image-digest"))?;
                let want = want.sha256().ok_or(Error::UnsupportedDigest(want.algorithm))?;
                match self.device.image(id, &p) {
                    Some(img) => img.sha256 == want && p.image_size.is_none_or(|s| s == img.size),
                    None => false,
                }
            }
            _ => false, // abort
        };
        if ok { Ok(()) } else { Err(Error::ConditionFailed { condition: condition_name(cmd), component: i }) }
    }

    fn directive(&mut self, cmd: i64, i: usize) -> Result<(), Error> {
        let id = self.id(i)?;
        let p = self.params[i];
        let (action, result) = match cmd {
            DIR_FETCH => {
                if p.uri.is_none() {
                    return Err(Error::MissingParameter { command: "fetch", parameter: "uri" });
                }
                ("fetch", self.device.fetch(id, &p))
            }
            DIR_COPY => {
                let src = p
                    .source_component
                    .ok_or(Error::MissingParameter { command: "copy", parameter: "source-component" })?;
                let src = self.id(usize::try_from(src).map_err(|_| Error::ComponentIndex(src))?)?;
                ("copy", self.device.copy(id, src, &p))
            }
            _ => ("invoke", self.device.invoke(id, &p)),
        };
        result.map_err(|ActionFailed| Error::DeviceFailed { action, component: i })
    }
}

/// Reads the argument of set-component-index (an index, an array of
/// indices, or `true` for all) as a bit set over `count` components.
pub(crate) fn read_component_selection(r: &mut Reader<'_>, count: usize) -> Result<u32, Error> {
    let check = |i: u64| if i < count as u64 { Ok(1u32 << i) } else { Err(Error::ComponentIndex(i)) };
    Ok(match r.datatype()? {
        minicbor::data::Type::Bool => {
            if !r.bool("component index")? {
                return Err(Error::Invalid("component index false"));
            }
            (1u32 << count) - 1
        }
        minicbor::data::Type::Array => {
            let mut set = 0;
            for _ in 0..r.array("component indices")? {
                set |= check(r.u64("component index")?)?;
            }
            set
        }
        _ => check(r.u64("component index")?)?,
    })
}

fn condition_name(cmd: i64) -> &'static str {
    match cmd {
        COND_VENDOR_IDENTIFIER => "vendor-identifier",
        COND_CLASS_IDENTIFIER => "class-identifier",
        COND_IMAGE_MATCH => "image-match",
        COND_COMPONENT_SLOT => "component-slot",
        _ => "abort",
    }
}
