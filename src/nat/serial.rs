//! Sequence-number arithmetic (RFC 1982): TCP's 32-bit sequence numbers,
//! L2TP's 16-bit Ns and Nr, ESP's 32-bit sequence numbers all wrap, so
//! "after" and "within" are measured forward from a starting point.

/// `a` is after `b` in 32-bit sequence space.
pub fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// `x` lies in `[low, high]` in 32-bit sequence space.
pub fn within(x: u32, low: u32, high: u32) -> bool {
    x.wrapping_sub(low) <= high.wrapping_sub(low)
}

/// `x` lies in `[low, high]` in 16-bit sequence space.
pub fn within16(x: u16, low: u16, high: u16) -> bool {
    x.wrapping_sub(low) <= high.wrapping_sub(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_hold_across_the_wrap() {
        assert!(after(5, u32::MAX - 5) && !after(u32::MAX - 5, 5) && !after(7, 7));
        assert!(within(2, u32::MAX - 1, 3) && !within(4, u32::MAX - 1, 3));
        assert!(within16(1, 65535, 2) && !within16(3, 65535, 2) && within16(9, 9, 9));
    }
}
