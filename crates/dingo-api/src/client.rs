use crate::{ApiInfo, ErrorBody};
use dingo_node::Home;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// Why an API call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The node answered with an error (its message is for the user).
    #[error("{0}")]
    Node(String),
    /// The node could not be reached.
    #[error("cannot reach the running node at {addr}: {reason}")]
    Unreachable {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The node's files in the home directory are missing or unreadable.
    #[error("the running node's API files are missing or unreadable: {0}")]
    Files(String),
}

/// A blocking client for a running node's local API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    addr: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// Connects using `HOME/api.json` and `HOME/api.token`.
    pub fn from_home(home: &Home) -> Result<Self, ClientError> {
        let info: ApiInfo = std::fs::read(home.api_file())
            .map_err(|e| ClientError::Files(e.to_string()))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| ClientError::Files(e.to_string())))?;
        let token =
            std::fs::read_to_string(home.token_file()).map_err(|e| ClientError::Files(e.to_string()))?;
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        Ok(Self {
            base: format!("http://{}", info.addr),
            addr: info.addr,
            token: token.trim().to_owned(),
            agent,
        })
    }

    fn finish<T: DeserializeOwned>(&self, r: Result<ureq::Response, ureq::Error>) -> Result<T, ClientError> {
        match r {
            Ok(resp) => resp
                .into_json()
                .map_err(|e| ClientError::Node(format!("unreadable answer from the node: {e}"))),
            Err(ureq::Error::Status(_, resp)) => {
                let body: ErrorBody = resp
                    .into_json()
                    .unwrap_or_else(|e| ErrorBody { error: format!("unreadable error from the node: {e}") });
                Err(ClientError::Node(body.error))
            }
            Err(e) => Err(ClientError::Unreachable { addr: self.addr.clone(), reason: e.to_string() }),
        }
    }

    /// `GET path?query`.
    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, ClientError> {
        let mut req = self
            .agent
            .get(&format!("{}{}", self.base, path))
            .set("Authorization", &format!("Bearer {}", self.token));
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.finish(req.call())
    }

    /// `POST path` with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let req = self
            .agent
            .post(&format!("{}{}", self.base, path))
            .set("Authorization", &format!("Bearer {}", self.token));
        self.finish(req.send_json(body))
    }
}
