//! Checks the container image definition without a container engine (none runs in CI).
//!
//! Static checks (`static_checks.rs`) read `Dockerfile` (`dockerfile.rs`: continuations,
//! comments, stages, ARG/ENV expansion, shell words split by `shlex`; no heredocs) and
//! `.dockerignore` (`context.rs`, matched by `globset`): every COPY source exists and survives
//! `.dockerignore`; every program a RUN, HEALTHCHECK or ENTRYPOINT calls is in its base image
//! (the lists there, with the reason each holds) or installed by an earlier step; the
//! entrypoint only passes flags `sluice serve` has. The replay test (`replay.rs`) then runs the
//! image's own steps against the real binary in a throwaway directory that stands for the image's root filesystem: the
//! COPYs of the `runtime` and `example` stages, their `sluice check` steps (the worker
//! environment pre-build and the app's requirements install), then the ENTRYPOINT script with
//! pip pointed at a dead index (so any install would fail: a container needs no network) and the
//! HEALTHCHECK command. Not replayed here: the `build` stage's `cargo build` (see
//! scripts/check-deploy.sh), apt-get, user creation and file modes.

mod context;
mod dockerfile;
mod replay;
mod static_checks;
