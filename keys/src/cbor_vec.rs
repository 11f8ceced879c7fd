//! A minicbor writer into a `Vec`, so Gantry crates need not enable
//! minicbor's `alloc` feature: with it, every decode *error* allocates a
//! message, and Gantry's verifiers promise to allocate nothing, even when
//! refusing hostile input.

/// Encoder output buffer: `minicbor::Encoder::new(VecWriter::default())`.
#[derive(Clone, Debug, Default)]
pub struct VecWriter(pub Vec<u8>);

impl minicbor::encode::Write for VecWriter {
    type Error = core::convert::Infallible;

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0.extend_from_slice(buf);
        Ok(())
    }
}
