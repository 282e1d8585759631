//! Signal names and the shutdown-signal set (`--signals TERM,INT,HUP,QUIT`).

use nix::sys::signal::Signal;

use crate::error::StallError;

/// The default shutdown signals.
pub const DEFAULT_SHUTDOWN: &str = "TERM,INT,HUP,QUIT";

/// `SIGTERM` for 15, `SIG42` for signals without a name (real-time).
pub fn name(sig: u32) -> String {
    match Signal::try_from(sig as i32) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("SIG{sig}"),
    }
}

/// Parse one signal: `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse(s: &str) -> Result<Signal, StallError> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| StallError::Usage(format!("unknown signal number {n}")));
    }
    let up = t.to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    full.parse::<Signal>().map_err(|_| {
        StallError::Usage(format!(
            "unknown signal `{t}` (use names like TERM, INT, HUP, QUIT, or numbers)"
        ))
    })
}

/// Parse a comma-separated list into a bit mask (bit n = signal n).
pub fn parse_mask(list: &str) -> Result<u64, StallError> {
    let mut mask = 0u64;
    for part in list.split(',').filter(|p| !p.trim().is_empty()) {
        mask |= 1u64 << (parse(part)? as i32);
    }
    if mask == 0 {
        return Err(StallError::Usage(
            "--signals needs at least one signal".into(),
        ));
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mask() {
        let m = parse_mask(DEFAULT_SHUTDOWN).unwrap();
        for s in [15, 2, 1, 3] {
            assert!(m & (1 << s) != 0);
        }
        assert_eq!(m.count_ones(), 4);
    }

    #[test]
    fn forms() {
        assert_eq!(parse("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("SIGINT").unwrap(), Signal::SIGINT);
        assert_eq!(parse("9").unwrap(), Signal::SIGKILL);
        assert!(parse("NOPE").is_err());
        assert!(parse_mask("").is_err());
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(40), "SIG40");
    }
}
