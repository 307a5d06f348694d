//! Logging set-up shared by the examples (libraries log through `log` only).

/// Sends `log` records at `level` and above to stderr as `[LEVEL] message`.
pub fn init_logging(level: log::LevelFilter) -> Result<(), fern::InitError> {
    fern::Dispatch::new()
        .format(|out, msg, rec| out.finish(format_args!("[{}] {msg}", rec.level())))
        .level(level)
        .chain(std::io::stderr())
        .apply()?;
    Ok(())
}
