//! The tolerance check of the kernel tests, native (`ops::testing`) and in the
//! browser (`tests/web.rs` includes this file): it names no crate item, so both
//! compile it as it is.

/// Panics unless every `got[i]` is within `atol + rtol * |want[i]|` of `want[i]`
/// (NaN never passes), naming the first bad index.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}: element {i} is {g}, expected {w} (|err| {err} > atol {atol} + rtol {rtol})"
        );
    }
}
