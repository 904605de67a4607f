//! Stage kinds, registered by name. This crate is the only place where pipeline params meet the
//! work they configure; each kind lives in its own file with one entry point.

mod augment;
mod copy;
mod download;
mod emnist;
mod error;
mod evaluate;
mod export;
mod ground_truth;
mod iam;
mod language_model;
mod mix;
mod observe;
mod package;
mod shell;
mod synthesize;
mod train;
mod tune_decoding;

pub use augment::Augment;
pub use copy::Copy;
pub use download::Download;
pub use emnist::Emnist;
pub use error::StageError;
pub use evaluate::Evaluate;
pub use export::Export;
pub use ground_truth::GroundTruth;
pub use iam::Iam;
pub use language_model::LanguageModel;
pub use mix::Mix;
pub use package::Package;
pub use shell::Shell;
pub use synthesize::Synthesize;
pub use train::Train;
pub use tune_decoding::TuneDecoding;

use textrec_pipeline::Registry;

/// Every stage kind a pipeline may name in `kind:`.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Shell);
    registry.register(Copy);
    registry.register(Download);
    registry.register(Synthesize);
    registry.register(GroundTruth);
    registry.register(Iam);
    registry.register(Emnist);
    registry.register(Mix);
    registry.register(Augment);
    registry.register(Train);
    registry.register(Export);
    registry.register(LanguageModel);
    registry.register(TuneDecoding);
    registry.register(Evaluate);
    registry.register(Package);
    registry
}
