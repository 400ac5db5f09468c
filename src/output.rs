//! Human-readable and JSON printing.

use dingo_node::{ContactInfo, ConversationView, Direction, MessageView, Status};
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

pub(crate) fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub(crate) fn contacts(list: &[ContactInfo]) {
    if list.is_empty() {
        println!("no contacts yet: add one with `dingo contact add INVITE`");
    }
    for c in list {
        let mut flags = Vec::new();
        if c.verified {
            flags.push("verified");
        }
        if c.key_changed {
            flags.push("KEY CHANGED: verify before chatting");
        }
        println!("{:<20} {}  {}", c.name, c.user_id, flags.join(", "));
    }
}

pub(crate) fn inbox(list: &[ConversationView]) {
    if list.is_empty() {
        println!("no conversations yet");
    }
    for c in list {
        println!(
            "{:<20} {:>4} unread  {:>5} messages  last {}  {}",
            c.contact,
            c.unread,
            c.total,
            time(c.last_at),
            c.last_text
        );
    }
}

fn status(m: &MessageView) -> String {
    match (m.direction, m.status) {
        (Direction::In, _) => String::new(),
        (Direction::Out, Status::Read) => format!("  [read {}]", m.read_at.map(time).unwrap_or_default()),
        (Direction::Out, Status::Delivered) => {
            format!("  [delivered {}]", m.delivered_at.map(time).unwrap_or_default())
        }
        (Direction::Out, s) => format!(
            "  [{}]",
            serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        ),
    }
}

pub(crate) fn messages(list: &[MessageView]) {
    for m in list {
        println!("{} {:<12} {}{}", time(m.sent_at), m.from, m.text, status(m));
    }
}
