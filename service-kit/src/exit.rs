//! exit: how our binaries end — the runtime they run on, and their exit
//! codes: 0 done, 1 failed while running, 2 a configuration or flag the
//! user must fix (scripts and the chart's probes tell them apart).

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code for configuration or usage the user must fix.
pub const USAGE: u8 = 2;

/// How long tasks still running when the work ends (the metrics server, a
/// request in flight) are given before the process exits without them.
const LEFTOVER_TASKS: Duration = Duration::from_secs(1);

/// `<binary>: <err>` on stderr; exit code [`USAGE`].
pub fn usage(binary: &str, err: impl Display) -> ExitCode {
    eprintln!("{binary}: {err}");
    ExitCode::from(USAGE)
}

/// Runs `work` to its end on a new multi-threaded Tokio runtime, then drops
/// what is left on it after at most [`LEFTOVER_TASKS`]. `Err` (exit code
/// 1, said on stderr) when the runtime cannot start.
pub fn block_on<F: Future>(binary: &str, work: F) -> Result<F::Output, ExitCode> {
    let runtime = tokio::runtime::Runtime::new().map_err(|err| {
        eprintln!("{binary}: cannot start the runtime: {err}");
        ExitCode::FAILURE
    })?;
    let output = runtime.block_on(work);
    runtime.shutdown_timeout(LEFTOVER_TASKS);
    Ok(output)
}

/// A service run to its end ([`block_on`]): exit code 0 when it stopped
/// cleanly, else `<binary>: <err>` on stderr and 1.
pub fn serve<E: Display>(binary: &str, service: impl Future<Output = Result<(), E>>) -> ExitCode {
    match block_on(binary, service) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("{binary}: {err:#}");
            ExitCode::FAILURE
        }
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_ends_with_its_code_and_leftover_tasks_do_not_hold_it() {
        assert_eq!(
            serve("t", async { Ok::<(), String>(()) }),
            ExitCode::SUCCESS
        );
        assert_eq!(
            serve("t", async { Err::<(), _>("broken".to_owned()) }),
            ExitCode::FAILURE
        );
        assert_eq!(usage("t", "bad key"), ExitCode::from(USAGE));
        // A task that never ends (like the metrics server) is left behind.
        let began = std::time::Instant::now();
        let out = block_on("t", async {
            tokio::spawn(std::future::pending::<()>());
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(30)));
            7
        });
        assert_eq!(out.ok(), Some(7));
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
    }
}
