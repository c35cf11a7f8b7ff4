//! The macro behind `capabilities!` in `mod.rs`: from the one list of
//! capabilities it writes the [`Capability`](super::Capability) identifier
//! and the structs that hold every capability's state, so nothing else in the
//! crate matches on a capability or walks the grants by hand. Each capability
//! is a field (not an entry in a map keyed by type) so that reaching a
//! capability's state from a linked function cannot fail at run time.

macro_rules! capabilities {
    ($( $(#[$doc:meta])* $variant:ident($field:ident) => $ty:ty, )+) => {
        /// A host interface a plugin may import, by the name an operator
        /// grants and WIT spells. `log` is always granted.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Capability {
            $( $(#[$doc])* $variant, )+
        }

        impl Capability {
            pub const ALL: &'static [Capability] = &[$(Capability::$variant),+];

            /// The WIT interface name, as in `host:infra/<name>@0.1.0`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Capability::$variant => <$ty as HostCapability>::INTERFACE,)+
                }
            }

            /// The standard WIT package it stands for, if not one of ours.
            pub fn standard_package(self) -> Option<&'static str> {
                match self {
                    $(Capability::$variant => <$ty as HostCapability>::STANDARD_PACKAGE,)+
                }
            }

            pub(crate) fn link(
                self,
                linker: &mut Linker<PluginState>,
            ) -> wasmtime::Result<()> {
                match self {
                    $(Capability::$variant => <$ty as HostCapability>::link(linker),)+
                }
            }

            pub(crate) async fn running(self, tables: &Tables, run: &str) -> Vec<String> {
                match self {
                    $(Capability::$variant => {
                        <$ty as HostCapability>::running(&tables.$field, run).await
                    })+
                }
            }

            pub(crate) async fn kill(self, tables: &Tables, run: &str) -> Vec<String> {
                match self {
                    $(Capability::$variant => {
                        <$ty as HostCapability>::kill(&tables.$field, run).await
                    })+
                }
            }

            pub(crate) async fn release(self, tables: &Tables, run: &str) -> Vec<String> {
                match self {
                    $(Capability::$variant => {
                        <$ty as HostCapability>::release(&tables.$field, run).await
                    })+
                }
            }

            pub(crate) fn runs_on_disk(self, tables: &Tables) -> Vec<String> {
                match self {
                    $(Capability::$variant => {
                        <$ty as HostCapability>::runs_on_disk(&tables.$field)
                    })+
                }
            }
        }

        /// What every capability keeps for the whole runtime, made once
        /// when the runtime starts.
        pub(crate) struct Tables {
            $(pub(crate) $field: <$ty as HostCapability>::Shared,)+
        }

        impl Tables {
            pub(crate) fn new(setup: &Setup<'_>) -> anyhow::Result<Tables> {
                Ok(Tables {
                    $($field: <$ty as HostCapability>::init(setup)?,)+
                })
            }
        }

        /// Every capability's state for one call, held by its store.
        pub(crate) struct Scopes {
            $(pub(crate) $field: <$ty as HostCapability>::Scoped,)+
        }

        impl Scopes {
            pub(crate) fn new(tables: &Tables, call: &CallScope<'_>) -> Scopes {
                Scopes {
                    $($field: <$ty as HostCapability>::scope(&tables.$field, call),)+
                }
            }
        }
    };
}
