//! Each command, against the running node's API or, when no node runs, the home itself.

use crate::cli::{
    ChannelCommand, Cli, Command, ContactCommand, DeptCommand, DocCommand, FileCommand, ProjectCommand,
    ReportCommand, RunArgs, TaskCommand, TeamCommand,
};
use crate::output;
use anyhow::{anyhow, bail, Context};
use dingo_api::*;
use dingo_node::{FileView, Home, NetConfig, Node, NodeError, Role, TransferView};
use std::path::{Path, PathBuf};

fn default_home() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("dingo");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/dingo"),
        None => PathBuf::from(".dingo"),
    }
}

fn read_passphrase(path: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        bail!("the passphrase file {} is empty", path.display());
    }
    Ok(Some(line.as_bytes().to_vec()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Where a command is carried out.
enum Backend {
    /// A node runs on this home: go through its local API.
    Api(Client),
    /// No node runs: open the home here (sends are queued for the next `run`).
    Local(Node, tokio::runtime::Runtime),
}

impl Backend {
    fn open(home: &Home, passphrase: Option<&[u8]>) -> anyhow::Result<Self> {
        let rt = runtime()?;
        let _guard = rt.enter();
        match Node::open_as(home, passphrase, Role::Command) {
            Ok(node) => Ok(Backend::Local(node, rt)),
            Err(NodeError::HomeInUse { .. }) => Ok(Backend::Api(connect_to_running_node(home)?)),
            Err(e) => Err(e.into()),
        }
    }

    fn call<T>(
        &self,
        api: impl FnOnce(&Client) -> Result<T, dingo_api::ClientError>,
        local: impl AsyncFnOnce(&Node) -> Result<T, NodeError>,
    ) -> anyhow::Result<T> {
        match self {
            Backend::Api(c) => Ok(api(c)?),
            Backend::Local(node, rt) => Ok(rt.block_on(local(node))?),
        }
    }

    fn close(self) -> anyhow::Result<()> {
        if let Backend::Local(node, rt) = self {
            rt.block_on(node.shutdown())?;
        }
        Ok(())
    }
}

/// Connects to the node holding `home`. A node that is still starting (or one that replaced a
/// crashed node's stale API file) gets a few seconds to answer.
fn connect_to_running_node(home: &Home) -> anyhow::Result<Client> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let attempt =
            Client::from_home(home).and_then(|c| c.get::<dingo_node::IdInfo>("/v1/id", &[]).map(|_| c));
        match attempt {
            Ok(client) => return Ok(client),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::new(cli.home.clone().unwrap_or_else(default_home));
    let passphrase = read_passphrase(cli.passphrase_file.as_deref())?;
    let pass = passphrase.as_deref();
    match cli.command {
        Command::Init { name } => {
            let info = Node::init(&home, &name, pass)?;
            println!("created identity for {} in {}", info.name, home.dir().display());
            println!("user id:     {}", info.user_id);
            println!("device id:   {}", info.device_id);
            println!("fingerprint: {}", info.fingerprint);
            println!("invite:      {}", info.invite);
            if pass.is_none() {
                eprintln!("note: no passphrase set; the key file is protected by its file permissions only");
            }
            Ok(())
        }
        Command::Run(args) => run_node(&home, pass, args),
        Command::Demo { burst } => crate::demo::run(burst),
        command => {
            let backend = Backend::open(&home, pass)?;
            let result = query(&backend, command);
            backend.close()?;
            result
        }
    }
}

fn query(b: &Backend, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Id(f) => {
            let info = b.call(|c| c.get("/v1/id", &[]), async |n| Ok(n.id()))?;
            if f.json {
                return output::json(&info);
            }
            println!("name:        {}", info.name);
            println!("user id:     {}", info.user_id);
            println!("device id:   {}", info.device_id);
            println!("fingerprint: {}", info.fingerprint);
            println!("invite:      {}", info.invite);
        }
        Command::Contact(ContactCommand::Add { invite, name, json }) => {
            let body = AddContactBody { invite: invite.clone(), name: name.clone() };
            let c =
                b.call(|c| c.post("/v1/contacts", &body), async |n| n.add_contact(&invite, name).await)?;
            if json.json {
                return output::json(&c);
            }
            println!("added {} ({})", c.name, c.user_id);
            if c.key_changed {
                println!("warning: this is a NEW key for {}; compare safety numbers with `dingo contact verify {}`", c.name, c.name);
            }
        }
        Command::Contact(ContactCommand::List(f)) => {
            let list = b.call(|c| c.get("/v1/contacts", &[]), async |n| n.contacts().await)?;
            if f.json {
                return output::json(&list);
            }
            output::contacts(&list);
        }
        Command::Contact(ContactCommand::Verify { name, confirm, json }) => {
            let body = VerifyBody { who: name.clone(), confirm };
            let v = b.call(
                |c| c.post("/v1/contacts/verify", &body),
                async |n| n.verify_contact(&name, confirm).await,
            )?;
            if json.json {
                return output::json(&v);
            }
            println!("safety number with {}:", v.name);
            let groups: Vec<&str> = v.safety_number.split(' ').collect();
            for row in groups.chunks(4) {
                println!("    {}", row.join(" "));
            }
            if v.key_changed {
                println!("their key CHANGED: compare this number with them, then run `dingo contact verify {} --confirm`", v.name);
            } else if v.verified {
                println!("marked verified");
            } else {
                println!("compare it with {} in person or by phone, then run with --confirm", v.name);
            }
        }
        Command::Send { contact, text, json } => {
            let body = SendBody { to: contact.clone(), text: text.clone() };
            let r = b.call(|c| c.post("/v1/send", &body), async |n| n.send(&contact, &text).await)?;
            if json.json {
                return output::json(&r);
            }
            println!("{}", r.id);
            if matches!(b, Backend::Local(..)) {
                eprintln!("no node is running: the message is queued and `dingo run` will deliver it");
            }
        }
        Command::Inbox(f) => {
            let list = b.call(|c| c.get("/v1/inbox", &[]), async |n| n.inbox().await)?;
            if f.json {
                return output::json(&list);
            }
            output::inbox(&list);
        }
        Command::Messages { contact, json } => {
            let list = b.call(
                |c| c.get("/v1/messages", &[("with", &contact)]),
                async |n| n.messages(&contact).await,
            )?;
            if json.json {
                return output::json(&list);
            }
            output::messages(&list);
        }
        Command::Read { contact, json } => {
            let q = ConversationQuery { with: contact.clone() };
            let list = b.call(|c| c.post("/v1/read", &q), async |n| n.read(&contact).await)?;
            if json.json {
                return output::json(&list);
            }
            output::messages(&list);
        }
        Command::Team(t) => return team(b, t),
        Command::Dept(d) => {
            let v = match d {
                DeptCommand::Create { name } => {
                    let body = NameBody { name: name.clone() };
                    b.call(|c| c.post("/v1/dept/create", &body), async |n| n.dept_create(&name).await)?
                }
                DeptCommand::Add { name, member } => {
                    let body = DeptMemberBody { dept: name.clone(), member: member.clone() };
                    b.call(|c| c.post("/v1/dept/add", &body), async |n| n.dept_add(&name, &member).await)?
                }
                DeptCommand::Remove { name, member } => {
                    let body = DeptMemberBody { dept: name.clone(), member: member.clone() };
                    b.call(
                        |c| c.post("/v1/dept/remove", &body),
                        async |n| n.dept_remove(&name, &member).await,
                    )?
                }
            };
            output::team(&v);
            queued_note(b);
        }
        Command::Channel(ChannelCommand::Create { name, depts, members, json }) => {
            let body = ChannelBody { name: name.clone(), depts: depts.clone(), members: members.clone() };
            let list = b.call(
                |c| c.post("/v1/channels", &body),
                async |n| n.channel_create(&name, depts, members).await,
            )?;
            if json.json {
                return output::json(&list);
            }
            output::channels(&list);
            queued_note(b);
        }
        Command::Project(ProjectCommand::Create { name, depts, members, json }) => {
            let body = ChannelBody { name: name.clone(), depts: depts.clone(), members: members.clone() };
            let list = b.call(
                |c| c.post("/v1/projects", &body),
                async |n| n.project_create(&name, depts, members).await,
            )?;
            if json.json {
                return output::json(&list);
            }
            output::projects(&list);
            queued_note(b);
        }
        Command::Project(ProjectCommand::List(f)) => {
            let list = b.call(|c| c.get("/v1/projects", &[]), async |n| n.projects().await)?;
            if f.json {
                return output::json(&list);
            }
            output::projects(&list);
        }
        Command::Project(ProjectCommand::Status { project, json }) => {
            let st = b.call(
                |c| c.get("/v1/projects/status", &[("project", project.as_str())]),
                async |n| n.project_status(&project).await,
            )?;
            if json.json {
                return output::json(&st);
            }
            output::project_status(&st);
        }
        Command::Task(TaskCommand::Add {
            project,
            title,
            assignees,
            due,
            priority,
            parent,
            attach,
            json,
        }) => {
            // Paths go to the node absolute; anything else is an id.
            let attach: Vec<String> = attach
                .into_iter()
                .map(|a| match std::path::Path::new(&a).is_file() {
                    true => std::path::absolute(&a).map(|p| p.display().to_string()).unwrap_or(a),
                    false => a,
                })
                .collect();
            let body = TaskAddBody {
                project: project.clone(),
                title: title.clone(),
                assignees: assignees.clone(),
                due,
                priority,
                parent: parent.clone(),
                attachments: attach.clone(),
            };
            let a = b.call(
                |c| c.post("/v1/tasks", &body),
                async |n| {
                    Ok(TaskIdAnswer {
                        id: n
                            .task_add_with(&project, &title, assignees, due, priority, parent, attach)
                            .await?,
                    })
                },
            )?;
            if json.json {
                return output::json(&a);
            }
            println!("{}", a.id);
            queued_note(b);
        }
        Command::Task(
            cmd @ (TaskCommand::Edit { .. }
            | TaskCommand::Done { .. }
            | TaskCommand::Reopen { .. }
            | TaskCommand::Assign { .. }
            | TaskCommand::Comment { .. }),
        ) => {
            let body = task_update_body(cmd);
            let update = body.to_update().map_err(|e| anyhow!(e))?;
            let a = b.call(
                |c| c.post("/v1/tasks/update", &body),
                async |n| Ok(TaskIdAnswer { id: n.task_update(&body.id, update).await? }),
            )?;
            println!("{} {}", body.action, a.id);
            queued_note(b);
        }
        Command::Doc(DocCommand::Create { name, depts, members, json }) => {
            let body = ChannelBody { name: name.clone(), depts: depts.clone(), members: members.clone() };
            let list =
                b.call(|c| c.post("/v1/docs", &body), async |n| n.doc_create(&name, depts, members).await)?;
            if json.json {
                return output::json(&list);
            }
            output::projects(&list);
            queued_note(b);
        }
        Command::File(cmd) => return file(b, cmd),
        Command::Doc(DocCommand::List(f)) => {
            let list = b.call(|c| c.get("/v1/docs", &[]), async |n| n.docs().await)?;
            if f.json {
                return output::json(&list);
            }
            output::projects(&list);
        }
        Command::Doc(DocCommand::Cat { name }) => {
            let t: DocContent = b.call(
                |c| c.get("/v1/docs/text", &[("name", name.as_str())]),
                async |n| Ok(DocContent { content: n.doc_text(&name).await? }),
            )?;
            print!("{}", t.content);
        }
        Command::Doc(DocCommand::Edit { name, file, text, message }) => {
            let new_text = match (file, text) {
                (Some(f), _) => {
                    std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?
                }
                (None, Some(t)) => t,
                (None, None) => {
                    let current: DocContent = b.call(
                        |c| c.get("/v1/docs/text", &[("name", name.as_str())]),
                        async |n| Ok(DocContent { content: n.doc_text(&name).await? }),
                    )?;
                    edit_in_editor(&current.content)?
                }
            };
            let body = DocEditBody { name: name.clone(), text: new_text.clone(), message: message.clone() };
            let a = b.call(
                |c| c.post("/v1/docs/edit", &body),
                async |n| Ok(DocEditAnswer { changed: n.doc_edit(&name, &new_text, &message).await? }),
            )?;
            println!("{}", if a.changed { "saved" } else { "no change" });
            queued_note(b);
        }
        Command::Doc(DocCommand::History { name, json }) => {
            let h = b.call(
                |c| c.get("/v1/docs/history", &[("name", name.as_str())]),
                async |n| n.doc_history(&name).await,
            )?;
            if json.json {
                return output::json(&h);
            }
            for r in h {
                // The genesis change has no time: every member makes the same one.
                let at = if r.at == 0 { "-".to_owned() } else { output::time(r.at) };
                let what = if r.lines_added + r.lines_removed > 0 {
                    format!("+{} -{} lines", r.lines_added, r.lines_removed)
                } else {
                    format!("+{} -{} chars", r.chars_added, r.chars_removed)
                };
                println!("{} {:<20} {:<16} {:<18} {}", &r.hash[..12], at, r.author, what, r.message);
            }
        }
        Command::Doc(DocCommand::Blame { name, json }) => {
            let lines = b.call(
                |c| c.get("/v1/docs/blame", &[("name", name.as_str())]),
                async |n| n.doc_blame(&name).await,
            )?;
            if json.json {
                return output::json(&lines);
            }
            for l in lines {
                println!("{:<16} {} {:>4}) {}", l.author, output::time(l.at), l.line, l.text);
            }
        }
        Command::Doc(DocCommand::Export { name, format, output: path }) => {
            let bytes: Vec<u8> = if format == "md" {
                let t: DocContent = b.call(
                    |c| c.get("/v1/docs/text", &[("name", name.as_str())]),
                    async |n| Ok(DocContent { content: n.doc_text(&name).await? }),
                )?;
                t.content.into_bytes()
            } else {
                let hex: DocContent = b.call(
                    |c| c.get("/v1/docs/export", &[("name", name.as_str())]),
                    async |n| {
                        let bytes = n.doc_bytes(&name).await?;
                        Ok(DocContent { content: bytes.iter().map(|b| format!("{b:02x}")).collect() })
                    },
                )?;
                (0..hex.content.len() / 2)
                    .map(|i| u8::from_str_radix(&hex.content[2 * i..2 * i + 2], 16))
                    .collect::<Result<_, _>>()
                    .context("the node sent a malformed export")?
            };
            match path {
                Some(p) => std::fs::write(&p, &bytes).with_context(|| format!("writing {}", p.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes).context("writing to stdout")?;
                }
            }
        }
        Command::Report(ReportCommand::Weekly { member, format: _, json }) => {
            let mut q = Vec::new();
            if let Some(m) = &member {
                q.push(("member", m.as_str()));
            }
            let r =
                b.call(|c| c.get("/v1/report/weekly", &q), async |n| n.weekly_report(member.clone()).await)?;
            if json.json {
                return output::json(&r);
            }
            print!("{}", dingo_node::weekly_markdown(&r, output::date));
        }
        Command::Task(TaskCommand::Remind { id }) => {
            let body = IdBody { id: id.clone() };
            let who: Vec<String> =
                b.call(|c| c.post("/v1/tasks/remind", &body), async |n| n.task_remind(&id).await)?;
            if who.is_empty() {
                println!("nobody else is assigned to that task");
            } else {
                println!("reminded {}", who.join(", "));
            }
            queued_note(b);
        }
        Command::Task(TaskCommand::List { project, mine, overdue, json }) => {
            let mut q: Vec<(&str, &str)> = Vec::new();
            if let Some(p) = &project {
                q.push(("project", p));
            }
            if mine {
                q.push(("mine", "true"));
            }
            if overdue {
                q.push(("overdue", "true"));
            }
            let list =
                b.call(|c| c.get("/v1/tasks", &q), async |n| n.tasks(project.clone(), mine, overdue).await)?;
            if json.json {
                return output::json(&list);
            }
            output::tasks(&list);
        }
        Command::Channel(ChannelCommand::List(f)) => {
            let list = b.call(|c| c.get("/v1/channels", &[]), async |n| n.channels().await)?;
            if f.json {
                return output::json(&list);
            }
            output::channels(&list);
        }
        Command::Unread { channel, id, json } => {
            let mut q = vec![("channel", channel.as_str())];
            if let Some(id) = &id {
                q.push(("id", id.as_str()));
            }
            let v = b.call(|c| c.get("/v1/unread", &q), async |n| n.unread(&channel, id.clone()).await)?;
            if json.json {
                return output::json(&v);
            }
            println!("{}: {}", &v.id[..12], v.text);
            println!("{}", v.summary);
            if !v.not_read.is_empty() {
                println!("not read by: {}", v.not_read.join(", "));
            }
        }
        Command::Ding { target, text, repeat_every, again, json } => {
            if let Some(id) = again {
                let body = IdBody { id: id.clone() };
                let a = b.call(
                    |c| c.post("/v1/ding/again", &body),
                    async |n| Ok(AgainAnswer { realerted: n.ding_again(&id).await? }),
                )?;
                if json.json {
                    return output::json(&a);
                }
                println!("alerted {} recipient(s) again", a.realerted);
                queued_note(b);
                return Ok(());
            }
            let (Some(target), Some(text)) = (target, text) else {
                return Err(anyhow!("usage: dingo ding TARGET TEXT, or dingo ding --again ID"));
            };
            let body = DingBody { target: target.clone(), text: text.clone(), repeat_every };
            let r =
                b.call(|c| c.post("/v1/ding", &body), async |n| n.ding(&target, &text, repeat_every).await)?;
            if json.json {
                return output::json(&r);
            }
            println!("{}", r.id);
            queued_note(b);
        }
        Command::Ack { id, json } => {
            let body = IdBody { id: id.clone() };
            let a =
                b.call(|c| c.post("/v1/ack", &body), async |n| Ok(AckAnswer { id: n.ack(&id).await? }))?;
            if json.json {
                return output::json(&a);
            }
            println!("acknowledged {}", a.id);
            queued_note(b);
        }
        Command::Dings(f) => {
            let list = b.call(|c| c.get("/v1/dings", &[]), async |n| n.dings().await)?;
            if f.json {
                return output::json(&list);
            }
            output::dings(&list);
        }
        Command::Peers(f) => {
            let list = b.call(|c| c.get("/v1/peers", &[]), async |n| n.peers().await)?;
            if f.json {
                return output::json(&list);
            }
            output::peers(&list);
        }
        Command::Settings { read_receipts, json } => {
            let body = SettingsBody { read_receipts };
            let v = b.call(
                |c| {
                    if read_receipts.is_some() {
                        c.post("/v1/settings", &body)
                    } else {
                        c.get("/v1/settings", &[])
                    }
                },
                async |n| n.settings(read_receipts).await,
            )?;
            if json.json {
                return output::json(&v);
            }
            println!("read receipts: {}", if v.read_receipts { "on" } else { "off" });
        }
        Command::Init { .. } | Command::Run(_) | Command::Demo { .. } => {
            return Err(anyhow!("internal: command dispatched twice"));
        }
    }
    Ok(())
}

fn file(b: &Backend, command: FileCommand) -> anyhow::Result<()> {
    match command {
        FileCommand::Share { target, path, json } => {
            let path =
                std::fs::canonicalize(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let view = match b {
                Backend::Api(c) => {
                    let body = FileShareBody { target, path: path.display().to_string() };
                    let started: TransferView = c.post("/v1/files", &body)?;
                    let done = follow(c, started, json.json)?;
                    let id = done.file_id.context("the node did not say which file it shared")?;
                    let list: Vec<FileView> = c.get("/v1/files", &[])?;
                    list.into_iter().find(|f| f.id == id).context("the shared file is not listed")?
                }
                Backend::Local(n, rt) => {
                    let v = rt.block_on(n.file_share(&target, &path))?;
                    queued_note(b);
                    v
                }
            };
            if json.json {
                return output::json(&view);
            }
            println!(
                "shared {} ({}) in {} as version {}: id {}",
                view.name,
                dingo_node::human_size(view.size),
                view.place,
                view.version,
                view.id
            );
        }
        FileCommand::Get { id, output: out, json } => {
            let out = match out {
                Some(p) => std::path::absolute(&p).with_context(|| format!("bad path {}", p.display()))?,
                None => std::env::current_dir().context("no current directory")?,
            };
            let done = match b {
                Backend::Api(c) => {
                    let body = FileGetBody { id, out: out.display().to_string() };
                    let started: TransferView = c.post("/v1/files/get", &body)?;
                    follow(c, started, json.json)?
                }
                Backend::Local(n, rt) => rt.block_on(n.file_get(&id, &out))?,
            };
            if json.json {
                return output::json(&done);
            }
            let peers = done.from_peers.len();
            println!(
                "fetched {} ({}) to {} in {} ms: {} chunks from {peers} peer(s), {} already here, {} rejected",
                done.name,
                dingo_node::human_size(done.total_bytes),
                done.path,
                done.elapsed_ms,
                done.chunks_fetched,
                done.chunks_reused,
                done.chunks_rejected
            );
        }
        FileCommand::Versions { name, json } => {
            let list = b.call(
                |c| c.get("/v1/files/versions", &[("name", name.as_str())]),
                async |n| n.file_versions(&name).await,
            )?;
            if json.json {
                return output::json(&list);
            }
            output::files(&list);
        }
        FileCommand::List(f) => {
            let list = b.call(|c| c.get("/v1/files", &[]), async |n| n.files().await)?;
            if f.json {
                return output::json(&list);
            }
            if list.is_empty() {
                println!("no files yet: share one with `dingo file share TARGET PATH`");
            }
            output::files(&list);
        }
    }
    Ok(())
}

/// Follows a running transfer with a progress bar (on a terminal) until it ends.
fn follow(c: &Client, started: TransferView, quiet: bool) -> anyhow::Result<TransferView> {
    let bar = indicatif::ProgressBar::new(started.total_bytes);
    if quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut t = started;
    loop {
        bar.set_message(format!("{} {}", t.kind, t.name));
        bar.set_length(t.total_bytes);
        bar.set_position(t.done_bytes);
        if t.state != "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        t = c.get("/v1/transfers", &[("id", t.transfer.as_str())])?;
    }
    bar.finish_and_clear();
    match t.state.as_str() {
        "done" => Ok(t),
        _ => bail!("{}", t.error.unwrap_or_else(|| "the transfer failed".into())),
    }
}

fn queued_note(b: &Backend) {
    if matches!(b, Backend::Local(..)) {
        eprintln!("no node is running: messages are queued and `dingo run` will deliver them");
    }
}

fn team(b: &Backend, command: TeamCommand) -> anyhow::Result<()> {
    let (view, json) = match command {
        TeamCommand::Create { name, json } => {
            let body = NameBody { name: name.clone() };
            (b.call(|c| c.post("/v1/team", &body), async |n| n.team_create(&name).await)?, json.json)
        }
        TeamCommand::Invite { dept, expires, json } => {
            let body = InviteBody { dept: dept.clone(), ttl_secs: expires };
            let code =
                b.call(|c| c.post("/v1/team/invite", &body), async |n| n.team_invite(dept, expires).await)?;
            if json.json {
                return output::json(&code);
            }
            println!("{}", code.code);
            eprintln!("one-time code, valid until {}", output::time(code.expires_at));
            return Ok(());
        }
        TeamCommand::Join { code, wait, json } => {
            let body = JoinBody { code: code.clone() };
            let mut v = b.call(|c| c.post("/v1/team/join", &body), async |n| n.team_join(&code).await)?;
            if let Backend::Api(c) = b {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
                while v.joining.as_deref().is_some_and(|j| !j.starts_with("refused"))
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    v = c.get("/v1/team", &[])?;
                }
            } else {
                eprintln!("no node is running: the join request is queued and `dingo run` will send it");
            }
            if let Some(j) = v.joining.as_deref().filter(|j| j.starts_with("refused")) {
                return Err(anyhow!("could not join {}: {j}", v.name));
            }
            (v, json.json)
        }
        TeamCommand::Add { invites, dept } => {
            let body = AddMembersBody { invites: invites.clone(), dept: dept.clone() };
            (b.call(|c| c.post("/v1/team/add", &body), async |n| n.team_add(invites, dept).await)?, false)
        }
        TeamCommand::Members(f) => (b.call(|c| c.get("/v1/team", &[]), async |n| n.team().await)?, f.json),
        TeamCommand::Promote { member } => {
            let body = MemberBody { member: member.clone() };
            (b.call(|c| c.post("/v1/team/promote", &body), async |n| n.team_promote(&member).await)?, false)
        }
        TeamCommand::Demote { member } => {
            let body = MemberBody { member: member.clone() };
            (b.call(|c| c.post("/v1/team/demote", &body), async |n| n.team_demote(&member).await)?, false)
        }
        TeamCommand::Remove { member } => {
            let body = MemberBody { member: member.clone() };
            (b.call(|c| c.post("/v1/team/remove", &body), async |n| n.team_remove(&member).await)?, false)
        }
    };
    if json {
        return output::json(&view);
    }
    output::team(&view);
    Ok(())
}

fn run_node(home: &Home, pass: Option<&[u8]>, args: RunArgs) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let node = match Node::open(home, pass) {
            Err(NodeError::HomeInUse { dir, pid, .. }) => {
                bail!("another Dingo node is already running on {dir} (pid {pid})")
            }
            other => other?,
        };
        let mut config = NetConfig::lan_default();
        config.mdns = !args.no_mdns;
        if !args.listen.is_empty() {
            config.listen = args.listen;
        }
        let addrs = node.start_network(config, args.peer).await?;
        let api = dingo_api::serve(node.clone()).await?;
        let id = node.id();
        eprintln!("dingo node for {} ({}) listening on {}", id.name, id.device_id, addrs.join(" "));
        eprintln!("local API on {}", api.addr);
        eprintln!("invite: {}", id.invite);
        let mut events = node.subscribe();
        let printer = tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                match e {
                    dingo_node::NodeEvent::Message { from, text, channel, .. } => match channel {
                        Some(ch) => eprintln!("{ch} {from}: {text}"),
                        None => eprintln!("message from {from}: {text}"),
                    },
                    dingo_node::NodeEvent::Ding { id, from, text, channel, alert } => {
                        let place = channel.map(|c| format!(" in {c}")).unwrap_or_default();
                        // The terminal bell, then a desktop notification where one is available.
                        eprintln!("\x07DING from {from}{place} (alert {alert}): {text}  -- acknowledge with `dingo ack {}`", &id[..12]);
                        notify(&format!("DING from {from}{place}"), &text);
                    }
                    dingo_node::NodeEvent::TaskReminder { project, title, kind, due, .. } => {
                        let what = match kind.as_str() {
                            "due_soon" => "due within the hour",
                            "owner_overdue" => "overdue (in your project)",
                            _ => "overdue",
                        };
                        eprintln!("\x07task reminder [{project}] {title}: {what} (due {})", output::time(due));
                        notify(&format!("Task {what}"), &format!("[{project}] {title}"));
                    }
                    dingo_node::NodeEvent::DingAcked { id, by, .. } => eprintln!("{by} acknowledged DING {}", &id[..12]),
                    dingo_node::NodeEvent::Joined { team } => eprintln!("joined team {team}"),
                    dingo_node::NodeEvent::RemovedFromTeam { team } => eprintln!("you were removed from team {team}"),
                    dingo_node::NodeEvent::JoinRefused { reason } => eprintln!("join refused: {reason}"),
                    dingo_node::NodeEvent::KeyChanged { contact } => {
                        eprintln!("warning: the key of {contact} changed; their messages wait until you run `dingo contact verify {contact}`")
                    }
                    other => tracing::debug!(?other, "event"),
                }
            }
        });
        wait_for_signal().await;
        eprintln!("shutting down");
        printer.abort();
        api.stop();
        let _ = std::fs::remove_file(home.api_file());
        let _ = std::fs::remove_file(home.token_file());
        node.shutdown().await?;
        Ok(())
    })
}

/// Shows a desktop notification with `notify-send` when it is installed; silently nothing
/// otherwise (a headless node has the bell and the API event).
fn notify(title: &str, body: &str) {
    let _ = std::process::Command::new("notify-send")
        .args(["--urgency=critical", "--app-name=Dingo", title, body])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|mut child| std::thread::spawn(move || child.wait()));
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The API body for a task change given on the command line.
fn task_update_body(cmd: TaskCommand) -> TaskUpdateBody {
    let mut body = TaskUpdateBody {
        id: String::new(),
        action: String::new(),
        member: None,
        text: None,
        title: None,
        due: None,
        clear_due: false,
        priority: None,
    };
    match cmd {
        TaskCommand::Edit { id, title, due, no_due, priority } => {
            (body.id, body.action, body.title, body.due, body.clear_due, body.priority) =
                (id, "edit".into(), title, due, no_due, priority);
        }
        TaskCommand::Done { id } => (body.id, body.action) = (id, "done".into()),
        TaskCommand::Reopen { id } => (body.id, body.action) = (id, "reopen".into()),
        TaskCommand::Assign { id, member, remove } => {
            (body.id, body.member) = (id, Some(member));
            body.action = if remove { "unassign" } else { "assign" }.into();
        }
        TaskCommand::Comment { id, text } => {
            (body.id, body.action, body.text) = (id, "comment".into(), Some(text))
        }
        TaskCommand::Add { .. } | TaskCommand::List { .. } | TaskCommand::Remind { .. } => {}
    }
    body
}

/// Opens `text` in $VISUAL / $EDITOR (vi when neither is set) and returns what was saved.
fn edit_in_editor(text: &str) -> anyhow::Result<String> {
    let file = tempfile::Builder::new().suffix(".md").tempfile().context("creating a temporary file")?;
    std::fs::write(file.path(), text).context("writing the temporary file")?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let mut parts = editor.split_whitespace();
    let program = parts.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(parts)
        .arg(file.path())
        .status()
        .with_context(|| format!("starting the editor {editor:?}"))?;
    if !status.success() {
        bail!("the editor exited with {status}; nothing was saved");
    }
    std::fs::read_to_string(file.path()).context("reading the edited file")
}
