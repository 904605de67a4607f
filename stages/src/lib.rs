//! Stage kinds, registered by name. This crate is the only place where pipeline params meet the
//! work they configure; each kind lives in its own file with one entry point.

mod augment;
mod copy;
mod download;
mod error;
mod observe;
mod shell;
mod synthesize;

pub use augment::Augment;
pub use copy::Copy;
pub use download::Download;
pub use error::StageError;
pub use shell::Shell;
pub use synthesize::Synthesize;

use textrec_pipeline::Registry;

/// Every stage kind a pipeline may name in `kind:`.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Shell);
    registry.register(Copy);
    registry.register(Download);
    registry.register(Synthesize);
    registry.register(Augment);
    registry
}
