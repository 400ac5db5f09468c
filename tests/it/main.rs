//! Integration tests: real nodes over real sockets on 127.0.0.1 with mDNS off (and, ignored by
//! default, real mDNS inside network namespaces). One binary, a module per area.

mod adversarial;
mod api;
mod chat;
mod cli;
mod crash;
mod files;
mod lan;
mod net;
mod projects;
mod relay;
mod sim;
mod support;
mod team;
mod vectors;
