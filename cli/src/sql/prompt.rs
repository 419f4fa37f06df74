//! The interactive prompt: lines gathered until a statement ends with `;`,
//! its result printed, errors printed without leaving the prompt; history kept
//! in `$XDG_STATE_HOME/tlake/sql_history` (default `~/.local/state/...`).

use std::path::PathBuf;

use anyhow::Result;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::output::{self, Format};
use super::session::Session;

fn history_file() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("tlake/sql_history"))
}

/// Reads statements until end of input (Ctrl-D) or `.quit`.
pub fn run(session: &Session, format: Format) -> Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = history_file();
    if let Some(path) = &history {
        // No history yet is the normal first run.
        let _ = editor.load_history(path);
    }
    eprintln!("tlake sql: statements end with ';'. Ctrl-D or .quit leaves.");
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            "tlake> "
        } else {
            "  ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if pending.is_empty() && matches!(line.trim(), ".quit" | ".exit" | "\\q") {
                    break;
                }
                pending.push_str(&line);
                pending.push('\n');
                if !pending.trim_end().ends_with(';') {
                    continue;
                }
                let sql = std::mem::take(&mut pending);
                let _ = editor.add_history_entry(sql.trim());
                let stdout = &mut std::io::stdout().lock();
                match session.query(&sql) {
                    Ok(batches) => output::write(&batches, format, stdout, None)
                        .unwrap_or_else(|e| eprintln!("error: {e:#}")),
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
            // Ctrl-C drops the statement being typed, as shells do.
            Err(ReadlineError::Interrupted) => pending.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        if let Err(e) = editor.save_history(path) {
            eprintln!("tlake sql: history not saved to {}: {e}", path.display());
        }
    }
    Ok(())
}
