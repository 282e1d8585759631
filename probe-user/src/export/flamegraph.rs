//! An off-CPU flame graph (`--flamegraph FILE.svg`): the [folded stacks](super::folded)
//! rendered by inferno as an interactive SVG (click to zoom, Ctrl-F to search), widths in ms
//! of blocked time, one tower per thread name, kernel frames on top of the user stacks (inferno
//! draws them without their `_[k]` suffix). Blue, the off-CPU convention.

use inferno::flamegraph::{
    self, Options,
    color::{BasicPalette, Palette},
};

use crate::report::Report;

pub const TITLE: &str = "stallprobe: blocked time (ms)";

/// The SVG document. A report with nothing to weigh (every thread exited, say) gives a small
/// SVG that says so, rather than no file.
pub fn flamegraph_svg(r: &Report) -> std::io::Result<Vec<u8>> {
    let lines = super::folded::folded_lines(r);
    let subtitle = format!(
        "{} (pid {}) · verdict {} · {} threads with blocked time",
        r.target.comm,
        r.target.pid,
        match r.verdict {
            crate::report::Verdict::Clean => "clean",
            crate::report::Verdict::Stalled => "stalled",
            crate::report::Verdict::Observed => "observed",
        },
        super::weighted_threads(r).count()
    );
    if lines.is_empty() {
        return Ok(empty_svg(&subtitle).into_bytes());
    }
    let mut opt = Options::default();
    opt.title = TITLE.to_string();
    opt.subtitle = Some(subtitle);
    opt.count_name = "ms".to_string();
    opt.name_type = "Function:".to_string();
    // Off-CPU graphs are blue by convention; hashing keeps a function's colour stable.
    opt.colors = Palette::Basic(BasicPalette::Io);
    opt.hash = true;
    let mut out = Vec::new();
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut out)?;
    Ok(out)
}

/// What inferno would draw for no input, without its error: the title and a line of text.
fn empty_svg(subtitle: &str) -> String {
    use super::junit::escape_text;
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"90\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <text x=\"600\" y=\"24\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"17\">{}</text>\n\
         <text x=\"600\" y=\"48\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"12\">{}</text>\n\
         <text x=\"600\" y=\"72\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"12\">no thread was blocked at the end: nothing to draw</text>\n\
         </svg>\n",
        escape_text(TITLE),
        escape_text(subtitle)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil;

    #[test]
    fn svg_has_the_title_and_the_functions() {
        let svg = String::from_utf8(flamegraph_svg(&testutil::report()).unwrap()).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains(TITLE));
        // (Kernel frames are drawn without their `_[k]` suffix.)
        for f in [
            "take_second_lock",
            "locker_a",
            "shutdown_and_join",
            "futex_do_wait",
        ] {
            assert!(svg.contains(f), "no {f} in the SVG");
        }
        // Nothing to draw: still an SVG, with the title.
        let svg = String::from_utf8(flamegraph_svg(&testutil::clean_report()).unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.contains(TITLE), "{svg}");
        assert!(svg.contains("nothing to draw"), "{svg}");
    }
}
