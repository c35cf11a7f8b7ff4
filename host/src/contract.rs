//! Host-side bindings of the `host:infra` plugin world (see `wit/`).

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: { default: async | tracing },
    exports: { default: async },
    additional_derives: [PartialEq],
});

pub use self::host::infra::types::{
    ErrorKind, ExitStatus, Job, OutputStream, PluginError, PluginInfo, RunStatus,
};
