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

/// `--listen ADDR` and `--count N` of the echo examples.
#[allow(dead_code)] // not every example that shares this module uses it
pub struct ServerArgs {
    pub listen: String,
    pub count: usize,
}

/// Parses `[--listen ADDR] [--count N]` (defaults: `default_listen`, 1);
/// `None` after printing usage for `-h`/`--help`.
#[allow(dead_code)]
pub fn server_args(
    example: &str,
    default_listen: &str,
) -> Result<Option<ServerArgs>, Box<dyn std::error::Error>> {
    let mut out = ServerArgs {
        listen: default_listen.to_string(),
        count: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => out.listen = args.next().ok_or("--listen needs an address")?,
            "--count" => out.count = args.next().ok_or("--count needs a number")?.parse()?,
            "-h" | "--help" => {
                println!("usage: {example} [--listen ADDR] [--count N]");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(Some(out))
}
