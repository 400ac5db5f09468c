//! The weekly report ("draft my weekly report"), computed locally from the task boards and
//! documents this node holds: what a member finished, has in progress and has overdue, and which
//! documents they changed, over the last seven days.

use crate::chat::Core;
use crate::records::{DocActivity, ReportTask, WeeklyReport};
use crate::NodeError;
use dingo_store::Store;

/// The report's window.
pub(crate) const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

impl Core {
    /// The weekly report of `member` (default: this user) as of `now`.
    pub(crate) fn weekly_report(
        &self,
        s: &Store,
        member: Option<&str>,
        now: u64,
    ) -> Result<WeeklyReport, NodeError> {
        let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
        let who = match member {
            Some(m) => self.member(s, &state, m)?,
            None => self.me.user_id(),
        };
        let name = self.member_name(s, &state, &who);
        let since = now.saturating_sub(WEEK_MS);
        let mut report =
            WeeklyReport { member: name.clone(), from: since, to: now, ..WeeklyReport::default() };
        for t in self.tasks_view(s, None, false, false, now)? {
            if !t.assignees.contains(&name) {
                continue;
            }
            let item = ReportTask {
                project: t.project.clone(),
                id: t.id.clone(),
                title: t.title.clone(),
                due: t.due,
                done_at: t.done_at,
            };
            if t.done {
                if t.done_at.is_some_and(|d| d >= since) {
                    report.done.push(item);
                }
            } else if t.overdue {
                report.overdue.push(item);
            } else {
                report.in_progress.push(item);
            }
        }
        let device = state.members.get(&who).map(|m| dingo_types::DeviceKey(m.device_key));
        for (doc, chan) in &state.docs {
            if !state.channel_members(chan).contains(&self.me.user_id()) {
                continue;
            }
            let changes =
                self.doc_history(s, doc)?.into_iter().filter(|r| r.at >= since && r.author == name).count();
            if changes > 0 && device.is_some() {
                report.documents.push(DocActivity { doc: doc.clone(), changes });
            }
        }
        Ok(report)
    }
}

/// The report as Markdown.
pub fn weekly_markdown(r: &WeeklyReport, date: impl Fn(u64) -> String) -> String {
    let mut md = format!("# Weekly report: {} ({} to {})\n", r.member, date(r.from), date(r.to));
    let section =
        |md: &mut String, title: &str, items: &[ReportTask], detail: &dyn Fn(&ReportTask) -> String| {
            md.push_str(&format!("\n## {title} ({})\n\n", items.len()));
            if items.is_empty() {
                md.push_str("- nothing\n");
            }
            for t in items {
                md.push_str(&format!("- [{}] {}{}\n", t.project, t.title, detail(t)));
            }
        };
    section(&mut md, "Done", &r.done, &|t| {
        t.done_at.map(|d| format!(" (done {})", date(d))).unwrap_or_default()
    });
    section(&mut md, "In progress", &r.in_progress, &|t| {
        t.due.map(|d| format!(" (due {})", date(d))).unwrap_or_default()
    });
    section(&mut md, "Overdue", &r.overdue, &|t| {
        t.due.map(|d| format!(" (was due {})", date(d))).unwrap_or_default()
    });
    md.push_str(&format!("\n## Documents changed ({})\n\n", r.documents.len()));
    if r.documents.is_empty() {
        md.push_str("- none\n");
    }
    for d in &r.documents {
        md.push_str(&format!("- {}: {} change{}\n", d.doc, d.changes, if d.changes == 1 { "" } else { "s" }));
    }
    md
}
