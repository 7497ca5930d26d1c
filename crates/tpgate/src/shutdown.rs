//! A cloneable "stop now" signal for servers (the mini-redis pattern: servers take a
//! shutdown future, so tests and the daemon stop them deterministically).

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending side: [`Trigger::fire`] stops every [`Shutdown`] made from it.
#[derive(Debug)]
pub(crate) struct Trigger {
    tx: watch::Sender<bool>,
}

pub(crate) fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    pub(crate) fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub(crate) fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once fired (or once the trigger is gone).
    pub(crate) async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// A [`Shutdown`] that fires when either `a` or `b` does.
pub(crate) fn either(a: Shutdown, b: Shutdown) -> Shutdown {
    let (trigger, out) = channel();
    tokio::spawn(async move {
        tokio::select! {
            () = a.wait() => {}
            () = b.wait() => {}
        }
        trigger.fire();
    });
    out
}
