//! The generated `AzureFunctionsRpcMessages` types,
//! plus the serialized descriptor set the Python worker builds its classes from.
#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/azure_functions_rpc_messages.rs"));

/// `proto/FunctionRpc.proto` compiled to a `FileDescriptorSet`, handed to the worker.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/function_rpc_descriptor.bin"));
