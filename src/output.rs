//! Human-readable and JSON printing.

use dingo_node::{
    ChannelView, ContactInfo, ConversationView, DingView, Direction, MessageView, Status, TeamView,
};
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

pub(crate) fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A date (UTC), for reports.
pub(crate) fn date(ms: u64) -> String {
    time(ms).chars().take(10).collect()
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
    if let (Direction::Out, Some(summary)) = (m.direction, &m.summary) {
        let delivered = m.delivered_to.unwrap_or(0);
        let n = m.recipients.unwrap_or(0);
        return format!("  [{summary}; delivered to {delivered} of {n}]");
    }
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

pub(crate) fn team(t: &TeamView) {
    if let Some(j) = &t.joining {
        println!("joining team {}: {j}", t.name);
        return;
    }
    println!("team {} ({} members, {} ops)", t.name, t.members.len(), t.ops);
    for m in &t.members {
        let seen = if m.me {
            "you".to_owned()
        } else {
            m.last_seen.map(time).unwrap_or_else(|| "not seen yet".into())
        };
        let depts = if m.departments.is_empty() {
            String::new()
        } else {
            format!("  [{}]", m.departments.join(", "))
        };
        println!("  {:<20} {:<7} {}  last seen {}{}", m.name, m.role, &m.user_id[..16], seen, depts);
    }
    for d in &t.departments {
        println!("department {}: {}", d.name, d.members.join(", "));
    }
}

pub(crate) fn channels(list: &[ChannelView]) {
    for c in list {
        let scope = if c.departments.is_empty() {
            String::new()
        } else {
            format!(" (departments: {})", c.departments.join(", "))
        };
        let mark = if c.joined { "" } else { "  [not a member]" };
        println!("#{:<20} {:>3} members  {:>3} unread{scope}{mark}", c.name, c.members.len(), c.unread);
    }
}

pub(crate) fn peers(list: &[dingo_node::PeerView]) {
    if list.is_empty() {
        println!("no known peers");
    }
    for p in list {
        let name =
            p.name.clone().unwrap_or_else(|| format!("{}…", &p.device_id[..p.device_id.len().min(16)]));
        let state = if p.connected {
            format!("connected via {}", p.transport.as_deref().unwrap_or("?"))
        } else {
            match p.last_seen {
                Some(t) => format!("last seen {}", time(t)),
                None => "never seen".to_owned(),
            }
        };
        let sync = p.last_sync.map(|t| format!(", synced {}", time(t))).unwrap_or_default();
        let removed = if p.removed { "  [removed]" } else { "" };
        println!(
            "{name:<20} {state}{sync}  queued {}  carrying {}  carried for others {}  {}{removed}",
            p.queue,
            p.mailbox,
            p.carried_for_others,
            p.address.as_deref().unwrap_or("-"),
        );
    }
}

pub(crate) fn dings(list: &[DingView]) {
    if list.is_empty() {
        println!("no DINGs");
    }
    for d in list {
        match d.direction {
            Direction::Out => {
                let waiting: Vec<&str> =
                    d.recipients.iter().filter(|r| r.acked_at.is_none()).map(|r| r.member.as_str()).collect();
                println!(
                    "{} {} to {}: {}  [acknowledged by {} of {}{}]",
                    &d.id[..12],
                    time(d.sent_at),
                    d.channel.clone().unwrap_or_else(|| d
                        .recipients
                        .iter()
                        .map(|r| r.member.clone())
                        .collect::<Vec<_>>()
                        .join(", ")),
                    d.text,
                    d.acked,
                    d.recipients.len(),
                    if waiting.is_empty() {
                        String::new()
                    } else {
                        format!("; waiting for {}", waiting.join(", "))
                    }
                );
            }
            Direction::In => println!(
                "{} {} from {}{}: {}  [{}]",
                &d.id[..12],
                time(d.sent_at),
                d.from,
                d.channel.as_deref().map(|c| format!(" in {c}")).unwrap_or_default(),
                d.text,
                match d.acked_at {
                    Some(t) => format!("acknowledged {}", time(t)),
                    None => format!("NOT acknowledged: dingo ack {}", &d.id[..12]),
                }
            ),
        }
    }
}

pub(crate) fn projects(list: &[dingo_node::ProjectView]) {
    if list.is_empty() {
        println!("no projects; an admin creates one with `dingo project create NAME`");
    }
    for p in list {
        let scope = if p.departments.is_empty() {
            String::new()
        } else {
            format!("  [{}]", p.departments.join(", "))
        };
        let mark = if p.joined { "" } else { "  [not a member]" };
        println!("{:<24} {:>3} members{scope}{mark}", p.name, p.members.len());
    }
}

pub(crate) fn tasks(list: &[dingo_node::TaskView]) {
    if list.is_empty() {
        println!("no tasks");
    }
    for t in list {
        let state = if t.done {
            "done"
        } else if t.overdue {
            "OVERDUE"
        } else {
            "open"
        };
        let due = t.due.map(|d| format!("  due {}", time(d))).unwrap_or_default();
        let who =
            if t.assignees.is_empty() { String::new() } else { format!("  @{}", t.assignees.join(" @")) };
        let attached = match t.attachments.len() {
            0 => String::new(),
            n => format!("  ({n} attached)"),
        };
        println!(
            "{} [{}] {:<7} {:<6} {}{due}{who}{attached}",
            &t.id[..8.min(t.id.len())],
            t.project,
            state,
            t.priority.as_str(),
            t.title
        );
    }
}

pub(crate) fn project_status(st: &dingo_node::ProjectStatus) {
    println!(
        "{}: {} tasks, {} done ({}%), {} open, {} overdue",
        st.project, st.total, st.done, st.percent_done, st.open, st.overdue
    );
    for m in &st.members {
        let stuck = if m.stuck { "  <- stuck?" } else { "" };
        println!(
            "  {:<20} done {:>3}  open {:>3}  overdue {:>3}{stuck}",
            m.member, m.done, m.open, m.overdue
        );
    }
}

pub(crate) fn files(list: &[dingo_node::FileView]) {
    for f in list {
        let here = if f.chunks_here == f.chunks { "here" } else { "not fetched" };
        println!(
            "{:<24} v{:<3} {}  {:<12} {:<20} {:>9}  {}  {here}",
            f.name,
            f.version,
            time(f.shared_at),
            f.from,
            f.place,
            dingo_node::human_size(f.size),
            &f.id[..12]
        );
    }
}
