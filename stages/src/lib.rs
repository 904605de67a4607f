//! Stage kinds, registered by name. This crate is the only place where pipeline params meet the
//! work they configure; each kind lives in its own file with one entry point.

mod copy;
mod error;
mod shell;

pub use copy::Copy;
pub use error::StageError;
pub use shell::Shell;

use textrec_pipeline::Registry;

/// Every stage kind a pipeline may name in `kind:`.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Shell);
    registry.register(Copy);
    registry
}
