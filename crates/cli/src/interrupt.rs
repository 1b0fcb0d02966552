//! Ctrl-C and SIGTERM during a backup. The first asks the engine to stop cleanly (it finishes
//! the packs in flight, writes their index, releases its lease and removes its staging
//! folder, then the command reports what was kept and exits 1); a second exits at once with
//! 130, leaving only what a killed run leaves, which the next backup adopts. During a restore
//! the first stops fetching and moving (the file being placed is finished, the staging folder
//! removed, and the command says how far it got).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use rbackup_engine::Cancel;
use tokio::signal::unix::{SignalKind, signal};

use crate::ui::Ctx;

/// Exit status of a second interrupt: the shell's for a process ended by SIGINT.
const EXIT_INTERRUPTED: i32 = 130;

/// Set when the stop handle is a restore's, for the words printed on the first interrupt.
static RESTORING: AtomicBool = AtomicBool::new(false);

/// [`stop_on_signals`] for a restore.
pub fn stop_restore_on_signals(ctx: &Ctx) -> Cancel {
    RESTORING.store(true, Ordering::Relaxed);
    stop_on_signals(ctx)
}

/// The process's one stop handle, with the signal handlers installed on first use (so
/// commands that never back up keep the default signal behaviour). Every backup of a `run`
/// shares it: after a stop, the jobs not yet started stop at once too.
pub fn stop_on_signals(ctx: &Ctx) -> Cancel {
    static CANCEL: OnceLock<Cancel> = OnceLock::new();
    let quiet = ctx.quiet;
    CANCEL
        .get_or_init(|| {
            let cancel = Cancel::default();
            match FirstSignal::install() {
                Ok(signals) => {
                    tokio::spawn(watch(signals, cancel.clone(), quiet));
                }
                Err(e) => {
                    tracing::warn!("cannot handle Ctrl-C; it will stop the backup at once: {e}")
                }
            }
            cancel
        })
        .clone()
}

/// The first signal asks the run to stop cleanly; a second quits at once (see
/// [`FirstSignal::recv`]).
async fn watch(signals: FirstSignal, cancel: Cancel, quiet: bool) {
    // A restore's handle is asked for after RESTORING is set, and the watch starts then.
    let restoring = RESTORING.load(Ordering::Relaxed);
    let on_second = if restoring {
        "quit at once; the next restore removes the staging folder left behind"
    } else {
        "quit at once; the next backup reuses every pack that was fully uploaded"
    };
    signals.recv(on_second).await;
    if !quiet && restoring {
        eprintln!(
            "\nrbackup: stopping: finishing the file being placed and removing the staging \
             folder (press Ctrl-C again to quit at once)"
        );
    } else if !quiet {
        eprintln!(
            "\nrbackup: stopping: finishing the packs being uploaded and writing their index \
             (press Ctrl-C again to quit at once)"
        );
    }
    cancel.cancel();
}

/// Ctrl-C and SIGTERM handled by the command: the first is waited for (a backup then stops
/// cleanly, `mount` unmounts and exits 0), a second exits at once with 130. Installed before
/// the command starts its work, so that a signal then is not the default one that kills the
/// process at once.
#[derive(Debug)]
pub struct FirstSignal {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl FirstSignal {
    pub fn install() -> std::io::Result<FirstSignal> {
        Ok(FirstSignal {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the first signal; from then on a second one prints `on_second` and exits at
    /// once with 130.
    pub async fn recv(mut self, on_second: &'static str) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
            eprintln!("\nrbackup: {on_second}");
            std::process::exit(EXIT_INTERRUPTED);
        });
    }
}
