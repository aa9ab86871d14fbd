//! Configuration shared by the roles: the loader (a YAML or TOML file, then
//! `ZERODB_*` environment overrides, unknown keys refused), durations, and
//! the keeper's config (which a proxy running the keeper embeds), and the
//! keeper list ([`KeeperAddrs`]) proxies and agents name. Each
//! role's own config lives in its crate and loads through [`load_file`].

mod control_tls;
mod durations;
mod keeper;
mod keeper_addrs;
mod lists;
mod loader;

pub use control_tls::ControlTlsConfig;
pub use durations::{duration, duration_opt};
pub use keeper::{
    DatasourceConfig, EtcdConfig, EtcdTlsConfig, KeeperConfig, KeeperDataHostConfig, KeeperTimings,
    StoreKind,
};
pub use keeper_addrs::{KeeperAddrs, KeeperAddrsError, EMBEDDED};
pub use lists::one_or_many;
pub use loader::{extract_known, from_yaml, load_file, ConfigError, EnvOverrides};
