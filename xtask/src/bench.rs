//! `cargo xtask bench` (see docs/design.md for what is measured and why).

use anyhow::{Result, bail};

pub fn run(_runs: usize, _secs: f64, _only: Option<&str>) -> Result<()> {
    bail!("the bench is not written yet")
}
