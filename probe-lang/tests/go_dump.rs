// Temporary debugging aid.
use probe_lang::{go::*, mem::ProcessMemory};

#[test]
#[ignore]
fn dump() {
    let path = std::env::var("GOBIN").unwrap();
    let mut child = std::process::Command::new(&path)
        .arg("--ready")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let data = std::fs::read(&path).unwrap();
    let bin = GoBinary::parse(&data).unwrap();
    println!(
        "version {} pie {} layout {:?} notes {:?}",
        bin.version(),
        bin.is_pie(),
        bin.layout_source(),
        bin.notes()
    );
    let bias = process_load_bias(child.id(), &data).unwrap();
    println!("bias {bias:#x}");
    let r = GoReader::new(&bin, bias);
    let snap = r.snapshot(&ProcessMemory { pid: child.id() }, Limits::default());
    child.kill().unwrap();
    child.wait().unwrap();
    let snap = snap.unwrap();
    println!(
        "total {} unreadable {} notes {:?}",
        snap.total, snap.unreadable, snap.notes
    );
    for g in &snap.goroutines {
        println!(
            "g{} {:?} {:?} thread {:?} start {:?} role {:?} parent {:?} wait {:?} note {:?}",
            g.goid,
            g.status,
            g.wait_reason,
            g.thread,
            g.start_fn,
            g.role,
            g.parent_goid,
            g.wait,
            g.stack_note
        );
        for f in &g.stack {
            println!(
                "    {}{} {}:{} {:#x}",
                if f.inlined { "(inl) " } else { "" },
                f.function,
                f.file,
                f.line,
                f.pc
            );
        }
        if let Some(c) = &g.created_by {
            println!("  created by {} {}:{}", c.function, c.file, c.line);
        }
    }
}
