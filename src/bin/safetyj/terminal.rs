//! What every subcommand prints with: byte sizes for people, and a status line that
//! rewrites itself.

/// `bytes` in KiB, MiB or GiB, whichever reads best.
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// `bytes` in whole MiB.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

/// A progress callback that rewrites one stderr line, at most twice a second.
pub fn status_line() -> impl FnMut(&str) {
    let mut last: Option<std::time::Instant> = None;
    move |line: &str| {
        if last.is_none_or(|t| t.elapsed().as_millis() >= 500) {
            last = Some(std::time::Instant::now());
            eprint!("\r{line}\x1b[K");
        }
    }
}
