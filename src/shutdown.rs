//! SIGTERM and SIGINT, listened to from the moment `serve` starts. Until a handler is
//! installed a signal's default action kills the process: a container stopped during a
//! slow start-up (a package install, a worker importing for seconds) would be killed
//! instead of exiting cleanly, its half-started workers left running until they noticed.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Counts the shutdown signals received since [`Shutdown::listen`].
pub struct Shutdown {
    received: watch::Receiver<u32>,
}

impl Shutdown {
    /// Installs the handlers now and counts signals in the background.
    pub fn listen() -> std::io::Result<Shutdown> {
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (count, received) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    received = term.recv() => received,
                    received = interrupt.recv() => received,
                };
                // `None`: the runtime is shutting down; there is nothing left to signal.
                if received.is_none() {
                    return;
                }
                count.send_modify(|n| *n += 1);
            }
        });
        Ok(Shutdown { received })
    }

    /// Resolves once a signal has been received, including one before this call.
    pub async fn received(&self) {
        let mut received = self.received.clone();
        let _ = received.wait_for(|n| *n > 0).await;
    }

    /// Resolves on the next signal after this call (one that cuts a drain short).
    pub fn another(&self) -> impl Future<Output = ()> + use<> {
        let mut received = self.received.clone();
        let seen = *received.borrow_and_update();
        async move {
            let _ = received.wait_for(|n| *n > seen).await;
        }
    }
}
