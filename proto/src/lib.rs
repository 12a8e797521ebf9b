//! The CRI `runtime.v1` messages and services prewarm uses (ImageService and
//! RuntimeService.Version), generated at build time from `proto/cri.proto`.

#![allow(missing_debug_implementations, clippy::all)]

/// `package runtime.v1`.
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}
