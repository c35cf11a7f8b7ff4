//! A do-nothing plugin skeleton: each test guest overrides the one call that
//! misbehaves, so the guests stay a few lines each.

pub use host_plugin_sdk;

pub fn info(name: &str, capabilities: &[&str]) -> host_plugin_sdk::Info {
    host_plugin_sdk::Info {
        name: name.into(),
        version: "0.0.1".into(),
        description: format!("test guest {name}"),
        default_base_job_template: host_plugin_sdk::template::Template::new().build(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        example_variables: serde_json::json!({}),
    }
}

/// Implements every call but `info` as a no-op that succeeds.
#[macro_export]
macro_rules! guest_plugin {
    ($plugin:ident, info = $info:expr) => {
        pub struct $plugin;
        impl $crate::host_plugin_sdk::Plugin for $plugin {
            type Config = $crate::host_plugin_sdk::serde_json::Value;
            type Handle = $crate::host_plugin_sdk::serde_json::Value;
            fn info() -> $crate::host_plugin_sdk::Info {
                $info
            }
            fn start(
                _job: $crate::host_plugin_sdk::Job<Self::Config>,
            ) -> $crate::host_plugin_sdk::Result<Self::Handle> {
                Ok($crate::host_plugin_sdk::serde_json::json!({}))
            }
            fn wait(
                _h: Self::Handle,
            ) -> $crate::host_plugin_sdk::Result<$crate::host_plugin_sdk::Exit> {
                Ok($crate::host_plugin_sdk::Exit::code(0))
            }
            fn inspect(
                _h: Self::Handle,
            ) -> $crate::host_plugin_sdk::Result<$crate::host_plugin_sdk::Status> {
                Ok($crate::host_plugin_sdk::Status::Exited(
                    $crate::host_plugin_sdk::Exit::code(0),
                ))
            }
            fn stop(_h: Self::Handle, _grace: u32) -> $crate::host_plugin_sdk::Result<()> {
                Ok(())
            }
            fn destroy(_h: Self::Handle) -> $crate::host_plugin_sdk::Result<()> {
                Ok(())
            }
        }
        $crate::host_plugin_sdk::export_plugin!($plugin);
    };
}
