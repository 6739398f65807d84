//! Integration tests of github-sim over real HTTP on 127.0.0.1, fed with the
//! real GH Archive files in `shared/data` (override: `GHEVENTS_DATA_DIR`).

mod cli;
mod common;
mod events;
mod faults;
mod rate;
mod stats;
mod synth;
