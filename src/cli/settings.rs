//! The settings tree of `facesearch serve`: one flat key space (`bind`, `max_in_flight`,
//! `quality_min_sharpness`, …) made of each owning crate's serde settings type,
//! flattened: the pipeline's [`PipelineConfig`], the engine's [`EngineConfig`] (with
//! the vector index's and the quality minimums'), the HTTP API's [`ApiConfig`], and
//! [`ServerSettings`], the binary's own. Each type defines its defaults once.
//!
//! The layers, lowest first: those defaults, the TOML config file, `FACESEARCH_*`
//! environment variables, flags. figment merges them and remembers which layer set
//! each key, which `--print-config` shows. clap reads flags and environment (it
//! documents both in `--help`); which of the two gave a value is its `ValueSource`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use facesearch_api::ApiConfig;
use facesearch_engine::EngineConfig;
use facesearch_face::{Pack, PipelineConfig};
use figment::value::{Dict, Num, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Where the data lives when no `--data-dir` is given (also of `user` and `migrate`).
pub const DEFAULT_DATA_DIR: &str = "facesearch-data";

/// The settings only the binary uses (where things are, the listener, the first
/// admin) and those whose default is derived from another setting (`None` here).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// A model pack name (`open`, `insightface`), checked when resolved.
    pub pack: String,
    /// `None`: the user's cache dir.
    pub models_dir: Option<PathBuf>,
    /// `None`: the number of cores.
    pub workers: Option<usize>,
    /// Seconds.
    pub request_timeout: u64,
    pub audit_retention_days: u32,
    pub admin_user: String,
    pub admin_password_file: Option<PathBuf>,
    /// Seconds; 0 never saves.
    pub index_save_interval: u64,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CIDRs or addresses, as a list or one comma-separated string.
    pub trusted_proxies: Option<StringOrList>,
    /// `None`: a quarter of `max_in_flight`.
    pub max_in_flight_per_user: Option<usize>,
    /// `None`: an eighth of `max_in_flight`.
    pub admin_reserved_slots: Option<usize>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            pack: Pack::Open.to_string(),
            models_dir: None,
            workers: None,
            request_timeout: 60,
            audit_retention_days: 365,
            admin_user: "admin".into(),
            admin_password_file: None,
            index_save_interval: 60,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: None,
            max_in_flight_per_user: None,
            admin_reserved_slots: None,
        }
    }
}

/// A config-file value given either as `"a,b"` or as `["a", "b"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn items(&self) -> Vec<&str> {
        match self {
            StringOrList::One(s) => s.split(',').filter(|x| !x.trim().is_empty()).collect(),
            StringOrList::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Every setting of `facesearch serve`, one flat key space.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub server: ServerSettings,
    #[serde(flatten)]
    pub pipeline: PipelineConfig,
    #[serde(flatten)]
    pub engine: EngineConfig,
    #[serde(flatten)]
    pub api: ApiConfig,
}

/// Where a layer's values came from, as `--print-config` names it.
const DEFAULT: &str = "default";
const FILE: &str = "config file";
const ENVIRONMENT: &str = "environment";
const FLAG: &str = "flag";

/// One layer of settings: a flat dictionary and its name.
struct Layer {
    name: &'static str,
    file: Option<PathBuf>,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let metadata = Metadata::named(self.name);
        match &self.file {
            Some(path) => metadata.source(figment::Source::File(path.clone())),
            None => metadata,
        }
    }

    fn data(&self) -> Result<figment::value::Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// A serialisable value as a flat dictionary.
fn dict_of(value: &impl Serialize) -> anyhow::Result<Dict> {
    Value::serialize(value)?.into_dict().context("settings serialise to a dictionary")
}

/// Every key of the tree (a setting left `None` by default is still a key).
pub fn known_keys() -> BTreeSet<String> {
    dict_of(&Settings::default()).map(|d| d.into_keys().collect()).unwrap_or_default()
}

/// Whether a setting's value is `none`: an integer setting without a limit is the
/// largest integer in the tree.
fn is_none(value: &Value) -> bool {
    value.to_u128() == Some(u128::from(u64::MAX))
}

/// Each setting's default as `serve --help` shows it (`[default: …]`), by key; a
/// setting with no default value (`None`, or `none`: the largest integer) is left
/// out — its help text says in words what it falls back to — and so are switches.
pub fn default_texts() -> BTreeMap<String, String> {
    let Ok(defaults) = dict_of(&Settings::default()) else { return BTreeMap::new() };
    defaults
        .into_iter()
        .filter_map(|(key, value)| {
            let text = match value {
                Value::String(_, s) => s,
                v if is_none(&v) => return None,
                Value::Num(_, Num::F32(f)) => f.to_string(),
                Value::Num(_, Num::F64(f)) => f.to_string(),
                Value::Num(_, n) => n.to_u128_lossy().map(|u| u.to_string()).or(n.to_i128().map(|i| i.to_string()))?,
                _ => return None,
            };
            Some((key, text))
        })
        .collect()
}

/// The config file's values; a key that is not a setting is refused (the file is
/// flat, so serde's `deny_unknown_fields` cannot see through the flattened types).
fn file_layer(path: &Path) -> anyhow::Result<Layer> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let known = known_keys();
    if let Some(unknown) = table.keys().find(|k| !known.contains(*k)) {
        anyhow::bail!(
            "parsing {}: unknown field `{unknown}` (`facesearch serve --print-config` lists the settings)",
            path.display()
        );
    }
    Ok(Layer { name: FILE, file: Some(path.to_path_buf()), dict: dict_of(&table)? })
}

/// The settings layered: defaults, then the file, then the values clap found in the
/// environment (`from_env`, by key), then the other given ones (flags). `given` holds
/// only the values given: a flag or variable left out is not a key of it.
pub fn layered(config_file: Option<&Path>, given: Dict, from_env: &BTreeSet<String>) -> anyhow::Result<Figment> {
    let (env, flags): (Dict, Dict) = given.into_iter().partition(|(k, _)| from_env.contains(k));
    let mut figment = Figment::new().merge(Layer { name: DEFAULT, file: None, dict: dict_of(&Settings::default())? });
    if let Some(path) = config_file {
        figment = figment.merge(file_layer(path)?);
    }
    Ok(figment.merge(Layer { name: ENVIRONMENT, file: None, dict: env }).merge(Layer {
        name: FLAG,
        file: None,
        dict: flags,
    }))
}

/// The settings out of their layers. A value of the wrong type is reported with its
/// key and source (`source`, as [`source_of`] shows it): serde's flattening loses the
/// key, so on failure each key is tried alone over the defaults.
pub fn extract(figment: &Figment, source: &dyn Fn(&str) -> String) -> anyhow::Result<Settings> {
    let error = match figment.extract::<Settings>() {
        Ok(settings) => return Ok(settings),
        Err(e) => e,
    };
    let defaults = dict_of(&Settings::default())?;
    for key in defaults.keys() {
        let Ok(value) = figment.find_value(key) else { continue };
        let mut one = defaults.clone();
        one.insert(key.clone(), value);
        if let Err(e) = Value::from(one).deserialize::<Settings>() {
            anyhow::bail!("invalid setting {key} ({}): {}", source(key), e.kind);
        }
    }
    Err(anyhow::anyhow!("invalid settings: {error}"))
}

/// The values of a serialised `ServeArgs` that were given: no `None`, no `false`
/// switch, no empty list.
pub fn given(args: &impl Serialize) -> anyhow::Result<Dict> {
    let mut dict = dict_of(args)?;
    dict.retain(|_, v| match v {
        Value::Empty(..) => false,
        Value::Bool(_, b) => *b,
        Value::Array(_, items) => !items.is_empty(),
        _ => true,
    });
    Ok(dict)
}

/// How a key's source is shown: `default`, `config file PATH`, `environment
/// FACESEARCH_X`, `flag --x`. `names` maps a key to its variable and flag.
pub fn source_of(figment: &Figment, key: &str, names: &dyn Fn(&str) -> (String, String)) -> String {
    let Some(metadata) = figment.find_metadata(key) else { return DEFAULT.into() };
    let (env, flag) = names(key);
    match metadata.name.as_ref() {
        FILE => match &metadata.source {
            Some(figment::Source::File(path)) => format!("{FILE} {}", path.display()),
            _ => FILE.into(),
        },
        ENVIRONMENT => format!("{ENVIRONMENT} {env}"),
        FLAG => format!("{FLAG} {flag}"),
        other => other.to_string(),
    }
}

/// The effective settings as TOML lines (the file's syntax), each with its source
/// in a comment; a setting with no value (or `none`, the largest integer) is shown
/// commented out.
pub fn render(settings: &Settings, source: &dyn Fn(&str) -> String) -> anyhow::Result<String> {
    let mut out = String::new();
    for (key, value) in dict_of(settings)? {
        let shown = match &value {
            Value::Empty(..) => None,
            v if is_none(v) => None,
            v => Some(serde_json::to_string(v)?),
        };
        let src = source(&key);
        match shown {
            Some(v) => out.push_str(&format!("{key} = {v}  # {src}\n")),
            None => out.push_str(&format!("# {key} = none  # {src}\n")),
        }
    }
    Ok(out)
}
