//! Configuration: the TOML that ops write.
//!
//! Loading keeps the position of every value so that `valetkey config check`
//! can point at the line to change, and validation reports every problem in
//! one pass. The configuration names where each real token comes from (an
//! environment variable, a file, a stored secret); it never holds a token.

mod check;
mod load;
mod starter;
mod template;
mod types;

pub use check::{Problem, Severity, valid_name, validate};
pub use load::{ConfigError, Diagnostic, Loaded, Source, check_file, load};
pub use starter::{StarterProvider, starter, starter_secret};
pub use template::{TemplateError, TemplateValues, expand as expand_template};
pub use types::*;
