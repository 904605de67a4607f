//! Swapping a stage's staged outputs into place as one transaction: the outputs they replace
//! wait in the trash until the lock records the new ones, and go back into place if anything
//! fails before that (a rename across file systems, a full disk, a lock that cannot be saved).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{StageRunError, Stranded};
use crate::fsutil::remove_path;
use crate::workspace::Workspace;

/// One output moved into place.
#[derive(Debug)]
struct Swap {
    /// The output as declared, for messages.
    declared: String,
    target: PathBuf,
    /// Where the output it replaced waits, if there was one.
    replaced: Option<PathBuf>,
    /// Whether the staged output has reached `target`.
    placed: bool,
}

/// Outputs swapped in so far; [`Commit::finish`] makes the swap final, [`Commit::roll_back`]
/// undoes it.
#[derive(Debug)]
#[must_use = "a commit is either finished or rolled back"]
pub(crate) struct Commit {
    trash: PathBuf,
    swaps: Vec<Swap>,
}

impl Commit {
    /// Moves each staged output (`declared`, staged path, target path) into place, the output it
    /// replaces into the trash. On failure, everything moved so far goes back and the error says
    /// what failed.
    pub(crate) fn swap_in(
        workspace: &Workspace,
        stage: &str,
        outs: impl IntoIterator<Item = (String, PathBuf, PathBuf)>,
    ) -> Result<Commit, StageRunError> {
        let mut commit = Commit {
            trash: workspace.trash_dir(stage)?,
            swaps: Vec::new(),
        };
        for (declared, staged, target) in outs {
            if let Err(e) = commit.swap(declared, &staged, target) {
                return Err(commit.roll_back(e));
            }
        }
        Ok(commit)
    }

    fn swap(
        &mut self,
        declared: String,
        staged: &Path,
        target: PathBuf,
    ) -> Result<(), StageRunError> {
        let replaced = if fs::symlink_metadata(&target).is_ok() {
            let aside = self.trash.join(self.swaps.len().to_string());
            fs::rename(&target, &aside).map_err(|source| StageRunError::MoveAside {
                out: declared.clone(),
                source,
            })?;
            Some(aside)
        } else {
            None
        };
        self.swaps.push(Swap {
            declared,
            target,
            replaced,
            placed: false,
        });
        let swap = self.swaps.last_mut().expect("just pushed");
        if let Some(parent) = swap.target.parent() {
            fs::create_dir_all(parent).map_err(|source| StageRunError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        fs::rename(staged, &swap.target).map_err(|source| StageRunError::MoveIntoPlace {
            out: swap.declared.clone(),
            source,
        })?;
        swap.placed = true;
        Ok(())
    }

    /// Deletes the replaced outputs: the lock now records the new ones.
    pub(crate) fn finish(self) -> Result<(), StageRunError> {
        remove_path(&self.trash).map_err(|source| StageRunError::RemoveReplaced { source })
    }

    /// Puts every replaced output back where it was and removes the new ones, newest first, and
    /// returns `error` (what made the commit fail) with anything that could not be undone.
    pub(crate) fn roll_back(self, error: StageRunError) -> StageRunError {
        let mut problems = Vec::new();
        let mut stranded = false;
        for swap in self.swaps.iter().rev() {
            let undone = (|| {
                if swap.placed {
                    remove_path(&swap.target)?;
                }
                match &swap.replaced {
                    Some(aside) => fs::rename(aside, &swap.target),
                    None => Ok(()),
                }
            })();
            match (undone, &swap.replaced) {
                (Ok(()), _) => {}
                (Err(source), Some(aside)) => {
                    stranded = true;
                    problems.push(Stranded::PreviousNotPutBack {
                        out: swap.declared.clone(),
                        aside: aside.clone(),
                        target: swap.target.clone(),
                        source,
                    });
                }
                (Err(source), None) => problems.push(Stranded::NewNotRemoved {
                    out: swap.declared.clone(),
                    source,
                }),
            }
        }
        if !stranded {
            let _ = remove_path(&self.trash);
        }
        if problems.is_empty() {
            error
        } else {
            StageRunError::RolledBack {
                error: Box::new(error),
                stranded: problems,
            }
        }
    }
}
