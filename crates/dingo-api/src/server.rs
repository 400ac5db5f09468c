use crate::*;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dingo_node::{Node, NodeError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast::error::RecvError;

#[derive(Clone)]
struct AppState {
    node: Node,
    token: Arc<String>,
    hosts: Arc<[String; 2]>,
}

/// The running API server.
#[derive(Debug)]
pub struct ApiHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ApiHandle {
    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

struct ApiError(StatusCode, String);

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let status = match &e {
            NodeError::UnknownContact(_)
            | NodeError::UnknownMember(_)
            | NodeError::UnknownChannel(_)
            | NodeError::UnknownDing(_)
            | NodeError::UnknownProject(_)
            | NodeError::UnknownTask(_)
            | NodeError::UnknownDoc(_)
            | NodeError::UnknownFile(_)
            | NodeError::UnknownTarget(_) => StatusCode::NOT_FOUND,
            NodeError::FileUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            NodeError::FileTooLarge(..) => StatusCode::PAYLOAD_TOO_LARGE,
            NodeError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            NodeError::Team(_)
            | NodeError::NoTeam
            | NodeError::AlreadyInTeam(_)
            | NodeError::BadJoinCode(_)
            | NodeError::NotInChannel(_)
            | NodeError::Removed(_) => StatusCode::CONFLICT,
            NodeError::AmbiguousContact(_)
            | NodeError::TooLong(..)
            | NodeError::Empty
            | NodeError::BadInvite(_)
            | NodeError::BadName(_)
            | NodeError::ForgedInvite
            | NodeError::OwnInvite
            | NodeError::NameTaken(_) => StatusCode::BAD_REQUEST,
            NodeError::KeyChanged(_) | NodeError::NoSession(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Serves the API for `node` on 127.0.0.1 (random port) and writes `api.json` and `api.token`.
pub async fn serve(node: Node) -> Result<ApiHandle, NodeError> {
    let home = node.home().clone();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| NodeError::Io { path: "127.0.0.1:0".into(), source: e })?;
    let addr = listener.local_addr().map_err(|e| NodeError::Io { path: "api socket".into(), source: e })?;
    let token = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>());
    home.write_private(&home.token_file(), token.as_bytes())?;
    let info = ApiInfo { addr: addr.to_string(), pid: std::process::id() };
    home.write_private(&home.api_file(), &serde_json::to_vec(&info).unwrap_or_default())?;
    let state = AppState {
        node,
        token: Arc::new(token),
        hosts: Arc::new([format!("127.0.0.1:{}", addr.port()), format!("localhost:{}", addr.port())]),
    };
    let app = Router::new()
        .route("/v1/id", get(id))
        .route("/v1/contacts", get(contacts).post(add_contact))
        .route("/v1/contacts/verify", post(verify))
        .route("/v1/send", post(send))
        .route("/v1/inbox", get(inbox))
        .route("/v1/messages", get(messages))
        .route("/v1/read", post(read))
        .route("/v1/stats", get(stats))
        .route("/v1/team", get(team).post(team_create))
        .route("/v1/team/invite", post(team_invite))
        .route("/v1/team/join", post(team_join))
        .route("/v1/team/add", post(team_add))
        .route("/v1/team/promote", post(team_promote))
        .route("/v1/team/demote", post(team_demote))
        .route("/v1/team/remove", post(team_remove))
        .route("/v1/dept/create", post(dept_create))
        .route("/v1/dept/add", post(dept_add))
        .route("/v1/dept/remove", post(dept_remove))
        .route("/v1/channels", get(channels).post(channel_create))
        .route("/v1/unread", get(unread))
        .route("/v1/ding", post(ding))
        .route("/v1/ding/again", post(ding_again))
        .route("/v1/ack", post(ack))
        .route("/v1/dings", get(dings))
        .route("/v1/peers", get(peers))
        .route("/v1/projects", get(projects).post(project_create))
        .route("/v1/projects/status", get(project_status))
        .route("/v1/tasks", get(tasks).post(task_add))
        .route("/v1/tasks/update", post(task_update))
        .route("/v1/tasks/remind", post(task_remind))
        .route("/v1/docs", get(docs).post(doc_create))
        .route("/v1/report/weekly", get(weekly_report))
        .route("/v1/docs/edit", post(doc_edit))
        .route("/v1/docs/text", get(doc_text))
        .route("/v1/docs/export", get(doc_export))
        .route("/v1/docs/history", get(doc_history))
        .route("/v1/docs/blame", get(doc_blame))
        .route("/v1/files", get(files).post(file_share))
        .route("/v1/files/versions", get(file_versions))
        .route("/v1/files/get", post(file_get))
        .route("/v1/transfers", get(transfer))
        .route("/v1/settings", get(settings).post(settings_set))
        .route("/v1/events", get(events))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("local API stopped: {e}");
        }
    });
    Ok(ApiHandle { addr, task })
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn guard(
    State(st): State<AppState>,
    Query(q): Query<TokenQuery>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let host_ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| st.hosts.iter().any(|allowed| allowed == h));
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_none_or(|o| st.hosts.iter().any(|h| o == format!("http://{h}")));
    if !host_ok || !origin_ok {
        return ApiError(StatusCode::FORBIDDEN, "forbidden host or origin".into()).into_response();
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or(q.token);
    match presented {
        Some(t) if bool::from(t.as_bytes().ct_eq(st.token.as_bytes())) => next.run(req).await,
        _ => ApiError(StatusCode::UNAUTHORIZED, "missing or wrong API token".into()).into_response(),
    }
}

async fn id(State(st): State<AppState>) -> ApiResult<dingo_node::IdInfo> {
    Ok(Json(st.node.id()))
}

async fn contacts(State(st): State<AppState>) -> ApiResult<Vec<dingo_node::ContactInfo>> {
    Ok(Json(st.node.contacts().await?))
}

async fn add_contact(
    State(st): State<AppState>,
    Json(b): Json<AddContactBody>,
) -> ApiResult<dingo_node::ContactInfo> {
    Ok(Json(st.node.add_contact(&b.invite, b.name).await?))
}

async fn verify(
    State(st): State<AppState>,
    Json(b): Json<VerifyBody>,
) -> ApiResult<dingo_node::Verification> {
    Ok(Json(st.node.verify_contact(&b.who, b.confirm).await?))
}

async fn send(State(st): State<AppState>, Json(b): Json<SendBody>) -> ApiResult<dingo_node::SendResult> {
    Ok(Json(st.node.send(&b.to, &b.text).await?))
}

async fn inbox(State(st): State<AppState>) -> ApiResult<Vec<dingo_node::ConversationView>> {
    Ok(Json(st.node.inbox().await?))
}

async fn messages(
    State(st): State<AppState>,
    Query(q): Query<ConversationQuery>,
) -> ApiResult<Vec<dingo_node::MessageView>> {
    Ok(Json(st.node.messages(&q.with).await?))
}

async fn read(
    State(st): State<AppState>,
    Json(q): Json<ConversationQuery>,
) -> ApiResult<Vec<dingo_node::MessageView>> {
    Ok(Json(st.node.read(&q.with).await?))
}

async fn stats(State(st): State<AppState>) -> ApiResult<dingo_node::Stats> {
    Ok(Json(st.node.stats()))
}

async fn team(State(st): State<AppState>) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.team().await?))
}

async fn team_create(State(st): State<AppState>, Json(b): Json<NameBody>) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.team_create(&b.name).await?))
}

async fn team_invite(
    State(st): State<AppState>,
    Json(b): Json<InviteBody>,
) -> ApiResult<dingo_node::JoinCodeView> {
    Ok(Json(st.node.team_invite(b.dept, b.ttl_secs).await?))
}

async fn team_join(State(st): State<AppState>, Json(b): Json<JoinBody>) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.team_join(&b.code).await?))
}

async fn team_add(
    State(st): State<AppState>,
    Json(b): Json<AddMembersBody>,
) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.team_add(b.invites, b.dept).await?))
}

async fn team_promote(
    State(st): State<AppState>,
    Json(b): Json<MemberBody>,
) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.team_promote(&b.member).await?))
}

async fn team_demote(
    State(st): State<AppState>,
    Json(b): Json<MemberBody>,
) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.team_demote(&b.member).await?))
}

async fn team_remove(
    State(st): State<AppState>,
    Json(b): Json<MemberBody>,
) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.team_remove(&b.member).await?))
}

async fn dept_create(State(st): State<AppState>, Json(b): Json<NameBody>) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.dept_create(&b.name).await?))
}

async fn dept_add(
    State(st): State<AppState>,
    Json(b): Json<DeptMemberBody>,
) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.dept_add(&b.dept, &b.member).await?))
}

async fn dept_remove(
    State(st): State<AppState>,
    Json(b): Json<DeptMemberBody>,
) -> ApiResult<dingo_node::TeamView> {
    Ok(Json(st.node.dept_remove(&b.dept, &b.member).await?))
}

async fn channels(State(st): State<AppState>) -> ApiResult<Vec<dingo_node::ChannelView>> {
    Ok(Json(st.node.channels().await?))
}

async fn channel_create(
    State(st): State<AppState>,
    Json(b): Json<ChannelBody>,
) -> ApiResult<Vec<dingo_node::ChannelView>> {
    Ok(Json(st.node.channel_create(&b.name, b.depts, b.members).await?))
}

async fn unread(
    State(st): State<AppState>,
    Query(q): Query<UnreadQuery>,
) -> ApiResult<dingo_node::UnreadView> {
    Ok(Json(st.node.unread(&q.channel, q.id).await?))
}

async fn ding(State(st): State<AppState>, Json(b): Json<DingBody>) -> ApiResult<dingo_node::SendResult> {
    Ok(Json(st.node.ding(&b.target, &b.text, b.repeat_every).await?))
}

async fn ding_again(State(st): State<AppState>, Json(b): Json<IdBody>) -> ApiResult<AgainAnswer> {
    Ok(Json(AgainAnswer { realerted: st.node.ding_again(&b.id).await? }))
}

async fn ack(State(st): State<AppState>, Json(b): Json<IdBody>) -> ApiResult<AckAnswer> {
    Ok(Json(AckAnswer { id: st.node.ack(&b.id).await? }))
}

async fn dings(State(st): State<AppState>) -> ApiResult<Vec<dingo_node::DingView>> {
    Ok(Json(st.node.dings().await?))
}

async fn projects(State(st): State<AppState>) -> ApiResult<Vec<dingo_node::ProjectView>> {
    Ok(Json(st.node.projects().await?))
}

async fn project_create(
    State(st): State<AppState>,
    Json(b): Json<ChannelBody>,
) -> ApiResult<Vec<dingo_node::ProjectView>> {
    Ok(Json(st.node.project_create(&b.name, b.depts, b.members).await?))
}

#[derive(Deserialize)]
struct ProjectQuery {
    project: String,
}

async fn project_status(
    State(st): State<AppState>,
    Query(q): Query<ProjectQuery>,
) -> ApiResult<dingo_node::ProjectStatus> {
    Ok(Json(st.node.project_status(&q.project).await?))
}

#[derive(Deserialize)]
struct TasksQuery {
    project: Option<String>,
    #[serde(default)]
    mine: bool,
    #[serde(default)]
    overdue: bool,
}

async fn tasks(
    State(st): State<AppState>,
    Query(q): Query<TasksQuery>,
) -> ApiResult<Vec<dingo_node::TaskView>> {
    Ok(Json(st.node.tasks(q.project, q.mine, q.overdue).await?))
}

async fn task_add(State(st): State<AppState>, Json(b): Json<TaskAddBody>) -> ApiResult<TaskIdAnswer> {
    let id = st
        .node
        .task_add_with(&b.project, &b.title, b.assignees, b.due, b.priority, b.parent, b.attachments)
        .await?;
    Ok(Json(TaskIdAnswer { id }))
}

async fn task_update(State(st): State<AppState>, Json(b): Json<TaskUpdateBody>) -> ApiResult<TaskIdAnswer> {
    let update = b.to_update().map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(TaskIdAnswer { id: st.node.task_update(&b.id, update).await? }))
}

#[derive(Deserialize)]
struct ReportQuery {
    member: Option<String>,
}

async fn weekly_report(
    State(st): State<AppState>,
    Query(q): Query<ReportQuery>,
) -> ApiResult<dingo_node::WeeklyReport> {
    Ok(Json(st.node.weekly_report(q.member).await?))
}

async fn docs(State(st): State<AppState>) -> ApiResult<Vec<dingo_node::ProjectView>> {
    Ok(Json(st.node.docs().await?))
}

async fn doc_create(
    State(st): State<AppState>,
    Json(b): Json<ChannelBody>,
) -> ApiResult<Vec<dingo_node::ProjectView>> {
    Ok(Json(st.node.doc_create(&b.name, b.depts, b.members).await?))
}

async fn files(State(st): State<AppState>) -> ApiResult<Vec<dingo_node::FileView>> {
    Ok(Json(st.node.files().await?))
}

async fn file_versions(
    State(st): State<AppState>,
    Query(q): Query<DocQuery>,
) -> ApiResult<Vec<dingo_node::FileView>> {
    Ok(Json(st.node.file_versions(&q.name).await?))
}

/// Starts a share; the answer names the transfer to follow.
async fn file_share(
    State(st): State<AppState>,
    Json(b): Json<FileShareBody>,
) -> ApiResult<dingo_node::TransferView> {
    Ok(Json(st.node.file_share_start(&b.target, std::path::Path::new(&b.path)).await?))
}

/// Starts a fetch; the answer names the transfer to follow.
async fn file_get(
    State(st): State<AppState>,
    Json(b): Json<FileGetBody>,
) -> ApiResult<dingo_node::TransferView> {
    Ok(Json(st.node.file_get_start(&b.id, std::path::Path::new(&b.out)).await?))
}

#[derive(Deserialize)]
struct TransferQuery {
    id: String,
}

async fn transfer(
    State(st): State<AppState>,
    Query(q): Query<TransferQuery>,
) -> ApiResult<dingo_node::TransferView> {
    st.node
        .transfer(&q.id)
        .map(Json)
        .ok_or_else(|| NodeError::Unavailable(format!("no transfer {:?}", q.id)).into())
}

async fn doc_edit(State(st): State<AppState>, Json(b): Json<DocEditBody>) -> ApiResult<DocEditAnswer> {
    Ok(Json(DocEditAnswer { changed: st.node.doc_edit(&b.name, &b.text, &b.message).await? }))
}

#[derive(Deserialize)]
struct DocQuery {
    name: String,
}

async fn doc_text(State(st): State<AppState>, Query(q): Query<DocQuery>) -> ApiResult<DocContent> {
    Ok(Json(DocContent { content: st.node.doc_text(&q.name).await? }))
}

async fn doc_export(State(st): State<AppState>, Query(q): Query<DocQuery>) -> ApiResult<DocContent> {
    let bytes = st.node.doc_bytes(&q.name).await?;
    Ok(Json(DocContent { content: bytes.iter().map(|b| format!("{b:02x}")).collect() }))
}

async fn doc_history(
    State(st): State<AppState>,
    Query(q): Query<DocQuery>,
) -> ApiResult<Vec<dingo_node::RevisionView>> {
    Ok(Json(st.node.doc_history(&q.name).await?))
}

async fn doc_blame(
    State(st): State<AppState>,
    Query(q): Query<DocQuery>,
) -> ApiResult<Vec<dingo_node::BlameView>> {
    Ok(Json(st.node.doc_blame(&q.name).await?))
}

async fn task_remind(State(st): State<AppState>, Json(b): Json<IdBody>) -> ApiResult<Vec<String>> {
    Ok(Json(st.node.task_remind(&b.id).await?))
}

async fn peers(State(st): State<AppState>) -> ApiResult<Vec<dingo_node::PeerView>> {
    Ok(Json(st.node.peers().await?))
}

async fn settings(State(st): State<AppState>) -> ApiResult<dingo_node::SettingsView> {
    Ok(Json(st.node.settings(None).await?))
}

async fn settings_set(
    State(st): State<AppState>,
    Json(b): Json<SettingsBody>,
) -> ApiResult<dingo_node::SettingsView> {
    Ok(Json(st.node.settings(b.read_receipts).await?))
}

async fn events(State(st): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let rx = st.node.subscribe();
    ws.on_upgrade(move |socket| stream_events(socket, rx))
}

/// Forwards node events as JSON text frames `{"seq": N, "event": {...}}`; a slow client is told
/// how many it missed rather than buffering without bound.
async fn stream_events(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<dingo_node::NodeEvent>,
) {
    let mut seq: u64 = 0;
    loop {
        let frame = match rx.recv().await {
            Ok(event) => {
                seq += 1;
                serde_json::json!({ "seq": seq, "event": event })
            }
            Err(RecvError::Lagged(missed)) => {
                seq += missed;
                serde_json::json!({ "seq": seq, "lagged": missed })
            }
            Err(RecvError::Closed) => break,
        };
        if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
            break;
        }
    }
}
