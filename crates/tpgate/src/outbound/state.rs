//! The small state file that keeps select groups' choices across restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::warn;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// select group name -> member name.
    #[serde(default)]
    selected: BTreeMap<String, String>,
}

/// Why the state could not be saved.
#[derive(Debug, thiserror::Error)]
enum SaveError {
    /// The state did not serialise (cannot happen with string maps; kept typed anyway).
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// Creating the directory, writing the temporary file or renaming it.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
pub(super) struct StateFile {
    path: PathBuf,
    state: Mutex<State>,
}

impl StateFile {
    /// Reads the file; a missing one is an empty state, and so is one that cannot be read
    /// or does not parse whole (logged): nothing of a damaged file is used. Writes are
    /// atomic ([`crate::persist`]), so only damage from outside gets here.
    pub(super) fn load(path: PathBuf) -> Self {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(path = %path.display(), "state file unreadable, starting fresh: {e}");
                State::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                warn!(path = %path.display(), "cannot read the state file, starting fresh: {e}");
                State::default()
            }
        };
        Self {
            path,
            state: Mutex::new(state),
        }
    }

    pub(super) fn selected(&self, group: &str) -> Option<String> {
        self.state.lock().ok()?.selected.get(group).cloned()
    }

    pub(super) fn set_selected(&self, group: &str, member: &str) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.selected.insert(group.to_string(), member.to_string());
        if let Err(e) = self.write(&st) {
            warn!(
                path = %self.path.display(),
                "cannot save the selection {group} = {member} (it holds until tpgate \
                 stops): {e}"
            );
        }
    }

    /// Forgets `group`'s saved choice.
    pub(super) fn clear_selected(&self, group: &str) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.selected.remove(group).is_some() {
            if let Err(e) = self.write(&st) {
                warn!(path = %self.path.display(), "cannot save the selection: {e}");
            }
        }
    }

    /// Writes atomically: a reader sees the old file or the new one, never half of it.
    fn write(&self, st: &State) -> Result<(), SaveError> {
        crate::persist::write_atomic(&self.path, &serde_json::to_vec_pretty(st)?)?;
        Ok(())
    }
}
