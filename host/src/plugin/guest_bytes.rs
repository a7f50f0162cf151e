//! Bulk bytes handed to a plugin (`list<u8>` parameters: a chunk to `put`, a batch of rows) with
//! one `memcpy` into the guest's memory.
//!
//! wasmtime lowers a `&[u8]` argument byte by byte (`for (dst, src) in …zip(items)`), counting on
//! LLVM to turn the loop into a copy. That code is generic over the store's data, so it is
//! compiled in this crate, at this crate's optimisation level: in the dev build everything is
//! built with (dependencies at opt-level 3, larder at 0) the loop cost ~10 ns per byte, more
//! than a third of a backup's CPU through the offsite plugin and a quarter of one with the
//! rules validator (perf, Kitchen Pantry, 2026-12-02). [`GuestBytes`] lowers as exactly the same
//! `list<u8>` (same type check, same canonical ABI: the guest allocates with its `realloc`, the
//! host fills the allocation), with `copy_from_slice`.

use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

/// A `list<u8>` argument copied into the guest in one piece.
#[derive(Clone, Copy)]
pub struct GuestBytes<'a>(pub &'a [u8]);

impl GuestBytes<'_> {
    /// Allocates the list in the guest (its `cabi_realloc`) and copies the bytes there: the
    /// list's address and length.
    fn store<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<(usize, usize)> {
        let len = self.0.len();
        let ptr = cx.realloc(0, 0, 1, len)?;
        let memory = cx.as_slice_mut();
        let dst = ptr
            .checked_add(len)
            .and_then(|end| memory.get_mut(ptr..end))
            .ok_or_else(|| wasmtime::format_err!("realloc return: beyond end of memory"))?;
        dst.copy_from_slice(self.0);
        Ok((ptr, len))
    }
}

// SAFETY: lowered exactly as `[u8]` is (a pointer pair of two flat values, type-checked as
// `list<u8>`), writing only inside the allocation the guest's `realloc` returned.
unsafe impl ComponentType for GuestBytes<'_> {
    type Lower = [ValRaw; 2];

    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[u8] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: see `ComponentType` above.
unsafe impl Lower for GuestBytes<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        dst: &mut std::mem::MaybeUninit<[ValRaw; 2]>,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.store(cx)?;
        // Pointers are always written as 64-bit values, as wasmtime's own lowering does.
        dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.store(cx)?;
        *cx.get::<4>(offset) = u32::try_from(ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(len)?.to_le_bytes();
        Ok(())
    }
}
