//! `tlake sql`: DuckDB in process, the lake's catalog attached, a query from
//! the command line, a file, standard input or an interactive prompt.

pub mod fresh;
pub mod output;
pub mod prompt;
pub mod session;
pub mod tail;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::lake::{LakeArgs, S3Keys};
pub use output::Format;
pub use session::Session;

/// What `tlake sql` was asked to do.
#[derive(Debug)]
pub struct SqlOptions {
    /// Catalog and object store.
    pub lake: LakeArgs,
    /// DuckDB extension directory holding avro, httpfs and iceberg.
    pub extension_dir: PathBuf,
    /// SQL from the command line.
    pub query: Option<String>,
    /// SQL from a file (`-` is standard input).
    pub file: Option<PathBuf>,
    /// How results are written.
    pub format: Format,
    /// Write the result here instead of standard output (Parquet needs it).
    pub output: Option<PathBuf>,
    /// With `--fresh`: where the Kafka tail is read from.
    pub fresh: Option<FreshOptions>,
}

/// Where `--fresh` reads the Kafka tail from.
#[derive(Debug, Clone)]
pub struct FreshOptions {
    /// Bootstrap servers.
    pub kafka_brokers: String,
    /// Longest a query waits for the tail (and a metadata or end-offset request).
    pub timeout: std::time::Duration,
}

/// Runs `tlake sql`.
pub fn run(options: &SqlOptions) -> Result<()> {
    if options.query.is_some() && options.file.is_some() {
        bail!("give the SQL as an argument or with --file, not both");
    }
    let script = match (&options.query, &options.file) {
        (Some(sql), _) => Some(sql.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => Some(read_stdin()?),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, None) if std::io::stdin().is_terminal() => None,
        (None, None) => Some(read_stdin()?),
    };
    if options.format == Format::Parquet {
        if options.output.is_none() {
            bail!("--format parquet writes a file: give it with --output PATH");
        }
        if script.is_none() {
            bail!("--format parquet needs the SQL as an argument or with --file");
        }
    }
    let keys = S3Keys::from_env()?;
    let mut session = Session::attach(&options.extension_dir, &options.lake, &keys)?;
    if let Some(fresh) = &options.fresh {
        // Called on a blocking thread of the runtime: its handle runs the catalog client.
        let runtime = tokio::runtime::Handle::current();
        let catalog = runtime.block_on(options.lake.connect(&keys))?;
        session = session.with_fresh(&options.lake, catalog, runtime, fresh)?;
    }
    let Some(sql) = script else {
        return prompt::run(&session, options.format);
    };
    let batches = session.query(&sql)?;
    match &options.output {
        Some(path) if options.format == Format::Parquet => {
            output::write(&batches, options.format, &mut std::io::sink(), Some(path))
        }
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            output::write(&batches, options.format, &mut file, None)?;
            std::io::Write::flush(&mut file).with_context(|| format!("writing {}", path.display()))
        }
        None => output::write(
            &batches,
            options.format,
            &mut std::io::stdout().lock(),
            None,
        ),
    }
}

fn read_stdin() -> Result<String> {
    let mut sql = String::new();
    std::io::stdin()
        .read_to_string(&mut sql)
        .context("reading SQL from standard input")?;
    Ok(sql)
}
