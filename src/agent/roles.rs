//! The roles a node can run, by name. Each role is a module with an
//! `Options` type (parsed, with unknown keys refused, when the topology is
//! checked), a privileged `prepare` step (files it needs, opened before the
//! agent drops root) and an async `run`.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::transport::Limits;
use super::{AgentConfig, AgentError, Context, heartbeat};
use crate::cps::{controller, sensor};

/// Every role name a topology may use.
pub const ROLES: [&str; 3] = ["heartbeat", "cps-sensor", "cps-controller"];

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("unknown role {0:?}; known roles: {known}", known = ROLES.join(", "))]
    Unknown(String),
    #[error("options of role {role}: {message}")]
    Options { role: String, message: String },
}

/// A role with its validated options.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    Heartbeat(heartbeat::Options),
    CpsSensor(sensor::Options),
    CpsController(controller::Options),
}

/// An optional duration option: `default` when absent, refused below `min`.
pub fn duration_option(
    name: &str,
    text: Option<&str>,
    default: Duration,
    min: Duration,
) -> Result<Duration, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        format!(
            "{name} {text:?}: {e} (expected a duration like \"{}\")",
            humantime::format_duration(default)
        )
    })?;
    if d < min {
        return Err(format!(
            "{name} {text:?} is below the minimum of {}",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

fn options<T: DeserializeOwned>(role: &str, value: &serde_json::Value) -> Result<T, RoleError> {
    let value = if value.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        value.clone()
    };
    serde_json::from_value(value).map_err(|e| RoleError::Options {
        role: role.to_string(),
        message: e.to_string(),
    })
}

impl Role {
    /// The role `name` with `options` (JSON `null` = none given).
    pub fn parse(name: &str, value: &serde_json::Value) -> Result<Role, RoleError> {
        let invalid = |message: String| RoleError::Options {
            role: name.to_string(),
            message,
        };
        match name {
            "heartbeat" => {
                let o: heartbeat::Options = options(name, value)?;
                o.interval().map_err(invalid)?;
                Ok(Role::Heartbeat(o))
            }
            "cps-sensor" => {
                let o: sensor::Options = options(name, value)?;
                o.interval().map_err(invalid)?;
                Ok(Role::CpsSensor(o))
            }
            "cps-controller" => {
                let o: controller::Options = options(name, value)?;
                o.validate().map_err(invalid)?;
                Ok(Role::CpsController(o))
            }
            _ => Err(RoleError::Unknown(name.to_string())),
        }
    }

    /// The nodes this role connects to (its peers' agents must serve).
    pub fn peers(&self) -> Vec<&str> {
        match self {
            Role::Heartbeat(o) => o.to.as_deref().into_iter().collect(),
            Role::CpsSensor(o) => vec![o.controller()],
            Role::CpsController(_) => Vec::new(),
        }
    }

    /// The privileged step: open what the role needs while still root.
    pub(super) fn prepare(self, config: &AgentConfig) -> Result<Prepared, AgentError> {
        Ok(match self {
            Role::Heartbeat(o) => Prepared::Heartbeat(o),
            Role::CpsSensor(o) => Prepared::CpsSensor(sensor::Sensor::prepare(o, config)?),
            Role::CpsController(o) => {
                Prepared::CpsController(controller::Controller::prepare(o, config)?)
            }
        })
    }
}

/// A role ready to run unprivileged.
pub(super) enum Prepared {
    Heartbeat(heartbeat::Options),
    CpsSensor(sensor::Sensor),
    CpsController(controller::Controller),
}

impl Prepared {
    /// Whether the role accepts connections.
    pub fn serves(&self) -> bool {
        match self {
            Prepared::Heartbeat(_) | Prepared::CpsController(_) => true,
            Prepared::CpsSensor(_) => false,
        }
    }

    pub fn limits(&self) -> Limits {
        match self {
            Prepared::CpsController(_) => controller::Controller::limits(),
            _ => Limits::default(),
        }
    }

    pub async fn run(self, ctx: Context) -> Result<(), AgentError> {
        match self {
            Prepared::Heartbeat(o) => {
                heartbeat::run(o, ctx).await;
                Ok(())
            }
            Prepared::CpsSensor(s) => s.run(ctx).await,
            Prepared::CpsController(c) => c.run(ctx).await,
        }
    }
}
