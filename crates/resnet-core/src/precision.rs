//! Which arithmetic the convolution and linear GEMMs use: `Fp32`, or `Mixed` (PyTorch's autocast:
//! f16 operands, f32 accumulation; batch norm, the loss, the optimiser and the master weights stay
//! f32). Like autocast it is a scope: ops recorded inside [`autocast`] take the scope's precision
//! into their geometry, so their backward pass uses the same arithmetic as their forward pass.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cell::Cell;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32: bit for bit what the golden fixtures hold.
    #[default]
    Fp32,
    /// GEMM operands rounded to f16, products summed in f32 (tensor cores where offered).
    Mixed,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" => Ok(Precision::Fp32),
            "mixed" => Ok(Precision::Mixed),
            other => Err(Error::invalid(format!(
                "unknown precision '{other}': expected 'fp32' or 'mixed'"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Mixed => "mixed",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::Fp32) };
}

/// The precision ops recorded now take (`Fp32` outside any [`autocast`]).
pub fn current() -> Precision {
    CURRENT.with(|c| c.get())
}

/// Runs `f` with GEMMs in `precision`; the previous precision is back afterwards, on unwinding too.
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(precision)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_is_a_scope() {
        assert_eq!(current(), Precision::Fp32);
        let inner = autocast(Precision::Mixed, || {
            let nested = autocast(Precision::Fp32, current);
            (current(), nested)
        });
        assert_eq!(inner, (Precision::Mixed, Precision::Fp32));
        assert_eq!(current(), Precision::Fp32);
    }

    #[test]
    fn parse_names_the_choices() {
        assert_eq!(Precision::parse(" Mixed ").unwrap(), Precision::Mixed);
        let m = Precision::parse("fp16").unwrap_err().to_string();
        assert!(
            m.contains("unknown precision 'fp16'") && m.contains("'fp32' or 'mixed'"),
            "{m}"
        );
    }
}
